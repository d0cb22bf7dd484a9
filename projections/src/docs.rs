//! Documents: the unit a read model is stored in, and the write-back cache projections update.
//!
//! The cache keeps each document as JSON (what the store holds) and, once a projection has read it
//! through the typed accessors ([`Docs::get_ref`], [`Docs::get_mut`], [`Docs::insert`]), decoded: a
//! projection that reads or updates a document many times in a batch decodes it once and serializes it
//! once, when the dirty documents are taken ([`Docs::take_dirty`]) or every document is read
//! ([`Docs::all`]). [`Docs::get`] and [`Docs::put`] work on the JSON directly.

use crate::ProjectionError;
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::any::{Any, TypeId};
use std::collections::HashMap;

/// Identifies a document within a projection generation: its kind (`rule`, `ruleset`, …) and key.
pub type DocKey = (String, String);

/// The indexed columns stored beside a document, used by queries to filter and page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocMeta {
    /// The team the document belongs to, if any (filter `team=`).
    pub team: Option<String>,
    /// Its status, if any (filter `status=`).
    pub status: Option<String>,
    /// The order of lists and the cursor of pagination (unique within a kind; usually the id).
    pub sort_key: String,
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDoc {
    /// Its indexed columns.
    pub meta: DocMeta,
    /// The document.
    pub doc: Value,
}

/// Loads documents the cache does not hold yet.
#[async_trait]
pub trait DocLoader: Send {
    /// The stored document `(kind, key)` of the generation being updated, if any.
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when the store fails.
    async fn load(&mut self, kind: &str, key: &str) -> Result<Option<StoredDoc>, ProjectionError>;
}

/// A loader for a generation that starts empty (a rebuild): nothing is stored yet.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyLoader;

#[async_trait]
impl DocLoader for EmptyLoader {
    async fn load(
        &mut self,
        _kind: &str,
        _key: &str,
    ) -> Result<Option<StoredDoc>, ProjectionError> {
        Ok(None)
    }
}

/// A decoded document: any serializable value, kept as itself and serialized when its JSON is needed.
trait Decoded: Any + Send {
    fn to_json(&self) -> Result<Value, serde_json::Error>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Serialize + Any + Send> Decoded for T {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A document the cache holds.
struct Cached {
    /// Its meta, and its JSON unless `stale`.
    stored: StoredDoc,
    /// Whether `stored.doc` is out of date (then `decoded` holds the document).
    stale: bool,
    /// The document decoded, when a typed accessor asked for it; always up to date.
    decoded: Option<Box<dyn Decoded>>,
}

impl Cached {
    /// Brings the JSON up to date.
    fn refresh(&mut self, id: &DocKey) -> Result<(), ProjectionError> {
        if self.stale {
            if let Some(decoded) = &self.decoded {
                self.stored.doc = decoded
                    .to_json()
                    .map_err(|e| encode_error(&id.0, &id.1, &e))?;
            }
            self.stale = false;
        }
        Ok(())
    }

    /// Decodes the document as `T` unless it is held as a `T` already.
    fn decode<T: DeserializeOwned + Serialize + Send + 'static>(
        &mut self,
        id: &DocKey,
    ) -> Result<(), ProjectionError> {
        if self.decoded.as_ref().is_some_and(|d| d.as_any().is::<T>()) {
            return Ok(());
        }
        // Held as another type (or only as JSON): go through the JSON.
        self.refresh(id)?;
        let value = T::deserialize(&self.stored.doc).map_err(|e| decode_error(&id.0, &id.1, &e))?;
        self.decoded = Some(Box::new(value));
        Ok(())
    }
}

struct Entry {
    id: DocKey,
    doc: Option<Cached>,
    dirty: bool,
}

fn decode_error(kind: &str, key: &str, e: &serde_json::Error) -> ProjectionError {
    ProjectionError::Store(format!("cannot decode {kind}/{key}: {e}"))
}

fn encode_error(kind: &str, key: &str, e: &serde_json::Error) -> ProjectionError {
    ProjectionError::Store(format!("cannot encode {kind}/{key}: {e}"))
}

fn vanished() -> ProjectionError {
    ProjectionError::Store("cache entry vanished".into())
}

/// A write-back cache of one projection generation's documents.
///
/// Besides documents it holds one *scratch* value per type ([`Docs::take_scratch`]): state a projection
/// derives from its documents and keeps for the life of the cache, never written anywhere.
pub struct Docs<'a> {
    loader: &'a mut dyn DocLoader,
    /// By kind (a projection has a few), then key; looking up needs no allocation.
    kinds: Vec<(String, HashMap<String, Entry>)>,
    scratch: HashMap<TypeId, Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Docs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docs")
            .field(
                "entries",
                &self.kinds.iter().map(|(_, m)| m.len()).sum::<usize>(),
            )
            .finish()
    }
}

