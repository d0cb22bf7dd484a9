//! Metadata written on every event: who (actor), which request, which causal chain, from where, and
//! (when traces are exported) the trace it belongs to.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The HTTP API, on behalf of a signed-in user.
    Api,
    /// An agent's report, through the gateway.
    Agent,
    /// Edict itself (a scheduler, start-up seeding).
    System,
}

impl Source {
    /// The lowercase name stored in the metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Agent => "agent",
            Source::System => "system",
        }
    }
}

/// The metadata of one command; cqrs-es copies it onto every event the command emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The user (or agent, or `system`) on whose behalf the command ran.
    pub actor: String,
    /// The request that carried the command.
    pub request_id: String,
    /// The causal chain the command belongs to (the request id when it starts one).
    pub correlation_id: String,
    /// Where the command came from.
    pub source: Source,
    /// The W3C trace context (`traceparent`) of the span the command ran in, when traces are
    /// exported; stored only when present (events written before it, or without traces, lack it).
    pub traceparent: Option<String>,
}

impl Metadata {
    /// Metadata for a command issued by Edict itself, starting a new causal chain.
    pub fn system(reason: &str) -> Self {
        let id = Uuid::now_v7().to_string();
        Metadata {
            actor: format!("system:{reason}"),
            request_id: id.clone(),
            correlation_id: id,
            source: Source::System,
            traceparent: None,
        }
    }

    /// The map cqrs-es stores.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor".to_owned(), self.actor.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("source".to_owned(), self.source.as_str().to_owned()),
        ]);
        if let Some(traceparent) = &self.traceparent {
            map.insert("traceparent".to_owned(), traceparent.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traceparent_is_stored_only_when_known() {
        let mut metadata = Metadata::system("test");
        assert!(!metadata.to_map().contains_key("traceparent"));
        metadata.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
        assert_eq!(
            metadata.to_map().get("traceparent"),
            metadata.traceparent.as_ref()
        );
    }
}
