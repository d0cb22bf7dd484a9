//! The organization's key sets: which keys an agent trusts, and how that changes (key rotation,
//! ADR 0021).
//!
//! A [`KeySet`] lists the organization's keys with their state: the `active` key signs rule sets,
//! a `next` key is announced ahead of use, a `retiring` key (the previous active one) is still
//! trusted while the rule sets it signed are re-signed. Key sets are numbered; each one is signed by
//! the key that was active when it was issued, so an agent moves from the key set it holds to the
//! next by checking the next one's signature against the keys it trusts already: a rotation reaches
//! agents as a message signed by the current key, and an agent that was offline through a whole
//! rotation walks the chain ([`KeyChain::advance`]) and trusts nothing unsigned on the way.
//!
//! Key set 1 is the first key alone, signed by itself; the login answer names the keys of the latest
//! key set and its sequence.

use super::signature::{
    IntegrityError, OrgKey, check_signature, key_id_of, parse_public_key, pinned_key,
};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The first line of every signed key set (a rule set's signature never verifies as one).
const DOMAIN: &str = "edict-keyset-signature-v1";

/// A key's part in a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Signs rule sets.
    Active,
    /// Announced ahead of use: trusted, not signing yet.
    Next,
    /// The previous active key: trusted until it is retired.
    Retiring,
}

impl KeyState {
    /// `active`, `next` or `retiring`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Next => "next",
            KeyState::Retiring => "retiring",
        }
    }
}

/// One key of a key set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The key id ([`key_id_of`]).
    pub key_id: String,
    /// The ed25519 public key (64 hex).
    pub public_key: String,
    /// Its state.
    pub state: KeyState,
}

impl KeyEntry {
    /// The key, as an agent pins it.
    pub fn org_key(&self) -> OrgKey {
        OrgKey {
            key_id: self.key_id.clone(),
            public_key: self.public_key.clone(),
        }
    }
}

/// The organization's keys from one sequence number on, signed by the key active when it was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// 1 for the first key; one more at each change.
    pub sequence: u64,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Every trusted key, exactly one `active`.
    pub keys: Vec<KeyEntry>,
    /// The id of the key that signed it.
    pub signed_by: String,
    /// The ed25519 signature (lowercase hex) over [`keyset_bytes`].
    pub sig: String,
}

impl KeySet {
    /// The keys an agent trusts under this key set.
    pub fn trusted(&self) -> Vec<OrgKey> {
        self.keys.iter().map(KeyEntry::org_key).collect()
    }

    /// The active key.
    pub fn active(&self) -> Option<&KeyEntry> {
        self.keys.iter().find(|key| key.state == KeyState::Active)
    }

    /// Issues key set `sequence` of `keys`, signed by `signer` (the key active until now).
    pub fn issue(
        sequence: u64,
        issued_at: DateTime<Utc>,
        keys: Vec<KeyEntry>,
        signer: &SigningKey,
    ) -> KeySet {
        let signed_by = key_id_of(&signer.verifying_key());
        let sig = signer.sign(&keyset_bytes(sequence, issued_at, &keys, &signed_by));
        KeySet {
            sequence,
            issued_at,
            keys,
            signed_by,
            sig: hex::encode(sig.to_bytes()),
        }
    }

    /// Checks that this key set is signed by one of `trusted` and is well formed (exactly one active
    /// key, every key id the id of its key).
    ///
    /// # Errors
    /// [`IntegrityError::UnknownKey`] when its signer is not trusted, [`IntegrityError::BadSignature`]
    /// when the signature or a key does not check out.
    pub fn verify(&self, trusted: &[OrgKey]) -> Result<(), IntegrityError> {
        if trusted.is_empty() {
            return Err(IntegrityError::NoPinnedKey);
        }
        let signer = pinned_key(trusted, &self.signed_by)?;
        let message = keyset_bytes(self.sequence, self.issued_at, &self.keys, &self.signed_by);
        check_signature(&signer, &message, &self.sig)?;
        let active = self
            .keys
            .iter()
            .filter(|key| key.state == KeyState::Active)
            .count();
        let ids_match = self.keys.iter().all(|key| {
            parse_public_key(&key.public_key).is_ok_and(|public| key_id_of(&public) == key.key_id)
        });
        if active != 1 || !ids_match {
            return Err(IntegrityError::BadSignature);
        }
        Ok(())
    }
}

/// The message a key set's signature covers.
pub fn keyset_bytes(
    sequence: u64,
    issued_at: DateTime<Utc>,
    keys: &[KeyEntry],
    signed_by: &str,
) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{DOMAIN}");
    let _ = writeln!(out, "sequence {sequence}");
    let _ = writeln!(out, "issued_at {}", issued_at.timestamp_micros());
    for key in keys {
        let _ = writeln!(
            out,
            "key {} {} {}",
            key.state.as_str(),
            key.key_id,
            key.public_key
        );
    }
    let _ = writeln!(out, "signed_by {signed_by}");
    out.into_bytes()
}

/// What an agent trusts: the keys of the key set it holds (`sequence`, 0 when it only has the keys
/// pinned at login), and the keys retired since, which only verify the rule sets it already holds
/// (each was verified when it arrived; a retired key signs nothing new).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChain {
    /// The key set held (0: the keys pinned at login, whatever their key set).
    pub sequence: u64,
    /// The keys trusted for anything new.
    pub trusted: Vec<OrgKey>,
    /// Keys retired since login: they verify rule sets already held, nothing new.
    #[serde(default)]
    pub retired: Vec<OrgKey>,
}

