//! Query use cases: lists and views read from the projections, each answer saying how fresh it is, and
//! able to wait (bounded) until it covers a write the caller made (`min_position`).
//!
//! Layout: this module holds the use cases (and the wait for freshness they share); `answer` the shape of
//! an answer (page asked for, page or item, freshness); `rule_query` the rule catalog's filters.

use crate::error::AppError;
use crate::principal::Principal;
use crate::read_models::{DocFilter, ProjectionStatus, RebuildSummary};
use crate::service::Edict;
use serde_json::Value;
use std::time::Duration;

mod answer;
mod rule_query;

pub use answer::{DEFAULT_PAGE, Fetched, Freshness, Listed, MAX_PAGE, PageRequest};
pub use rule_query::RuleQuery;

/// Projection names, as the projections crate defines them.
pub mod names {
    /// Rules and their revisions.
    pub const RULE_CATALOG: &str = "rule_catalog";
    /// Each team's effective rule set.
    pub const TEAM_RULESETS: &str = "team_rulesets";
    /// Change requests by team and status.
    pub const CHANGE_INBOX: &str = "change_inbox";
    /// Users and teams.
    pub const DIRECTORY: &str = "directory";
    /// Enrolled agents.
    pub const AGENT_FLEET: &str = "agent_fleet";
}

/// The longest a read waits for its read model to reach `min_position`.
const MAX_CONSISTENCY_WAIT: Duration = Duration::from_secs(5);
/// Bounds on the work one request may cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkLimits {
    /// Enrolled (not revoked) agents one user may own (20); one more enrollment is a 422
    /// `agent_limit`.
    pub max_agents_per_user: usize,
    /// How long a time-travel read (`as_of`) may replay the log (2 s); past it the read is a 422
    /// `as_of_too_costly`.
    pub as_of_budget: Duration,
}

impl Default for WorkLimits {
    fn default() -> Self {
        WorkLimits {
            max_agents_per_user: 20,
            as_of_budget: Duration::from_secs(2),
        }
    }
}

fn require_user(principal: &Principal) -> Result<(), AppError> {
    if principal.is_user() {
        Ok(())
    } else {
        Err(AppError::Forbidden("agents cannot read this".into()))
    }
}

fn require_reader(principal: &Principal, what: &str) -> Result<(), AppError> {
    if principal.can_read_all() {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "only org_admins and auditors may list {what}"
        )))
    }
}

