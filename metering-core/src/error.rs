//! Errors. A denied call is not an error (it is a [`Decision`](crate::Decision));
//! an [`Error`] means the call could not be decided.

use std::fmt;

use crate::event::EventId;
use crate::plan::PlanId;
use crate::tenant::TenantId;

/// What is wrong with one field of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldProblem {
    /// Empty or only white space.
    Empty,
    /// Longer than `max` characters.
    TooLong {
        /// The most characters allowed.
        max: usize,
    },
    /// Contains a control character.
    ControlCharacter,
    /// Contains a character outside the allowed set.
    BadCharacter,
    /// Not one of the known HTTP methods.
    UnknownMethod,
    /// A negative number where only zero or more is allowed.
    Negative,
    /// Larger than `max`.
    TooLarge {
        /// The largest value allowed.
        max: u64,
    },
    /// A timestamp older than the accepted age.
    TooOld {
        /// The oldest accepted age, in seconds.
        max_age_secs: u64,
    },
    /// A timestamp too far in the future.
    InFuture {
        /// The furthest accepted distance ahead, in seconds.
        max_ahead_secs: u64,
    },
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Empty => write!(f, "must not be empty"),
            FieldProblem::TooLong { max } => write!(f, "must be at most {max} characters"),
            FieldProblem::ControlCharacter => write!(f, "must not contain control characters"),
            FieldProblem::BadCharacter => write!(f, "contains a character that is not allowed"),
            FieldProblem::UnknownMethod => write!(f, "must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
            FieldProblem::Negative => write!(f, "must not be negative"),
            FieldProblem::TooLarge { max } => write!(f, "must be at most {max}"),
            FieldProblem::TooOld { max_age_secs } => write!(f, "must be at most {max_age_secs} seconds in the past"),
            FieldProblem::InFuture { max_ahead_secs } => {
                write!(f, "must be at most {max_ahead_secs} seconds in the future")
            }
        }
    }
}

/// An invalid input field: which one, and what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {problem}")]
pub struct FieldError {
    /// The field's name as in the JSON input.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: FieldProblem,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: &'static str, problem: FieldProblem) -> Self {
        FieldError { field, problem }
    }
}

/// An invalid plan or override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The id is not 1-64 of `[a-z0-9_-]`.
    #[error("invalid `id`: must be 1-64 of a-z, 0-9, '_' and '-'")]
    InvalidId,
    /// The name is empty, longer than 128 characters or holds control characters.
    #[error("invalid `name`: must be 1-128 characters without control characters")]
    InvalidName,
    /// A credit amount over the maximum.
    #[error("invalid `{field}`: too many credits")]
    TooManyCredits {
        /// The field at fault.
        field: &'static str,
    },
    /// Two windows of the same length, or more than five windows.
    #[error("invalid `limits`: at most one window per second, minute, hour, day and month")]
    DuplicateWindow,
    /// A smooth window finer than one call per microsecond.
    #[error("invalid `limits`: at most 1,000,000 calls per second, minute or hour")]
    WindowTooFine,
    /// A premium feature list that is too long or holds a bad name.
    #[error("invalid `premium`: at most 64 features of [A-Za-z0-9_.:-]")]
    InvalidPremium,
    /// More pricing rules than allowed.
    #[error("invalid `pricing`: too many rules")]
    TooManyRules,
    /// A pricing rule with a bad endpoint, feature or region.
    #[error("invalid `pricing`: bad endpoint, feature or region")]
    InvalidPricing,
}

/// Why the engine could not decide or store something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event (or another input) has an invalid field.
    #[error(transparent)]
    InvalidInput(#[from] FieldError),
    /// The plan or override is invalid.
    #[error(transparent)]
    InvalidPlan(#[from] PlanError),
    /// No tenant with this id.
    #[error("unknown tenant `{0}`")]
    UnknownTenant(TenantId),
    /// No plan with this id.
    #[error("unknown plan `{0}`")]
    UnknownPlan(PlanId),
    /// A record with this key exists already (a tenant, user or plan).
    #[error("`{0}` exists already")]
    AlreadyExists(String),
    /// No record with this key to change (a user, a key).
    #[error("no {0}")]
    NotFound(String),
    /// The `event_id` was seen before with different content.
    #[error("event `{0}` was already recorded with different content")]
    IdempotencyConflict(EventId),
    /// A credit adjustment would take the balance below its floor.
    #[error("the adjustment would take the balance below its floor")]
    BelowFloor,
    /// The store could not be reached or failed; the call was not decided.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store holds data the engine cannot read.
    #[error("storage corrupt: {0}")]
    Corrupt(String),
    /// The engine is shutting down and takes no more work.
    #[error("the engine is shutting down")]
    ShuttingDown,
}
