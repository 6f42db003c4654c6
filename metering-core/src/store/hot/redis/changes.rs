//! Announcements of changed records over Redis publish/subscribe, on a connection of
//! their own: published on one channel under the prefix, heard by every instance
//! subscribed to it (Redis Cluster passes a publication to every node).
//!
//! Publish/subscribe delivers at most once: a message sent while a subscriber is
//! reconnecting is lost. So after every reconnection the subscription is renewed and
//! [`Change::Everything`] passed on: an instance drops all it cached rather than trust
//! what a lost announcement might have changed.

use fred::clients::SubscriberClient;
use fred::prelude::{Builder, ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::unavailable;
use crate::changes::Change;
use crate::error::Error;

/// How many announced changes wait for a slow listener before it is told it lagged.
const BUFFER: usize = 1024;

/// A subscription to the announcements channel and what it heard, for every listener.
pub(super) struct Announcements {
    subscriber: SubscriberClient,
    heard: broadcast::Sender<Change>,
    tasks: [JoinHandle<()>; 2],
}

impl Announcements {
    /// Connects the subscriber (as the main client is configured), subscribes to
    /// `channel` and starts passing on what it hears.
    pub(super) async fn start(builder: &Builder, channel: String) -> Result<Self, Error> {
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;
        let heard = broadcast::channel(BUFFER).0;
        let mut messages = subscriber.message_rx();
        let mut reconnections = subscriber.reconnect_rx();
        subscriber.subscribe(channel.clone()).await.map_err(unavailable)?;

        let to = heard.clone();
        let passing_on = tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) if message.channel.as_bytes() == channel.as_bytes() => {
                        let text = message.value.as_string().unwrap_or_default();
                        let _ = to.send(Change::decode(&text));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = to.send(Change::Everything);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let (again, to) = (subscriber.clone(), heard.clone());
        let renewing = tokio::spawn(async move {
            loop {
                match reconnections.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Err(e) = again.resubscribe_all().await {
                            tracing::warn!(error = %e, "the announcements channel could not be subscribed to again");
                        }
                        let _ = to.send(Change::Everything);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Announcements { subscriber, heard, tasks: [passing_on, renewing] })
    }

    /// What is heard from now on.
    pub(super) fn listen(&self) -> broadcast::Receiver<Change> {
        self.heard.subscribe()
    }
}

impl Drop for Announcements {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let subscriber = self.subscriber.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
            });
        }
    }
}
