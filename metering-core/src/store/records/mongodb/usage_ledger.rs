//! [`UsageLedger`] for [`MongoRecords`]: appends as one unordered `insert_many`, listings
//! as an indexed find, totals and summaries as aggregation pipelines run by the server.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;

use super::documents::{
    GrantDoc, LedgerDoc, LedgerKey, encode, event_id_bson, ledger_fields as f, ledger_record, whole,
};
use super::{DUPLICATE_KEY, MongoRecords, driver_error, limit_of, names, timed_out};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{
    Appended, Grant, GroupBy, LedgerCursor, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageTotals,
};
use crate::store::records::UsageLedger;
use crate::tenant::TenantId;

/// Microseconds in a day, for grouping by UTC day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The newest-first listing order (served by the `ledger_time` and, for one tenant,
/// `ledger_tenant_time` indexes).
fn listing_order() -> Document {
    doc! { f::AT: -1, f::EVENT_ID: -1, f::TENANT: -1 }
}

/// The filters of a query, without its cursor.
fn query_filter(q: &LedgerQuery) -> Document {
    let mut filter = Document::new();
    if let Some(tenant) = &q.tenant {
        filter.insert(f::TENANT, tenant.as_str());
    }
    if let Some(service) = &q.service {
        filter.insert(f::SERVICE, service.as_str());
    }
    if let Some(endpoint) = &q.endpoint {
        filter.insert(f::ENDPOINT, endpoint.as_str());
    }
    if let Some(method) = q.method {
        filter.insert(f::METHOD, method.as_str());
    }
    let mut at = Document::new();
    if let Some(from) = q.from {
        at.insert("$gte", from.as_micros());
    }
    if let Some(to) = q.to {
        at.insert("$lt", to.as_micros());
    }
    if !at.is_empty() {
        filter.insert(f::AT, at);
    }
    filter
}

/// The records after `cursor` in [`listing_order`]: an earlier instant; or the same
/// instant and a lower id (MongoDB compares like types only, and sorts binary ids after
/// string ones, so past a binary id every string id of that instant is lower); or the
/// same instant and id and a lower tenant.
fn after_cursor(cursor: &LedgerCursor) -> Document {
    let at = cursor.at.as_micros();
    let id = event_id_bson(&cursor.event_id);
    let mut same_instant = vec![
        doc! { f::EVENT_ID: { "$lt": id.clone() } },
        doc! { f::EVENT_ID: id.clone(), f::TENANT: { "$lt": cursor.tenant.as_str() } },
    ];
    if matches!(id, Bson::Binary(_)) {
        same_instant.push(doc! { f::EVENT_ID: { "$type": "string" } });
    }
    doc! { "$or": [ { f::AT: { "$lt": at } }, { f::AT: at, "$or": same_instant } ] }
}

/// A group of a summary as the server returned it.
fn group_of(doc: &Document, by: GroupBy) -> Result<UsageGroup, Error> {
    let bad = || super::documents::corrupt(names::LEDGER, "(summary)", "an unreadable group");
    let key = match (by, doc.get("_id")) {
        (GroupBy::Day, Some(_)) => {
            let day = whole(doc, "_id").ok_or_else(bad)?;
            let at = Timestamp::from_micros(day.checked_mul(MICROS_PER_DAY).ok_or_else(bad)?);
            at.to_datetime().format("%Y-%m-%d").to_string()
        }
        (_, Some(Bson::String(key))) => key.clone(),
        _ => return Err(bad()),
    };
    let count = |field: &str| whole(doc, field).and_then(|n| u64::try_from(n).ok()).ok_or_else(bad);
    Ok(UsageGroup { key, calls: count("calls")?, denied: count("denied")?, credits: count("credits")? })
}

/// The expression a summary groups by.
fn group_key(by: GroupBy) -> Bson {
    let field = |name: &str| Bson::String(format!("${name}"));
    match by {
        GroupBy::Service => field(f::SERVICE),
        GroupBy::Endpoint => field(f::ENDPOINT),
        GroupBy::Method => field(f::METHOD),
        GroupBy::Tenant => field(f::TENANT),
        GroupBy::Day => Bson::Document(doc! { "$floor": { "$divide": [field(f::AT), MICROS_PER_DAY] } }),
        GroupBy::Reason => Bson::Document(doc! {
            "$cond": { "if": field(f::ALLOWED), "then": "allowed", "else": { "$ifNull": [field(f::REASON), "denied"] } }
        }),
    }
}

