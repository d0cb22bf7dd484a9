//! The read-model documents the catalog, list and rule set endpoints answer, as typed schemas: each list
//! page's items, a rule's catalog entry with its revisions, a team's rule set document.
//!
//! The read models store each document as the JSON their projection serialized; these types describe
//! that JSON field for field, so the wire stays what it was while the spec gains a schema per document.
//! A document is read into its type with [`typed`], which refuses (500) a document that does not parse
//! and, in debug builds, one that its type would write back differently: the end-to-end tests, which
//! run debug binaries, thereby check that every type matches its projection's JSON exactly.
//!
//! Times inside documents are [`Timestamp`]s: the text the projection wrote (RFC 3339, UTC, `Z`),
//! passed through unchanged.

use crate::server::problem::{ErrorResponse, Problem};
use crate::server::queries::FreshnessDto;
use crate::server::rules::{EnforcementDto, LayerDto, ModeDto};
use crate::server::teams::TeamRoleDto;
use crate::server::users::GlobalRoleDto;
use chrono::{DateTime, SecondsFormat, Utc};
use edict_application::queries::{Fetched, Freshness, Listed};
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    MaybeUndefined, ParseError, ParseFromJSON, ParseFromXML, ParseFromYAML, ParseResult, ToJSON,
    ToXML, ToYAML, Type,
};
use poem_openapi::{Enum, Object};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// An instant as an RFC 3339 string, kept as the read model wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(pub String);

