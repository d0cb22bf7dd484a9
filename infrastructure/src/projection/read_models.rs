//! [`SqlReadModels`]: the [`ReadModels`] port over `read_docs`, always the served generation of each
//! projection.
//!
//! Every read joins `read_docs` with `projection_state` in one statement, so it sees one generation
//! whole, also while a rebuild swaps generations and deletes the old one.

use async_trait::async_trait;
use chrono::DateTime;
use edict_application::read_models::{
    DocFilter, DocPage, ListedDoc, ProjectionStatus, ReadModelError, ReadModels,
};
use serde_json::Value;

use super::sql;
use crate::store::Database;

const SERVED_DOC: &str = "
SELECT d.doc
  FROM read_docs d JOIN projection_state s ON s.name = d.projection AND s.generation = d.generation
 WHERE d.projection = $1 AND d.kind = $2 AND d.key = $3";

const PROJECTION_EXISTS: &str = "SELECT COUNT(*) FROM projection_state WHERE name = $1";

/// Reads the served generation of every projection from `read_docs`.
#[derive(Debug, Clone)]
pub struct SqlReadModels {
    db: Database,
}

impl SqlReadModels {
    /// Read models stored in `db` (migrated).
    pub fn new(db: Database) -> Self {
        SqlReadModels { db }
    }

    async fn known(&self, projection: &str) -> Result<(), ReadModelError> {
        let count: i64 = on_pool!(&self.db, |pool| sqlx::query_scalar(PROJECTION_EXISTS)
            .bind(projection)
            .fetch_one(pool)
            .await)
        .map_err(unavailable)?;
        if count == 0 {
            return Err(ReadModelError::UnknownProjection(projection.to_owned()));
        }
        Ok(())
    }
}

/// A filter of [`DocFilter`] and its SQL on each store (`read_docs.doc` is JSON text). The expressions
/// on `user` are those of the `read_docs_owner` index.
#[derive(Debug, Clone, Copy)]
enum DocField {
    Team,
    Status,
    Owner,
    Member,
    Layer,
    Tag,
    /// Case-insensitive text; the parameter is already lowercase.
    Text,
}

impl DocField {
    fn condition(self, postgres: bool, p: &str) -> String {
        match (self, postgres) {
            (DocField::Team, _) => format!("d.team = {p}"),
            (DocField::Status, _) => format!("d.status = {p}"),
            (DocField::Owner, true) => format!("(d.doc::jsonb ->> 'user') = {p}"),
            (DocField::Owner, false) => format!("json_extract(d.doc, '$.user') = {p}"),
            (DocField::Member, true) => format!("(d.doc::jsonb -> 'members') ? {p}"),
            (DocField::Member, false) => {
                format!("EXISTS (SELECT 1 FROM json_each(d.doc, '$.members') m WHERE m.key = {p})")
            }
            (DocField::Layer, true) => format!("(d.doc::jsonb ->> 'layer') = {p}"),
            (DocField::Layer, false) => format!("json_extract(d.doc, '$.layer') = {p}"),
            (DocField::Tag, true) => format!("(d.doc::jsonb -> 'tags') ? {p}"),
            (DocField::Tag, false) => {
                format!("EXISTS (SELECT 1 FROM json_each(d.doc, '$.tags') t WHERE t.value = {p})")
            }
            (DocField::Text, true) => format!(
                "(strpos(lower(d.doc::jsonb ->> 'name'), {p}) > 0 \
                  OR strpos(lower(d.doc::jsonb ->> 'description'), {p}) > 0 \
                  OR strpos(lower(d.doc::jsonb ->> 'content'), {p}) > 0 \
                  OR (jsonb_typeof(d.doc::jsonb -> 'tags') = 'array' AND EXISTS ( \
                      SELECT 1 FROM jsonb_array_elements_text(d.doc::jsonb -> 'tags') t(tag) \
                       WHERE strpos(lower(t.tag), {p}) > 0)))"
            ),
            (DocField::Text, false) => format!(
                "(instr(lower(json_extract(d.doc, '$.name')), {p}) > 0 \
                  OR instr(lower(json_extract(d.doc, '$.description')), {p}) > 0 \
                  OR instr(lower(json_extract(d.doc, '$.content')), {p}) > 0 \
                  OR EXISTS (SELECT 1 FROM json_each(d.doc, '$.tags') t \
                              WHERE instr(lower(t.value), {p}) > 0))"
            ),
        }
    }
}

fn unavailable(error: sqlx::Error) -> ReadModelError {
    ReadModelError::Unavailable(error.to_string())
}

fn parse(text: &str) -> Result<Value, ReadModelError> {
    serde_json::from_str(text).map_err(|error| {
        ReadModelError::Unavailable(format!("stored document is not JSON: {error}"))
    })
}

