//! User ids as pages show them: the user's email when the viewer may read that user (org_admins and
//! auditors anyone, others themself: the `user` use case decides), else the id's first 8 characters.

use edict_application::Edict;
use edict_application::principal::Principal;
use edict_domain::UserId;
use std::collections::HashMap;

/// Emails for user ids, read once each.
pub struct People<'a> {
    edict: &'a Edict,
    principal: &'a Principal,
    known: HashMap<UserId, String>,
}

impl<'a> People<'a> {
    /// Names as `principal` may read them.
    pub fn new(edict: &'a Edict, principal: &'a Principal) -> Self {
        People {
            edict,
            principal,
            known: HashMap::new(),
        }
    }

    /// The email of `id`, or `user <short id>`.
    pub async fn name(&mut self, id: UserId) -> String {
        if let Some(name) = self.known.get(&id) {
            return name.clone();
        }
        let short = || format!("user {}", &id.to_string()[..8]);
        let name = match self.edict.user(self.principal, id).await {
            Ok(user) => user
                .email()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_else(short),
            Err(_) => short(),
        };
        self.known.insert(id, name.clone());
        name
    }

    /// The email of the user whose id is `raw` (text from a read model), or `raw` shortened.
    pub async fn name_of(&mut self, raw: &str) -> String {
        match raw.parse() {
            Ok(id) => self.name(id).await,
            Err(_) => raw.chars().take(8).collect(),
        }
    }
}
