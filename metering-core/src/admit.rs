//! The reference decision: an [`Admission`] and the counters it reads in, the
//! [`Decision`] and what to commit out, with no I/O.
//!
//! Every hot store decides with [`admit`] under its own atomicity (a lock, a server-side
//! script), or gives exactly its answers: the replay check comes first and is the store's
//! (it owns the seen ids), then this. In the order of the design: a denial decided before
//! the counters (suspended, premium) -> every window, all or nothing -> credits against
//! the floor -> commit.

use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason, WindowStatus};
use crate::limit::{Check, check_quota, check_smooth, next_tat, previous_tat};
use crate::plan::{Limit, MAX_LIMITS};
use crate::store::{Admission, PeriodCredits};

/// Where one of an admission's limits stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// A calendar window (`day`, `month`): the calls counted in the window the event
    /// falls in.
    Calls(u32),
    /// A smooth window (`second`, `minute`, `hour`): the GCRA's theoretical arrival time,
    /// `None` when nothing is counted.
    Tat(Option<Timestamp>),
}

impl WindowState {
    /// Nothing counted yet, in the kind of window `limit` has.
    pub fn empty(limit: Limit) -> Self {
        if limit.per.is_calendar() { WindowState::Calls(0) } else { WindowState::Tat(None) }
    }
}

/// The counters an admission reads: one state per limit, in the order of
/// [`Admission::limits`], and the credits of the billing period the event falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    windows: [WindowState; MAX_LIMITS],
    len: usize,
    /// The period's credits.
    pub credits: PeriodCredits,
}

impl Standing {
    /// Reads the state of each of `admission`'s limits with `window`.
    pub fn read(admission: &Admission, credits: PeriodCredits, mut window: impl FnMut(Limit) -> WindowState) -> Self {
        let mut windows = [WindowState::Calls(0); MAX_LIMITS];
        let len = admission.limits.len().min(MAX_LIMITS);
        for (slot, &limit) in windows.iter_mut().zip(admission.limits.iter()) {
            *slot = window(limit);
        }
        Standing { windows, len, credits }
    }

    /// The state of each limit, in order.
    pub fn windows(&self) -> &[WindowState] {
        &self.windows[..self.len]
    }
}

/// What an admitted call changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    windows: [WindowState; MAX_LIMITS],
    len: usize,
    /// Credits to add to the period's `used`.
    pub cost: u64,
}

impl Commit {
    /// The new state of each limit, in the order of [`Admission::limits`].
    pub fn windows(&self) -> &[WindowState] {
        &self.windows[..self.len]
    }
}

/// The decision on an admission, and what to commit when it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The answer.
    pub decision: Decision,
    /// What to store when allowed (`None` for a denial: nothing changes).
    pub commit: Option<Commit>,
}

/// Decides `admission` on the counters `standing` holds.
pub fn admit(a: &Admission, standing: &Standing) -> Verdict {
    let mut checks = Vec::with_capacity(standing.len);
    let mut retry_after = None::<u64>;
    for (&limit, &state) in a.limits.iter().zip(standing.windows()) {
        let check = match state {
            WindowState::Calls(count) => check_quota(limit, count, limit.per.window_containing(a.at).1, a.now),
            WindowState::Tat(tat) => check_smooth(limit, tat, a.now),
        };
        if let Check::Full { retry_after: r, .. } = check {
            retry_after = Some(retry_after.map_or(r, |x| x.max(r)));
        }
        checks.push(check);
    }
    let credits = standing.credits;
    let remaining = a.allowance as i64 + credits.granted - credits.used as i64;
    let reason = a.denial.or_else(|| {
        if retry_after.is_some() {
            Some(DenyReason::RateLimited)
        } else if remaining - (a.cost as i64) < -(a.overdraft as i64) {
            Some(DenyReason::InsufficientCredits)
        } else {
            None
        }
    });
    match reason {
        None => {
            let mut windows = standing.windows;
            for (slot, &limit) in windows.iter_mut().zip(a.limits.iter()) {
                *slot = match *slot {
                    WindowState::Calls(count) => WindowState::Calls(count.saturating_add(1)),
                    WindowState::Tat(tat) => WindowState::Tat(Some(next_tat(limit, tat, a.now))),
                };
            }
            let decision = Decision {
                event_id: a.event_id.clone(),
                allowed: true,
                reason: None,
                credits_charged: a.cost,
                credits_remaining: remaining - a.cost as i64,
                limits: checks.iter().map(Check::status).collect(),
                retry_after: None,
            };
            Verdict { decision, commit: Some(Commit { windows, len: standing.len, cost: a.cost }) }
        }
        Some(reason) => Verdict {
            decision: Decision {
                event_id: a.event_id.clone(),
                allowed: false,
                reason: Some(reason),
                credits_charged: 0,
                // Down to the floor: a move to a plan with a smaller allowance can leave
                // more used than the new plan allows, which the balance shows as overage.
                credits_remaining: remaining.max(-(a.overdraft.min(i64::MAX as u64) as i64)),
                limits: checks.iter().map(as_it_stands).collect(),
                retry_after: (reason == DenyReason::RateLimited).then_some(retry_after).flatten(),
            },
            commit: None,
        },
    }
}

