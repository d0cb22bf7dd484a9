//! Every kind of break the walk finds, on a chain built here.

use super::*;
use crate::audit::chain::GENESIS;
use chrono::TimeZone;
use ed25519_dalek::SigningKey;

fn event(position: i64) -> StoredEvent {
    StoredEvent {
        global_position: position,
        transaction_id: 100 + u64::try_from(position).unwrap(),
        aggregate_type: "Rule".into(),
        aggregate_id: format!("rule-{position}"),
        sequence: 1,
        event_type: "RuleDrafted".into(),
        event_version: "1.0".into(),
        payload: format!(r#"{{"title":"rule {position}"}}"#),
        metadata: r#"{"actor":"user:1"}"#.into(),
        recorded_at: Ok(Utc.timestamp_opt(1_780_000_000 + position, 0).unwrap()),
    }
}

/// A chain over events 1..=count (chain index = position), and the hash after each.
fn chain(count: i64) -> (Stretch, Vec<ChainHash>) {
    let events: Vec<StoredEvent> = (1..=count).map(event).collect();
    let mut previous = GENESIS;
    let mut hashes = Vec::new();
    let links = events
        .iter()
        .map(|e| {
            previous = link_hash(&previous, &prepare(e).unwrap());
            hashes.push(previous);
            StoredLink {
                chain_index: e.global_position,
                global_position: e.global_position,
                transaction_id: i64::try_from(e.transaction_id).unwrap(),
                hash: previous.to_hex(),
            }
        })
        .collect();
    (Stretch { links, events }, hashes)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn checkpoint(number: i64, index: i64, hash: ChainHash) -> SignedCheckpoint {
    let at = Utc.timestamp_opt(1_780_000_500, 0).unwrap();
    SignedCheckpoint::sign(&key(), number, index, index, hash, at)
}

fn walk_with(checkpoints: Vec<SignedCheckpoint>, trusted: Option<[u8; 32]>) -> Walk {
    Walk::new(
        1,
        GENESIS,
        (0, i64::MIN),
        checkpoints
            .into_iter()
            .map(|c| (c.chain_index, c))
            .collect(),
        trusted,
    )
}

fn check(stretch: &Stretch, walk: &mut Walk) -> Option<Break> {
    let prepared = stretch.events.iter().map(prepare).collect();
    walk.check(stretch, prepared)
}

fn first_break(stretch: &Stretch) -> Break {
    check(stretch, &mut walk_with(Vec::new(), None)).expect("a break")
}

#[test]
fn an_intact_chain_verifies_with_its_checkpoints() {
    let (stretch, hashes) = chain(5);
    let mut walk = walk_with(
        vec![checkpoint(1, 2, hashes[1]), checkpoint(2, 5, hashes[4])],
        Some(key().verifying_key().to_bytes()),
    );
    assert_eq!(check(&stretch, &mut walk), None);
    assert_eq!(walk.verified, 5);
    assert_eq!(walk.last_index, 5);
    assert_eq!(walk.last_hash, hashes[4]);
    assert_eq!(walk.last_key, stretch.links[4].key());
    assert_eq!(walk.checkpoints_verified, 2);
    assert_eq!(walk.last_checkpoint, Some(2));
}

#[test]
fn a_walk_carries_the_hash_from_one_stretch_to_the_next() {
    let (stretch, hashes) = chain(6);
    let first = Stretch {
        links: stretch.links[..3].to_vec(),
        events: stretch.events[..3].to_vec(),
    };
    let second = Stretch {
        links: stretch.links[3..].to_vec(),
        events: stretch.events[3..].to_vec(),
    };
    let mut walk = walk_with(Vec::new(), None);
    assert_eq!(check(&first, &mut walk), None);
    assert_eq!(check(&second, &mut walk), None);
    assert_eq!(walk.verified, 6);
    assert_eq!(walk.last_hash, hashes[5]);
}

#[test]
fn an_edited_event_no_longer_matches_its_row() {
    let (mut stretch, _) = chain(4);
    stretch.events[2].payload = r#"{"title":"edited"}"#.into();
    let broken = first_break(&stretch);
    assert_eq!(broken.kind, BreakKind::ContentChanged);
    assert_eq!(broken.chain_index, Some(3));
    assert_eq!(broken.global_position, Some(3));
    assert!(
        broken.message.contains("Rule rule-3/1"),
        "{}",
        broken.message
    );
}

#[test]
fn an_edited_time_or_metadata_no_longer_matches_either() {
    let (mut stretch, _) = chain(3);
    stretch.events[0].recorded_at = Ok(Utc.timestamp_opt(1, 0).unwrap());
    assert_eq!(first_break(&stretch).kind, BreakKind::ContentChanged);
    let (mut stretch, _) = chain(3);
    stretch.events[1].metadata = r#"{"actor":"user:2"}"#.into();
    assert_eq!(first_break(&stretch).kind, BreakKind::ContentChanged);
}

#[test]
fn a_deleted_event_is_missing() {
    let (mut stretch, _) = chain(4);
    stretch.events.remove(1);
    let broken = first_break(&stretch);
    assert_eq!(broken.kind, BreakKind::MissingEvent);
    assert_eq!(broken.chain_index, Some(2));
}

#[test]
fn an_event_that_cannot_be_decoded_is_unreadable() {
    for spoil in [
        |e: &mut StoredEvent| e.payload = "{not json".into(),
        |e: &mut StoredEvent| e.metadata = "[".into(),
        |e: &mut StoredEvent| e.recorded_at = Err("yesterday".into()),
    ] {
        let (mut stretch, _) = chain(3);
        spoil(&mut stretch.events[1]);
        let broken = first_break(&stretch);
        assert_eq!(broken.kind, BreakKind::UnreadableEvent, "{broken:?}");
        assert_eq!(broken.chain_index, Some(2));
    }
}

#[test]
fn an_event_inserted_between_two_rows_is_unchained() {
    let (mut stretch, _) = chain(4);
    // Sorts after event 2 (transaction 102, position 2) and before event 3 (103, 3).
    let mut between = event(2);
    between.transaction_id = stretch.events[2].transaction_id;
    between.aggregate_id = "inserted".into();
    stretch.events.insert(2, between);
    let broken = first_break(&stretch);
    assert_eq!(broken.kind, BreakKind::UnchainedEvent);
    assert_eq!(broken.chain_index, None);
    assert_eq!(broken.global_position, Some(2));
    assert!(
        broken.message.contains("Rule inserted/1"),
        "{}",
        broken.message
    );
}

#[test]
fn an_event_after_the_last_row_of_a_stretch_is_unchained() {
    let (mut stretch, _) = chain(3);
    let mut late = event(4);
    late.transaction_id = stretch.events[2].transaction_id;
    stretch.events.push(late);
    let broken = first_break(&stretch);
    assert_eq!(broken.kind, BreakKind::UnchainedEvent);
    assert_eq!(broken.global_position, Some(4));
}

#[test]
fn a_removed_row_is_a_gap() {
    let (mut stretch, _) = chain(4);
    stretch.links.remove(1);
    stretch.events.remove(1);
    let broken = first_break(&stretch);
    assert_eq!(broken.kind, BreakKind::ChainGap);
    assert_eq!(broken.chain_index, Some(3));
    assert!(
        broken.message.contains("chain row 2 is missing"),
        "{}",
        broken.message
    );
}

#[test]
fn a_row_whose_hash_is_not_hex_is_corrupt() {
    let (mut stretch, _) = chain(3);
    stretch.links[1].hash = "zz".into();
    let broken = first_break(&stretch);
    assert_eq!(broken.kind, BreakKind::CorruptChainRow);
    assert_eq!(broken.chain_index, Some(2));
}

#[test]
fn a_checkpoint_with_a_bad_signature_or_an_untrusted_key_is_refused() {
    let (stretch, hashes) = chain(3);
    let mut forged = checkpoint(1, 2, hashes[1]);
    forged.signature[0] ^= 1;
    let broken = check(&stretch, &mut walk_with(vec![forged], None)).expect("a break");
    assert_eq!(broken.kind, BreakKind::InvalidSignature);
    assert_eq!(broken.checkpoint, Some(1));

    let honest = checkpoint(1, 2, hashes[1]);
    let broken = check(&stretch, &mut walk_with(vec![honest], Some([9; 32]))).expect("a break");
    assert_eq!(broken.kind, BreakKind::InvalidSignature);
    assert!(broken.message.contains("trusted"), "{}", broken.message);
}

#[test]
fn a_checkpoint_over_another_history_does_not_match() {
    let (stretch, hashes) = chain(3);
    // Signed honestly, but over the hash of another index: the history it signed is not this one.
    let other = checkpoint(1, 2, hashes[2]);
    let broken = check(&stretch, &mut walk_with(vec![other], None)).expect("a break");
    assert_eq!(broken.kind, BreakKind::CheckpointMismatch);
    assert_eq!(broken.chain_index, Some(2));
    assert_eq!(broken.checkpoint, Some(1));
}

#[test]
fn a_hole_in_the_checkpoint_numbers_is_a_missing_checkpoint() {
    let (_, hashes) = chain(3);
    let whole = [checkpoint(1, 1, hashes[0]), checkpoint(2, 3, hashes[2])];
    assert_eq!(missing_checkpoint(&whole), None);
    assert_eq!(missing_checkpoint(&[]), None);
    let holed = [checkpoint(1, 1, hashes[0]), checkpoint(3, 3, hashes[2])];
    let broken = missing_checkpoint(&holed).expect("a break");
    assert_eq!(broken.kind, BreakKind::MissingCheckpoint);
    assert_eq!(broken.checkpoint, Some(2));
    let first_gone = [checkpoint(2, 3, hashes[2])];
    assert_eq!(missing_checkpoint(&first_gone).unwrap().checkpoint, Some(1));
}

#[test]
fn a_checkpoint_past_the_end_of_the_chain_is_a_truncated_tail() {
    let (_, hashes) = chain(3);
    let checkpoints = [checkpoint(1, 2, hashes[1]), checkpoint(2, 3, hashes[2])];
    assert_eq!(truncated_chain(&checkpoints, 3), None);
    let broken = truncated_chain(&checkpoints, 2).expect("a break");
    assert_eq!(broken.kind, BreakKind::TruncatedChain);
    assert_eq!(broken.chain_index, Some(3));
    assert_eq!(broken.checkpoint, Some(2));
}

#[test]
fn a_missing_or_unchained_event_still_there_was_moved() {
    let (mut stretch, _) = chain(3);
    stretch.events.remove(1);
    let broken = moved(first_break(&stretch));
    assert_eq!(broken.kind, BreakKind::MovedEvent);
    assert_eq!(broken.global_position, Some(2));
    assert_eq!(broken.chain_index, Some(2));

    let (mut stretch, _) = chain(3);
    stretch.links[1].hash = "zz".into();
    let corrupt = first_break(&stretch);
    assert_eq!(
        moved(corrupt.clone()),
        corrupt,
        "other breaks stay what they are"
    );
}