impl<'a> Docs<'a> {
    /// A cache that loads misses through `loader`.
    pub fn new(loader: &'a mut dyn DocLoader) -> Self {
        Docs {
            loader,
            kinds: Vec::new(),
            scratch: HashMap::new(),
        }
    }

    fn cached(&mut self, kind: &str, key: &str) -> Option<&mut Entry> {
        let (_, by_key) = self.kinds.iter_mut().find(|(k, _)| k == kind)?;
        by_key.get_mut(key)
    }

    /// The entry `(kind, key)`, created (without loading) when missing.
    fn slot(&mut self, kind: &str, key: &str) -> &mut Entry {
        let index = match self.kinds.iter().position(|(k, _)| k == kind) {
            Some(index) => index,
            None => {
                self.kinds.push((kind.to_owned(), HashMap::new()));
                self.kinds.len() - 1
            }
        };
        self.kinds[index]
            .1
            .entry(key.to_owned())
            .or_insert_with(|| Entry {
                id: (kind.to_owned(), key.to_owned()),
                doc: None,
                dirty: false,
            })
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.kinds
            .iter_mut()
            .flat_map(|(_, by_key)| by_key.values_mut())
    }

    /// The entry `(kind, key)`, loaded when missing.
    async fn entry(&mut self, kind: &str, key: &str) -> Result<&mut Entry, ProjectionError> {
        if self.cached(kind, key).is_none() {
            let doc = self.loader.load(kind, key).await?;
            self.slot(kind, key).doc = doc.map(|stored| Cached {
                stored,
                stale: false,
                decoded: None,
            });
        }
        self.cached(kind, key).ok_or_else(vanished)
    }

    /// The document `(kind, key)`, decoded from its JSON.
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when loading or decoding fails.
    pub async fn get<T: DeserializeOwned>(
        &mut self,
        kind: &str,
        key: &str,
    ) -> Result<Option<T>, ProjectionError> {
        let entry = self.entry(kind, key).await?;
        let Some(cached) = &mut entry.doc else {
            return Ok(None);
        };
        cached.refresh(&entry.id)?;
        T::deserialize(&cached.stored.doc)
            .map(Some)
            .map_err(|e| decode_error(kind, key, &e))
    }

