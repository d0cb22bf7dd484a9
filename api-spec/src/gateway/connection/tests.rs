//! Unit tests of a connection's pure parts: the fast read of `applied` against the full parse, and which
//! timer is due first.

use super::{Due, Timer};
use crate::gateway::GatewaySettings;
use std::time::Duration;
use tokio::time::Instant;

fn settings() -> GatewaySettings {
    GatewaySettings {
        ping_interval: Duration::from_secs(20),
        revocation_check: Duration::from_secs(300),
        refresh_interval: Duration::from_secs(120),
        decision_interval: Duration::from_secs(5),
        ..GatewaySettings::default()
    }
}

#[test]
fn applied_is_read_directly_as_the_full_parse_reads_it() {
    use crate::protocol::{AgentMessage, Holding};
    let holding = Holding {
        team: "t\u{e9}am".into(),
        revision: 7,
        hash: "h".into(),
    };
    let text = serde_json::to_string(&AgentMessage::Applied(holding.clone())).unwrap();
    assert_eq!(super::applied(&text), Some(holding));
    // An escaped type, another message, a missing field: left to the full parse.
    assert_eq!(
        super::applied(r#"{"type":"appl\u0069ed","team":"t","revision":1,"hash":"h"}"#),
        None
    );
    assert_eq!(
        super::applied(r#"{"type":"applied","team":"t","revision":1}"#),
        None
    );
    let hello = AgentMessage::Hello {
        protocol: 1,
        agent_version: "x".into(),
        holdings: vec![],
        key_sequence: 0,
    };
    assert_eq!(
        super::applied(&serde_json::to_string(&hello).unwrap()),
        None
    );
}

#[test]
fn the_decisions_come_first_then_each_timer_one_period_after_it_fired() {
    let settings = settings();
    let mut due = Due::new(&settings);
    let start = Instant::now();
    assert!(due.next(true) <= start);
    assert_eq!(due.take(start, true, &settings), Some(Timer::Decisions));
    assert_eq!(due.take(start, true, &settings), None);
    assert_eq!(due.next(true), start + Duration::from_secs(5));
    // Late by 30 s: the ping fires once, then the decisions, each rescheduled from now.
    let late = start + Duration::from_secs(30);
    assert_eq!(due.take(late, true, &settings), Some(Timer::Ping));
    assert_eq!(due.take(late, true, &settings), Some(Timer::Decisions));
    assert_eq!(due.take(late, true, &settings), None);
    assert_eq!(due.next(true), late + Duration::from_secs(5));
    assert_eq!(due.ping, late + Duration::from_secs(20));
}

#[test]
fn while_a_read_is_in_flight_only_the_ping_is_due() {
    let settings = settings();
    let mut due = Due::new(&settings);
    let start = Instant::now();
    due.refresh = start;
    assert_eq!(due.next(false), due.ping);
    assert_eq!(due.take(start, false, &settings), None);
    // The refresh waited; it fires once the read is over.
    assert_eq!(due.take(start, true, &settings), Some(Timer::Refresh));
    assert_eq!(due.refresh, start + Duration::from_secs(120));
}
