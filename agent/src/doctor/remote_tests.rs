//! Unit tests of the remote checks' verdicts: the clock, and the pinned key against key sets.

use super::*;
use crate::doctor::Level;

#[test]
fn a_clock_is_judged_by_how_far_it_is_off() {
    assert_eq!(clock(chrono::TimeDelta::seconds(3)).level, Level::Ok);
    assert_eq!(clock(chrono::TimeDelta::seconds(-45)).level, Level::Warn);
    let off = clock(chrono::TimeDelta::seconds(-600));
    assert_eq!(off.level, Level::Fail);
    assert!(off.reason.contains("600 s ahead of"), "{off:?}");
    assert!(
        clock(chrono::TimeDelta::seconds(121))
            .reason
            .contains("behind")
    );
}

#[test]
fn no_pinned_key_fails_and_no_key_set_to_compare_warns() {
    let empty = KeyChain::default();
    assert_eq!(org_key(&empty, None).level, Level::Fail);
    let pinned = KeyChain {
        sequence: 1,
        trusted: vec![crate::ruleset::OrgKey {
            key_id: "0123456789abcdef".to_owned(),
            public_key: "00".repeat(32),
        }],
        retired: Vec::new(),
    };
    assert_eq!(org_key(&pinned, None).level, Level::Warn);
    assert_eq!(org_key(&pinned, Some(&[])).level, Level::Warn);
}

#[test]
fn the_server_key_must_follow_from_the_pinned_one() {
    use crate::ruleset::{KeyEntry, KeyState, OrgKey};
    use ed25519_dalek::SigningKey;
    let first = SigningKey::from_bytes(&[1; 32]);
    let second = SigningKey::from_bytes(&[2; 32]);
    let stranger = SigningKey::from_bytes(&[3; 32]);
    let entry = |key: &SigningKey, state| {
        let OrgKey { key_id, public_key } = OrgKey::of(&key.verifying_key());
        KeyEntry {
            key_id,
            public_key,
            state,
        }
    };
    let now = chrono::Utc::now();
    let one = KeySet::issue(1, now, vec![entry(&first, KeyState::Active)], &first);
    // A rotation: the second key announced, then active, each set signed by the key before.
    let two = KeySet::issue(
        2,
        now,
        vec![
            entry(&first, KeyState::Active),
            entry(&second, KeyState::Next),
        ],
        &first,
    );
    let three = KeySet::issue(
        3,
        now,
        vec![
            entry(&second, KeyState::Active),
            entry(&first, KeyState::Retiring),
        ],
        &first,
    );
    let pinned = KeyChain {
        sequence: 1,
        trusted: one.trusted(),
        retired: Vec::new(),
    };
    let check = org_key(&pinned, Some(&[one.clone(), two, three]));
    assert_eq!(check.level, Level::Ok, "{check:?}");
    // A server whose key the pinned one never vouched for.
    let forged = KeySet::issue(2, now, vec![entry(&stranger, KeyState::Active)], &stranger);
    let check = org_key(&pinned, Some(&[one, forged]));
    assert_eq!(check.level, Level::Fail, "{check:?}");
    assert!(check.reason.contains("refused"), "{check:?}");
}
