//! The seam between the layer and whatever decides: the local [`Engine`] today, a client of
//! a central metering server tomorrow.

use std::future::Future;

use metering_core::{Decision, Engine, Error, Outcome, Ticket, UsageEvent};

/// Decides calls before they run and settles them after.
///
/// The layer calls [`decide`](Self::decide) before the inner service and, whatever
/// happens next (the call is allowed and answered, denied, or abandoned), hands the
/// pending call back to [`settle`](Self::settle) exactly once.
pub trait Meter: Clone + Send + Sync + 'static {
    /// A decided call waiting to be settled (the engine's [`Ticket`]).
    type Pending: Decided + Send + 'static;

    /// Decides a call; `Err` means it could not be decided (a denial is an `Ok`).
    fn decide(&self, event: UsageEvent) -> impl Future<Output = Result<Self::Pending, Error>> + Send;

    /// Records how a decided call ended. Failures are the meter's to log: the answer has
    /// gone or is going out whatever happens here.
    fn settle(&self, pending: Self::Pending, outcome: Outcome) -> impl Future<Output = ()> + Send;
}

/// A decided call that can show its [`Decision`].
pub trait Decided {
    /// The decision.
    fn decision(&self) -> &Decision;
}

impl Decided for Ticket {
    fn decision(&self) -> &Decision {
        Ticket::decision(self)
    }
}

/// The local engine: [`Engine::decide`], then [`Engine::settle_later`] (the ledger record is
/// queued, not awaited, when the engine has a group-commit writer; call
/// [`Engine::flush`] on shutdown).
impl Meter for Engine {
    type Pending = Ticket;

    fn decide(&self, event: UsageEvent) -> impl Future<Output = Result<Ticket, Error>> + Send {
        Engine::decide(self, event)
    }

    async fn settle(&self, ticket: Ticket, outcome: Outcome) {
        if let Err(e) = self.settle_later(ticket, outcome).await {
            tracing::error!(error = %e, status = ?outcome.status, "could not record a metered call");
        }
    }
}
