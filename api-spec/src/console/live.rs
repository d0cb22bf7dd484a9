//! Live pages: `GET /console/events?topic=<topic>&...`, a server-sent event stream that tells a page
//! when what it shows changed, so `console.js` refetches the page and swaps its `[data-live]` region
//! (a page works the same without the script: it is current when loaded).
//!
//! The stream authenticates by the session cookie like every page (the console guard runs first),
//! and watches through the same use cases the page calls, with the viewer's principal: it observes a
//! fingerprint of what the page shows (a digest of ids and versions, never the data), every
//! [`TICK`] ([`DASHBOARD_TICK`] for the dashboard, whose observation costs a render's reads), and
//! sends `event: version` with the new digest when it differs. The first event is the digest at
//! connection time: a page that carries `data-live-version` compares it with the one it was rendered
//! with, so a change between the render and the connection is not missed, nor one while reconnecting.
//!
//! Bounded: at most [`MAX_STREAMS`] streams per process (more are a 503), each ends after
//! [`LIFETIME`] (the browser reconnects by itself, and the guard checks the session again, so a
//! revoked session or a changed role stops being watched), and a comment every [`KEEP_ALIVE`] finds
//! a closed connection, which drops the stream and its polling. A use case's refusal (403, 404, the
//! session ended) ends the stream with `event: ended`, which the script takes as "stop".
//!
//! Topics: `inbox` (with the inbox's `team`, `status`, `after`), `change-request` (with `id`),
//! `dashboard`, `fleet`.

use super::change_requests::{self, InboxQuery};
use super::layout::{Action, can};
use super::render::when;
use super::session::Session;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_application::queries::PageRequest;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use poem::http::StatusCode;
use poem::web::sse::{Event, SSE};
use poem::web::{Data, Query};
use poem::{IntoResponse, Response, handler};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How often a stream observes its topic.
pub const TICK: Duration = Duration::from_secs(1);
/// How often a dashboard stream observes (its observation reads what a dashboard render reads).
pub const DASHBOARD_TICK: Duration = Duration::from_secs(5);
/// How long one stream lasts before the browser reconnects.
pub const LIFETIME: Duration = Duration::from_secs(300);
/// How often an idle stream sends a comment (finding closed connections).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Streams one process serves at once.
pub const MAX_STREAMS: usize = 256;
/// What the browser waits before reconnecting, in milliseconds.
const RETRY_MS: u64 = 3_000;
/// Items one observation reads at most (as the pages do).
const MAX_ITEMS: usize = 200;

/// Streams open in this process.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// One open stream: counted while it lives.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < MAX_STREAMS).then_some(open + 1)
        })
        .ok()
        .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A digest of `parts` (hex, 16 characters): what a stream compares and a page carries.