impl MongoRecords {
    /// The stored records of `keys`, by `(tenant, event id)`, in one find.
    async fn twins(&self, keys: &[LedgerKey]) -> Result<HashMap<(TenantId, EventId), LedgerRecord>, Error> {
        let ids: Vec<Bson> = keys.iter().map(LedgerKey::to_bson).collect();
        let found: Vec<Document> = self.find_many(names::LEDGER, doc! { "_id": { "$in": ids } }, doc! {}, None).await?;
        found
            .into_iter()
            .map(|doc| {
                let record = ledger_record(doc)?;
                Ok(((record.event.tenant_id.clone(), record.event.event_id.clone()), record))
            })
            .collect()
    }
}

#[async_trait]
impl UsageLedger for MongoRecords {
    /// One unordered `insert_many` of the batch's first occurrence of each key, with the
    /// configured write concern; keys the ledger holds already are refused by the unique
    /// `_id` (error 11000) and answered with their stored twins, fetched in one find.
    ///
    /// Any other failure fails the batch. An unordered insert goes on past a failed
    /// document, so a batch that failed (or timed out) may have left some of its records
    /// stored, each whole; appending it again answers those as duplicates, which is the
    /// partial write the trait allows for a failure that cannot be undone.
    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // The first occurrence of each key in the batch, and where each record's key
        // first occurs.
        let mut first_of: HashMap<(&TenantId, &EventId), usize> = HashMap::new();
        let mut firsts = Vec::new();
        let origin: Vec<usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                *first_of.entry((&r.event.tenant_id, &r.event.event_id)).or_insert_with(|| {
                    firsts.push(i);
                    i
                })
            })
            .collect();
        let docs = firsts
            .iter()
            .map(|&i| encode(&LedgerDoc::from_record(&records[i]), names::LEDGER))
            .collect::<Result<Vec<Document>, Error>>()?;

        let coll = self.collection::<Document>(names::LEDGER);
        let outcome = tokio::time::timeout(self.timeout, coll.insert_many(docs).ordered(false)).await;
        let mut taken = HashSet::new();
        match outcome {
            Err(_) => return Err(timed_out("appending to the ledger", self.timeout)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => match &*e.kind {
                ErrorKind::InsertMany(failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .as_ref()
                            .is_some_and(|errors| errors.iter().all(|w| w.code == DUPLICATE_KEY)) =>
                {
                    taken.extend(failure.write_errors.iter().flatten().filter_map(|w| firsts.get(w.index).copied()));
                }
                _ => return Err(driver_error("appending to the ledger", e)),
            },
        }

        let twins = if taken.is_empty() {
            HashMap::new()
        } else {
            let keys: Vec<LedgerKey> = taken
                .iter()
                .map(|&i: &usize| LedgerKey::new(&records[i].event.tenant_id, &records[i].event.event_id))
                .collect();
            self.twins(&keys).await?
        };
        let mut appended = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let first = origin[i];
            let stored_before = taken.contains(&first);
            let answer = match (first == i, stored_before) {
                (true, false) => Appended::Inserted,
                (false, false) => Appended::Duplicate(Box::new(records[first].clone())),
                (_, true) => {
                    let key = (record.event.tenant_id.clone(), record.event.event_id.clone());
                    let twin = twins.get(&key).cloned().ok_or_else(|| {
                        Error::Unavailable(format!(
                            "MongoDB: the stored twin of event `{}` was deleted while appending",
                            record.event.event_id
                        ))
                    })?;
                    Appended::Duplicate(Box::new(twin))
                }
            };
            appended.push(answer);
        }
        Ok(appended)
    }

    async fn record(&self, tenant: &TenantId, event_id: &EventId) -> Result<Option<LedgerRecord>, Error> {
        let key = LedgerKey::new(tenant, event_id).to_bson();
        let found: Option<Document> = self.find_one(names::LEDGER, doc! { "_id": key }).await?;
        found.map(ledger_record).transpose()
    }

    async fn records(&self, query: &LedgerQuery) -> Result<Vec<LedgerRecord>, Error> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = query_filter(query);
        if let Some(cursor) = &query.before {
            filter = doc! { "$and": [filter, after_cursor(cursor)] };
        }
        let limit = Some(limit_of(query.limit, LedgerQuery::MAX_LIMIT));
        let found: Vec<Document> = self.find_many(names::LEDGER, filter, listing_order(), limit).await?;
        found.into_iter().map(ledger_record).collect()
    }

    async fn usage_totals(
        &self,
        tenant: &TenantId,
        basis: TimeBasis,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<UsageTotals, Error> {
        let range = doc! { "$gte": from.as_micros(), "$lt": to.as_micros() };
        let filter = match basis {
            TimeBasis::Event => doc! { f::TENANT: tenant.as_str(), f::AT: range, f::COUNTED: true },
            TimeBasis::Decided { events_from } => doc! {
                f::TENANT: tenant.as_str(),
                f::AT: { "$gte": events_from.as_micros() },
                f::DECIDED: range,
                f::COUNTED: true,
            },
        };
        let pipeline = vec![
            doc! { "$match": filter },
            doc! { "$group": { "_id": null, "calls": { "$sum": 1 }, "credits": { "$sum": format!("${}", f::CHARGED) } } },
        ];
        let groups = self.aggregate(names::LEDGER, pipeline).await?;
        let Some(group) = groups.first() else { return Ok(UsageTotals::default()) };
        let count = |field: &str| {
            whole(group, field)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| super::documents::corrupt(names::LEDGER, tenant.as_str(), "unreadable totals"))
        };
        Ok(UsageTotals { calls: count("calls")?, credits: count("credits")? })
    }

    async fn usage_summary(
        &self,
        query: &LedgerQuery,
        group_by: GroupBy,
        limit: usize,
    ) -> Result<Vec<UsageGroup>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let field = |name: &str| format!("${name}");
        let order = match group_by {
            GroupBy::Day => doc! { "_id": 1 },
            _ => doc! { "calls": -1, "_id": 1 },
        };
        let pipeline = vec![
            doc! { "$match": query_filter(query) },
            doc! { "$group": {
                "_id": group_key(group_by),
                "calls": { "$sum": 1 },
                "denied": { "$sum": { "$cond": [field(f::ALLOWED), 0, 1] } },
                "credits": { "$sum": { "$cond": [field(f::COUNTED), field(f::CHARGED), 0] } },
            } },
            doc! { "$sort": order },
            doc! { "$limit": limit_of(limit, UsageGroup::MAX_GROUPS) },
        ];
        let groups = self.aggregate(names::LEDGER, pipeline).await?;
        groups.iter().map(|g| group_of(g, group_by)).collect()
    }

    /// One `deleteMany` over the event-time index.
    async fn prune(&self, before: Timestamp) -> Result<u64, Error> {
        let coll = self.collection::<Document>(names::LEDGER);
        let result =
            self.run("pruning the ledger", coll.delete_many(doc! { f::AT: { "$lt": before.as_micros() } })).await?;
        Ok(result.deleted_count)
    }

    async fn add_grant(&self, grant: &Grant) -> Result<(), Error> {
        let doc = encode(&GrantDoc::from(grant), names::GRANTS)?;
        let coll = self.collection::<Document>(names::GRANTS);
        self.run("storing a grant", coll.insert_one(doc)).await.map(|_| ())
    }

    async fn granted(&self, tenant: &TenantId, period_start: Timestamp) -> Result<i64, Error> {
        let pipeline = vec![
            doc! { "$match": { "tenant_id": tenant.as_str(), "period_start": period_start.as_micros() } },
            doc! { "$group": { "_id": null, "amount": { "$sum": "$amount" } } },
        ];
        let groups = self.aggregate(names::GRANTS, pipeline).await?;
        match groups.first() {
            None => Ok(0),
            Some(group) => whole(group, "amount")
                .ok_or_else(|| super::documents::corrupt(names::GRANTS, tenant.as_str(), "an unreadable sum")),
        }
    }
}
