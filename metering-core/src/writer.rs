//! Group commit: ledger records from many callers share one transaction.
//!
//! Callers hand records to a bounded queue; one background task takes whatever has
//! queued up (at most `max_batch`), appends it in one [`RecordStore::append`], and tells
//! each waiting caller its outcome. Under load many requests share one fsync; when idle a
//! record is written at once. A full queue makes callers wait (backpressure), never grow.
//!
//! Before it cuts a batch, the writer lets the tasks that are ready to run go first, for
//! as long as they keep queueing records (see [`GATHER_ROUNDS`]). Without that, the first
//! caller of a burst wakes the writer, which then runs before the others and syncs that
//! one record alone, while the rest wait for the next sync: a sync costs tens of µs of
//! CPU, so many small ones cost more than one that all the ready callers share.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::ledger::{Appended, LedgerRecord};
use crate::store::RecordStore;

/// Sizes of the group-commit writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Records that may wait in the queue.
    pub queue: usize,
    /// The most records in one transaction.
    pub max_batch: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit { queue: 16_384, max_batch: 1_024 }
    }
}

/// At most this many times the writer yields to ready tasks before it cuts a batch.
const GATHER_ROUNDS: usize = 16;

/// The writer stops yielding once this many yields in a row brought no new record: the
/// requests of a burst reach the server a few µs apart, so one quiet yield is too early.
const QUIET_ROUNDS: usize = 3;

type Ack = oneshot::Sender<Result<Appended, Error>>;

enum Job {
    Append(Box<LedgerRecord>, Option<Ack>),
    Flush(oneshot::Sender<()>),
}

/// A record in the writer's hands: await [`written`](Self::written) for its outcome.
pub(crate) struct Appending(oneshot::Receiver<Result<Appended, Error>>);

impl Appending {
    /// Waits until the record is durable (or its batch failed).
    pub(crate) async fn written(self) -> Result<Appended, Error> {
        self.0.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// The handle to the background writer.
#[derive(Clone)]
pub(crate) struct LedgerWriter {
    tx: mpsc::Sender<Job>,
}

impl LedgerWriter {
    /// Starts the writer on the current tokio runtime.
    pub(crate) fn spawn(store: Arc<dyn RecordStore>, cfg: GroupCommit) -> Result<Self, Error> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Unavailable("group commit needs a tokio runtime".into()))?;
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        handle.spawn(run(store, rx, cfg.max_batch.max(1)));
        Ok(LedgerWriter { tx })
    }

    /// Queues a record to be made durable; the returned [`Appending`] says when it is.
    pub(crate) async fn enqueue(&self, record: LedgerRecord) -> Result<Appending, Error> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Job::Append(Box::new(record), Some(ack))).await.map_err(|_| Error::ShuttingDown)?;
        Ok(Appending(done))
    }

    /// Queues a record without waiting for it to be written.
    pub(crate) async fn submit(&self, record: LedgerRecord) -> Result<(), Error> {
        self.tx.send(Job::Append(Box::new(record), None)).await.map_err(|_| Error::ShuttingDown)
    }

    /// Records (and flush marks) waiting in the queue now.
    pub(crate) fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Waits until everything queued before this call is written.
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Job::Flush(ack)).await.map_err(|_| Error::ShuttingDown)?;
        done.await.map_err(|_| Error::ShuttingDown)
    }
}

/// Lets ready tasks run and takes the jobs they queue, until [`QUIET_ROUNDS`] yields in a
/// row bring none, the batch is full, or [`GATHER_ROUNDS`] yields have passed.
async fn gather(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, max_batch: usize) {
    let mut quiet = 0;
    for _ in 0..GATHER_ROUNDS {
        if jobs.len() >= max_batch || quiet == QUIET_ROUNDS {
            return;
        }
        tokio::task::yield_now().await;
        let before = jobs.len();
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        quiet = if jobs.len() == before { quiet + 1 } else { 0 };
    }
}

async fn run(store: Arc<dyn RecordStore>, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        gather(&mut rx, &mut jobs, max_batch).await;
        let mut records = Vec::with_capacity(jobs.len());
        let mut acks = Vec::with_capacity(jobs.len());
        let mut flushes = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Append(r, ack) => {
                    records.push(*r);
                    acks.push(ack);
                }
                Job::Flush(ack) => flushes.push(ack),
            }
        }
        if !records.is_empty() {
            // Nobody waits on a record the layer queued after its response, so a batch
            // of only those need not be synced to the disk.
            let appended = if acks.iter().all(Option::is_none) {
                store.append_buffered(records).await
            } else {
                store.append(records).await
            };
            match appended {
                Ok(outcomes) => {
                    for (ack, outcome) in acks.into_iter().zip(outcomes) {
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(outcome));
                        }
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    let mut lost = 0usize;
                    for ack in acks {
                        match ack {
                            Some(ack) => drop(ack.send(Err(Error::Unavailable(message.clone())))),
                            None => lost += 1,
                        }
                    }
                    if lost > 0 {
                        tracing::error!(lost, error = %message, "ledger batch failed; unacknowledged records lost");
                    }
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::sample_record;
    use crate::store::memory::MemoryRecords;

    fn record(id: &str) -> LedgerRecord {
        sample_record("acme", id, 1)
    }

    #[tokio::test]
    async fn the_queue_depth_counts_what_waits_until_a_flush_writes_it() {
        let store = Arc::new(MemoryRecords::new());
        let writer = LedgerWriter::spawn(store.clone(), GroupCommit::default()).unwrap();
        for id in ["a", "b", "c"] {
            writer.submit(record(id)).await.unwrap();
        }
        assert_eq!(writer.depth(), 3, "the writer task has not run yet on this single-threaded runtime");
        writer.flush().await.unwrap();
        assert_eq!(writer.depth(), 0);
        let written = store.records(&crate::ledger::LedgerQuery::default()).await.unwrap();
        assert_eq!(written.len(), 3);
    }

    fn flush_job() -> Job {
        Job::Flush(oneshot::channel().0)
    }

    #[tokio::test]
    async fn a_batch_takes_in_what_ready_tasks_queue_while_the_writer_yields() {
        let (tx, mut rx) = mpsc::channel(64);
        // Ten callers get ready one after another, each one yield later than the one before;
        // a straggler only long after the others are done.
        for delay in (1..=10).chain([GATHER_ROUNDS * 4]) {
            let tx = tx.clone();
            tokio::spawn(async move {
                for _ in 0..delay {
                    tokio::task::yield_now().await;
                }
                let _ = tx.send(flush_job()).await;
            });
        }
        let mut jobs = vec![flush_job()];
        gather(&mut rx, &mut jobs, 1_024).await;
        assert_eq!(jobs.len(), 11, "the first job and the ten that followed it closely");

        let mut next = vec![flush_job()];
        gather(&mut rx, &mut next, 1_024).await;
        assert_eq!(next.len(), 1, "the straggler is not there yet");
        assert!(rx.recv().await.is_some(), "it comes for a later batch");
    }

    #[tokio::test]
    async fn gathering_stops_at_a_full_batch() {
        let (tx, mut rx) = mpsc::channel(64);
        for _ in 0..10 {
            tx.send(flush_job()).await.unwrap();
        }
        let mut jobs = vec![flush_job()];
        gather(&mut rx, &mut jobs, 4).await;
        assert_eq!(jobs.len(), 4);
    }
}
