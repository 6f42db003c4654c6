//! Redis for tests: the shared server on 127.0.0.1:6379 under a key prefix of the test's
//! own, a private `redis-server` the test may stop, pause or kill, and a three-master
//! Redis Cluster on free loopback ports. Private servers are stopped when dropped.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metering::core::store::{HotStore, RedisHot, RedisOptions};

/// The shared Redis every development and CI machine runs.
pub(crate) const SHARED: &str = "redis://127.0.0.1:6379";

/// A store on `url` under `prefix`, emptied of anything an earlier run left there. Its
/// timeout is generous: tests run many at once on few cores, and only the outage tests,
/// which set their own, are about the timeout.
pub(crate) async fn store_at(url: &str, prefix: &str) -> RedisHot {
    let options = RedisOptions { prefix: prefix.to_owned(), timeout: Duration::from_secs(5), ..RedisOptions::new(url) };
    let store = RedisHot::connect(options).await.expect("redis reachable");
    store.clear().await.expect("clear the test's prefix");
    store
}

/// A store on the shared Redis under `test:{name}`.
pub(crate) async fn shared_store(name: &str) -> RedisHot {
    store_at(SHARED, &format!("test:{name}")).await
}

/// A loopback port with its cluster bus port (+10000) free too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `ready` holds, polling a process that is starting (not a clock).
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` of the test's own, without persistence.
pub(crate) struct RedisServer {
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a standalone server on a free port.
    pub(crate) fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("metering-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer { port, child: None, dir, extra: extra.iter().map(|s| (*s).to_owned()).collect() };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let port = self.port;
        wait_until("redis-server answering", || cli(port, &["ping"]).trim() == "PONG");
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): every counter is gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until("the port closing", || TcpStream::connect(("127.0.0.1", self.port)).is_err());
    }

    /// Starts it again on the same port, empty.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops it answering clients for `millis` (`CLIENT PAUSE`).
    pub(crate) fn pause(&self, millis: u64) {
        assert_eq!(cli(self.port, &["client", "pause", &millis.to_string(), "all"]).trim(), "OK");
    }

    /// Runs a command on it with `redis-cli`.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters on free loopback ports.
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes and joins them into a cluster covering every slot.
    pub(crate) fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port();
                let config = format!("nodes-{port}.conf");
                RedisServer::start_with(port, &["--cluster-enabled", "yes", "--cluster-config-file", &config])
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cli(nodes[0].port, &create);
        assert!(out.contains("All 16384 slots covered"), "cluster create failed: {out}");
        for node in &nodes {
            wait_until("the cluster agreeing", || node.cli(&["cluster", "info"]).contains("cluster_state:ok"));
        }
        RedisCluster { nodes }
    }

    /// Its URL, naming every node.
    pub(crate) fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }
}
