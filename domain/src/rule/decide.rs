//! The Rule's decisions: given the current state and a command, which events happen, or which rule
//! the command breaks. Pure and synchronous; `handle` only writes what `decide` returns.

use super::{Rule, RuleCommand, RuleError, RuleEvent, RuleSpec, WorkingRevision, WorkingState};
use crate::value::{Enforcement, Layer};
use crate::{RuleId, UserId};
use chrono::{DateTime, Utc};

impl Rule {
    /// The id and layer of a rule that exists and is not archived.
    fn live(&self) -> Result<(RuleId, Layer), RuleError> {
        let (Some(id), Some(layer)) = (self.id, self.layer) else {
            return Err(RuleError::NotFound);
        };
        if self.archived_at.is_some() {
            return Err(RuleError::Archived);
        }
        Ok((id, layer))
    }

    /// Decides which events `command` produces, without changing anything.
    pub(super) fn decide(&self, command: RuleCommand) -> Result<Vec<RuleEvent>, RuleError> {
        if let RuleCommand::DraftRule {
            rule_id,
            spec,
            by,
            at,
        } = command
        {
            return self.draft(rule_id, spec, by, at);
        }
        let (rule_id, layer) = self.live()?;
        match command {
            RuleCommand::DraftRule { .. } => Err(RuleError::AlreadyExists),
            RuleCommand::EditDraft { spec, by, at } => {
                let working = self
                    .working
                    .as_ref()
                    .filter(|w| !matches!(w.state, WorkingState::Pending { .. }))
                    .ok_or(RuleError::NotEditable)?;
                check_spec(layer, &spec)?;
                Ok(vec![RuleEvent::RuleDraftEdited {
                    rule_id,
                    revision: working.number,
                    spec,
                    by,
                    at,
                }])
            }
            RuleCommand::SubmitRule { by, at } => {
                let working = self
                    .working
                    .as_ref()
                    .filter(|w| !matches!(w.state, WorkingState::Pending { .. }))
                    .ok_or(RuleError::NotSubmittable)?;
                Ok(vec![RuleEvent::RuleSubmitted {
                    rule_id,
                    revision: working.number,
                    by,
                    at,
                }])
            }
            RuleCommand::ApproveRule {
                approver,
                quorum,
                at,
            } => self.approve(rule_id, approver, quorum.get(), at),
            RuleCommand::RejectRule {
                reviewer,
                reason,
                at,
            } => {
                let working = self.pending()?;
                Ok(vec![RuleEvent::RuleRejected {
                    rule_id,
                    revision: working.number,
                    reviewer,
                    reason,
                    at,
                }])
            }
            RuleCommand::ReviseRule { spec, by, at } => {
                let approved = match (&self.working, &self.approved) {
                    (None, Some(approved)) => approved,
                    // An existing rule always has a working or an approved revision.
                    _ => return Err(RuleError::RevisionAlreadyOpen),
                };
                check_spec(layer, &spec)?;
                Ok(vec![RuleEvent::RuleRevisionOpened {
                    rule_id,
                    revision: approved.number.saturating_add(1),
                    spec,
                    by,
                    at,
                }])
            }
            RuleCommand::SetOrganizationEnforcement {
                enforcement,
                by,
                at,
            } => {
                if layer != Layer::Organization {
                    return Err(RuleError::NotOrganizationLayer);
                }
                Ok(vec![RuleEvent::OrganizationEnforcementSet {
                    rule_id,
                    enforcement,
                    by,
                    at,
                }])
            }
            RuleCommand::ArchiveRule { by, at } => {
                Ok(vec![RuleEvent::RuleArchived { rule_id, by, at }])
            }
        }
    }

    fn draft(
        &self,
        rule_id: RuleId,
        spec: RuleSpec,
        by: UserId,
        at: DateTime<Utc>,
    ) -> Result<Vec<RuleEvent>, RuleError> {
        if self.exists() {
            return Err(RuleError::AlreadyExists);
        }
        check_triggers(&spec)?;
        let is_organization = spec.layer == Layer::Organization;
        let mut events = vec![RuleEvent::RuleDrafted {
            rule_id,
            revision: 1,
            spec,
            by,
            at,
        }];
        // Organization rules apply to every team from the moment they are approved, so they need an
        // enforcement from the start; block is the safe default.
        if is_organization {
            events.push(RuleEvent::OrganizationEnforcementSet {
                rule_id,
                enforcement: Enforcement::BLOCK,
                by,
                at,
            });
        }
        Ok(events)
    }

    fn pending(&self) -> Result<&WorkingRevision, RuleError> {
        self.working
            .as_ref()
            .filter(|w| matches!(w.state, WorkingState::Pending { .. }))
            .ok_or(RuleError::NotPending)
    }

    fn approve(
        &self,
        rule_id: RuleId,
        approver: UserId,
        quorum: u32,
        at: DateTime<Utc>,
    ) -> Result<Vec<RuleEvent>, RuleError> {
        let working = self.pending()?;
        if working.is_written_by(approver) {
            return Err(RuleError::SelfApproval);
        }
        let approvals = working.approvals();
        if approvals.iter().any(|a| a.by == approver) {
            return Err(RuleError::AlreadyApprovedBy { approver });
        }
        let count = u32::try_from(approvals.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let mut events = vec![RuleEvent::RuleApprovalRecorded {
            rule_id,
            revision: working.number,
            approver,
            approvals: count,
            quorum,
            at,
        }];
        if count >= quorum {
            let approvers = approvals.iter().map(|a| a.by).chain([approver]).collect();
            events.push(RuleEvent::RuleRevisionApproved {
                rule_id,
                revision: working.number,
                spec: working.spec.clone(),
                approvers,
                at,
            });
        }
        Ok(events)
    }
}

/// Checks a revision's spec against the rule's layer.
fn check_spec(layer: Layer, spec: &RuleSpec) -> Result<(), RuleError> {
    if spec.layer != layer {
        return Err(RuleError::LayerChanged {
            from: layer,
            to: spec.layer,
        });
    }
    check_triggers(spec)
}

/// Path triggers select files of a project; on the other layers they would mean nothing.
fn check_triggers(spec: &RuleSpec) -> Result<(), RuleError> {
    if spec.layer != Layer::Project && !spec.triggers.is_empty() {
        return Err(RuleError::TriggersOnlyForProjectLayer);
    }
    Ok(())
}
