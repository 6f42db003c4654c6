//! Every index, declared in one place and created when the store connects.
//!
//! Creating an index that exists with the same keys and options does nothing, so
//! connecting again (or from many instances at once) is safe. The ledger's TTL index is
//! the one whose options change with the configuration: a new retention is applied with
//! `collMod`, and no retention drops the index.
//!
//! Keys are ascending: the newest-first listings walk these indexes backwards, which
//! MongoDB does as cheaply as forwards.

use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;

use super::documents::ledger_fields as f;
use super::{MongoRecords, driver_error, names};
use crate::error::Error;

/// The name of the ledger's TTL index.
pub(super) const LEDGER_TTL: &str = "ledger_ttl";

/// Server error codes for an index that exists with other options or keys.
const INDEX_OPTIONS_CONFLICT: i32 = 85;
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;

/// An index on `keys` named `name`, unique or not.
fn index(name: &str, keys: Document, unique: bool) -> IndexModel {
    let options = IndexOptions::builder().name(name.to_owned()).unique(unique.then_some(true)).build();
    IndexModel::builder().keys(keys).options(options).build()
}

/// Every index but the TTL one, by collection. (Plans and tenants are read by `_id`
/// alone, and the ledger's unique key is its `_id`.)
fn declared() -> Vec<(&'static str, Vec<IndexModel>)> {
    vec![
        (
            names::LEDGER,
            vec![
                // A tenant's listings, totals and summaries, on the event time.
                index("ledger_tenant_time", doc! { f::TENANT: 1, f::AT: 1, f::EVENT_ID: 1 }, false),
                // Listings of every tenant, summaries over all, and pruning.
                index("ledger_time", doc! { f::AT: 1, f::EVENT_ID: 1, f::TENANT: 1 }, false),
            ],
        ),
        (
            names::USERS,
            vec![
                index("users_email", doc! { "email": 1 }, true),
                index("users_tenant", doc! { "tenant_id": 1, "email": 1 }, false),
            ],
        ),
        (
            names::API_KEYS,
            vec![
                index("api_keys_hash", doc! { "key_hash": 1 }, true),
                index("api_keys_tenant", doc! { "tenant_id": 1, "_id": 1 }, false),
                index("api_keys_active", doc! { "revoked_at": 1, "_id": 1 }, false),
            ],
        ),
        (
            names::REFRESH_TOKENS,
            vec![
                index("refresh_tokens_user", doc! { "user_id": 1, "state": 1 }, false),
                index("refresh_tokens_expiry", doc! { "expires_at": 1 }, false),
            ],
        ),
        (names::AUDIT, vec![index("audit_time", doc! { "at": 1, "_id": 1 }, false)]),
        (names::GRANTS, vec![index("grants_period", doc! { "tenant_id": 1, "period_start": 1 }, false)]),
    ]
}

/// Creates every declared index, and the ledger's TTL index as `retention` says.
pub(super) async fn ensure(records: &MongoRecords, retention: Option<Duration>) -> Result<(), Error> {
    for (collection, models) in declared() {
        let coll = records.collection::<Document>(collection);
        records.run("creating indexes", coll.create_indexes(models)).await?;
    }
    let ledger = records.collection::<Document>(names::LEDGER);
    match retention {
        Some(retention) => {
            let seconds = retention.as_secs().max(1);
            let options = IndexOptions::builder()
                .name(LEDGER_TTL.to_owned())
                .expire_after(Some(Duration::from_secs(seconds)))
                .build();
            let model = IndexModel::builder().keys(doc! { f::EXPIRES: 1 }).options(options).build();
            match tokio::time::timeout(records.timeout, ledger.create_index(model)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e))
                    if matches!(&*e.kind, ErrorKind::Command(c)
                    if c.code == INDEX_OPTIONS_CONFLICT || c.code == INDEX_KEY_SPECS_CONFLICT) =>
                {
                    let change = doc! {
                        "collMod": names::LEDGER,
                        "index": { "name": LEDGER_TTL, "expireAfterSeconds": i64::try_from(seconds).unwrap_or(i64::MAX) },
                    };
                    records.command("changing the ledger retention", change).await.map(|_| ())
                }
                Ok(Err(e)) => Err(driver_error("creating the ledger TTL index", e)),
                Err(_) => Err(super::timed_out("creating the ledger TTL index", records.timeout)),
            }
        }
        None => {
            let existing: Vec<String> = records.run("listing indexes", ledger.list_index_names()).await?;
            if existing.iter().any(|name| name == LEDGER_TTL) {
                records.run("dropping the ledger TTL index", ledger.drop_index(LEDGER_TTL)).await?;
            }
            Ok(())
        }
    }
}