pub fn digest<T: Display>(parts: &[T]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.to_string().as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// What a page watches, as the query string names it.
#[derive(Debug, Default, Deserialize)]
pub struct Watch {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    id: String,
    #[serde(flatten)]
    inbox: InboxFilters,
}

/// The inbox's filters, as its page's query string carries them.
#[derive(Debug, Default, Clone, Deserialize)]
struct InboxFilters {
    #[serde(default)]
    team: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: Option<String>,
}

/// A topic a stream watches.
#[derive(Debug, Clone)]
enum Topic {
    Inbox(InboxQuery),
    ChangeRequest(String),
    Dashboard,
    Fleet,
}

impl Topic {
    fn of(watch: Watch) -> Option<Topic> {
        match watch.topic.as_str() {
            "inbox" => Some(Topic::Inbox(InboxQuery {
                team: watch.inbox.team,
                status: watch.inbox.status,
                after: watch.inbox.after,
            })),
            "change-request" if !watch.id.is_empty() => Some(Topic::ChangeRequest(watch.id)),
            "dashboard" => Some(Topic::Dashboard),
            "fleet" => Some(Topic::Fleet),
            _ => None,
        }
    }

    fn tick(&self) -> Duration {
        match self {
            Topic::Dashboard => DASHBOARD_TICK,
            _ => TICK,
        }
    }

    /// The fingerprint of what the topic's page shows `principal` now.
    async fn observe(&self, edict: &Edict, principal: &Principal) -> Result<String, AppError> {
        match self {
            Topic::Inbox(filters) => Ok(change_requests::inbox_fingerprint(
                &change_requests::inbox_page(edict, principal, filters).await?,
            )),
            Topic::ChangeRequest(id) => {
                let change = edict
                    .change_request(principal, change_requests::parse_id(id)?)
                    .await?;
                Ok(digest(&[edict_domain::Versioned::version(&change)]))
            }
            Topic::Dashboard => dashboard(edict, principal).await,
            Topic::Fleet => {
                let agents = edict.list_agents(principal, None, &first_page()).await?;
                Ok(digest(&ids_and_versions(&agents.items)))
            }
        }
    }
}

fn first_page() -> PageRequest {
    PageRequest {
        after: None,
        limit: Some(MAX_ITEMS),
        min_position: None,
    }
}

fn ids_and_versions(docs: &[serde_json::Value]) -> Vec<String> {
    docs.iter()
        .map(|doc| format!("{}@{}", doc["id"], doc["version"]))
        .collect()
}

/// The dashboard's fingerprint: the change requests waiting, the machines, each team's latest rule
/// set and its machines' acknowledgements, and, for org_admins and auditors, the projections' lag.
async fn dashboard(edict: &Edict, principal: &Principal) -> Result<String, AppError> {
    let mut parts = Vec::new();
    for status in ["pending", "exception_requested"] {
        let waiting = edict
            .list_change_requests(principal, None, Some(status.into()), &first_page())
            .await?;
        parts.extend(ids_and_versions(&waiting.items));
        parts.push(format!("{status}:{}", waiting.next.is_some()));
    }
    let agents = edict
        .list_agents(principal, Some("enrolled".into()), &first_page())
        .await?;
    parts.extend(ids_and_versions(&agents.items));
    let teams = edict
        .list_teams(principal, Some("active".into()), &first_page())
        .await?;
    for team in &teams.items {
        let Some(id) = team["id"].as_str() else {
            continue;
        };
        parts.push(format!("team {id} {}", team["version"]));
        let (latest, enforced) = edict.team_convergence(principal, id).await?;
        if let Some(latest) = latest {
            parts.push(format!("latest {} {}", latest["revision"], latest["hash"]));
        }
        parts.extend(
            enforced
                .iter()
                .map(|e| format!("{} {} {} {}", e.agent_id, e.revision, e.hash, e.applied_at)),
        );
    }
    if can(principal, Action::ReadOperations) {
        for s in edict.projection_statuses(principal).await? {
            parts.push(format!(
                "{} {} {} {}",
                s.name,
                s.lag,
                s.error.unwrap_or_default(),
                when(s.updated_at)
            ));
        }
    }
    Ok(digest(&parts))
}

/// What a stream holds between two observations.
struct Watcher {
    edict: Arc<Edict>,
    principal: Principal,
    topic: Topic,
    last: Option<String>,
    until: Instant,
    ended: bool,
    _slot: Slot,
}

impl Watcher {
    /// The next event: the first observation at once, then the next change (None past the
    /// stream's lifetime or after it ended).
    async fn next(mut self) -> Option<(Event, Watcher)> {
        if self.ended {
            return None;
        }
        loop {
            if self.last.is_some() {
                let wake = Instant::now() + self.topic.tick();
                if wake >= self.until {
                    return None;
                }
                tokio::time::sleep_until(wake).await;
            }
            match self.topic.observe(&self.edict, &self.principal).await {
                Ok(version) if self.last.as_ref() != Some(&version) => {
                    self.last = Some(version.clone());
                    return Some((Event::message(version).event_type("version"), self));
                }
                Ok(_) => {}
                Err(
                    error @ (AppError::Forbidden(_)
                    | AppError::NotFound(_)
                    | AppError::Unauthenticated
                    | AppError::BadParameter { .. }),
                ) => {
                    self.ended = true;
                    let (_, _, message) = super::render::describe(&error);
                    return Some((Event::message(message).event_type("ended"), self));
                }
                Err(error) => {
                    // Unavailable for now: the page keeps what it shows; the next tick tries again.
                    tracing::debug!(%error, "a live console stream could not observe its topic");
                    if self.last.is_none() {
                        self.last = Some(String::new());
                    }
                }
            }
        }
    }
}

/// `GET /console/events`: the live stream of one page's topic.
#[handler]
pub async fn events(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Query(watch): Query<Watch>,
) -> Response {
    let Some(topic) = Topic::of(watch) else {
        return (StatusCode::BAD_REQUEST, "unknown live topic").into_response();
    };
    let Some(slot) = Slot::take() else {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("Retry-After", "30")
            .body("too many live pages open; the page stays as loaded");
    };
    let watcher = Watcher {
        edict: Arc::clone(&edict),
        principal: session.principal,
        topic,
        last: None,
        until: Instant::now() + LIFETIME,
        ended: false,
        _slot: slot,
    };
    let stream: BoxStream<'static, Event> =
        stream::once(async { Event::Retry { retry: RETRY_MS } })
            .chain(stream::unfold(watcher, Watcher::next))
            .boxed();
    SSE::new(stream).keep_alive(KEEP_ALIVE).into_response()
}

#[cfg(test)]
mod tests {
    use super::digest;

    #[test]
    fn a_digest_tells_parts_apart() {
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a", "b"]), digest(&["ab"]));
        assert_eq!(digest(&[1u64]).len(), 16);
    }
}
