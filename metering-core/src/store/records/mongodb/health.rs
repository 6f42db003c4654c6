//! [`Health`] for [`MongoRecords`]: the server's `ping` command.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::MongoRecords;
use crate::error::Error;
use crate::store::records::Health;

#[async_trait]
impl Health for MongoRecords {
    async fn ping(&self) -> Result<(), Error> {
        self.command("ping", doc! { "ping": 1 }).await.map(|_| ())
    }
}