    /// The document `(kind, key)` as a `T`, decoded once and kept decoded: later typed reads of it
    /// cost a lookup.
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when loading or decoding fails.
    pub async fn get_ref<T: DeserializeOwned + Serialize + Send + 'static>(
        &mut self,
        kind: &str,
        key: &str,
    ) -> Result<Option<&T>, ProjectionError> {
        let entry = self.entry(kind, key).await?;
        let Some(cached) = &mut entry.doc else {
            return Ok(None);
        };
        cached.decode::<T>(&entry.id)?;
        Ok(cached
            .decoded
            .as_ref()
            .and_then(|d| d.as_any().downcast_ref::<T>()))
    }

    /// The document `(kind, key)` as a `T`, to update in place: like [`Docs::get_ref`], and the
    /// document is marked written (its meta is kept). Its JSON is produced when the dirty documents are
    /// taken.
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when loading or decoding fails.
    pub async fn get_mut<T: DeserializeOwned + Serialize + Send + 'static>(
        &mut self,
        kind: &str,
        key: &str,
    ) -> Result<Option<&mut T>, ProjectionError> {
        let entry = self.entry(kind, key).await?;
        let Some(cached) = &mut entry.doc else {
            return Ok(None);
        };
        cached.decode::<T>(&entry.id)?;
        cached.stale = true;
        entry.dirty = true;
        Ok(cached
            .decoded
            .as_mut()
            .and_then(|d| d.as_any_mut().downcast_mut::<T>()))
    }

    /// Writes the document `(kind, key)` (serialized now).
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when the document does not serialize.
    pub fn put<T: Serialize>(
        &mut self,
        kind: &str,
        key: &str,
        meta: DocMeta,
        doc: &T,
    ) -> Result<(), ProjectionError> {
        let doc = serde_json::to_value(doc).map_err(|e| encode_error(kind, key, &e))?;
        let entry = self.slot(kind, key);
        entry.doc = Some(Cached {
            stored: StoredDoc { meta, doc },
            stale: false,
            decoded: None,
        });
        entry.dirty = true;
        Ok(())
    }

    /// Writes the document `(kind, key)`, kept as a `T` for typed reads; serialized when the dirty
    /// documents are taken.
    pub fn insert<T: Serialize + Send + 'static>(
        &mut self,
        kind: &str,
        key: &str,
        meta: DocMeta,
        doc: T,
    ) {
        let entry = self.slot(kind, key);
        entry.doc = Some(Cached {
            stored: StoredDoc {
                meta,
                doc: Value::Null,
            },
            stale: true,
            decoded: Some(Box::new(doc)),
        });
        entry.dirty = true;
    }

    /// Deletes the document `(kind, key)`.
    pub fn delete(&mut self, kind: &str, key: &str) {
        let entry = self.slot(kind, key);
        entry.doc = None;
        entry.dirty = true;
    }

    /// The documents written or deleted since the cache was created or last drained, in key order;
    /// `None` means deleted. They stay cached (clean), so a long rebuild keeps its working set.
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when a document kept decoded does not serialize.
    pub fn take_dirty(&mut self) -> Result<Vec<(DocKey, Option<StoredDoc>)>, ProjectionError> {
        // Serialize first, so that a failure leaves every document dirty.
        for entry in self.entries_mut().filter(|entry| entry.dirty) {
            if let Some(cached) = &mut entry.doc {
                cached.refresh(&entry.id)?;
            }
        }
        let mut dirty = Vec::new();
        for entry in self.entries_mut().filter(|entry| entry.dirty) {
            entry.dirty = false;
            dirty.push((
                entry.id.clone(),
                entry.doc.as_ref().map(|c| c.stored.clone()),
            ));
        }
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(dirty)
    }

    /// Every document the cache holds (after a rebuild from an empty generation: the whole read model),
    /// in key order.
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when a document kept decoded does not serialize.
    pub fn all(&mut self) -> Result<impl Iterator<Item = (&DocKey, &StoredDoc)>, ProjectionError> {
        for entry in self.entries_mut() {
            if let Some(cached) = &mut entry.doc {
                cached.refresh(&entry.id)?;
            }
        }
        let mut all: Vec<(&DocKey, &StoredDoc)> = self
            .kinds
            .iter()
            .flat_map(|(_, by_key)| by_key.values())
            .filter_map(|entry| entry.doc.as_ref().map(|c| (&entry.id, &c.stored)))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Ok(all.into_iter())
    }

    /// Takes the projection's scratch value of type `T` out of the cache (the default when there is
    /// none). Scratch values are derived state a projection keeps for the life of the cache (one batch
    /// live, a whole rebuild), never written: the projection keeps them consistent with the documents,
    /// and puts them back with [`Docs::set_scratch`].
    pub fn take_scratch<T: Default + Send + 'static>(&mut self) -> T {
        self.scratch
            .remove(&TypeId::of::<T>())
            .and_then(|boxed| boxed.downcast::<T>().ok())
            .map_or_else(T::default, |boxed| *boxed)
    }

    /// Keeps `value` as the scratch value of type `T` (see [`Docs::take_scratch`]).
    pub fn set_scratch<T: Send + 'static>(&mut self, value: T) {
        self.scratch.insert(TypeId::of::<T>(), Box::new(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Counter {
        n: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Wide {
        n: u64,
        #[serde(default)]
        label: String,
    }

    fn meta(key: &str) -> DocMeta {
        DocMeta {
            team: None,
            status: None,
            sort_key: key.into(),
        }
    }

    struct OneDoc;

    #[async_trait]
    impl DocLoader for OneDoc {
        async fn load(
            &mut self,
            kind: &str,
            key: &str,
        ) -> Result<Option<StoredDoc>, ProjectionError> {
            Ok((kind == "c" && key == "stored").then(|| StoredDoc {
                meta: meta("m"),
                doc: serde_json::json!({"n": 7}),
            }))
        }
    }

    #[tokio::test]
    async fn typed_updates_are_serialized_when_taken() {
        let mut loader = OneDoc;
        let mut docs = Docs::new(&mut loader);
        assert_eq!(docs.get_ref::<Counter>("c", "missing").await.unwrap(), None);
        assert_eq!(
            docs.get_ref::<Counter>("c", "stored").await.unwrap(),
            Some(&Counter { n: 7 })
        );
        assert!(
            docs.take_dirty().unwrap().is_empty(),
            "reading writes nothing"
        );

        docs.get_mut::<Counter>("c", "stored")
            .await
            .unwrap()
            .unwrap()
            .n += 1;
        docs.insert("c", "new", meta("new"), Counter { n: 1 });
        // JSON and other types see the typed updates.
        assert_eq!(
            docs.get::<Counter>("c", "stored").await.unwrap(),
            Some(Counter { n: 8 })
        );
        assert_eq!(
            docs.get_ref::<Wide>("c", "new").await.unwrap(),
            Some(&Wide {
                n: 1,
                label: String::new()
            })
        );
        let dirty = docs.take_dirty().unwrap();
        assert_eq!(
            dirty,
            vec![
                (
                    ("c".into(), "new".into()),
                    Some(StoredDoc {
                        meta: meta("new"),
                        doc: serde_json::json!({"n": 1}),
                    })
                ),
                (
                    ("c".into(), "stored".into()),
                    Some(StoredDoc {
                        meta: meta("m"),
                        doc: serde_json::json!({"n": 8}),
                    })
                ),
            ]
        );
        assert!(docs.take_dirty().unwrap().is_empty());

        docs.get_mut::<Counter>("c", "new")
            .await
            .unwrap()
            .unwrap()
            .n = 5;
        docs.delete("c", "stored");
        docs.put("d", "x", meta("x"), &Counter { n: 2 }).unwrap();
        let all: Vec<_> = docs
            .all()
            .unwrap()
            .map(|(id, doc)| (id.clone(), doc.doc.clone()))
            .collect();
        assert_eq!(
            all,
            vec![
                (("c".into(), "new".into()), serde_json::json!({"n": 5})),
                (("d".into(), "x".into()), serde_json::json!({"n": 2})),
            ]
        );
        let dirty: Vec<_> = docs
            .take_dirty()
            .unwrap()
            .into_iter()
            .map(|(id, doc)| (id, doc.map(|d| d.doc)))
            .collect();
        assert_eq!(
            dirty,
            vec![
                (
                    ("c".into(), "new".into()),
                    Some(serde_json::json!({"n": 5}))
                ),
                (("c".into(), "stored".into()), None),
                (("d".into(), "x".into()), Some(serde_json::json!({"n": 2}))),
            ]
        );
    }

    #[tokio::test]
    async fn scratch_values_are_kept_by_type() {
        let mut loader = EmptyLoader;
        let mut docs = Docs::new(&mut loader);
        assert_eq!(docs.take_scratch::<Vec<u8>>(), Vec::<u8>::new());
        docs.set_scratch(vec![1u8, 2]);
        docs.set_scratch(3u32);
        assert_eq!(docs.take_scratch::<Vec<u8>>(), vec![1, 2]);
        assert_eq!(docs.take_scratch::<Vec<u8>>(), Vec::<u8>::new());
        assert_eq!(docs.take_scratch::<u32>(), 3);
    }
}