/// The state of a limit after an admitted call's count is taken back.
pub fn reverted(limit: Limit, state: WindowState) -> WindowState {
    match state {
        WindowState::Calls(count) => WindowState::Calls(count.saturating_sub(1)),
        WindowState::Tat(tat) => WindowState::Tat(tat.map(|tat| previous_tat(limit, tat))),
    }
}

/// A window's status for a denied call: as it stands, the call not counted.
fn as_it_stands(check: &Check) -> WindowStatus {
    match *check {
        Check::Fits { status } => WindowStatus { remaining: (status.remaining + 1).min(status.limit), ..status },
        Check::Full { status, .. } => status,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::event::EventId;
    use crate::plan::Per;
    use crate::tenant::{BillingAnchor, TenantId};

    fn admission(limits: &[(u32, Per)], cost: u64) -> Admission {
        let now = Timestamp::from_secs(1_773_489_600);
        Admission {
            tenant: TenantId::new("acme").unwrap(),
            event_id: EventId::new("e-1").unwrap(),
            fingerprint: 7,
            now,
            at: now,
            denial: None,
            limits: limits.iter().map(|&(max, per)| Limit::new(max, per).unwrap()).collect::<Arc<[Limit]>>(),
            cost,
            period: BillingAnchor::default().period_containing(now),
            allowance: 10,
            overdraft: 0,
            remember: false,
            remember_until: now.plus(Duration::from_secs(60)),
        }
    }

    fn standing(a: &Admission, states: &[WindowState], used: u64) -> Standing {
        let mut states = states.iter();
        Standing::read(a, PeriodCredits { used, granted: 0 }, |limit| {
            states.next().copied().unwrap_or(WindowState::empty(limit))
        })
    }

    #[test]
    fn an_allowed_call_commits_every_window_and_its_cost() {
        let a = admission(&[(10, Per::Day), (5, Per::Minute)], 3);
        let v = admit(&a, &standing(&a, &[WindowState::Calls(4), WindowState::Tat(None)], 2));
        assert!(v.decision.allowed);
        assert_eq!(v.decision.credits_remaining, 5);
        let commit = v.commit.unwrap();
        assert_eq!(commit.cost, 3);
        assert_eq!(commit.windows()[0], WindowState::Calls(5));
        assert!(matches!(commit.windows()[1], WindowState::Tat(Some(_))));
        assert_eq!(v.decision.limits[0].remaining, 5);
    }

    #[test]
    fn one_full_window_denies_and_nothing_is_committed() {
        let a = admission(&[(10, Per::Day), (5, Per::Month)], 1);
        let v = admit(&a, &standing(&a, &[WindowState::Calls(3), WindowState::Calls(5)], 0));
        assert_eq!(v.decision.reason, Some(DenyReason::RateLimited));
        assert!(v.decision.retry_after.is_some());
        assert_eq!(v.commit, None);
        assert_eq!(v.decision.limits[0].remaining, 7, "the open window shown as it stands");
    }

    #[test]
    fn credits_stop_at_the_floor_and_a_prior_denial_wins() {
        let a = admission(&[], 4);
        assert_eq!(admit(&a, &standing(&a, &[], 7)).decision.reason, Some(DenyReason::InsufficientCredits));
        assert!(admit(&a, &standing(&a, &[], 6)).decision.allowed, "exactly to zero");
        let suspended = Admission { denial: Some(DenyReason::TenantSuspended), ..a };
        assert_eq!(admit(&suspended, &standing(&suspended, &[], 0)).decision.reason, Some(DenyReason::TenantSuspended));
    }

    #[test]
    fn reverting_takes_back_one_count() {
        let day = Limit::new(10, Per::Day).unwrap();
        assert_eq!(reverted(day, WindowState::Calls(3)), WindowState::Calls(2));
        assert_eq!(reverted(day, WindowState::Calls(0)), WindowState::Calls(0));
        let minute = Limit::new(5, Per::Minute).unwrap();
        assert_eq!(reverted(minute, WindowState::Tat(None)), WindowState::Tat(None));
    }
}
