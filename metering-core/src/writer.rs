//! Group commit: ledger records from many callers share one transaction.
//!
//! Callers hand records to a bounded queue; one background task takes whatever has
//! queued up (at most `max_batch`), appends it in one [`append`](crate::store::UsageLedger::append), and tells
//! each waiting caller its outcome. Under load many requests share one fsync; when idle a
//! record is written at once. A full queue makes callers wait (backpressure), never grow;
//! each such wait is counted ([`WriterStats::queue_full_waits`]).
//!
//! Before it cuts a batch, the writer lets the tasks that are ready to run go first, for
//! as long as they keep queueing records (see [`GATHER_ROUNDS`]). Without that, the first
//! caller of a burst wakes the writer, which then runs before the others and syncs that
//! one record alone, while the rest wait for the next sync: a sync costs tens of µs of
//! CPU, so many small ones cost more than one that all the ready callers share.
//!
//! # When the store fails
//!
//! A caller waiting on its record gets the error and undoes its decision itself. A record
//! nobody waits on (the Tower layer's, queued after the response) is kept, up to
//! [`GroupCommit::retry_capacity`], and written again with a growing pause between tries
//! (from [`RETRY_FIRST`] to [`RETRY_MAX`]); while records wait so, the queue is still
//! drained, so callers never wait on a failing store. A record that does not fit, or that
//! is still unwritten when the engine shuts down, is dropped and its decision undone in
//! the hot store (windows and credits given back), so no count outlives its record; each
//! is counted ([`WriterStats::dropped`]). The same undo applies when the ledger turns out
//! to hold the record's `event_id` already. What new decisions do meanwhile is the
//! [`FailurePolicy`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::ledger::{Appended, LedgerRecord};
use crate::store::{Admission, HotStore, RecordStore};

/// Sizes and failure policy of the group-commit writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Records that may wait in the queue.
    pub queue: usize,
    /// The most records in one transaction.
    pub max_batch: usize,
    /// Records queued after their response that may wait for a failing store to take them.
    pub retry_capacity: usize,
    /// What decisions do while such records wait.
    pub failure_policy: FailurePolicy,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit { queue: 16_384, max_batch: 1_024, retry_capacity: 16_384, failure_policy: FailurePolicy::Closed }
    }
}

/// What the engine decides while the record store fails to take records queued after
/// their responses (the Tower layer's path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Refuse new calls with [`Error::Unavailable`] (the layer answers `503`) until every
    /// waiting record is written: no call is served that cannot be recorded.
    #[default]
    Closed,
    /// Keep deciding and serving calls; their records wait with the others, up to
    /// [`GroupCommit::retry_capacity`], and past that are dropped with their counts given
    /// back (served uncharged, and counted in [`WriterStats::dropped`]).
    Open,
}

/// The first pause before a failed batch is tried again.
pub const RETRY_FIRST: Duration = Duration::from_millis(10);

/// The longest pause between tries of a failing store.
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// What the group-commit writer has done since the engine started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Records (and flush marks) waiting in the queue now.
    pub queued: usize,
    /// Records whose batch failed, waiting to be written again now.
    pub retrying: usize,
    /// Records dropped unwritten (no room to wait, or shut down while failing), their
    /// counts given back.
    pub dropped: u64,
    /// Batches the store failed to append.
    pub failed_batches: u64,
    /// Times a caller found the queue full and waited for room.
    pub queue_full_waits: u64,
}

/// At most this many times the writer yields to ready tasks before it cuts a batch.
const GATHER_ROUNDS: usize = 16;

/// The writer stops yielding once this many yields in a row brought no new record: the
/// requests of a burst reach the server a few µs apart, so one quiet yield is too early.
const QUIET_ROUNDS: usize = 3;

type Ack = oneshot::Sender<Result<Appended, Error>>;

/// Who learns a record's outcome.
enum Waiter {
    /// A caller awaiting it, who undoes its decision on failure.
    Caller(Ack),
    /// Nobody: the writer keeps the record through failures and undoes its decision if
    /// it is dropped or turns out to be a duplicate.
    Nobody(Admission),
}

