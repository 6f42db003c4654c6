//! Faults a [`MemoryRecords`](super::MemoryRecords) store can be told to show, so that
//! what callers do when the ledger fails or crawls can be tried without a broken disk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;

/// Switches for ledger appends: off by default, shared by every clone of the store's handle.
#[derive(Debug, Default)]
pub struct AppendFaults {
    failing: AtomicBool,
    delay_micros: AtomicU64,
    failed: AtomicU64,
}

impl AppendFaults {
    /// Makes every ledger append fail (`true`) or succeed again (`false`).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every ledger append take at least `delay` first (zero: none).
    pub fn delay(&self, delay: Duration) {
        self.delay_micros.store(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Appends refused so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Applies the switches to one append.
    pub(super) async fn before_append(&self) -> Result<(), Error> {
        let delay = self.delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Unavailable("ledger appends are failing (a fault switched on)".into()));
        }
        Ok(())
    }
}
