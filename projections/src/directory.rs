//! The directory: users and teams, each with the other side of their memberships.
//!
//! - kind `user`, key = user id: [`UserDoc`]; meta: no team, status `active|deactivated`, sort key =
//!   the email (unique, so users list alphabetically by address);
//! - kind `team`, key = team id: [`TeamDoc`]; meta: team = the team id, status `active|archived`, sort
//!   key = the team id.
//!
//! A user's `teams` follow the Team events (member added, role changed, removed). An archived team keeps
//! its members, as the Team aggregate does; its document says it is archived.

use crate::Applied;
use crate::decode::AnyEvent;
use crate::{DocMeta, Docs, ProjectionError, RecordedEvent, inconsistent, version_of};
use chrono::{DateTime, Utc};
use edict_domain::team::{TeamEvent, TeamRole};
use edict_domain::user::{GlobalRole, UserEvent};
use edict_domain::{Enforcement, Layer, RuleId, TeamId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The document kind of a user.
pub const USER_KIND: &str = "user";
/// The document kind of a team.
pub const TEAM_KIND: &str = "team";

/// A user as the directory lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDoc {
    /// The user.
    pub id: UserId,
    /// Their email address (lowercase, unique).
    pub email: String,
    /// Their display name.
    pub name: String,
    /// Their global roles.
    pub roles: BTreeSet<GlobalRole>,
    /// Whether they may sign in.
    pub active: bool,
    /// When they were created.
    pub created_at: DateTime<Utc>,
    /// When their password last changed.
    pub password_changed_at: Option<DateTime<Utc>>,
    /// The user aggregate's version: the sequence of the last User event applied (Team events do not
    /// count).
    pub version: u64,
    /// The teams they belong to, with their role in each.
    pub teams: BTreeMap<TeamId, TeamRole>,
}

/// A team as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamDoc {
    /// The team.
    pub id: TeamId,
    /// Its current name.
    pub name: String,
    /// Whether it is archived.
    pub archived: bool,
    /// When it was archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// Its members and their roles.
    pub members: BTreeMap<UserId, TeamRole>,
    /// The team- and project-layer rules attached to it.
    pub rules: BTreeMap<RuleId, AttachedRule>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The team aggregate's version: the sequence of the last event applied.
    pub version: u64,
}

/// A rule attached to a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedRule {
    /// The rule's layer (team or project).
    pub layer: Layer,
    /// The rule's approved revision when it was attached (a record: the team enforces the rule's
    /// revision in force, see the rule set).
    pub rule_revision: u32,
    /// How the team enforces it.
    pub enforcement: Enforcement,
    /// Who attached it.
    pub attached_by: UserId,
    /// When.
    pub attached_at: DateTime<Utc>,
}

projection! {
    /// The directory projection (`directory`).
    Directory, "directory", [User, Team], apply
}

/// Applies `event`, `decoded` when it is about an aggregate this projection follows.
async fn apply(decoded: Option<AnyEvent>, event: &RecordedEvent, docs: &mut Docs<'_>) -> Applied {
    match decoded {
        Some(AnyEvent::User(user_event)) => on_user(user_event, event, docs).await,
        Some(AnyEvent::Team(team_event)) => on_team(team_event, event, docs).await,
        _ => Ok(()),
    }
}

fn put_user(docs: &mut Docs<'_>, doc: &UserDoc) -> Result<(), ProjectionError> {
    let meta = DocMeta {
        team: None,
        status: Some(if doc.active { "active" } else { "deactivated" }.to_owned()),
        sort_key: doc.email.clone(),
    };
    docs.put(USER_KIND, &doc.id.to_string(), meta, doc)
}

fn put_team(docs: &mut Docs<'_>, doc: &TeamDoc) -> Result<(), ProjectionError> {
    let key = doc.id.to_string();
    let meta = DocMeta {
        team: Some(key.clone()),
        status: Some(if doc.archived { "archived" } else { "active" }.to_owned()),
        sort_key: key.clone(),
    };
    docs.put(TEAM_KIND, &key, meta, doc)
}

