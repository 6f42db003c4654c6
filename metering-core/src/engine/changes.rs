//! Changes of cached records: dropped here at once, heard by this process's listeners,
//! and announced through the hot store to every instance sharing it.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{Engine, Inner};
use crate::changes::Change;
use crate::error::Error;

/// How many changes a slow listener may fall behind before it is told
/// [`Change::Everything`].
pub(super) const CHANGES_BUFFER: usize = 1024;

impl Engine {
    /// Every change of cached records made through this engine or announced by another
    /// instance sharing its hot store, from now on; a listener that falls behind receives
    /// `RecvError::Lagged` and should drop everything it cached.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Announcements of changes that could not be sent to the hot store (the others saw
    /// those changes when their caches expired).
    pub fn unannounced_changes(&self) -> u64 {
        self.inner.unannounced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops what this engine cached for `change`, tells this process's listeners, and
    /// announces it to the instances sharing the hot store. A failed announcement is
    /// logged and counted, not returned: the change itself is made.
    pub(crate) async fn changed(&self, change: Change) {
        apply(&self.inner, &change);
        if let Err(e) = self.inner.hot.announce(&change).await {
            self.inner.unannounced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, ?change, "a change could not be announced to the other instances");
        }
    }
}

/// Drops what `inner` cached for `change` and passes it on to this process's listeners.
fn apply(inner: &Inner, change: &Change) {
    match change {
        Change::Tenant(id) => inner.policies.invalidate(id),
        Change::Plans | Change::Everything => inner.policies.clear(),
        Change::User(_) | Change::ApiKey(_) => {}
    }
    // No listener is no error: nothing else caches.
    let _ = inner.changes.send(change.clone());
}

/// Applies what other instances announce through the hot store, on a task of its own
/// that ends with the engine; nothing to do for a hot store no one else shares.
pub(super) fn listen(inner: &Arc<Inner>) -> Result<(), Error> {
    let Some(mut announced) = inner.hot.changes() else {
        return Ok(());
    };
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Unavailable("a shared hot store needs a tokio runtime".into()))?;
    let engine: Weak<Inner> = Arc::downgrade(inner);
    handle.spawn(async move {
        loop {
            let change = match announced.recv().await {
                Ok(change) => change,
                Err(RecvError::Lagged(_)) => Change::Everything,
                Err(RecvError::Closed) => return,
            };
            let Some(inner) = engine.upgrade() else { return };
            apply(&inner, &change);
        }
    });
    Ok(())
}
