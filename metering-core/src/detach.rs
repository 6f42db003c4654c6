//! Work that is finished even when the future awaiting it is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type Work<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A future that runs its work to completion even if it is dropped first (a client went
/// away, an outer timeout fired): what is left then runs on a task of its own on the
/// current tokio runtime. Outside a runtime the rest is dropped, with a warning.
pub(crate) struct FinishOnDrop<T: Send + 'static> {
    work: Option<Work<T>>,
}

impl<T: Send + 'static> FinishOnDrop<T> {
    /// Wraps `work`.
    pub(crate) fn new(work: impl Future<Output = T> + Send + 'static) -> Self {
        FinishOnDrop { work: Some(Box::pin(work)) }
    }
}

impl<T: Send + 'static> Future for FinishOnDrop<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(work) = self.work.as_mut() else {
            // Polled again after it answered: there is nothing left to run.
            return Poll::Pending;
        };
        let output = std::task::ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for FinishOnDrop<T> {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { drop(work.await) })),
            Err(_) => tracing::warn!("work abandoned outside a tokio runtime is not finished"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn dropped_work_still_finishes() {
        let finished = Arc::new(AtomicBool::new(false));
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::clone(&finished);
        let mut future = Box::pin(FinishOnDrop::new(async move {
            let _ = started_tx.send(());
            let _ = released.await;
            done.store(true, Ordering::SeqCst);
        }));
        tokio::select! {
            biased;
            () = &mut future => unreachable!("the work waits for its release"),
            _ = started => {}
        }
        drop(future);
        release.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !finished.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the abandoned work ran to its end");
    }

    #[tokio::test]
    async fn awaited_work_answers_once() {
        assert_eq!(FinishOnDrop::new(async { 7 }).await, 7);
    }
}