/// A key set the agent did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetRefused {
    /// Its sequence.
    pub sequence: u64,
    /// Why.
    pub error: IntegrityError,
}

impl KeyChain {
    /// Takes, in order, each key set of `chain` newer than the one held whose signature verifies
    /// with the keys trusted at that point. Returns the refusals (a key set that does not verify is
    /// skipped: the next one may still verify, when its signer was trusted already). Older key sets
    /// (a replay) are ignored.
    pub fn advance(&mut self, chain: &[KeySet]) -> Vec<KeySetRefused> {
        let mut ordered: Vec<&KeySet> = chain.iter().collect();
        ordered.sort_by_key(|keyset| keyset.sequence);
        let mut refused = Vec::new();
        for keyset in ordered {
            if keyset.sequence <= self.sequence {
                continue;
            }
            if let Err(error) = keyset.verify(&self.trusted) {
                refused.push(KeySetRefused {
                    sequence: keyset.sequence,
                    error,
                });
                continue;
            }
            let next = keyset.trusted();
            for key in &self.trusted {
                if !next.iter().any(|kept| kept.key_id == key.key_id)
                    && !self.retired.iter().any(|held| held.key_id == key.key_id)
                {
                    self.retired.push(key.clone());
                }
            }
            self.retired
                .retain(|key| !next.iter().any(|kept| kept.key_id == key.key_id));
            self.trusted = next;
            self.sequence = keyset.sequence;
        }
        refused
    }

    /// The keys that verify a rule set already held: the trusted and the retired ones.
    pub fn for_held(&self) -> Vec<OrgKey> {
        self.trusted.iter().chain(&self.retired).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &SigningKey, state: KeyState) -> KeyEntry {
        let org = OrgKey::of(&key.verifying_key());
        KeyEntry {
            key_id: org.key_id,
            public_key: org.public_key,
            state,
        }
    }

    /// The chain of one rotation from `k1` to `k2`: the first key, the next one announced, the next
    /// one active, the old one retired.
    fn rotation(k1: &SigningKey, k2: &SigningKey) -> Vec<KeySet> {
        let at = Utc::now();
        vec![
            KeySet::issue(1, at, vec![entry(k1, KeyState::Active)], k1),
            KeySet::issue(
                2,
                at,
                vec![entry(k1, KeyState::Active), entry(k2, KeyState::Next)],
                k1,
            ),
            KeySet::issue(
                3,
                at,
                vec![entry(k2, KeyState::Active), entry(k1, KeyState::Retiring)],
                k1,
            ),
            KeySet::issue(4, at, vec![entry(k2, KeyState::Active)], k2),
        ]
    }

    #[test]
    fn an_agent_offline_through_a_rotation_walks_the_chain() {
        let k1 = SigningKey::from_bytes(&[1; 32]);
        let k2 = SigningKey::from_bytes(&[2; 32]);
        let chain = rotation(&k1, &k2);
        let mut agent = KeyChain {
            sequence: 1,
            trusted: vec![OrgKey::of(&k1.verifying_key())],
            retired: Vec::new(),
        };
        // Only the last key set (signed by k2, which the agent never saw) is refused alone.
        let mut alone = agent.clone();
        let refused = alone.advance(&chain[3..]);
        assert!(matches!(
            refused[..],
            [KeySetRefused {
                sequence: 4,
                error: IntegrityError::UnknownKey(_)
            }]
        ));
        assert_eq!(alone, agent);
        // The whole chain, in any order, is taken.
        let mut shuffled = chain.clone();
        shuffled.reverse();
        assert!(agent.advance(&shuffled).is_empty());
        assert_eq!(agent.sequence, 4);
        assert_eq!(agent.trusted, vec![OrgKey::of(&k2.verifying_key())]);
        assert_eq!(agent.retired, vec![OrgKey::of(&k1.verifying_key())]);
        assert_eq!(agent.for_held().len(), 2);
        // A replay of an old key set changes nothing.
        assert!(agent.advance(&chain[1..2]).is_empty());
        assert_eq!(agent.sequence, 4);
    }

    #[test]
    fn a_forged_key_set_is_refused() {
        let k1 = SigningKey::from_bytes(&[1; 32]);
        let attacker = SigningKey::from_bytes(&[9; 32]);
        let mut agent = KeyChain {
            sequence: 1,
            trusted: vec![OrgKey::of(&k1.verifying_key())],
            retired: Vec::new(),
        };
        let at = Utc::now();
        // Signed by a key the agent does not trust.
        let foreign = KeySet::issue(2, at, vec![entry(&attacker, KeyState::Active)], &attacker);
        // Signed by the trusted key, then rewritten to name the attacker's key.
        let mut rewritten = KeySet::issue(
            2,
            at,
            vec![entry(&k1, KeyState::Active), entry(&k1, KeyState::Next)],
            &k1,
        );
        rewritten.keys[1] = entry(&attacker, KeyState::Next);
        // Validly signed but with no active key.
        let inactive = KeySet::issue(2, at, vec![entry(&attacker, KeyState::Next)], &k1);
        let refused = agent.advance(&[foreign, rewritten, inactive]);
        let errors: Vec<_> = refused.iter().map(|r| r.error.code()).collect();
        assert_eq!(errors, ["unknown_key", "bad_signature", "bad_signature"]);
        assert_eq!(agent.sequence, 1);
        assert_eq!(agent.trusted, vec![OrgKey::of(&k1.verifying_key())]);
    }
}