impl Edict {
    /// Waits (bounded) until `projection` covers `min_position`, then answers its freshness.
    ///
    /// A position below 0, or past the last event of the log, is a 400 at once: no wait could ever see
    /// it (the position a command answers is committed, so never past the head).
    async fn fresh(
        &self,
        projection: &str,
        min_position: Option<i64>,
    ) -> Result<Freshness, AppError> {
        if let Some(position) = min_position {
            if position < 0 {
                return Err(AppError::BadParameter {
                    parameter: "min_position".into(),
                    message: format!("must be 0 or more, not {position}"),
                });
            }
            let head = self.log.last_position().await?.unwrap_or(0);
            if position > head {
                return Err(AppError::BadParameter {
                    parameter: "min_position".into(),
                    message: format!(
                        "position {position} is past the head of the log ({head}); pass the \
                         position a command answered"
                    ),
                });
            }
            let deadline = tokio::time::Instant::now() + MAX_CONSISTENCY_WAIT;
            // Position 0 is before the first event: every read model covers it.
            while position > 0 && !self.read_models.covers(projection, position).await? {
                if tokio::time::Instant::now() >= deadline {
                    return Err(AppError::NotYetConsistent {
                        projection: projection.to_owned(),
                        position,
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(self.read_models.status(projection).await?.into())
    }

    /// A page of `kind` documents of `projection` matching `filter`: one query, every filter in SQL
    /// (on indexed columns where they are selective), never a scan of pages in memory.
    async fn page(
        &self,
        projection: &str,
        kind: &str,
        filter: &DocFilter,
        page: &PageRequest,
    ) -> Result<Listed, AppError> {
        let freshness = self.fresh(projection, page.min_position).await?;
        let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let batch = self
            .read_models
            .list(projection, kind, filter, page.after.as_deref(), limit)
            .await?;
        Ok(Listed {
            items: batch.docs.into_iter().map(|listed| listed.doc).collect(),
            next: batch.next,
            freshness,
        })
    }

    /// One document.
    async fn one(
        &self,
        projection: &str,
        kind: &str,
        key: &str,
        what: &str,
        min_position: Option<i64>,
    ) -> Result<Fetched, AppError> {
        let freshness = self.fresh(projection, min_position).await?;
        match self.read_models.get(projection, kind, key).await? {
            Some(item) => Ok(Fetched { item, freshness }),
            None => Err(AppError::NotFound(what.to_owned())),
        }
    }

    /// The rule catalog, filtered. Any signed-in user.
    ///
    /// # Errors
    /// 403 for agents; 503 when the read model is unavailable or has not caught up.
    pub async fn list_rules(
        &self,
        principal: &Principal,
        query: &RuleQuery,
        page: &PageRequest,
    ) -> Result<Listed, AppError> {
        require_user(principal)?;
        let filter = DocFilter {
            status: query.status.clone(),
            layer: query.layer.clone(),
            tag: query.tag.clone(),
            text: query.text.clone().filter(|text| !text.is_empty()),
            ..DocFilter::default()
        };
        self.page(names::RULE_CATALOG, "rule", &filter, page).await
    }

    /// A rule's catalog entry with its revision history. Any signed-in user.
    ///
    /// # Errors
    /// 403 for agents; 404.
    pub async fn rule_entry(
        &self,
        principal: &Principal,
        id: &str,
        min_position: Option<i64>,
    ) -> Result<Fetched, AppError> {
        require_user(principal)?;
        self.one(names::RULE_CATALOG, "rule", id, "rule", min_position)
            .await
    }

    /// Teams: every team for org_admins and auditors, one's own teams for others.
    ///
    /// # Errors
    /// 403 for agents.
    pub async fn list_teams(
        &self,
        principal: &Principal,
        status: Option<String>,
        page: &PageRequest,
    ) -> Result<Listed, AppError> {
        require_user(principal)?;
        let filter = DocFilter {
            status,
            member: (!principal.can_read_all()).then(|| principal.user().to_string()),
            ..DocFilter::default()
        };
        self.page(names::DIRECTORY, "team", &filter, page).await
    }

    /// Refuses one more agent for `user` when it already owns [`WorkLimits::max_agents_per_user`]
    /// enrolled agents (counted in the agent fleet read model, by an indexed query).
    ///
    /// # Errors
    /// 422 `agent_limit`; 503 when the read model cannot be read.
    pub(crate) async fn check_agent_cap(&self, user: edict_domain::UserId) -> Result<(), AppError> {
        let max = self.limits.max_agents_per_user;
        let filter = DocFilter {
            status: Some("enrolled".into()),
            owner: Some(user.to_string()),
            ..DocFilter::default()
        };
        let held = self
            .read_models
            .list(names::AGENT_FLEET, "agent", &filter, None, max)
            .await?;
        if held.docs.len() >= max {
            return Err(AppError::Rule {
                rule: "agent_limit".into(),
                message: format!(
                    "this user already has {max} enrolled agents; revoke one before enrolling another"
                ),
            });
        }
        Ok(())
    }

    /// Checks that `principal` may read team `team`'s rule set: org_admin, auditor, a member, or an
    /// agent of a member.
    pub(crate) async fn may_read_team(
        &self,
        principal: &Principal,
        team: &str,
    ) -> Result<(), AppError> {
        // Agents get their rule sets over the gateway, signed; HTTP reads are their users'.
        require_user(principal)?;
        if principal.can_read_all() {
            return Ok(());
        }
        let doc = self.read_models.get(names::DIRECTORY, "team", team).await?;
        let member = doc
            .as_ref()
            .is_some_and(|doc| doc["members"].get(principal.user().to_string()).is_some());
        if member {
            Ok(())
        } else if doc.is_none() {
            Err(AppError::NotFound("team".into()))
        } else {
            Err(AppError::Forbidden(
                "only the team's members, auditors and org_admins may read it".into(),
            ))
        }
    }

    /// A team's effective rule set (revision, hash, rules per layer, rendered text).
    ///
    /// # Errors
    /// 403 unless a member, an auditor or an org_admin (agents read theirs over the gateway); 404.
    pub async fn team_ruleset(
        &self,
        principal: &Principal,
        team: &str,
        min_position: Option<i64>,
    ) -> Result<Fetched, AppError> {
        self.may_read_team(principal, team).await?;
        self.one(
            names::TEAM_RULESETS,
            "ruleset",
            team,
            "rule set",
            min_position,
        )
        .await
    }

    /// Change requests: org_admins and auditors see all; team admins those of their team (`team`
    /// required); developers their own.
    ///
    /// # Errors
    /// 403 for agents or a team the caller does not administer.
    pub async fn list_change_requests(
        &self,
        principal: &Principal,
        team: Option<String>,
        status: Option<String>,
        page: &PageRequest,
    ) -> Result<Listed, AppError> {
        require_user(principal)?;
        let mut own_only = false;
        if !principal.can_read_all() {
            match &team {
                Some(team) => {
                    let doc = self.read_models.get(names::DIRECTORY, "team", team).await?;
                    let role = doc
                        .as_ref()
                        .and_then(|doc| doc["members"].get(principal.user().to_string()).cloned());
                    own_only = role.as_ref().and_then(Value::as_str) != Some("team_admin");
                }
                None => own_only = true,
            }
        }
        let filter = DocFilter {
            team,
            status,
            owner: own_only.then(|| principal.user().to_string()),
            ..DocFilter::default()
        };
        self.page(names::CHANGE_INBOX, "change_request", &filter, page)
            .await
    }

    /// Users. org_admins and auditors.
    ///
    /// # Errors
    /// 403 for others.
    pub async fn list_users(
        &self,
        principal: &Principal,
        status: Option<String>,
        page: &PageRequest,
    ) -> Result<Listed, AppError> {
        require_reader(principal, "users")?;
        let filter = DocFilter {
            status,
            ..DocFilter::default()
        };
        self.page(names::DIRECTORY, "user", &filter, page).await
    }

    /// Agents: all for org_admins and auditors, one's own for others; each with where it is (or was
    /// last) connected (`presence`, left out for an agent that never connected).
    ///
    /// # Errors
    /// 403 for agents.
    pub async fn list_agents(
        &self,
        principal: &Principal,
        status: Option<String>,
        page: &PageRequest,
    ) -> Result<Listed, AppError> {
        require_user(principal)?;
        let filter = DocFilter {
            status,
            owner: (!principal.can_read_all()).then(|| principal.user().to_string()),
            ..DocFilter::default()
        };
        let mut listed = self
            .page(names::AGENT_FLEET, "agent", &filter, page)
            .await?;
        let ids: Vec<String> = listed
            .items
            .iter()
            .filter_map(|doc| doc["id"].as_str().map(str::to_owned))
            .collect();
        let mut presence: std::collections::HashMap<String, crate::read_models::Presence> = self
            .convergence
            .presence(&ids)
            .await?
            .into_iter()
            .map(|p| (p.agent_id.clone(), p))
            .collect();
        for doc in &mut listed.items {
            let seen = doc["id"].as_str().and_then(|id| presence.remove(id));
            if let (Some(seen), Some(fields)) = (seen, doc.as_object_mut()) {
                fields.insert("presence".to_owned(), presence_doc(&seen));
            }
        }
        Ok(listed)
    }

    /// Where an agent is (or was last) connected; `None` when it never connected. Its owner, auditors
    /// and org_admins.
    ///
    /// # Errors
    /// 403, 404.
    pub async fn agent_presence(
        &self,
        principal: &Principal,
        agent: edict_domain::AgentId,
    ) -> Result<Option<crate::read_models::Presence>, AppError> {
        self.agent(principal, agent).await?;
        Ok(self
            .convergence
            .presence(&[agent.to_string()])
            .await?
            .into_iter()
            .next())
    }

    /// Which revision of the team's rule set each agent enforces, beside the latest revision. The team's
    /// members, auditors and org_admins.
    ///
    /// # Errors
    /// 403, 404.
    pub async fn team_convergence(
        &self,
        principal: &Principal,
        team: &str,
    ) -> Result<(Option<Value>, Vec<crate::read_models::Enforcement>), AppError> {
        self.may_read_team(principal, team).await?;
        let latest = self
            .read_models
            .get(names::TEAM_RULESETS, "ruleset", team)
            .await?;
        Ok((latest, self.convergence.by_team(team).await?))
    }

    /// Which rule sets an agent enforces, each with whether it is the team's latest. Its owner, auditors
    /// and org_admins.
    ///
    /// # Errors
    /// 403, 404.
    pub async fn agent_enforced(
        &self,
        principal: &Principal,
        agent: edict_domain::AgentId,
    ) -> Result<Vec<(crate::read_models::Enforcement, bool)>, AppError> {
        self.agent(principal, agent).await?;
        let mut enforced = Vec::new();
        for e in self.convergence.by_agent(&agent.to_string()).await? {
            let latest = self
                .read_models
                .get(names::TEAM_RULESETS, "ruleset", &e.team_id)
                .await?;
            let current = latest.is_some_and(|doc| {
                doc["revision"].as_u64() == Some(e.revision)
                    && doc["hash"].as_str() == Some(e.hash.as_str())
            });
            enforced.push((e, current));
        }
        Ok(enforced)
    }

    /// Every projection's status. org_admins and auditors.
    ///
    /// # Errors
    /// 403 for others.
    pub async fn projection_statuses(
        &self,
        principal: &Principal,
    ) -> Result<Vec<ProjectionStatus>, AppError> {
        require_reader(principal, "projections")?;
        let mut statuses = Vec::new();
        for name in self.projections.names() {
            statuses.push(self.read_models.status(&name).await?);
        }
        Ok(statuses)
    }

    /// The content hash of the read model a projection serves now. org_admins and auditors.
    ///
    /// # Errors
    /// 403; 404 for an unknown projection.
    pub async fn projection_hash(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<String, AppError> {
        require_reader(principal, "projections")?;
        if !self.projections.names().iter().any(|n| n == name) {
            return Err(AppError::NotFound(format!("projection {name}")));
        }
        Ok(self.projections.content_hash(name).await?)
    }

    /// Rebuilds a projection from the store and swaps it in. org_admin.
    ///
    /// # Errors
    /// 403; 404 for an unknown projection; 503 when it fails.
    pub async fn rebuild_projection(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<RebuildSummary, AppError> {
        if !principal.is_org_admin() {
            return Err(AppError::Forbidden(
                "only an org_admin may rebuild projections".into(),
            ));
        }
        if !self.projections.names().iter().any(|n| n == name) {
            return Err(AppError::NotFound(format!("projection {name}")));
        }
        Ok(self.projections.rebuild(name).await?)
    }
}

/// An agent's presence as the fleet's documents carry it (RFC 3339 times, as the documents' others).
fn presence_doc(seen: &crate::read_models::Presence) -> Value {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut doc = serde_json::json!({
        "gateway": seen.gateway,
        "connected_at": time(&seen.connected_at),
        "last_seen_at": time(&seen.last_seen_at),
    });
    if let Some(at) = &seen.disconnected_at {
        doc["disconnected_at"] = Value::String(time(at));
    }
    doc
}