/// The status of `name`, if it has a state row.
pub(crate) async fn projection_status(
    db: &Database,
    name: &str,
) -> Result<Option<ProjectionStatus>, sqlx::Error> {
    let Some(state) = sql::load_state(db, name).await? else {
        return Ok(None);
    };
    let lag = sql::lag(db, state.checkpoint).await?;
    Ok(Some(ProjectionStatus {
        name: name.to_owned(),
        generation: state.generation,
        checkpoint: state.checkpoint,
        events_applied: state.events_applied,
        lag,
        error: state.error,
        updated_at: DateTime::from_timestamp_millis(state.updated_at).unwrap_or_default(),
    }))
}

#[async_trait]
impl ReadModels for SqlReadModels {
    #[tracing::instrument(skip_all, fields(projection = %projection, kind = %kind), err)]
    async fn get(
        &self,
        projection: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<Value>, ReadModelError> {
        let text: Option<String> = on_pool!(&self.db, |pool| sqlx::query_scalar(SERVED_DOC)
            .bind(projection)
            .bind(kind)
            .bind(key)
            .fetch_optional(pool)
            .await)
        .map_err(unavailable)?;
        match text {
            Some(text) => parse(&text).map(Some),
            None => self.known(projection).await.map(|()| None),
        }
    }

    #[tracing::instrument(skip_all, fields(projection = %projection, kind = %kind, limit = limit), err)]
    async fn list(
        &self,
        projection: &str,
        kind: &str,
        filter: &DocFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DocPage, ReadModelError> {
        if limit == 0 {
            self.known(projection).await?;
            return Ok(DocPage {
                docs: Vec::new(),
                next: None,
            });
        }
        // One statement text per combination of filters, so each can use its index; every filter
        // runs in the query (none over pages in memory).
        let mut text = String::from(
            "SELECT d.sort_key, d.doc
               FROM read_docs d
               JOIN projection_state s ON s.name = d.projection AND s.generation = d.generation
              WHERE d.projection = $1 AND d.kind = $2",
        );
        let postgres = matches!(self.db, Database::Postgres(_));
        let mut binds: Vec<String> = Vec::new();
        let needle = filter.text.as_ref().map(|text| text.to_lowercase());
        for (field, value) in [
            (DocField::Team, filter.team.as_ref()),
            (DocField::Status, filter.status.as_ref()),
            (DocField::Owner, filter.owner.as_ref()),
            (DocField::Member, filter.member.as_ref()),
            (DocField::Layer, filter.layer.as_ref()),
            (DocField::Tag, filter.tag.as_ref()),
            (DocField::Text, needle.as_ref()),
        ] {
            if let Some(value) = value {
                binds.push(value.clone());
                let parameter = format!("${}", binds.len() + 2);
                text.push_str(" AND ");
                text.push_str(&field.condition(postgres, &parameter));
            }
        }
        if let Some(after) = after {
            binds.push(after.to_owned());
            text.push_str(&format!(" AND d.sort_key > ${}", binds.len() + 2));
        }
        text.push_str(&format!(" ORDER BY d.sort_key LIMIT ${}", binds.len() + 3));
        // One more than asked: whether it comes back says whether there is a next page.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows: Vec<(String, String)> = on_pool!(&self.db, |pool| {
            let mut query = sqlx::query_as(&text).bind(projection).bind(kind);
            for value in &binds {
                query = query.bind(value.as_str());
            }
            query.bind(fetch).fetch_all(pool).await
        })
        .map_err(unavailable)?;
        if rows.is_empty() {
            self.known(projection).await?;
        }
        let next = (rows.len() > limit).then(|| rows[limit - 1].0.clone());
        let docs = rows
            .iter()
            .take(limit)
            .map(|(sort_key, doc)| {
                Ok(ListedDoc {
                    sort_key: sort_key.clone(),
                    doc: parse(doc)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DocPage { docs, next })
    }

    #[tracing::instrument(skip_all, fields(projection = %projection), err)]
    async fn status(&self, projection: &str) -> Result<ProjectionStatus, ReadModelError> {
        projection_status(&self.db, projection)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ReadModelError::UnknownProjection(projection.to_owned()))
    }

    #[tracing::instrument(skip_all, fields(projection = %projection, position = position), err)]
    async fn covers(&self, projection: &str, position: i64) -> Result<bool, ReadModelError> {
        let state = sql::load_state(&self.db, projection)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ReadModelError::UnknownProjection(projection.to_owned()))?;
        // An event that is not visible is not committed (or does not exist): not covered yet.
        let Some(event) = sql::event_checkpoint(&self.db, position)
            .await
            .map_err(unavailable)?
        else {
            return Ok(false);
        };
        Ok(event <= state.checkpoint)
    }
}