impl From<DateTime<Utc>> for Timestamp {
    /// The same text serde writes for a `DateTime<Utc>` (the read models' format).
    fn from(time: DateTime<Utc>) -> Self {
        Timestamp(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl Type for Timestamp {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "date-time")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) if DateTime::parse_from_rfc3339(&text).is_ok() => {
                Ok(Timestamp(text))
            }
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ParseFromXML for Timestamp {
    fn parse_from_xml(value: Option<Value>) -> ParseResult<Self> {
        Self::parse_from_json(value)
    }
}

impl ParseFromYAML for Timestamp {
    fn parse_from_yaml(value: Option<Value>) -> ParseResult<Self> {
        Self::parse_from_json(value)
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

impl ToXML for Timestamp {
    fn to_xml(&self) -> Option<Value> {
        self.to_json()
    }
}

impl ToYAML for Timestamp {
    fn to_yaml(&self) -> Option<Value> {
        self.to_json()
    }
}

/// Reads a read-model document into its type.
///
/// # Errors
/// 500 when the document does not parse, or (debug builds) when its type would write it differently:
/// the type and the projection disagree, which is a defect.
pub fn typed<T: ParseFromJSON + ToJSON>(doc: Value, what: &str) -> Result<T, ErrorResponse> {
    let original = cfg!(debug_assertions).then(|| doc.clone());
    let parsed = T::parse_from_json(Some(doc)).map_err(|error| {
        mismatch(
            what,
            format!("does not match its schema: {}", error.into_message()),
        )
    })?;
    if let Some(original) = original {
        let written = parsed.to_json().unwrap_or_default();
        if written != original {
            return Err(mismatch(
                what,
                format!("is written back differently: {original} became {written}"),
            ));
        }
    }
    Ok(parsed)
}

fn mismatch(what: &str, message: String) -> ErrorResponse {
    tracing::error!(document = what, %message, "read model document and its schema disagree");
    ErrorResponse::Internal(Json(Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred; it has been logged",
    )))
}

/// How fresh a single document is, inside the document (as the read model side writes it).
#[derive(Debug, Clone, Object)]
#[oai(rename = "DocumentFreshness")]
pub struct DocumentFreshness {
    /// The read model that answered.
    pub projection: String,
    /// The global position of the last event it applied (compare with a command's `position`, or send
    /// it as `min_position` to wait for it).
    pub position: i64,
    /// Events committed after it that it has not applied yet.
    pub lag: i64,
    /// When it last moved.
    pub updated_at: Timestamp,
}

impl From<Freshness> for DocumentFreshness {
    fn from(f: Freshness) -> Self {
        DocumentFreshness {
            projection: f.projection,
            position: f.position,
            lag: f.lag,
            updated_at: f.updated_at.into(),
        }
    }
}

// ----- the rule catalog -----

/// Where a rule stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RuleStatusDto {
    /// Its working revision is being written.
    Draft,
    /// Its working revision is under review.
    Pending,
    /// A revision is in force and none is being worked on.
    Approved,
    /// Its working revision was sent back.
    Rejected,
    /// It accepts no further change.
    Archived,
}

/// Where one revision of a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RevisionStateDto {
    /// Being written.
    Draft,
    /// Submitted, collecting approvals.
    Pending,
    /// In force.
    Approved,
    /// Sent back by a reviewer (editable again).
    Rejected,
    /// Was in force until a later revision was approved.
    Superseded,
}

/// What a revision says, as written.
#[derive(Debug, Clone, Object)]
pub struct RevisionSpec {
    /// The rule's name.
    pub name: String,
    /// What the rule is for.
    #[oai(default)]
    pub description: String,
    /// The managed section.
    pub layer: LayerDto,
    /// The Markdown rendered into the managed section.
    pub content: String,
    /// The heading it is rendered under (null: the general group).
    #[oai(default, nullable)]
    pub category: Option<String>,
    /// Higher renders first within a category.
    #[oai(default)]
    pub priority: i32,
    /// Lowercase tags, sorted.
    #[oai(default)]
    pub tags: Vec<String>,
    /// Path globs a project-layer rule applies to (empty: the whole project).
    #[oai(default)]
    pub triggers: Vec<String>,
}

/// An approval of a revision in review.
#[derive(Debug, Clone, Object)]
pub struct RevisionApproval {
    /// The approver.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// A reviewer sending a revision back.
#[derive(Debug, Clone, Object)]
pub struct RevisionRejection {
    /// The reviewer.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// One revision of a rule, for its history.
#[derive(Debug, Clone, Object)]
pub struct RevisionEntry {
    /// The revision number (1, 2, …).
    pub number: u32,
    /// The spec as last written (as approved, for an approved or superseded revision).
    pub spec: RevisionSpec,
    /// Where it stands.
    pub state: RevisionStateDto,
    /// Who opened it.
    pub author: String,
    /// Everyone else who edited it.
    pub editors: Vec<String>,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// Who submitted it last.
    #[oai(nullable)]
    pub submitted_by: Option<String>,
    /// When it was submitted last.
    #[oai(nullable)]
    pub submitted_at: Option<Timestamp>,
    /// The approvals of the current (or approving) review round, oldest first.
    pub approvals: Vec<RevisionApproval>,
    /// Every time it was sent back, oldest first.
    pub rejections: Vec<RevisionRejection>,
    /// Who approved it (in order), once approved.
    pub approvers: Vec<String>,
    /// When it came into force.
    #[oai(nullable)]
    pub approved_at: Option<Timestamp>,
    /// When a later revision replaced it.
    #[oai(nullable)]
    pub superseded_at: Option<Timestamp>,
}

/// A rule as the catalog lists it: its current revision's spec, flattened, and every revision.
#[derive(Debug, Clone, Object)]
pub struct RuleEntry {
    /// The rule.
    pub id: String,
    /// The status as a whole: `archived` once archived, else the working revision's state when there
    /// is one, else `approved`.
    pub status: RuleStatusDto,
    /// The layer, fixed for the rule's life.
    pub layer: LayerDto,
    /// Who drafted the rule.
    pub author: String,
    /// When it was drafted.
    pub created_at: Timestamp,
    /// When the last event about it happened.
    pub updated_at: Timestamp,
    /// The current revision's name (the working revision if any, else the approved one).
    pub name: String,
    /// The current revision's description.
    pub description: String,
    /// The current revision's Markdown content.
    pub content: String,
    /// The current revision's category.
    #[oai(nullable)]
    pub category: Option<String>,
    /// The current revision's priority.
    pub priority: i32,
    /// The current revision's tags, sorted.
    pub tags: Vec<String>,
    /// The current revision's path triggers.
    pub triggers: Vec<String>,
    /// The number of the approved revision in force, if any revision was ever approved.
    #[oai(nullable)]
    pub approved_revision: Option<u32>,
    /// The number of the revision being drafted or reviewed, if any.
    #[oai(nullable)]
    pub working_revision: Option<u32>,
    /// The state of that revision (`draft`, `pending` or `rejected`).
    #[oai(nullable)]
    pub working_state: Option<RevisionStateDto>,
    /// How an organization rule is enforced on every team (null on the other layers).
    #[oai(nullable)]
    pub organization_enforcement: Option<EnforcementDto>,
    /// Whether the rule is archived.
    pub archived: bool,
    /// When it was archived.
    #[oai(nullable)]
    pub archived_at: Option<Timestamp>,
    /// The rule's version (send as `If-Match`).
    pub version: u64,
    /// Every revision, oldest first.
    pub revisions: Vec<RevisionEntry>,
}

/// A rule's catalog entry, with the freshness of the catalog that answered.
#[derive(Debug, Clone, Object)]
pub struct RuleEntryFresh {
    /// The entry.
    #[oai(flatten)]
    pub entry: RuleEntry,
    /// How fresh the catalog is.
    pub freshness: DocumentFreshness,
}

// ----- the directory -----

/// A user as the directory lists them.
#[derive(Debug, Clone, Object)]
pub struct UserEntry {
    /// The user.
    pub id: String,
    /// Their email address (lowercase, unique).
    pub email: String,
    /// Their display name.
    pub name: String,
    /// Their global roles.
    pub roles: Vec<GlobalRoleDto>,
    /// Whether they may sign in.
    pub active: bool,
    /// When they were created.
    pub created_at: Timestamp,
    /// When their password last changed.
    #[oai(nullable)]
    pub password_changed_at: Option<Timestamp>,
    /// The user's version (send as `If-Match`).
    pub version: u64,
    /// The teams they belong to (by team id), with their role in each.
    pub teams: BTreeMap<String, TeamRoleDto>,
}

/// A rule attached to a team.
#[derive(Debug, Clone, Object)]
pub struct AttachedRuleEntry {
    /// The rule's layer (team or project).
    pub layer: LayerDto,
    /// The rule's approved revision when it was attached.
    pub rule_revision: u32,
    /// How the team enforces it.
    pub enforcement: EnforcementDto,
    /// Who attached it.
    pub attached_by: String,
    /// When.
    pub attached_at: Timestamp,
}

/// A team as the directory lists it.
#[derive(Debug, Clone, Object)]
pub struct TeamEntry {
    /// The team.
    pub id: String,
    /// Its current name.
    pub name: String,
    /// Whether it is archived.
    pub archived: bool,
    /// When it was archived.
    #[oai(nullable)]
    pub archived_at: Option<Timestamp>,
    /// Its members (by user id) and their roles.
    pub members: BTreeMap<String, TeamRoleDto>,
    /// The team- and project-layer rules attached to it (by rule id).
    pub rules: BTreeMap<String, AttachedRuleEntry>,
    /// When it was created.
    pub created_at: Timestamp,
    /// The team's version (send as `If-Match`).
    pub version: u64,
}

// ----- the change inbox -----

/// Where a change request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ChangeRequestStatusDto {
    /// Waiting for a decision; the change stands until its timeout.
    Pending,
    /// The change was accepted.
    Approved,
    /// The change was refused and reverted.
    Rejected,
    /// Nobody decided in time; the change was reverted.
    AutoReverted,
    /// The requester asked for an exception.
    ExceptionRequested,
    /// The exception was granted.
    ExceptionGranted,
    /// The exception was denied.
    ExceptionDenied,
    /// The requester withdrew it.
    Withdrawn,
}

/// How the pending phase of a change request ended.
#[derive(Debug, Clone, Object)]
pub struct ChangeDecision {
    /// Who decided (null for an automatic revert).
    #[oai(nullable)]
    pub by: Option<String>,
    /// Why (for a rejection).
    #[oai(nullable)]
    pub reason: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// The kind of an exception: `time_limited` (with `until`) or `permanent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ExceptionKindName {
    /// Until a time.
    TimeLimited,
    /// For good.
    Permanent,
}

/// What an exception asks for.
#[derive(Debug, Clone, Object)]
pub struct ExceptionKindEntry {
    /// `time_limited` or `permanent`.
    #[oai(rename = "type")]
    pub kind: ExceptionKindName,
    /// For `time_limited`: until when.
    #[oai(skip_serializing_if_is_none)]
    pub until: Option<Timestamp>,
}

/// The outcome of an exception request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ExceptionOutcome {
    /// The change may stand (until `until`, or for good when it is null).
    Granted,
    /// The change is reverted.
    Denied,
}

/// How an exception request was decided.
#[derive(Debug, Clone, Object)]
pub struct ExceptionResolutionEntry {
    /// `granted` or `denied`.
    pub outcome: ExceptionOutcome,
    /// Who decided.
    pub by: String,
    /// For `granted`: until when the change may stand (null: for good); absent for `denied`.
    #[oai(nullable)]
    pub until: MaybeUndefined<Timestamp>,
    /// For `denied`: why.
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// An exception asked for on a change request.
#[derive(Debug, Clone, Object)]
pub struct ExceptionEntry {
    /// The exception's id.
    pub id: String,
    /// Who asked.
    pub requested_by: String,
    /// Why the change should stand.
    pub justification: String,
    /// What was asked for.
    pub kind: ExceptionKindEntry,
    /// When.
    pub requested_at: Timestamp,
    /// The decision, once made.
    #[oai(nullable)]
    pub resolution: Option<ExceptionResolutionEntry>,
}

/// A change request as the inbox lists it.
#[derive(Debug, Clone, Object)]
pub struct ChangeRequestEntry {
    /// The change request.
    pub id: String,
    /// The agent that reported the edit.
    pub agent: String,
    /// The developer who made the edit (the requester).
    pub user: String,
    /// The team whose rule set the edited section belongs to.
    pub team: String,
    /// The rule whose text was edited.
    pub rule: String,
    /// The edited file, as the agent reported it.
    pub file: String,
    /// The layer of the edited section.
    pub layer: LayerDto,
    /// SHA-256 of the section as Edict wrote it (what a revert restores).
    pub original_hash: String,
    /// SHA-256 of the section as last edited.
    pub new_hash: String,
    /// The last reported edit, as a unified diff.
    pub diff: String,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// When the change is reverted if nobody decides.
    pub timeout_at: Timestamp,
    /// Where it is in its life.
    pub status: ChangeRequestStatusDto,
    /// How the pending phase ended, once it has.
    #[oai(nullable)]
    pub decision: Option<ChangeDecision>,
    /// Every exception asked for afterwards, oldest first.
    pub exceptions: Vec<ExceptionEntry>,
    /// The ids of the agent reports folded into it, oldest first.
    pub report_ids: Vec<String>,
    /// The change request's version (send as `If-Match`).
    pub version: u64,
    /// When the last event about it happened.
    pub updated_at: Timestamp,
}

// ----- the agent fleet -----

/// A rule set an agent refused as untrusted.
#[derive(Debug, Clone, Object)]
pub struct IntegrityFailureEntry {
    /// The team whose rule set it was.
    pub team: String,
    /// Its revision.
    pub revision: u64,
    /// Why it was refused (a stable slug).
    pub reason: String,
    /// More detail.
    pub detail: String,
    /// When.
    pub at: Timestamp,
}

/// An enrolled agent as the fleet lists it.
#[derive(Debug, Clone, Object)]
pub struct AgentEntry {
    /// The agent.
    pub id: String,
    /// The user it acts for.
    pub user: String,
    /// The machine's stable id.
    pub machine_id: String,
    /// The machine's name (may be empty).
    pub machine_name: String,
    /// When it was enrolled.
    pub enrolled_at: Timestamp,
    /// Whether it was revoked (its token no longer works).
    pub revoked: bool,
    /// When it was revoked.
    #[oai(nullable)]
    pub revoked_at: Option<Timestamp>,
    /// Who revoked it.
    #[oai(nullable)]
    pub revoked_by: Option<String>,
    /// Why, if a reason was given.
    #[oai(nullable)]
    pub revoke_reason: Option<String>,
    /// How many untrusted rule sets the agent reported refusing.
    #[oai(default)]
    pub integrity_failures: u64,
    /// The last one.
    #[oai(default, nullable)]
    pub last_integrity_failure: Option<IntegrityFailureEntry>,
    /// The agent's version (send as `If-Match`).
    pub version: u64,
}

// ----- the team rule sets -----

/// One rule as a team enforces it.
#[derive(Debug, Clone, Object)]
pub struct EffectiveRuleEntry {
    /// The rule.
    pub rule_id: String,
    /// The approved revision in force.
    #[oai(default)]
    pub revision: u32,
    /// Its name (the `### ` heading).
    pub name: String,
    /// Its category (the `## ` heading), if any.
    #[oai(default, nullable)]
    pub category: Option<String>,
    /// Higher is rendered first within a category.
    #[oai(default)]
    pub priority: i32,
    /// What the agent does when the rule's text is edited.
    pub mode: ModeDto,
    /// How long a temporary change may stand, for the temporary mode.
    #[oai(default, nullable)]
    pub temporary_timeout_secs: Option<u64>,
    /// Path globs of the project files the rule applies to (project layer; empty: the whole project).
    #[oai(default)]
    pub triggers: Vec<String>,
    /// The Markdown body.
    #[oai(default)]
    pub content: String,
}

/// The effective rules of one layer and their rendered managed section.
#[derive(Debug, Clone, Object)]
pub struct LayerRulesEntry {
    /// The rules, in render order.
    #[oai(default)]
    pub rules: Vec<EffectiveRuleEntry>,
    /// The body of the managed section; empty when there is no rule.
    #[oai(default)]
    pub text: String,
}

/// The three managed sections of a team's rule set.
#[derive(Debug, Clone, Object)]
pub struct LayersEntry {
    /// Organization rules (`/etc/claude-code/CLAUDE.md`).
    pub organization: LayerRulesEntry,
    /// Team rules (`~/.claude/CLAUDE.md`).
    pub team: LayerRulesEntry,
    /// Project rules (`<project>/CLAUDE.md`).
    pub project: LayerRulesEntry,
}

/// The organization's signature over a rule set.
#[derive(Debug, Clone, Object)]
pub struct RuleSetSignatureEntry {
    /// The signing key's id.
    pub key_id: String,
    /// When the rule set was issued.
    pub issued_at: Timestamp,
    /// The ed25519 signature (lowercase hex).
    pub sig: String,
}

/// What a time-travel read asked for and what it replayed.
#[derive(Debug, Clone, Object)]
pub struct AsOfEntry {
    /// The `as_of` parameter as given.
    pub requested: String,
    /// The position of the last event replayed (null: none was).
    #[oai(nullable)]
    pub position: Option<i64>,
    /// How many events were replayed.
    pub events_replayed: u64,
}

/// A team's effective rule set: the document agents apply.
#[derive(Debug, Clone, Object)]
pub struct RuleSetDocument {
    /// The team.
    pub team_id: String,
    /// The team's current name (a rename does not bump the revision).
    #[oai(default)]
    pub team_name: String,
    /// Whether the team is archived (every layer is then empty).
    #[oai(default)]
    pub archived: bool,
    /// Starts at 1 and grows by exactly 1 whenever the effective content changes; the rule set's
    /// `ETag`.
    pub revision: u64,
    /// SHA-256 (lowercase hex) of the canonical JSON of `layers`.
    pub hash: String,
    /// When the event that produced this revision was recorded.
    pub updated_at: Timestamp,
    /// The global position of that event.
    #[oai(default)]
    pub position: i64,
    /// The effective rules and rendered text, per layer.
    pub layers: LayersEntry,
    /// The organization's signature, where the rule set is published signed.
    #[oai(skip_serializing_if_is_none)]
    pub signature: Option<RuleSetSignatureEntry>,
    /// How fresh the read model that answered is (absent with `as_of`).
    #[oai(skip_serializing_if_is_none)]
    pub freshness: Option<DocumentFreshness>,
    /// For an `as_of` read: what was asked and replayed (absent otherwise).
    #[oai(skip_serializing_if_is_none)]
    pub as_of: Option<AsOfEntry>,
}

// ----- pages -----

macro_rules! page {
    ($(#[$doc:meta])* $name:ident of $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Object)]
        pub struct $name {
            /// The items, in a stable order.
            pub items: Vec<$item>,
            /// Pass as `after` to get the next page; absent on the last page.
            #[oai(skip_serializing_if_is_none)]
            pub next: Option<String>,
            /// How fresh the list is.
            pub freshness: FreshnessDto,
        }

        impl $name {
            /// The page of `listed`, each item read into its type.
            ///
            /// # Errors
            /// 500 when a document does not match its type.
            pub fn of(listed: Listed) -> Result<Self, ErrorResponse> {
                Ok($name {
                    items: listed
                        .items
                        .into_iter()
                        .map(|item| typed(item, stringify!($item)))
                        .collect::<Result<_, _>>()?,
                    next: listed.next,
                    freshness: listed.freshness.into(),
                })
            }
        }
    };
}

page!(
    /// A page of the rule catalog.
    RulePage of RuleEntry
);
page!(
    /// A page of teams.
    TeamPage of TeamEntry
);
page!(
    /// A page of users.
    UserPage of UserEntry
);
page!(
    /// A page of agents.
    AgentPage of AgentEntry
);
page!(
    /// A page of change requests.
    ChangeRequestPage of ChangeRequestEntry
);

/// A rule's catalog entry with the catalog's freshness.
///
/// # Errors
/// 500 when the document does not match its type.
pub fn rule_entry(fetched: Fetched) -> Result<RuleEntryFresh, ErrorResponse> {
    Ok(RuleEntryFresh {
        entry: typed(fetched.item, "RuleEntry")?,
        freshness: fetched.freshness.into(),
    })
}

/// A team's rule set document with the read model's freshness.
///
/// # Errors
/// 500 when the document does not match its type.
pub fn ruleset(fetched: Fetched) -> Result<RuleSetDocument, ErrorResponse> {
    let mut doc: RuleSetDocument = typed(fetched.item, "RuleSetDocument")?;
    doc.freshness = Some(fetched.freshness.into());
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trips<T: ParseFromJSON + ToJSON>(doc: Value) {
        let parsed: T = typed(doc.clone(), "test").expect("the document parses");
        assert_eq!(parsed.to_json(), Some(doc));
    }

    #[test]
    fn a_timestamp_keeps_the_text_serde_writes() {
        let time = DateTime::parse_from_rfc3339("2026-12-05T06:08:19.812480807Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Timestamp::from(time).to_json(),
            Some(serde_json::to_value(time).unwrap())
        );
        assert!(Timestamp::parse_from_json(Some(json!("yesterday"))).is_err());
    }

    #[test]
    fn a_change_request_with_every_kind_of_exception_round_trips() {
        round_trips::<ChangeRequestEntry>(json!({
            "id": "c", "agent": "a", "user": "u", "team": "t", "rule": "r", "file": "CLAUDE.md",
            "layer": "team", "original_hash": "h1", "new_hash": "h2", "diff": "-a\n+b",
            "opened_at": "2026-12-05T06:08:19Z", "timeout_at": "2026-12-05T07:08:19Z",
            "status": "exception_granted",
            "decision": {"by": null, "reason": null, "at": "2026-12-05T06:09:19Z"},
            "exceptions": [
                {"id": "e1", "requested_by": "u", "justification": "needed",
                 "kind": {"type": "permanent"}, "requested_at": "2026-12-05T06:10:00Z",
                 "resolution": {"outcome": "denied", "by": "a", "reason": "no",
                                "at": "2026-12-05T06:11:00Z"}},
                {"id": "e2", "requested_by": "u", "justification": "needed",
                 "kind": {"type": "time_limited", "until": "2027-01-01T00:00:00Z"},
                 "requested_at": "2026-12-05T06:12:00Z",
                 "resolution": {"outcome": "granted", "by": "a", "until": null,
                                "at": "2026-12-05T06:13:00Z"}},
                {"id": "e3", "requested_by": "u", "justification": "needed",
                 "kind": {"type": "permanent"}, "requested_at": "2026-12-05T06:14:00Z",
                 "resolution": null}
            ],
            "report_ids": ["r1"], "version": 5, "updated_at": "2026-12-05T06:14:00Z"
        }));
    }

    #[test]
    fn an_agent_with_an_integrity_failure_round_trips() {
        round_trips::<AgentEntry>(json!({
            "id": "a", "user": "u", "machine_id": "m", "machine_name": "", "enrolled_at": "2026-12-05T06:08:19Z",
            "revoked": true, "revoked_at": "2026-12-05T06:09:19Z", "revoked_by": "u2",
            "revoke_reason": null, "integrity_failures": 1,
            "last_integrity_failure": {"team": "t", "revision": 3, "reason": "bad_signature",
                                       "detail": "x", "at": "2026-12-05T06:08:59Z"},
            "version": 3
        }));
    }

    #[test]
    fn a_document_that_its_type_would_change_is_refused() {
        // An unknown field would be dropped on the way out: the type no longer describes the document.
        let doc = json!({"team": "t", "revision": 3, "reason": "r", "detail": "d",
                         "at": "2026-12-05T06:08:59Z", "extra": 1});
        let refused = typed::<IntegrityFailureEntry>(doc, "test");
        assert!(matches!(refused, Err(ErrorResponse::Internal(_))));
    }
}
