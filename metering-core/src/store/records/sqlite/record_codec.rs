//! The bytes of one ledger record in a journal frame.
//!
//! A payload starts with its format: [`BINARY_V1`] for the compact binary layout written
//! now, or `{` for the JSON that earlier versions wrote, which replay still reads.
//!
//! The binary layout, little-endian, each field in this order: tenant id, event id,
//! service, endpoint (strings: a u32 length, then UTF-8), method (code), credits used
//! (u64), premium (bool), feature, region (optional strings), event time (i64
//! microseconds), fingerprint (u64), decision time (i64 microseconds); then the decision:
//! its event id, allowed (bool), reason (code, 0 for none), credits charged (u64), credits
//! remaining (i64), the number of windows (u8) and per window its length (code), limit,
//! remaining (u32 each) and reset (u64), retry-after (optional u64); then the status
//! (optional u16) and counted (bool); then, only for a call admitted fail-open, one byte 1
//! (records without it, all those written before it existed included, are not). A bool is one byte, 0 or 1; an optional value is a
//! byte, 0 for none or 1 followed by the value. The codes below are part of the format:
//! a variant added later takes a new code, never an old one.

use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason, WindowStatus};
use crate::error::Error;
use crate::event::{Event, EventId, Method};
use crate::ledger::LedgerRecord;
use crate::plan::Per;
use crate::tenant::TenantId;

/// The first byte of a payload in the binary layout.
const BINARY_V1: u8 = 1;

/// The first byte of a JSON payload.
const JSON_OPEN: u8 = b'{';

/// Appends `record`'s payload to `out`.
pub(super) fn encode(record: &LedgerRecord, out: &mut Vec<u8>) -> Result<(), Error> {
    let e = &record.event;
    let d = &record.decision;
    out.push(BINARY_V1);
    put_str(out, e.tenant_id.as_str())?;
    put_str(out, e.event_id.as_str())?;
    put_str(out, &e.service_name)?;
    put_str(out, &e.endpoint)?;
    out.push(method_code(e.method));
    out.extend_from_slice(&e.credits_used.to_le_bytes());
    out.push(u8::from(e.premium));
    put_opt(out, e.feature.as_deref(), put_str)?;
    put_opt(out, e.region.as_deref(), put_str)?;
    out.extend_from_slice(&e.timestamp.as_micros().to_le_bytes());
    out.extend_from_slice(&e.fingerprint.to_le_bytes());
    out.extend_from_slice(&record.decided_at.as_micros().to_le_bytes());
    put_str(out, d.event_id.as_str())?;
    out.push(u8::from(d.allowed));
    out.push(d.reason.map_or(0, reason_code));
    out.extend_from_slice(&d.credits_charged.to_le_bytes());
    out.extend_from_slice(&d.credits_remaining.to_le_bytes());
    let windows = u8::try_from(d.limits.len()).map_err(|_| unencodable("it has too many windows"))?;
    out.push(windows);
    for w in &d.limits {
        out.push(per_code(w.window));
        out.extend_from_slice(&w.limit.to_le_bytes());
        out.extend_from_slice(&w.remaining.to_le_bytes());
        out.extend_from_slice(&w.reset.to_le_bytes());
    }
    put_opt(out, d.retry_after.map(u64::to_le_bytes), put_bytes)?;
    put_opt(out, record.status.map(u16::to_le_bytes), put_bytes)?;
    out.push(u8::from(record.counted));
    if record.fail_open {
        out.push(1);
    }
    Ok(())
}

