//! [`Layers::hash`](super::Layers::hash): SHA-256 of the canonical JSON of the layers, streamed.

use super::{EffectiveRule, LayerRules, Layers, Mode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// SHA-256 (lowercase hex) of the canonical JSON of `layers`.
pub(super) fn of(layers: &Layers) -> String {
    let mut hasher = HashWriter(Sha256::new());
    // Writing to a hasher cannot fail, nor can serializing these plain structs, so the error is
    // never seen.
    let _ = serde_json::to_writer(&mut hasher, &CanonicalLayers(layers));
    hex::encode(hasher.0.finalize())
}

/// Feeds what is written to a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`Layers`] serialized with every object's keys in byte order: compact, that is the canonical JSON of
/// the layers, without building a `Value`. Keep the field lists in step with [`Layers`], [`LayerRules`]
/// and [`EffectiveRule`] (a test in `edict-projections` compares the two).
struct CanonicalLayers<'a>(&'a Layers);

impl Serialize for CanonicalLayers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sorted<'a> {
            organization: CanonicalLayer<'a>,
            project: CanonicalLayer<'a>,
            team: CanonicalLayer<'a>,
        }
        Sorted {
            organization: CanonicalLayer(&self.0.organization),
            project: CanonicalLayer(&self.0.project),
            team: CanonicalLayer(&self.0.team),
        }
        .serialize(serializer)
    }
}

struct CanonicalLayer<'a>(&'a LayerRules);

impl Serialize for CanonicalLayer<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sorted<'a> {
            rules: Vec<CanonicalRule<'a>>,
            text: &'a str,
        }
        Sorted {
            rules: self.0.rules.iter().map(CanonicalRule).collect(),
            text: &self.0.text,
        }
        .serialize(serializer)
    }
}

struct CanonicalRule<'a>(&'a EffectiveRule);

impl Serialize for CanonicalRule<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sorted<'a> {
            category: &'a Option<String>,
            content: &'a str,
            mode: Mode,
            name: &'a str,
            priority: i32,
            revision: u32,
            rule_id: Uuid,
            temporary_timeout_secs: Option<u64>,
            triggers: &'a [String],
        }
        let rule = self.0;
        Sorted {
            category: &rule.category,
            content: &rule.content,
            mode: rule.mode,
            name: &rule.name,
            priority: rule.priority,
            revision: rule.revision,
            rule_id: rule.rule_id,
            temporary_timeout_secs: rule.temporary_timeout_secs,
            triggers: &rule.triggers,
        }
        .serialize(serializer)
    }
}
