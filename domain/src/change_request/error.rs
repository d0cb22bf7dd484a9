//! Why a change request command was refused.

use chrono::{DateTime, Utc};

/// A change request command broke one of its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRequestError {
    /// The change request does not exist.
    #[error("change request not found")]
    NotFound,
    /// `OpenChangeRequest` on a change request that already exists.
    #[error("change request already exists")]
    AlreadyExists,
    /// `OpenChangeRequest` with a timeout that is not after the time of opening.
    #[error("the timeout must be after the time the change request is opened")]
    TimeoutInPast,
    /// A command that needs a pending change request (amend, approve, reject, auto-revert, withdraw).
    #[error("change request is not pending")]
    NotPending,
    /// `AmendChangeRequest` from another agent than the one that reported the change.
    #[error("only the reporting agent can amend a change request")]
    NotReportingAgent,
    /// The developer who made the change tried to decide on it (or on their own exception).
    #[error("the developer who made a change cannot decide on it")]
    SelfDecision,
    /// `AutoRevert` before the timeout.
    #[error("change request does not time out before {timeout_at}")]
    NotTimedOut {
        /// When it times out.
        timeout_at: DateTime<Utc>,
    },
    /// `RequestException` on a change request that was not rejected or reverted (or whose granted
    /// exception still holds).
    #[error("an exception can only be requested for a rejected or reverted change")]
    ExceptionNotAllowed,
    /// `RequestException` or `Withdraw` by someone other than the developer who made the change.
    #[error("only the developer who made the change can do this")]
    NotRequester,
    /// `RequestException` while another exception request is pending.
    #[error("an exception request is already pending")]
    ExceptionAlreadyRequested,
    /// `GrantException` or `DenyException` without a pending exception request.
    #[error("no exception request is pending")]
    NoPendingException,
    /// An exception that would end at or before the time it is requested or granted.
    #[error("an exception must end after it starts")]
    ExpiryInPast,
}