/// The record in a payload, binary or JSON; anything else is corruption.
pub(super) fn decode(payload: &[u8]) -> Result<LedgerRecord, Error> {
    match payload.first() {
        Some(&BINARY_V1) => Reader { rest: &payload[1..] }.record(),
        Some(&JSON_OPEN) => serde_json::from_slice(payload).map_err(|_| corrupt("a JSON payload is not a record")),
        Some(other) => Err(corrupt(&format!("unknown payload format {other}"))),
        None => Err(corrupt("an empty payload")),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    let len = u32::try_from(s.len()).map_err(|_| unencodable("a string is too long"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_bytes<const N: usize>(out: &mut Vec<u8>, bytes: [u8; N]) -> Result<(), Error> {
    out.extend_from_slice(&bytes);
    Ok(())
}

/// An optional value: 0, or 1 followed by what `put` writes of it.
fn put_opt<T>(
    out: &mut Vec<u8>,
    value: Option<T>,
    put: impl FnOnce(&mut Vec<u8>, T) -> Result<(), Error>,
) -> Result<(), Error> {
    match value {
        Some(v) => {
            out.push(1);
            put(out, v)
        }
        None => {
            out.push(0);
            Ok(())
        }
    }
}

fn method_code(m: Method) -> u8 {
    match m {
        Method::Get => 1,
        Method::Post => 2,
        Method::Put => 3,
        Method::Patch => 4,
        Method::Delete => 5,
        Method::Head => 6,
        Method::Options => 7,
    }
}

fn method_of(code: u8) -> Option<Method> {
    Some(match code {
        1 => Method::Get,
        2 => Method::Post,
        3 => Method::Put,
        4 => Method::Patch,
        5 => Method::Delete,
        6 => Method::Head,
        7 => Method::Options,
        _ => return None,
    })
}

fn reason_code(r: DenyReason) -> u8 {
    match r {
        DenyReason::TenantSuspended => 1,
        DenyReason::PremiumNotInPlan => 2,
        DenyReason::RateLimited => 3,
        DenyReason::InsufficientCredits => 4,
    }
}

fn reason_of(code: u8) -> Option<Option<DenyReason>> {
    Some(match code {
        0 => None,
        1 => Some(DenyReason::TenantSuspended),
        2 => Some(DenyReason::PremiumNotInPlan),
        3 => Some(DenyReason::RateLimited),
        4 => Some(DenyReason::InsufficientCredits),
        _ => return None,
    })
}

fn per_code(p: Per) -> u8 {
    match p {
        Per::Second => 1,
        Per::Minute => 2,
        Per::Hour => 3,
        Per::Day => 4,
        Per::Month => 5,
    }
}

fn per_of(code: u8) -> Option<Per> {
    Some(match code {
        1 => Per::Second,
        2 => Per::Minute,
        3 => Per::Hour,
        4 => Per::Day,
        5 => Per::Month,
        _ => return None,
    })
}

fn corrupt(why: &str) -> Error {
    Error::Corrupt(format!("a ledger journal frame is not a ledger record: {why}"))
}

fn unencodable(why: &str) -> Error {
    Error::Corrupt(format!("a ledger record cannot be encoded: {why}"))
}

/// Reads a binary payload's fields in order; every read checks what is left.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn record(mut self) -> Result<LedgerRecord, Error> {
        let tenant_id = TenantId::new(self.string("tenant id")?).map_err(|_| corrupt("bad tenant id"))?;
        let event_id = self.event_id()?;
        let service_name = self.string("service")?;
        let endpoint = self.string("endpoint")?;
        let method = method_of(self.u8("method")?).ok_or_else(|| corrupt("unknown method"))?;
        let event = Event {
            event_id,
            tenant_id,
            service_name,
            endpoint,
            method,
            credits_used: self.u64("credits used")?,
            premium: self.bool("premium")?,
            feature: self.opt("feature", |r| r.string("feature"))?,
            region: self.opt("region", |r| r.string("region"))?,
            timestamp: Timestamp::from_micros(self.i64("event time")?),
            fingerprint: self.u64("fingerprint")?,
        };
        let decided_at = Timestamp::from_micros(self.i64("decision time")?);
        let decision_event_id = self.event_id()?;
        let allowed = self.bool("allowed")?;
        let reason = reason_of(self.u8("reason")?).ok_or_else(|| corrupt("unknown reason"))?;
        let credits_charged = self.u64("credits charged")?;
        let credits_remaining = self.i64("credits remaining")?;
        let windows = self.u8("windows")?;
        let limits = (0..windows).map(|_| self.window()).collect::<Result<Vec<_>, _>>()?;
        let retry_after = self.opt("retry-after", |r| r.u64("retry-after"))?;
        let decision = Decision {
            event_id: decision_event_id,
            allowed,
            reason,
            credits_charged,
            credits_remaining,
            limits,
            retry_after,
        };
        let status = self.opt("status", |r| r.array("status").map(u16::from_le_bytes))?;
        let counted = self.bool("counted")?;
        let fail_open = !self.rest.is_empty();
        if fail_open && self.u8("fail open")? != 1 {
            return Err(corrupt("a fail-open mark other than 1"));
        }
        if !self.rest.is_empty() {
            return Err(corrupt("bytes after the record"));
        }
        Ok(LedgerRecord { event, decided_at, decision, status, counted, fail_open })
    }

    fn window(&mut self) -> Result<WindowStatus, Error> {
        Ok(WindowStatus {
            window: per_of(self.u8("window")?).ok_or_else(|| corrupt("unknown window"))?,
            limit: u32::from_le_bytes(self.array("window limit")?),
            remaining: u32::from_le_bytes(self.array("window remaining")?),
            reset: self.u64("window reset")?,
        })
    }

    fn event_id(&mut self) -> Result<EventId, Error> {
        EventId::new(self.string("event id")?).map_err(|_| corrupt("bad event id"))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], Error> {
        if self.rest.len() < n {
            return Err(corrupt(&format!("cut short in its {what}")));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    fn bool(&mut self, what: &str) -> Result<bool, Error> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt(&format!("its {what} is not a bool or option tag"))),
        }
    }

    fn u64(&mut self, what: &str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, Error> {
        let len = u32::from_le_bytes(self.array(what)?) as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(&format!("its {what} is not UTF-8")))
    }

    /// An optional value: its tag, then, if present, what `read` reads.
    fn opt<T>(&mut self, what: &str, read: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<Option<T>, Error> {
        if self.bool(what)? { read(self).map(Some) } else { Ok(None) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ledger::sample_record;

    fn encoded(record: &LedgerRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode(record, &mut out).unwrap();
        out
    }

    /// A denied record that uses every optional field and every window length.
    fn full_record() -> LedgerRecord {
        let mut r = sample_record("acme", "full-1", 0);
        r.event.method = Method::Options;
        r.event.premium = true;
        r.event.feature = Some("ml".into());
        r.event.region = Some("eu-west-1".into());
        r.event.credits_used = u64::MAX;
        r.event.fingerprint = 0xdead_beef_0000_0001;
        r.event.timestamp = Timestamp::from_micros(-5);
        r.decided_at = Timestamp::from_micros(i64::MAX);
        r.decision.allowed = false;
        r.decision.reason = Some(DenyReason::RateLimited);
        r.decision.credits_remaining = -40;
        r.decision.retry_after = Some(17);
        r.decision.limits = Per::ALL
            .into_iter()
            .enumerate()
            .map(|(i, window)| WindowStatus {
                window,
                limit: 100 + i as u32,
                remaining: i as u32,
                reset: 60 * i as u64,
            })
            .collect();
        r.status = None;
        r.counted = false;
        r
    }

    #[test]
    fn records_read_back_as_written() {
        let fail_open = LedgerRecord { fail_open: true, ..sample_record("acme", "b", 2) };
        for record in [sample_record("acme", "a", 3), full_record(), fail_open] {
            assert_eq!(decode(&encoded(&record)).unwrap(), record);
        }
    }

    #[test]
    fn a_fail_open_mark_is_one_trailing_byte_and_payloads_without_it_read_as_not() {
        let plain = encoded(&sample_record("acme", "a", 3));
        let marked = encoded(&LedgerRecord { fail_open: true, ..sample_record("acme", "a", 3) });
        assert_eq!(marked.len(), plain.len() + 1);
        assert!(!decode(&plain).unwrap().fail_open);
        assert!(matches!(decode(&[marked.as_slice(), &[1]].concat()), Err(Error::Corrupt(_))));
    }

    #[test]
    fn every_code_reads_back_as_its_variant() {
        for m in [Method::Get, Method::Post, Method::Put, Method::Patch, Method::Delete, Method::Head, Method::Options]
        {
            assert_eq!(method_of(method_code(m)), Some(m));
        }
        for r in [
            DenyReason::TenantSuspended,
            DenyReason::PremiumNotInPlan,
            DenyReason::RateLimited,
            DenyReason::InsufficientCredits,
        ] {
            assert_eq!(reason_of(reason_code(r)), Some(Some(r)));
        }
        for p in Per::ALL {
            assert_eq!(per_of(per_code(p)), Some(p));
        }
    }

    #[test]
    fn json_payloads_of_earlier_versions_still_read() {
        let mut record = full_record();
        // JSON holds instants as RFC 3339 text, which cannot reach the extremes.
        record.decided_at = Timestamp::from_secs(1_800_000_000);
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(decode(&json).unwrap(), record);
    }

    #[test]
    fn the_binary_payload_is_much_smaller_than_json() {
        let record = sample_record("acme", "0190f5e4-7d3a-7c41-9a55-3f1e2d4c5b6a", 1);
        let (binary, json) = (encoded(&record).len(), serde_json::to_vec(&record).unwrap().len());
        assert!(binary * 2 < json, "binary {binary} bytes, JSON {json}");
    }

    #[test]
    fn cut_short_trailing_or_unknown_payloads_are_corruption() {
        let bytes = encoded(&full_record());
        for cut in 0..bytes.len() {
            assert!(matches!(decode(&bytes[..cut]), Err(Error::Corrupt(_))), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(Error::Corrupt(_))));
        let mut unknown = bytes;
        unknown[0] = 2;
        assert!(matches!(decode(&unknown), Err(Error::Corrupt(_))));
    }

    #[test]
    fn invalid_ids_and_codes_are_corruption() {
        let record = sample_record("acme", "a", 1);
        let bytes = encoded(&record);
        // Byte 5 is the tenant id's first character; byte 1 + 4 + 4 + 4 + 1 + 4 + 3 + 4 + 2
        // is the method code (tenant "acme", event id "a", service "svc", endpoint "/x").
        let method_at = 1 + 4 + 4 + 4 + 1 + 4 + 3 + 4 + 2;
        assert_eq!(bytes[method_at], method_code(Method::Get));
        for (at, value) in [(5, b' '), (method_at, 0), (method_at, 8), (method_at + 9, 2)] {
            let mut bad = bytes.clone();
            bad[at] = value;
            assert!(matches!(decode(&bad), Err(Error::Corrupt(_))), "byte {at} set to {value}");
        }
    }

    proptest! {
        #[test]
        fn no_payload_makes_decoding_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), first in 0u8..3) {
            if let Some(b) = bytes.first_mut() {
                *b = first;
            }
            let _ = decode(&bytes);
        }

        #[test]
        fn flipping_any_byte_never_panics(at in 0usize..200, bit in 0u8..8) {
            let mut bytes = encoded(&full_record());
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let _ = decode(&bytes);
        }
    }
}
