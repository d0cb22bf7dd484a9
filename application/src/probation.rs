//! Who counts towards a rule's quorum: an org_admin whom another admin just created, made org_admin,
//! reactivated or gave a new password is on probation, and their approval does not count until the
//! probation ends (`docs/adr/0023-quorum-one-person-cannot-stretch.md`).
//!
//! Without it one person meets the two-approval rule alone: admin A creates admin B (an address A
//! reads), signs in as B, and approves with both. Every way one admin can hand themself a second
//! identity (create it, grant it org_admin, bring a deactivated one back, reset its password and sign
//! in with it) starts a probation, so a sock puppet counts only after the organization had the time to
//! notice it (every step is an event in the log, visible to the other admins and the auditors).
//!
//! Bootstrap: the organization's first org_admins count at once until it has had enough of them to
//! review an organization rule (its author and a quorum of approvers), so a fresh installation
//! approves its first rules the same day. "Had" counts every org_admin it ever had: deactivating an
//! admin and creating a replacement does not open the bootstrap again.
//!
//! The standing is computed from the User events of the log, in commit order ([`standing`], a pure
//! function); [`Edict::check_standing`] reads them, the approver's own stream first (most approvers
//! have no recent event, and the whole user log is read only for one who has).

use crate::error::AppError;
use crate::event_log::{Checkpoint, LogFilter};
use crate::service::Edict;
use chrono::{DateTime, Duration, Utc};
use cqrs_es::Aggregate;
use edict_domain::UserId;
use edict_domain::user::{GlobalRole, User, UserEvent};
use serde::Deserialize;

/// How long an org_admin stays on probation after another admin gave them authority or credentials
/// (`EDICT_QUORUM_PROBATION_SECS`, 7 days by default; 0 turns probation off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probation {
    /// The length of a probation.
    pub window: Duration,
}

impl Default for Probation {
    fn default() -> Self {
        Probation {
            window: Duration::days(7),
        }
    }
}

impl Probation {
    /// A probation of `secs` seconds (0: none).
    pub fn from_secs(secs: u64) -> Probation {
        Probation {
            window: Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000)),
        }
    }
}

/// Why an approver does not count towards a quorum yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnProbation {
    /// What another admin did that started the probation (`was created by another admin`, …).
    pub because: &'static str,
    /// When it happened.
    pub since: DateTime<Utc>,
    /// When the probation ends.
    pub until: DateTime<Utc>,
}

impl OnProbation {
    /// The 422 answered to an approval that does not count.
    pub fn into_error(self) -> AppError {
        AppError::Rule {
            rule: "approver_on_probation".into(),
            message: format!(
                "this org_admin {} at {} and counts towards a quorum from {} on (an approval by a \
                 new or newly restored admin does not count, so one person cannot approve with a \
                 second account)",
                self.because,
                self.since
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                self.until
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        }
    }
}

/// The last time another admin gave `user` authority or credentials, and whether that step was one of
/// the organization's bootstrap admins (exempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entrusted {
    because: &'static str,
    at: DateTime<Utc>,
    bootstrap: bool,
}

/// Replays `events` (User events in commit order; those of other users are needed for the bootstrap)
/// and tells whether `user` counts towards a quorum at `now`.
///
/// `bootstrap` is how many org_admins the organization may have had, the first one included, before a
/// new one is on probation (1 + the organization quorum).
///
/// # Errors
/// [`OnProbation`] when the last step another admin took on `user` (created them, granted them
/// org_admin, reactivated them, reset their password) is less than `probation.window` old and was not
/// the making of a bootstrap admin.
pub fn standing<'a>(
    events: impl IntoIterator<Item = &'a UserEvent>,
    user: UserId,
    bootstrap: usize,
    probation: Probation,
    now: DateTime<Utc>,
) -> Result<(), OnProbation> {
    let mut admins_ever: Vec<UserId> = Vec::new();
    let mut last: Option<Entrusted> = None;
    let became_admin = |id: UserId, admins_ever: &mut Vec<UserId>| {
        if admins_ever.contains(&id) {
            false
        } else {
            admins_ever.push(id);
            admins_ever.len() <= bootstrap
        }
    };
    for event in events {
        match event {
            UserEvent::UserCreated {
                user_id,
                roles,
                by,
                at,
                ..
            } => {
                let bootstrap = roles.contains(&GlobalRole::OrgAdmin)
                    && became_admin(*user_id, &mut admins_ever);
                if *user_id == user && by.is_some() {
                    last = Some(Entrusted {
                        because: "was created by another admin",
                        at: *at,
                        bootstrap,
                    });
                }
            }
            UserEvent::RoleGranted {
                user_id,
                role: GlobalRole::OrgAdmin,
                at,
                ..
            } => {
                let bootstrap = became_admin(*user_id, &mut admins_ever);
                if *user_id == user {
                    last = Some(Entrusted {
                        because: "was granted org_admin",
                        at: *at,
                        bootstrap,
                    });
                }
            }
            UserEvent::UserReactivated { user_id, at, .. } if *user_id == user => {
                last = Some(Entrusted {
                    because: "was reactivated",
                    at: *at,
                    bootstrap: false,
                });
            }
            UserEvent::PasswordChanged { user_id, by, at } if *user_id == user && by != user_id => {
                last = Some(Entrusted {
                    because: "had the password reset by another admin",
                    at: *at,
                    bootstrap: false,
                });
            }
            _ => {}
        }
    }
    match last {
        Some(step) if !step.bootstrap && step.at + probation.window > now => Err(OnProbation {
            because: step.because,
            since: step.at,
            until: step.at + probation.window,
        }),
        _ => Ok(()),
    }
}

