//! Who is calling, and what they may do: the authorization policy in one place.

use edict_domain::user::GlobalRole;
use edict_domain::{AgentId, UserId};
use std::collections::BTreeSet;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user, with the global roles they hold now (read from their events at each request,
    /// so a revoked role or a deactivation takes effect at once).
    User {
        /// The user.
        id: UserId,
        /// Their global roles.
        roles: BTreeSet<GlobalRole>,
        /// The session their access token belongs to.
        session: String,
    },
    /// An enrolled agent (machine), using its agent token.
    Agent {
        /// The agent.
        id: AgentId,
        /// The user it was enrolled for.
        user: UserId,
    },
}

impl Principal {
    /// The user behind the call (an agent's owner for an agent).
    pub fn user(&self) -> UserId {
        match self {
            Principal::User { id, .. } => *id,
            Principal::Agent { user, .. } => *user,
        }
    }

    /// The actor written into event metadata: `user:<id>` or `agent:<id>`.
    pub fn actor(&self) -> String {
        match self {
            Principal::User { id, .. } => format!("user:{id}"),
            Principal::Agent { id, .. } => format!("agent:{id}"),
        }
    }

    /// Whether this is a user holding `role`.
    pub fn has_role(&self, role: GlobalRole) -> bool {
        matches!(self, Principal::User { roles, .. } if roles.contains(&role))
    }

    /// Whether this is an org_admin.
    pub fn is_org_admin(&self) -> bool {
        self.has_role(GlobalRole::OrgAdmin)
    }

    /// Whether this principal may read everything (org_admin or auditor).
    pub fn can_read_all(&self) -> bool {
        self.is_org_admin() || self.has_role(GlobalRole::Auditor)
    }

    /// Refuses anyone but an org_admin, naming the `action` in the 403.
    ///
    /// # Errors
    /// [`crate::error::AppError::Forbidden`].
    pub fn require_org_admin(&self, action: &str) -> Result<(), crate::error::AppError> {
        if self.is_org_admin() {
            Ok(())
        } else {
            Err(crate::error::AppError::Forbidden(format!(
                "only an org_admin may {action}"
            )))
        }
    }

    /// Whether this is a user (as opposed to an agent).
    pub fn is_user(&self) -> bool {
        matches!(self, Principal::User { .. })
    }
}
