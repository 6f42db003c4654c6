//! The real `metering-server` binary as separate processes, on free loopback ports, with
//! the environment every test shares (a fixed JWT secret, a cheap password hash, the test
//! admin) plus each test's own settings; and the test's own servers (Redis, MongoDB).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;

use super::{ADMIN_EMAIL, ADMIN_PASSWORD, Http};

/// A free loopback address.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// A fresh directory under the system temp dir.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metering-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The server binary with the shared test environment, listening on `addr`, its data in `dir`.
pub fn server_command(addr: SocketAddr, dir: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metering-server"));
    command
        .env("METERING_LISTEN", addr.to_string())
        .env("METERING_DATA_DIR", dir)
        .env("METERING_JWT_SECRET", "a-test-secret-of-at-least-thirty-two-bytes")
        .env("METERING_ARGON2_MEMORY_KIB", "8")
        .env("METERING_ARGON2_ITERATIONS", "1")
        .env("METERING_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("METERING_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Spawns `command` (made by [`server_command`] for `addr`; its output discarded unless
/// it says otherwise, its errors shown) and waits until it answers `/healthz`.
pub async fn spawn_answering(mut command: Command, addr: SocketAddr) -> Child {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start the server");
    let http = Http::new(addr);
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("metering-server on {addr} exited at start: {status}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http.get("/healthz", None).await.status == StatusCode::OK
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("metering-server did not come up on {addr}");
}

/// A running server process, killed when dropped.
pub struct Instance {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// A client for it.
    pub http: Http,
}

impl Instance {
    /// Starts `command` (made by [`server_command`] for `addr`) and waits until it answers.
    pub async fn start(command: Command, addr: SocketAddr) -> Instance {
        let child = spawn_answering(command, addr).await;
        Instance { child: Some(child), addr, http: Http::new(addr) }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -p port args…` and returns its output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A `redis-server` of the test's own on a free port, stopped when dropped.
pub struct OwnRedis {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl OwnRedis {
    /// Starts it and waits until it answers.
    pub fn start() -> OwnRedis {
        let port = free_port().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server installed");
        let redis = OwnRedis { child, port };
        for _ in 0..200 {
            if redis_cli(port, &["ping"]) == "PONG" {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not come up on {port}");
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MongoDB the tests share (`METERING_TEST_MONGODB_URI`, by default the test server
/// `scripts/mongodb-test-server.sh start 27117` brings up).
pub fn shared_mongodb_uri() -> String {
    std::env::var("METERING_TEST_MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27117/?directConnection=true".to_owned())
}

/// The script that runs a MongoDB test server.
fn mongodb_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mongodb-test-server.sh")
}

/// A MongoDB test server of the test's own, on a free port, its data in a directory of its
/// own (kept across [`stop`](Self::stop) and [`start_again`](Self::start_again)); stopped
/// when dropped.
pub struct OwnMongo {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl OwnMongo {
    /// Starts it and waits until it answers.
    pub fn start() -> OwnMongo {
        let mongo = OwnMongo { port: free_port().port(), dir: data_dir("mongodb") };
        mongo.start_again();
        mongo
    }

    /// Its URI.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Stops it (its data stays).
    pub fn stop(&self) {
        let status = Command::new(mongodb_script()).args(["stop", &self.port.to_string()]).status().unwrap();
        assert!(status.success(), "stop the MongoDB test server");
    }

    /// Starts it again on its data.
    pub fn start_again(&self) {
        let status = Command::new(mongodb_script())
            .args(["start", &self.port.to_string(), &self.dir.display().to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "start the MongoDB test server");
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