/// Whether an event of `user`'s own stream could start a probation (any creation, org_admin grant,
/// reactivation or password change; [`standing`] decides).
fn may_entrust(event: &UserEvent) -> Option<DateTime<Utc>> {
    match event {
        UserEvent::UserCreated {
            by: Some(_), at, ..
        }
        | UserEvent::RoleGranted {
            role: GlobalRole::OrgAdmin,
            at,
            ..
        }
        | UserEvent::UserReactivated { at, .. }
        | UserEvent::PasswordChanged { at, .. } => Some(*at),
        _ => None,
    }
}

/// How many User events one page of the log scan reads.
const PAGE: usize = 1000;

fn decode(payload: &serde_json::Value, position: i64) -> Result<UserEvent, AppError> {
    UserEvent::deserialize(payload).map_err(|e| {
        AppError::Internal(format!(
            "user event at position {position} does not decode: {e}"
        ))
    })
}

impl Edict {
    /// Sets how long an org_admin stays on probation (the default is 7 days).
    #[must_use]
    pub fn with_probation(mut self, probation: Probation) -> Edict {
        self.probation = probation;
        self
    }

    /// Checks that `approver` counts towards a quorum now.
    ///
    /// # Errors
    /// 422 `approver_on_probation` ([`OnProbation::into_error`]); 503 when the log cannot be read.
    pub(crate) async fn check_standing(&self, approver: UserId) -> Result<(), AppError> {
        let now = self.clock.now();
        let own = self
            .log
            .read_aggregate(User::TYPE, &approver.to_string())
            .await?;
        let mut recent = false;
        for event in &own {
            let event = decode(&event.payload, event.global_position)?;
            recent |= may_entrust(&event).is_some_and(|at| at + self.probation.window > now);
        }
        if !recent {
            return Ok(());
        }
        // A recent step: replay every user's events to tell a bootstrap admin from a new one.
        let filter = LogFilter {
            aggregate_types: vec![User::TYPE.to_owned()],
            ..LogFilter::default()
        };
        let mut events = Vec::new();
        let mut after = Checkpoint::START;
        loop {
            let page = self.log.read_filtered(after, &filter, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.checkpoint();
            for event in &page {
                events.push(decode(&event.payload, event.global_position)?);
            }
        }
        // The approver's own stream is authoritative for their newest events (the global log may not
        // show one still committing): add those it misses.
        let seen = events.iter().filter(|e| user_of(e) == approver).count();
        for event in own.iter().skip(seen) {
            events.push(decode(&event.payload, event.global_position)?);
        }
        let bootstrap = 1 + self
            .quorum
            .for_layer(edict_domain::value::Layer::Organization)
            .get() as usize;
        standing(&events, approver, bootstrap, self.probation, now).map_err(OnProbation::into_error)
    }
}

/// The user an event is about.
fn user_of(event: &UserEvent) -> UserId {
    match event {
        UserEvent::UserCreated { user_id, .. }
        | UserEvent::RoleGranted { user_id, .. }
        | UserEvent::RoleRevoked { user_id, .. }
        | UserEvent::PasswordChanged { user_id, .. }
        | UserEvent::UserDeactivated { user_id, .. }
        | UserEvent::UserReactivated { user_id, .. } => *user_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edict_domain::user::{Email, PersonName};
    use uuid::Uuid;

    fn id(n: u128) -> UserId {
        UserId(Uuid::from_u128(n))
    }

    const FIRST: u128 = 1;

    fn t(hours: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap() + Duration::hours(hours)
    }

    fn created(user: u128, roles: &[GlobalRole], by: Option<u128>, hours: i64) -> UserEvent {
        UserEvent::UserCreated {
            user_id: id(user),
            email: Email::parse(&format!("u{user}@example.com")).unwrap(),
            name: PersonName::parse("U").unwrap(),
            roles: roles.iter().copied().collect(),
            by: by.map(id),
            at: t(hours),
        }
    }

    fn admin(user: u128, hours: i64) -> UserEvent {
        created(user, &[GlobalRole::OrgAdmin], Some(FIRST), hours)
    }

    /// The installation: the first admin, made by the system at hour 0.
    fn installation() -> Vec<UserEvent> {
        vec![created(FIRST, &[GlobalRole::OrgAdmin], None, 0)]
    }

    const BOOTSTRAP: usize = 3;

    fn check(events: &[UserEvent], user: u128, hours: i64) -> Result<(), OnProbation> {
        standing(events, id(user), BOOTSTRAP, Probation::default(), t(hours))
    }

    #[test]
    fn the_first_admin_made_by_the_system_counts_at_once() {
        assert_eq!(check(&installation(), FIRST, 0), Ok(()));
    }

    #[test]
    fn the_admins_a_fresh_installation_needs_for_its_first_review_count_at_once() {
        let mut events = installation();
        events.extend([admin(2, 1), admin(3, 1)]);
        assert_eq!(check(&events, 2, 1), Ok(()));
        assert_eq!(check(&events, 3, 1), Ok(()));
    }

    #[test]
    fn an_admin_created_once_the_organization_has_enough_is_on_probation_for_seven_days() {
        let mut events = installation();
        events.extend([admin(2, 1), admin(3, 1), admin(4, 2)]);
        let refused = check(&events, 4, 2).unwrap_err();
        assert_eq!(refused.because, "was created by another admin");
        assert_eq!(refused.until, t(2) + Duration::days(7));
        assert!(check(&events, 4, 2 + 7 * 24 - 1).is_err());
        assert_eq!(check(&events, 4, 2 + 7 * 24), Ok(()));
    }

    #[test]
    fn deactivating_an_admin_does_not_open_the_bootstrap_again() {
        let mut events = installation();
        events.extend([
            admin(2, 1),
            admin(3, 1),
            UserEvent::UserDeactivated {
                user_id: id(3),
                by: id(FIRST),
                at: t(2),
            },
            admin(4, 3),
        ]);
        assert!(check(&events, 4, 3).is_err());
    }

    #[test]
    fn granting_org_admin_to_a_member_starts_a_probation() {
        let mut events = installation();
        events.extend([
            admin(2, 1),
            admin(3, 1),
            created(5, &[GlobalRole::Member], Some(FIRST), 0),
            UserEvent::RoleGranted {
                user_id: id(5),
                role: GlobalRole::OrgAdmin,
                by: id(FIRST),
                at: t(200),
            },
        ]);
        assert_eq!(
            check(&events[..4], 5, 199),
            Ok(()),
            "created a week ago as a member"
        );
        assert_eq!(
            check(&events, 5, 201).unwrap_err().because,
            "was granted org_admin"
        );
    }

    #[test]
    fn granting_the_bootstrap_role_to_an_existing_member_counts_at_once() {
        let mut events = installation();
        events.extend([
            created(2, &[GlobalRole::Member], Some(FIRST), 0),
            UserEvent::RoleGranted {
                user_id: id(2),
                role: GlobalRole::OrgAdmin,
                by: id(FIRST),
                at: t(1),
            },
        ]);
        assert_eq!(check(&events, 2, 1), Ok(()));
    }

    #[test]
    fn a_password_reset_by_another_admin_starts_a_probation_even_for_a_bootstrap_admin() {
        let mut events = installation();
        events.extend([
            admin(2, 1),
            UserEvent::PasswordChanged {
                user_id: id(2),
                by: id(FIRST),
                at: t(300),
            },
        ]);
        assert_eq!(
            check(&events, 2, 301).unwrap_err().because,
            "had the password reset by another admin"
        );
    }

    #[test]
    fn changing_ones_own_password_starts_no_probation() {
        let mut events = installation();
        events.extend([
            admin(2, 1),
            UserEvent::PasswordChanged {
                user_id: id(2),
                by: id(2),
                at: t(300),
            },
        ]);
        assert_eq!(check(&events, 2, 301), Ok(()));
    }

    #[test]
    fn a_reactivated_admin_is_on_probation() {
        let mut events = installation();
        events.extend([
            admin(2, 1),
            UserEvent::UserDeactivated {
                user_id: id(2),
                by: id(FIRST),
                at: t(10),
            },
            UserEvent::UserReactivated {
                user_id: id(2),
                by: id(FIRST),
                at: t(400),
            },
        ]);
        assert_eq!(
            check(&events, 2, 401).unwrap_err().because,
            "was reactivated"
        );
    }

    #[test]
    fn a_probation_of_zero_turns_the_rule_off() {
        let mut events = installation();
        events.extend([admin(2, 1), admin(3, 1), admin(4, 2)]);
        assert_eq!(
            standing(&events, id(4), BOOTSTRAP, Probation::from_secs(0), t(2)),
            Ok(())
        );
    }

    #[test]
    fn the_refusal_names_the_rule_and_when_the_admin_counts() {
        let refused = OnProbation {
            because: "was created by another admin",
            since: t(0),
            until: t(168),
        }
        .into_error();
        let AppError::Rule { rule, message } = refused else {
            panic!("a 422")
        };
        assert_eq!(rule, "approver_on_probation");
        assert!(message.contains("2027-01-22T08:00:00Z"), "{message}");
    }
}
