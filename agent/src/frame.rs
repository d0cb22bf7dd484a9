//! Decoding the gateway's text frames: the first thing the agent does with bytes from the network.
//!
//! A frame is a [`GatewayMessage`] in JSON. A frame that does not decode is either a rule set the agent
//! cannot read (it is skipped: the agent keeps enforcing what it holds, and the server sees it has not
//! converged) or anything else (the connection is dropped and made again). Decoding never trusts what it
//! reads: signatures are checked after it, by the code that acts on each message.

use edict_api::protocol::GatewayMessage;

/// What a text frame from the gateway turned out to be.
#[derive(Debug)]
pub enum Frame {
    /// A message of the protocol.
    Message(Box<GatewayMessage>),
    /// A frame typed `rule_set` that does not decode as one: not applied.
    UnreadableRuleSet {
        /// The team it names, when it names one as a string.
        team: Option<String>,
        /// The revision it names, when it names one as a number.
        revision: Option<u64>,
        /// Why it does not decode.
        error: serde_json::Error,
    },
    /// Anything else that does not decode.
    Malformed(serde_json::Error),
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Frame {
    match serde_json::from_str::<GatewayMessage>(text) {
        Ok(message) => Frame::Message(Box::new(message)),
        Err(error) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) if value["type"] == "rule_set" => Frame::UnreadableRuleSet {
                team: value["team"].as_str().map(str::to_owned),
                revision: value["revision"].as_u64(),
                error,
            },
            _ => Frame::Malformed(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames of the kinds a gateway sends, as they are on the wire.
    fn frames() -> Vec<String> {
        [
            GatewayMessage::Welcome {
                protocol: 1,
                agent_id: "agent".into(),
                teams: vec!["team".into()],
            },
            GatewayMessage::ReportAck {
                report_id: "report".into(),
                change_request: None,
            },
            GatewayMessage::Removed {
                team: "team".into(),
                agent: Some("agent".into()),
                position: Some(7),
                signature: None,
            },
            GatewayMessage::Error {
                code: "too_slow".into(),
                message: "behind".into(),
            },
        ]
        .iter()
        .map(|m| serde_json::to_string(m).expect("encode"))
        .collect()
    }

    #[test]
    fn a_rule_set_that_does_not_decode_is_named_not_applied() {
        match decode(r#"{"type":"rule_set","team":"t1","revision":7,"rules":"not a list"}"#) {
            Frame::UnreadableRuleSet { team, revision, .. } => {
                assert_eq!(team.as_deref(), Some("t1"));
                assert_eq!(revision, Some(7));
            }
            other => panic!("expected an unreadable rule set, got {other:?}"),
        }
        assert!(matches!(decode("{"), Frame::Malformed(_)));
        assert!(matches!(decode(r#"{"type":"nope"}"#), Frame::Malformed(_)));
    }

    #[test]
    fn the_frames_a_gateway_sends_decode() {
        for frame in frames() {
            assert!(matches!(decode(&frame), Frame::Message(_)), "{frame}");
        }
    }

    proptest! {
        /// Any text: an answer, never a panic.
        #[test]
        fn any_text_decodes_without_panicking(text in "\\PC{0,512}") {
            let _ = decode(&text);
        }

        /// A frame cut short, or with one byte changed, still gets an answer, never a panic.
        #[test]
        fn a_damaged_frame_decodes_without_panicking(which in 0usize..4, cut in 0usize..200, at in 0usize..200, byte in any::<u8>()) {
            let frames = frames();
            let frame = frames[which % frames.len()].as_bytes();
            let cut = &frame[..cut.min(frame.len())];
            let _ = decode(&String::from_utf8_lossy(cut));
            let mut changed = frame.to_vec();
            let at = at % changed.len();
            changed[at] = byte;
            let _ = decode(&String::from_utf8_lossy(&changed));
        }
    }
}