/// A record in the writer's hands.
struct Entry {
    record: LedgerRecord,
    waiter: Waiter,
}

enum Job {
    Append(Box<Entry>),
    Flush(oneshot::Sender<Result<(), Error>>),
}

/// A record in the writer's hands: await [`written`](Self::written) for its outcome.
pub(crate) struct Appending(oneshot::Receiver<Result<Appended, Error>>);

impl Appending {
    /// Waits until the record is durable (or its batch failed).
    pub(crate) async fn written(self) -> Result<Appended, Error> {
        self.0.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// Counters the writer task and its handles share.
#[derive(Default)]
struct Shared {
    retrying: AtomicUsize,
    dropped: AtomicU64,
    failed_batches: AtomicU64,
    queue_full_waits: AtomicU64,
}

/// The handle to the background writer.
#[derive(Clone)]
pub(crate) struct LedgerWriter {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    policy: FailurePolicy,
}

impl LedgerWriter {
    /// Starts the writer on the current tokio runtime.
    pub(crate) fn spawn(store: Arc<dyn RecordStore>, hot: Arc<dyn HotStore>, cfg: GroupCommit) -> Result<Self, Error> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Unavailable("group commit needs a tokio runtime".into()))?;
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let shared = Arc::new(Shared::default());
        let task = Task {
            store,
            hot,
            rx,
            max_batch: cfg.max_batch.max(1),
            retry_capacity: cfg.retry_capacity,
            shared: Arc::clone(&shared),
            retained: Vec::new(),
        };
        handle.spawn(task.run());
        Ok(LedgerWriter { tx, shared, policy: cfg.failure_policy })
    }

    /// Queues a record to be made durable; the returned [`Appending`] says when it is.
    pub(crate) async fn enqueue(&self, record: LedgerRecord) -> Result<Appending, Error> {
        let (ack, done) = oneshot::channel();
        self.send(Job::Append(Box::new(Entry { record, waiter: Waiter::Caller(ack) }))).await?;
        Ok(Appending(done))
    }

    /// Queues a record without waiting for it to be written; should it never be written,
    /// the writer undoes `admission`'s counts.
    pub(crate) async fn submit(&self, record: LedgerRecord, admission: Admission) -> Result<(), Error> {
        self.send(Job::Append(Box::new(Entry { record, waiter: Waiter::Nobody(admission) }))).await
    }

    /// Sends a job, counting a wait for room in a full queue.
    async fn send(&self, job: Job) -> Result<(), Error> {
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => {
                self.shared.queue_full_waits.fetch_add(1, Ordering::Relaxed);
                self.tx.reserve().await.map_err(|_| Error::ShuttingDown)?
            }
            Err(TrySendError::Closed(())) => return Err(Error::ShuttingDown),
        };
        permit.send(job);
        Ok(())
    }

    /// Fails when, under [`FailurePolicy::Closed`], records wait for a failing store.
    pub(crate) fn check_taking(&self) -> Result<(), Error> {
        match (self.policy, self.shared.retrying.load(Ordering::Relaxed)) {
            (FailurePolicy::Closed, n) if n > 0 => Err(failing(n)),
            _ => Ok(()),
        }
    }

    /// What the writer has done so far.
    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            queued: self.tx.max_capacity() - self.tx.capacity(),
            retrying: self.shared.retrying.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            failed_batches: self.shared.failed_batches.load(Ordering::Relaxed),
            queue_full_waits: self.shared.queue_full_waits.load(Ordering::Relaxed),
        }
    }

    /// Waits until everything queued before this call is written; fails while records
    /// wait for a failing store (each call starts one more try).
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.send(Job::Flush(ack)).await?;
        done.await.map_err(|_| Error::ShuttingDown)?
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

/// A record of a batch being appended, as the writer holds it meanwhile.
#[allow(clippy::large_enum_variant, reason = "held only for the length of one append")]
enum Held {
    /// Moved to the store; the caller learns the outcome.
    Caller(Ack),
    /// Copied to the store; kept to try again.
    Nobody(Entry),
}

