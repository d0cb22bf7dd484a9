//! The rule set document a gateway sends (`GatewayMessage::RuleSet.ruleset`), the layer renderer (for the
//! project layer, whose rules the agent filters by trigger before rendering) and the rule markers: the
//! definitions the server's projection uses too, from `edict_api::ruleset`, re-exported here.

pub use edict_api::ruleset::*;
