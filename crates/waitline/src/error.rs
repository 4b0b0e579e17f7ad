//! The one error type of the engine, with the Telnyx code, title and HTTP status of each case
//! (docs/behaviour.md §6), so that every frontend maps errors in one place.

use std::sync::Arc;

/// Why a parameter was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamProblem {
    /// A required parameter is absent (`10004`).
    Missing,
    /// A value outside an enumeration (`10032`).
    InvalidEnum,
    /// A value out of range, of the wrong type or of a bad length (`10033`).
    OutOfRange,
}

/// What a caller needs to call back a kept-after-hangup call that a bridge found dead.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CallbackInfo {
    /// The dead call.
    pub call_control_id: Arc<str>,
    /// Its caller.
    pub from: Arc<str>,
    /// Its callee.
    pub to: Arc<str>,
    /// Its connection.
    pub connection_id: Arc<str>,
    /// Its last client state (left out of the JSON when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_state: Option<Arc<str>>,
}

/// Everything a command can answer instead of success. A rejected command changes nothing,
/// except where a variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is missing, outside its enumeration or out of range.
    #[error("{detail}")]
    InvalidParameter {
        /// Which rule the value broke.
        problem: ParamProblem,
        /// The parameter, by its name on the wire, e.g. `max_wait_time_secs` (a frontend
        /// turns it into its own form: the HTTP service into the JSON pointer
        /// `/max_wait_time_secs`).
        parameter: &'static str,
        /// Human-readable explanation.
        detail: String,
    },
    /// No call with this `call_control_id` (for this tenant).
    #[error("Call control ID is not valid or the call does not exist.")]
    CallNotFound,
    /// Dial with an adopted `call_control_id` that is already known.
    #[error("A call with this call_control_id already exists.")]
    CallExists,
    /// The call has ended. When a bridge to a queue found its head dead (kept after hangup),
    /// that head has been removed and `callback` says how to reach it again.
    #[error("Call has already ended.")]
    CallEnded {
        /// Present when the error comes from a queue head that was kept after hangup.
        callback: Option<Box<CallbackInfo>>,
    },
    /// The queue is at `max_size`.
    #[error("The queue is full.")]
    QueueFull,
    /// The call is already a member of that queue.
    #[error("The call is already in this queue.")]
    AlreadyInQueue,
    /// `leave_queue` on a call that is in no queue.
    #[error("The call is not in a queue.")]
    NotInQueue,
    /// Bridge to a queue that does not exist or has no member.
    #[error("The queue is empty.")]
    QueueEmpty,
    /// A queue endpoint named a queue that does not exist.
    #[error("Queue not found.")]
    QueueNotFound,
    /// A queue-call endpoint named a call that is not a member of that queue.
    #[error("The call is not a member of this queue.")]
    QueueCallNotFound,
    /// Delete of a queue that still has members.
    #[error("Unable to delete queue: the queue is not empty.")]
    QueueNotEmpty,
    /// Create of a queue whose name is taken.
    #[error("A queue with this name already exists.")]
    QueueExists,
    /// A tenant's cap on live calls or on queues.
    #[error("Limit reached: at most {limit} {what} per tenant.")]
    LimitReached {
        /// `"live calls"` or `"queues"`.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
}