async fn on_user(
    user_event: UserEvent,
    event: &RecordedEvent,
    docs: &mut Docs<'_>,
) -> Result<(), ProjectionError> {
    let user_id = match &user_event {
        UserEvent::UserCreated { user_id, .. }
        | UserEvent::RoleGranted { user_id, .. }
        | UserEvent::RoleRevoked { user_id, .. }
        | UserEvent::PasswordChanged { user_id, .. }
        | UserEvent::UserDeactivated { user_id, .. }
        | UserEvent::UserReactivated { user_id, .. } => *user_id,
    };
    let existing = docs.get::<UserDoc>(USER_KIND, &user_id.to_string()).await?;
    let mut doc = match (user_event, existing) {
        (
            UserEvent::UserCreated {
                email,
                name,
                roles,
                at,
                ..
            },
            None,
        ) => UserDoc {
            id: user_id,
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            roles,
            active: true,
            created_at: at,
            password_changed_at: None,
            version: 0,
            teams: BTreeMap::new(),
        },
        (UserEvent::UserCreated { .. }, Some(_)) => {
            return Err(inconsistent(event, format!("user {user_id} created twice")));
        }
        (_, None) => {
            return Err(inconsistent(
                event,
                format!("user {user_id} is not in the directory"),
            ));
        }
        (other, Some(mut doc)) => {
            match other {
                UserEvent::UserCreated { .. } => {}
                UserEvent::RoleGranted { role, .. } => {
                    doc.roles.insert(role);
                }
                UserEvent::RoleRevoked { role, .. } => {
                    doc.roles.remove(&role);
                }
                UserEvent::PasswordChanged { at, .. } => doc.password_changed_at = Some(at),
                UserEvent::UserDeactivated { .. } => doc.active = false,
                UserEvent::UserReactivated { .. } => doc.active = true,
            }
            doc
        }
    };
    doc.version = version_of(event);
    put_user(docs, &doc)
}

/// Records `user`'s role in `team` (or its absence) on the user's document. A user the directory does
/// not know is left alone: the team side is what the Team event is about, and the application only
/// adds existing users.
async fn set_user_team(
    docs: &mut Docs<'_>,
    user: UserId,
    team: TeamId,
    role: Option<TeamRole>,
) -> Result<(), ProjectionError> {
    let Some(mut doc) = docs.get::<UserDoc>(USER_KIND, &user.to_string()).await? else {
        tracing::warn!(%user, %team, "membership of a user the directory does not know");
        return Ok(());
    };
    match role {
        Some(role) => doc.teams.insert(team, role),
        None => doc.teams.remove(&team),
    };
    put_user(docs, &doc)
}

