//! The ChangeRequest's decisions: given the current state and a command, which events happen, or which
//! rule the command breaks. Pure and synchronous; `handle` only writes what `decide` returns.

use super::{
    ChangeRequest, ChangeRequestCommand, ChangeRequestError, ChangeRequestEvent,
    ChangeRequestStatus, ExceptionKind,
};
use crate::{ChangeRequestId, ExceptionId, UserId};

impl ChangeRequest {
    /// The id, requester and status of a change request that exists.
    fn existing(
        &self,
    ) -> Result<(ChangeRequestId, UserId, ChangeRequestStatus), ChangeRequestError> {
        match (self.id, self.user, self.status) {
            (Some(id), Some(user), Some(status)) => Ok((id, user, status)),
            _ => Err(ChangeRequestError::NotFound),
        }
    }

    /// Decides which events `command` produces, without changing anything. Amending with a report id
    /// already recorded produces none.
    pub(super) fn decide(
        &self,
        command: ChangeRequestCommand,
    ) -> Result<Vec<ChangeRequestEvent>, ChangeRequestError> {
        use ChangeRequestCommand as C;
        use ChangeRequestError as E;
        use ChangeRequestEvent as Ev;
        use ChangeRequestStatus as S;

        if let C::OpenChangeRequest {
            change_request_id,
            agent,
            user,
            team,
            rule,
            file,
            layer,
            original_hash,
            new_hash,
            diff,
            timeout_at,
            report_id,
            at,
        } = command
        {
            if self.exists() {
                return Err(E::AlreadyExists);
            }
            if timeout_at <= at {
                return Err(E::TimeoutInPast);
            }
            return Ok(vec![Ev::ChangeRequestOpened {
                change_request_id,
                agent,
                user,
                team,
                rule,
                file,
                layer,
                original_hash,
                new_hash,
                diff,
                timeout_at,
                report_id,
                at,
            }]);
        }

        let (change_request_id, requester, status) = self.existing()?;
        let pending = || {
            if status == S::Pending {
                Ok(())
            } else {
                Err(E::NotPending)
            }
        };
        let not_requester = |by: UserId| {
            if by == requester {
                Err(E::SelfDecision)
            } else {
                Ok(())
            }
        };
        let event = match command {
            C::OpenChangeRequest { .. } => return Err(E::AlreadyExists),
            C::AmendChangeRequest {
                by,
                new_hash,
                diff,
                report_id,
                at,
            } => {
                if self.report_ids.contains(&report_id) {
                    return Ok(Vec::new());
                }
                pending()?;
                if Some(by) != self.agent {
                    return Err(E::NotReportingAgent);
                }
                Ev::ChangeRequestAmended {
                    change_request_id,
                    agent: by,
                    new_hash,
                    diff,
                    report_id,
                    at,
                }
            }
            C::ApproveChange { by, at } => {
                pending()?;
                not_requester(by)?;
                Ev::ChangeApproved {
                    change_request_id,
                    by,
                    at,
                }
            }
            C::RejectChange { by, reason, at } => {
                pending()?;
                not_requester(by)?;
                Ev::ChangeRejected {
                    change_request_id,
                    by,
                    reason,
                    at,
                }
            }
            C::AutoRevert { at } => {
                pending()?;
                let timeout_at = self.timeout_at.ok_or(E::NotFound)?;
                if at < timeout_at {
                    return Err(E::NotTimedOut { timeout_at });
                }
                Ev::ChangeAutoReverted {
                    change_request_id,
                    timeout_at,
                    at,
                }
            }
            C::RequestException {
                exception_id,
                by,
                justification,
                kind,
                at,
            } => {
                match status {
                    S::ExceptionRequested => return Err(E::ExceptionAlreadyRequested),
                    S::Rejected | S::AutoReverted | S::ExceptionDenied => {}
                    S::ExceptionGranted if !self.exception_active(at) => {}
                    _ => return Err(E::ExceptionNotAllowed),
                }
                if by != requester {
                    return Err(E::NotRequester);
                }
                if let ExceptionKind::TimeLimited { until } = kind
                    && until <= at
                {
                    return Err(E::ExpiryInPast);
                }
                Ev::ExceptionRequested {
                    change_request_id,
                    exception_id,
                    by,
                    justification,
                    kind,
                    at,
                }
            }
            C::GrantException { by, until, at } => {
                let exception_id = self.pending_exception()?;
                not_requester(by)?;
                if until.is_some_and(|until| until <= at) {
                    return Err(E::ExpiryInPast);
                }
                Ev::ExceptionGranted {
                    change_request_id,
                    exception_id,
                    by,
                    until,
                    at,
                }
            }
            C::DenyException { by, reason, at } => {
                let exception_id = self.pending_exception()?;
                not_requester(by)?;
                Ev::ExceptionDenied {
                    change_request_id,
                    exception_id,
                    by,
                    reason,
                    at,
                }
            }
            C::Withdraw { by, at } => {
                pending()?;
                if by != requester {
                    return Err(E::NotRequester);
                }
                Ev::ChangeRequestWithdrawn {
                    change_request_id,
                    by,
                    at,
                }
            }
        };
        Ok(vec![event])
    }

    fn pending_exception(&self) -> Result<ExceptionId, ChangeRequestError> {
        match self.exception() {
            Some(exception)
                if self.status == Some(ChangeRequestStatus::ExceptionRequested)
                    && exception.resolution.is_none() =>
            {
                Ok(exception.id)
            }
            _ => Err(ChangeRequestError::NoPendingException),
        }
    }
}