impl Error {
    /// The Telnyx error code (digits, as text on the wire).
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidParameter { problem: ParamProblem::Missing, .. } => "10004",
            Self::InvalidParameter { problem: ParamProblem::InvalidEnum, .. } => "10032",
            Self::InvalidParameter { problem: ParamProblem::OutOfRange, .. } => "10033",
            Self::CallNotFound | Self::CallExists => "90015",
            Self::CallEnded { .. } => "90018",
            Self::QueueFull => "90036",
            Self::AlreadyInQueue => "90038",
            Self::QueueNotEmpty => "90050",
            Self::QueueEmpty => "95001",
            Self::NotInQueue => "95002",
            Self::QueueExists => "95003",
            Self::LimitReached { .. } => "95004",
            Self::QueueNotFound | Self::QueueCallNotFound => "10005",
        }
    }

    /// The Telnyx error title.
    #[must_use]
    pub const fn title(&self) -> &'static str {
        match self {
            Self::InvalidParameter { problem: ParamProblem::Missing, .. } => "Missing required parameter",
            Self::InvalidParameter { problem: ParamProblem::InvalidEnum, .. } => "Invalid enumerated value",
            Self::InvalidParameter { problem: ParamProblem::OutOfRange, .. } => "Value outside of range",
            Self::CallNotFound | Self::CallExists => "Invalid Call Control ID",
            Self::CallEnded { .. } => "Call has already ended",
            Self::QueueFull => "Queue full",
            Self::AlreadyInQueue => "Call already in queue",
            Self::QueueNotEmpty => "Unable to delete queue",
            Self::QueueEmpty => "Queue empty",
            Self::NotInQueue => "Call not in a queue",
            Self::QueueExists => "Queue already exists",
            Self::LimitReached { .. } => "Limit reached",
            Self::QueueNotFound | Self::QueueCallNotFound => "Resource not found",
        }
    }

    /// The HTTP status a frontend answers with.
    #[must_use]
    pub const fn http_status(&self) -> u16 {
        match self {
            Self::QueueNotEmpty => 400,
            Self::QueueNotFound | Self::QueueCallNotFound => 404,
            Self::InvalidParameter { .. }
            | Self::CallNotFound
            | Self::CallExists
            | Self::CallEnded { .. }
            | Self::QueueFull
            | Self::AlreadyInQueue
            | Self::NotInQueue
            | Self::QueueEmpty
            | Self::QueueExists
            | Self::LimitReached { .. } => 422,
        }
    }

    /// The offending parameter, by its name on the wire, when one is to blame.
    #[must_use]
    pub const fn parameter(&self) -> Option<&'static str> {
        match self {
            Self::InvalidParameter { parameter, .. } => Some(parameter),
            _ => None,
        }
    }

    /// A required parameter is absent. Public for frontends, whose wire formats decide what
    /// "absent" is (the Rust API makes required parameters required by type).
    #[must_use]
    pub fn missing(parameter: &'static str) -> Self {
        Self::InvalidParameter {
            problem: ParamProblem::Missing,
            parameter,
            detail: format!("The '{parameter}' parameter is required."),
        }
    }

    pub(crate) fn out_of_range(parameter: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidParameter { problem: ParamProblem::OutOfRange, parameter, detail: detail.into() }
    }

    pub(crate) fn invalid_enum(parameter: &'static str, allowed: &[&str]) -> Self {
        Self::InvalidParameter {
            problem: ParamProblem::InvalidEnum,
            parameter,
            detail: format!("The '{parameter}' parameter must be one of: {}.", allowed.join(", ")),
        }
    }
}

/// A batch command ([`crate::Tenant::enqueue_many`]) stopped at a refused item: the items
/// before `index` were done, the one at `index` was refused with `error` (and changed
/// nothing), those after it were not tried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("item {index} refused: {error}")]
pub struct BatchError {
    /// The refused item's index: how many items were done.
    pub index: usize,
    /// Why it was refused.
    pub error: Error,
}

/// The result of every engine command.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_spec_code_and_status() {
        let cases = [
            (Error::missing("queue_name"), "10004", 422),
            (Error::invalid_enum("park_after_unbridge", &["self"]), "10032", 422),
            (Error::out_of_range("max_size", "x"), "10033", 422),
            (Error::CallNotFound, "90015", 422),
            (Error::CallExists, "90015", 422),
            (Error::CallEnded { callback: None }, "90018", 422),
            (Error::QueueFull, "90036", 422),
            (Error::AlreadyInQueue, "90038", 422),
            (Error::QueueNotEmpty, "90050", 400),
            (Error::QueueEmpty, "95001", 422),
            (Error::NotInQueue, "95002", 422),
            (Error::QueueExists, "95003", 422),
            (Error::LimitReached { what: "queues", limit: 1 }, "95004", 422),
            (Error::QueueNotFound, "10005", 404),
            (Error::QueueCallNotFound, "10005", 404),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.http_status(), status, "{e:?}");
            assert!(!e.title().is_empty());
        }
        assert_eq!(Error::missing("queue_name").parameter(), Some("queue_name"));
        assert_eq!(Error::missing("queue_name").to_string(), "The 'queue_name' parameter is required.");
    }
}