async fn on_team(
    team_event: TeamEvent,
    event: &RecordedEvent,
    docs: &mut Docs<'_>,
) -> Result<(), ProjectionError> {
    if let TeamEvent::TeamCreated {
        team_id, name, at, ..
    } = &team_event
    {
        if docs
            .get::<TeamDoc>(TEAM_KIND, &team_id.to_string())
            .await?
            .is_some()
        {
            return Err(inconsistent(event, format!("team {team_id} created twice")));
        }
        let doc = TeamDoc {
            id: *team_id,
            name: name.as_str().to_owned(),
            archived: false,
            archived_at: None,
            members: BTreeMap::new(),
            rules: BTreeMap::new(),
            created_at: *at,
            version: version_of(event),
        };
        return put_team(docs, &doc);
    }
    let team_id = match &team_event {
        TeamEvent::TeamCreated { team_id, .. }
        | TeamEvent::TeamRenamed { team_id, .. }
        | TeamEvent::MemberAdded { team_id, .. }
        | TeamEvent::MemberRoleChanged { team_id, .. }
        | TeamEvent::MemberRemoved { team_id, .. }
        | TeamEvent::RuleAttached { team_id, .. }
        | TeamEvent::EnforcementChanged { team_id, .. }
        | TeamEvent::RuleDetached { team_id, .. }
        | TeamEvent::TeamArchived { team_id, .. } => *team_id,
    };
    let Some(mut doc) = docs.get::<TeamDoc>(TEAM_KIND, &team_id.to_string()).await? else {
        return Err(inconsistent(
            event,
            format!("team {team_id} is not in the directory"),
        ));
    };
    match team_event {
        TeamEvent::TeamCreated { .. } => {}
        TeamEvent::TeamRenamed { name, .. } => doc.name = name.as_str().to_owned(),
        TeamEvent::MemberAdded { user, role, .. }
        | TeamEvent::MemberRoleChanged { user, role, .. } => {
            doc.members.insert(user, role);
            set_user_team(docs, user, team_id, Some(role)).await?;
        }
        TeamEvent::MemberRemoved { user, .. } => {
            doc.members.remove(&user);
            set_user_team(docs, user, team_id, None).await?;
        }
        TeamEvent::RuleAttached {
            rule_id,
            rule_layer,
            rule_revision,
            enforcement,
            by,
            at,
            ..
        } => {
            doc.rules.insert(
                rule_id,
                AttachedRule {
                    layer: rule_layer,
                    rule_revision,
                    enforcement,
                    attached_by: by,
                    attached_at: at,
                },
            );
        }
        TeamEvent::EnforcementChanged {
            rule_id,
            enforcement,
            ..
        } => {
            if let Some(rule) = doc.rules.get_mut(&rule_id) {
                rule.enforcement = enforcement;
            }
        }
        TeamEvent::RuleDetached { rule_id, .. } => {
            doc.rules.remove(&rule_id);
        }
        TeamEvent::TeamArchived { at, .. } => {
            doc.archived = true;
            doc.archived_at = Some(at);
        }
    }
    doc.version = version_of(event);
    put_team(docs, &doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::AggregateType;
    use crate::testkit::{ALICE, BOB, Harness, Log, TEAM_A, at, team_created};
    use edict_domain::user::{Email, PersonName};

    fn created(user_id: UserId, email: &str) -> UserEvent {
        UserEvent::UserCreated {
            user_id,
            email: Email::parse(email).unwrap(),
            name: PersonName::parse("Someone").unwrap(),
            roles: [GlobalRole::Member].into(),
            by: None,
            at: at(0),
        }
    }

    #[tokio::test]
    async fn users_are_sorted_by_email_and_know_their_teams() {
        let mut log = Log::default();
        let events = vec![
            log.record(AggregateType::User, &created(ALICE, "alice@example.com")),
            log.record(AggregateType::User, &created(BOB, "bob@example.com")),
            log.team(team_created(TEAM_A, "Platform")),
            log.team(TeamEvent::MemberAdded {
                team_id: TEAM_A,
                user: ALICE,
                role: TeamRole::TeamAdmin,
                by: ALICE,
                at: at(1),
            }),
            log.team(TeamEvent::MemberAdded {
                team_id: TEAM_A,
                user: BOB,
                role: TeamRole::Member,
                by: ALICE,
                at: at(1),
            }),
            log.team(TeamEvent::MemberRemoved {
                team_id: TEAM_A,
                user: BOB,
                by: ALICE,
                at: at(2),
            }),
            log.record(
                AggregateType::User,
                &UserEvent::UserDeactivated {
                    user_id: BOB,
                    by: ALICE,
                    at: at(3),
                },
            ),
        ];
        let mut h = Harness::new();
        h.batch(&Directory, &events).await;
        let alice: UserDoc = h.doc(USER_KIND, ALICE).unwrap();
        assert_eq!(alice.teams, BTreeMap::from([(TEAM_A, TeamRole::TeamAdmin)]));
        assert_eq!(
            alice.version, 1,
            "team events do not change the user's version"
        );
        let bob: UserDoc = h.doc(USER_KIND, BOB).unwrap();
        assert!(bob.teams.is_empty());
        assert!(!bob.active);
        assert_eq!(bob.version, 2);
        assert_eq!(
            h.meta(USER_KIND, BOB).unwrap(),
            DocMeta {
                team: None,
                status: Some("deactivated".into()),
                sort_key: "bob@example.com".into()
            }
        );
        let team: TeamDoc = h.doc(TEAM_KIND, TEAM_A).unwrap();
        assert_eq!(team.members, BTreeMap::from([(ALICE, TeamRole::TeamAdmin)]));
        assert_eq!(team.version, 4);
    }

    #[tokio::test]
    async fn a_team_lists_its_attached_rules_with_their_enforcement() {
        let mut log = Log::default();
        let rule = crate::testkit::RULE_A;
        let events = vec![
            log.team(team_created(TEAM_A, "Platform")),
            log.team(crate::testkit::attached(
                TEAM_A,
                rule,
                Layer::Team,
                Enforcement::BLOCK,
            )),
            log.team(TeamEvent::EnforcementChanged {
                team_id: TEAM_A,
                rule_id: rule,
                enforcement: Enforcement::WARNING,
                by: ALICE,
                at: at(6),
            }),
            log.team(TeamEvent::TeamArchived {
                team_id: TEAM_A,
                by: ALICE,
                at: at(7),
            }),
        ];
        let mut h = Harness::new();
        h.batch(&Directory, &events).await;
        let team: TeamDoc = h.doc(TEAM_KIND, TEAM_A).unwrap();
        assert_eq!(team.rules[&rule].enforcement, Enforcement::WARNING);
        assert!(team.archived);
        assert_eq!(
            h.meta(TEAM_KIND, TEAM_A).unwrap().status.as_deref(),
            Some("archived")
        );
    }
}
