//! The `ruleset_publication` statements: which rule set revisions the read model owes the gateways
//! (ADR 0014). A batch that writes a rule set document raises the row's `revision` in its own
//! transaction ([`Tx::raise_owed`]); a publish that succeeded raises `published`
//! ([`mark_published`]); the publication loop reads the rows still owed ([`owed`]).

use super::{Tx, now_millis};
use crate::store::Database;

/// A rule set revision a commit wrote: the document's key, the team it is published under, its
/// revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owed<'a> {
    pub key: &'a str,
    pub team: &'a str,
    pub revision: i64,
}

/// Raises the committed revision (never lowers it); a new row starts as never published.
const RAISE: &str = "
INSERT INTO ruleset_publication (projection, key, team, revision, published, updated_at)
VALUES ($1, $2, $3, $4, 0, $5)
ON CONFLICT (projection, key) DO UPDATE
   SET team = excluded.team, revision = excluded.revision, updated_at = excluded.updated_at
 WHERE ruleset_publication.revision < excluded.revision";

/// Records a revision as published (and as committed, for rows a rebuild or an older version wrote
/// without one); never lowers either.
const MARK: &str = "
INSERT INTO ruleset_publication (projection, key, team, revision, published, updated_at)
VALUES ($1, $2, $3, $4, $4, $5)
ON CONFLICT (projection, key) DO UPDATE
   SET revision = CASE WHEN ruleset_publication.revision > excluded.revision
                       THEN ruleset_publication.revision ELSE excluded.revision END,
       published = excluded.published, updated_at = excluded.updated_at
 WHERE ruleset_publication.published < excluded.published";

const OWED: &str = "
SELECT key, revision FROM ruleset_publication
 WHERE projection = $1 AND published < revision AND key > $2
 ORDER BY key LIMIT $3";

const FORGET: &str = "DELETE FROM ruleset_publication WHERE projection = $1 AND key = $2";

const SERVED_DOC: &str = "
SELECT d.team, d.doc
  FROM read_docs d JOIN projection_state s ON s.name = d.projection AND s.generation = d.generation
 WHERE d.projection = $1 AND d.kind = $2 AND d.key = $3";

impl Tx {
    /// Raises the committed revision of each of `owed` (in the batch's transaction).
    pub async fn raise_owed(
        &mut self,
        projection: &str,
        owed: &[Owed<'_>],
    ) -> Result<(), sqlx::Error> {
        let now = now_millis();
        for row in owed {
            on_tx!(self, |tx| sqlx::query(RAISE)
                .bind(projection)
                .bind(row.key)
                .bind(row.team)
                .bind(row.revision)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map(drop))?;
        }
        Ok(())
    }
}

/// [`Tx::raise_owed`] for one revision, in a statement of its own (a republish that failed).
pub(crate) async fn raise_owed(
    db: &Database,
    projection: &str,
    owed: &Owed<'_>,
) -> Result<(), sqlx::Error> {
    let now = now_millis();
    on_pool!(db, |pool| sqlx::query(RAISE)
        .bind(projection)
        .bind(owed.key)
        .bind(owed.team)
        .bind(owed.revision)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))
}

/// Records that `published` reached the gateways' feed (or that it holds a newer one).
pub(crate) async fn mark_published(
    db: &Database,
    projection: &str,
    published: &Owed<'_>,
) -> Result<(), sqlx::Error> {
    let now = now_millis();
    on_pool!(db, |pool| sqlx::query(MARK)
        .bind(projection)
        .bind(published.key)
        .bind(published.team)
        .bind(published.revision)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))
}

/// Up to `limit` keys whose committed revision is not published yet, after `after`, by key, with that
/// revision.
pub(crate) async fn owed(
    db: &Database,
    projection: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    on_pool!(db, |pool| sqlx::query_as(OWED)
        .bind(projection)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await)
}

/// Forgets what is owed for `key` (its document is gone: nothing left to publish).
pub(crate) async fn forget_owed(
    db: &Database,
    projection: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    on_pool!(db, |pool| sqlx::query(FORGET)
        .bind(projection)
        .bind(key)
        .execute(pool)
        .await
        .map(drop))
}

/// The document `kind`/`key` of the served generation: `(team, doc)`.
pub(crate) async fn served_doc(
    db: &Database,
    projection: &str,
    kind: &str,
    key: &str,
) -> Result<Option<(Option<String>, serde_json::Value)>, sqlx::Error> {
    let row: Option<(Option<String>, String)> = on_pool!(db, |pool| sqlx::query_as(SERVED_DOC)
        .bind(projection)
        .bind(kind)
        .bind(key)
        .fetch_optional(pool)
        .await?);
    row.map(|(team, doc)| {
        serde_json::from_str(&doc)
            .map(|doc| (team, doc))
            .map_err(|error| sqlx::Error::Decode(Box::new(error)))
    })
    .transpose()
}