/// The writer task: takes jobs off the queue and appends their records.
struct Task {
    store: Arc<dyn RecordStore>,
    hot: Arc<dyn HotStore>,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    retry_capacity: usize,
    shared: Arc<Shared>,
    /// Records nobody waits on whose batch failed, oldest first.
    retained: Vec<Entry>,
}

impl Task {
    async fn run(mut self) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        let mut pause = RETRY_FIRST;
        let mut open = true;
        while open {
            if self.retained.is_empty() {
                if self.rx.recv_many(&mut jobs, self.max_batch).await == 0 {
                    break;
                }
                gather(&mut self.rx, &mut jobs, self.max_batch).await;
            } else {
                open = self.pause(&mut jobs, pause).await;
            }
            let mut fresh = Vec::with_capacity(jobs.len());
            let mut flushes = Vec::new();
            for job in jobs.drain(..) {
                match job {
                    Job::Append(entry) => fresh.push(*entry),
                    Job::Flush(ack) => flushes.push(ack),
                }
            }
            let failed = self.write(fresh).await;
            pause = if failed { (pause * 2).min(RETRY_MAX) } else { RETRY_FIRST };
            for flush in flushes {
                let _ = flush.send(self.still_failing());
            }
        }
        if !self.retained.is_empty() {
            self.write(Vec::new()).await;
            let left = std::mem::take(&mut self.retained);
            if !left.is_empty() {
                tracing::error!(records = left.len(), "shutting down with ledger records the store never took");
                self.drop_all(left).await;
            }
        }
    }

    /// Waits `pause` before trying retained records again, taking in what is queued
    /// meanwhile: records nobody waits on join the retained ones, callers get the error
    /// at once, and a flush ends the pause. Returns `false` when the queue has closed.
    async fn pause(&mut self, jobs: &mut Vec<Job>, pause: Duration) -> bool {
        let until = tokio::time::Instant::now() + pause;
        let mut incoming = Vec::with_capacity(self.max_batch);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                n = self.rx.recv_many(&mut incoming, self.max_batch) => {
                    if n == 0 {
                        return false;
                    }
                    let mut flushed = false;
                    let mut kept = Vec::new();
                    for job in incoming.drain(..) {
                        match job {
                            Job::Append(entry) => match entry.waiter {
                                Waiter::Caller(ack) => drop(ack.send(Err(failing(self.retained.len())))),
                                Waiter::Nobody(_) => kept.push(*entry),
                            },
                            flush @ Job::Flush(_) => {
                                jobs.push(flush);
                                flushed = true;
                            }
                        }
                    }
                    self.retain(kept).await;
                    if flushed {
                        return true;
                    }
                }
            }
        }
    }

    /// Appends the retained records, then `fresh`, a batch at a time; after the first
    /// failure nothing more is tried now. Returns whether a batch failed.
    async fn write(&mut self, fresh: Vec<Entry>) -> bool {
        let mut pending = std::mem::take(&mut self.retained);
        pending.extend(fresh);
        let mut pending = pending.into_iter();
        let mut failure: Option<String> = None;
        loop {
            let batch: Vec<Entry> = pending.by_ref().take(self.max_batch).collect();
            if batch.is_empty() {
                break;
            }
            match &failure {
                Some(message) => self.fail(batch, message).await,
                None => failure = self.append(batch).await.err(),
            }
        }
        self.shared.retrying.store(self.retained.len(), Ordering::Relaxed);
        failure.is_some()
    }

    /// Appends one batch and answers for each record; on failure, keeps the records
    /// nobody waits on and returns the store's error.
    async fn append(&mut self, batch: Vec<Entry>) -> Result<(), String> {
        // Nobody waits on a record the layer queued after its response, so a batch of
        // only those need not be synced to the disk. Such records are copied for the
        // store, so that they can be tried again if it fails.
        let buffered = batch.iter().all(|e| matches!(e.waiter, Waiter::Nobody(_)));
        let mut records = Vec::with_capacity(batch.len());
        let mut held = Vec::with_capacity(batch.len());
        for entry in batch {
            match entry.waiter {
                Waiter::Caller(ack) => {
                    records.push(entry.record);
                    held.push(Held::Caller(ack));
                }
                Waiter::Nobody(_) => {
                    records.push(entry.record.clone());
                    held.push(Held::Nobody(entry));
                }
            }
        }
        let appended =
            if buffered { self.store.append_buffered(records).await } else { self.store.append(records).await };
        match appended {
            Ok(outcomes) => {
                for (held, outcome) in held.into_iter().zip(outcomes) {
                    match held {
                        Held::Caller(ack) => drop(ack.send(Ok(outcome))),
                        Held::Nobody(entry) => {
                            if let (Appended::Duplicate(_), Waiter::Nobody(admission)) = (&outcome, &entry.waiter) {
                                self.undo(entry.record.counted, admission).await;
                            }
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                self.shared.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(records = held.len(), error = %message, "a ledger batch failed; its queued records wait to be written again");
                let mut kept = Vec::new();
                for held in held {
                    match held {
                        Held::Caller(ack) => drop(ack.send(Err(Error::Unavailable(message.clone())))),
                        Held::Nobody(entry) => kept.push(entry),
                    }
                }
                self.retain(kept).await;
                Err(message)
            }
        }
    }

    /// Answers callers with the failure and keeps the records nobody waits on.
    async fn fail(&mut self, batch: Vec<Entry>, message: &str) {
        let mut kept = Vec::new();
        for entry in batch {
            match entry.waiter {
                Waiter::Caller(ack) => drop(ack.send(Err(Error::Unavailable(message.to_owned())))),
                Waiter::Nobody(_) => kept.push(entry),
            }
        }
        self.retain(kept).await;
    }

    /// Keeps records for the next try, as far as there is room; drops the rest.
    async fn retain(&mut self, mut entries: Vec<Entry>) {
        let room = self.retry_capacity.saturating_sub(self.retained.len());
        let over = entries.split_off(room.min(entries.len()));
        self.retained.extend(entries);
        self.shared.retrying.store(self.retained.len(), Ordering::Relaxed);
        if !over.is_empty() {
            tracing::error!(
                records = over.len(),
                "no room to keep ledger records for a failing store; dropped, their counts given back"
            );
            self.drop_all(over).await;
        }
    }

    /// Drops records unwritten, undoing their decisions.
    async fn drop_all(&self, entries: Vec<Entry>) {
        self.shared.dropped.fetch_add(entries.len() as u64, Ordering::Relaxed);
        for entry in entries {
            if let Waiter::Nobody(admission) = &entry.waiter {
                self.undo(entry.record.counted, admission).await;
            }
        }
    }

    /// Gives back what a decision without its record counted (or forgets its id).
    async fn undo(&self, counted: bool, admission: &Admission) {
        let undone = if counted { self.hot.revert(admission).await } else { self.hot.forget(admission).await };
        if let Err(e) = undone {
            tracing::error!(error = %e, "could not give back the counts of an unrecorded call");
        }
    }

    /// `Ok` unless records wait for a failing store.
    fn still_failing(&self) -> Result<(), Error> {
        if self.retained.is_empty() { Ok(()) } else { Err(failing(self.retained.len())) }
    }
}

/// The error while `waiting` records wait for a failing store.
fn failing(waiting: usize) -> Error {
    Error::Unavailable(format!("the ledger is failing; {waiting} records wait to be written"))
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::ledger::sample_record;
    use crate::store::{MemoryRecords, UsageLedger};

    fn record(id: &str) -> LedgerRecord {
        sample_record("acme", id, 1)
    }

    #[tokio::test]
    async fn the_queue_depth_counts_what_waits_until_a_flush_writes_it() {
        let store = Arc::new(MemoryRecords::new());
        let writer =
            LedgerWriter::spawn(store.clone(), Arc::new(crate::store::MemoryHot::new()), GroupCommit::default())
                .unwrap();
        for id in ["a", "b", "c"] {
            writer.enqueue(record(id)).await.unwrap();
        }
        assert_eq!(writer.stats().queued, 3, "the writer task has not run yet on this single-threaded runtime");
        writer.flush().await.unwrap();
        assert_eq!(writer.stats().queued, 0);
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
