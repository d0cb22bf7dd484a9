//! The fan-out: one thread per gateway takes each new revision and offers it to every port of its
//! team ([`Port::offer`]): written into the socket at once when nothing waits before it (one `write`,
//! no task woken), queued for the connection's task otherwise. So a push to a team's idle agents is
//! one write per agent in a row, not one task wake-up per agent on the runtime that also reads their
//! `applied`. A thread rather than a task: the loop runs for as long as the team has connections to
//! write to and would hold one of the runtime's workers that long (ADR 0013; measurements in
//! `docs/benchmarks.md`).
//!
//! While a fan-out runs the connections' reads are held (the [`Gate`], delivery first). The ports
//! join and leave their teams' member lists as connections are greeted and refreshed; a fan-out
//! offers a revision to a copy of the list, so a port that left meanwhile refuses it (`NotMember`).
//! Each fan-out is logged (`rule set fanned out`, target `edict_api::gateway::fanout`, level info),
//! which a benchmark reads.
//!
//! Without the thread (not started, or gone after a panic) the task that announces a revision fans
//! it out itself.

use super::gate::Gate;
use super::rulesets::Payload;
use super::wire::{Offered, Port};
use edict_application::metrics::names;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// The ports of each team's connections, by address.
type Members = Arc<Mutex<HashMap<Arc<str>, HashMap<usize, Arc<Port>>>>>;

/// The ports of each team, and the thread that offers them each new revision.
#[derive(Debug)]
pub(super) struct Fanout {
    /// The ports each new revision is offered to.
    members: Members,
    /// To the fan-out thread (which ends when this is dropped); `None` when the thread could not be
    /// started: then each revision is fanned out by the task that announces it.
    thread: Option<mpsc::Sender<Arc<Payload>>>,
    stall_limit: Duration,
    /// Closed while a fan-out runs.
    gate: Arc<Gate>,
}

impl Fanout {
    /// Starts the fan-out thread; a port whose queue took nothing for longer than `stall_limit` is
    /// closed by the next push (`too_slow`).
    pub(super) fn start(stall_limit: Duration) -> Fanout {
        let members = Members::default();
        let (to_fanout, payloads) = mpsc::channel::<Arc<Payload>>();
        let fanning = Arc::clone(&members);
        let gate = Arc::new(Gate::default());
        let gating = Arc::clone(&gate);
        let started = std::thread::Builder::new()
            .name("edict-fanout".into())
            .spawn(move || {
                while let Ok(payload) = payloads.recv() {
                    fan_out(&fanning, &gating, &payload, stall_limit);
                }
            });
        let thread = match started {
            Ok(_) => Some(to_fanout),
            Err(error) => {
                tracing::error!(%error, "cannot start the fan-out thread; fanning out inline");
                None
            }
        };
        Fanout {
            members,
            thread,
            stall_limit,
            gate,
        }
    }

    /// Closed while a fan-out runs.
    pub(super) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Adds `port` to the ports every new revision of `team` is offered to; answers the team's id as
    /// the member map holds it (one copy per team, shared by its connections).
    pub(super) fn join(&self, team: &str, port: &Arc<Port>) -> Arc<str> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let key = Arc::as_ptr(port) as usize;
        if let Some(ports) = members.get_mut(team) {
            ports.insert(key, Arc::clone(port));
        }
        if let Some((team, _)) = members.get_key_value(team) {
            return Arc::clone(team);
        }
        let team: Arc<str> = Arc::from(team);
        members.insert(Arc::clone(&team), HashMap::from([(key, Arc::clone(port))]));
        team
    }

    /// Removes `port` from the ports of `team`.
    pub(super) fn leave(&self, team: &str, port: &Arc<Port>) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ports) = members.get_mut(team) {
            ports.remove(&(Arc::as_ptr(port) as usize));
            if ports.is_empty() {
                members.remove(team);
            }
        }
    }

    /// The teams that have ports.
    pub(super) fn teams(&self) -> Vec<String> {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    /// Offers `payload` to the ports of its team: on the fan-out thread, or on the calling task when
    /// there is none (not started, or gone after a panic).
    pub(super) fn send(&self, payload: &Arc<Payload>) {
        let unsent = match &self.thread {
            Some(thread) => thread.send(Arc::clone(payload)).err().map(|e| e.0),
            None => Some(Arc::clone(payload)),
        };
        if let Some(unsent) = unsent {
            fan_out(&self.members, &self.gate, &unsent, self.stall_limit);
        }
    }
}

/// Offers `payload` to every port of its team (on the fan-out thread), the connections' reads held
/// meanwhile.
fn fan_out(members: &Members, gate: &Gate, payload: &Payload, stall_limit: Duration) {
    let started = Instant::now();
    let closed = gate.close();
    // A copy of the list (reference counts): ports join and leave meanwhile without waiting.
    let ports: Vec<Arc<Port>> = members
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&*payload.team)
        .map(|ports| ports.values().cloned().collect())
        .unwrap_or_default();
    let (mut written, mut queued, mut overflowed) = (0usize, 0usize, 0usize);
    for port in &ports {
        match port.offer(&payload.team, payload.revision, &payload.frame, stall_limit) {
            Offered::Written => written += 1,
            Offered::Queued => queued += 1,
            Offered::Overflowed => overflowed += 1,
            // A port whose connection left the team after the copy above refuses it (`NotMember`).
            Offered::Stale | Offered::NotMember | Offered::Closed => {}
        }
    }
    drop(closed);
    metrics::counter!(names::GATEWAY_PUSHES).increment((written + queued) as u64);
    metrics::histogram!(names::GATEWAY_FANOUT).record(started.elapsed());
    tracing::info!(
        team = &*payload.team,
        revision = payload.revision,
        ports = ports.len(),
        written,
        queued,
        overflowed,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "rule set fanned out"
    );
}
