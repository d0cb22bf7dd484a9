//! The `read_docs` statements: loading and writing documents of a generation, deleting generations,
//! reading them whole.

use edict_projections::{DocKey, DocMeta, StoredDoc};
use sqlx::{Postgres, QueryBuilder, Sqlite, Transaction};

use edict_application::event_log::Checkpoint;

use super::{State, Tx};
use crate::store::Database;

/// Rows per multi-row `VALUES` statement on SQLite (8 parameters each, well below its 32,766).
const SQLITE_ROWS_PER_STATEMENT: usize = 1_000;
/// Rows per `UNNEST` statement on PostgreSQL.
const POSTGRES_ROWS_PER_STATEMENT: usize = 5_000;
/// Rows removed per statement when a generation is deleted (each in its own short transaction).
pub(crate) const DELETE_CHUNK: i64 = 5_000;

const DOC_LOAD: &str = "
SELECT team, status, sort_key, doc FROM read_docs
 WHERE projection = $1 AND generation = $2 AND kind = $3 AND key = $4";

const DOC_UPSERT_POSTGRES: &str = "
INSERT INTO read_docs (projection, generation, kind, key, team, status, sort_key, doc)
SELECT $1, $2, u.kind, u.key, u.team, u.status, u.sort_key, u.doc
  FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
       AS u(kind, key, team, status, sort_key, doc)
ON CONFLICT (projection, generation, kind, key) DO UPDATE
   SET team = excluded.team, status = excluded.status, sort_key = excluded.sort_key, doc = excluded.doc";

const DOC_DELETE_POSTGRES: &str = "
DELETE FROM read_docs
 WHERE projection = $1 AND generation = $2
   AND (kind, key) IN (SELECT * FROM UNNEST($3::text[], $4::text[]))";

const DOC_UPSERT_CONFLICT: &str = " ON CONFLICT (projection, generation, kind, key) DO UPDATE \
     SET team = excluded.team, status = excluded.status, sort_key = excluded.sort_key, doc = excluded.doc";

const DELETE_GENERATION: &str = "
DELETE FROM read_docs
 WHERE projection = $1
   AND (generation, kind, key) IN (SELECT generation, kind, key FROM read_docs
                                    WHERE projection = $1 AND generation = $2 LIMIT $3)";

/// Older generations: the one a swap replaced, and any a crashed or beaten rebuild left behind (a newer
/// one may be a rebuild in progress).
const DELETE_OLDER_GENERATIONS: &str = "
DELETE FROM read_docs
 WHERE projection = $1
   AND (generation, kind, key) IN (SELECT generation, kind, key FROM read_docs
                                    WHERE projection = $1 AND generation < $2 LIMIT $3)";

const GENERATION_DOCS: &str = "
SELECT kind, key, team, status, sort_key, doc FROM read_docs WHERE projection = $1 AND generation = $2";

const SERVED_DOCS_OF_KIND: &str = "
SELECT d.key, d.team, d.doc
  FROM read_docs d JOIN projection_state s ON s.name = d.projection AND s.generation = d.generation
 WHERE d.projection = $1 AND d.kind = $2
 ORDER BY d.key";

/// Refreshes the planner's statistics of `read_docs` (PostgreSQL; SQLite needs none).
///
/// Without statistics (a table filled faster than autovacuum's next round: a cold catch-up, a rebuild)
/// PostgreSQL's estimates for a key lookup tie between the primary key and the list indexes, which
/// share its first three columns, and it may scan a whole kind per lookup: a thousand times slower.
pub(crate) async fn analyze_docs(db: &Database) -> Result<(), sqlx::Error> {
    if let Database::Postgres(pool) = db {
        sqlx::query("ANALYZE read_docs").execute(pool).await?;
    }
    Ok(())
}

fn decode_doc(text: &str) -> Result<serde_json::Value, sqlx::Error> {
    serde_json::from_str(text).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn encode_doc(doc: &serde_json::Value) -> Result<String, sqlx::Error> {
    serde_json::to_string(doc).map_err(|error| sqlx::Error::Encode(Box::new(error)))
}
/// One document of a generation, read outside any transaction: a batch loads before it commits, and
/// its compare-and-set of the checkpoint proves that nothing it read changed meanwhile (see
/// `ProjectionRunner`).
pub(crate) async fn load_doc(
    db: &Database,
    projection: &str,
    generation: i64,
    kind: &str,
    key: &str,
) -> Result<Option<StoredDoc>, sqlx::Error> {
    let row: Option<(Option<String>, Option<String>, String, String)> =
        on_pool!(db, |pool| sqlx::query_as(DOC_LOAD)
            .bind(projection)
            .bind(generation)
            .bind(kind)
            .bind(key)
            .fetch_optional(pool)
            .await?);
    row.map(|(team, status, sort_key, doc)| {
        Ok(StoredDoc {
            meta: DocMeta {
                team,
                status,
                sort_key,
            },
            doc: decode_doc(&doc)?,
        })
    })
    .transpose()
}

/// Moves the checkpoint from `expected` to `to` (adding `applied` events), writes `docs` and raises
/// the rule set revisions it `owes` the gateways, atomically, if nobody else moved the projection and
/// it is not stopped. Returns whether it did.
pub(crate) async fn commit_batch(
    db: &Database,
    projection: &str,
    expected: &State,
    to: Checkpoint,
    applied: i64,
    docs: &[(DocKey, Option<StoredDoc>)],
    owes: &[super::Owed<'_>],
) -> Result<bool, sqlx::Error> {
    let mut tx = Tx::begin(db).await?;
    if !tx
        .move_checkpoint(projection, expected, to, applied)
        .await?
    {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.write_docs(projection, expected.generation, docs).await?;
    tx.raise_owed(projection, owes).await?;
    tx.commit().await?;
    Ok(true)
}

type Delete<'a> = (&'a str, &'a str);

fn split_docs(docs: &[(DocKey, Option<StoredDoc>)]) -> (Vec<Put<'_>>, Vec<Delete<'_>>) {
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    for ((kind, key), doc) in docs {
        match doc {
            Some(doc) => puts.push((kind.as_str(), key.as_str(), doc)),
            None => deletes.push((kind.as_str(), key.as_str())),
        }
    }
    (puts, deletes)
}

impl Tx {
    /// Writes documents of a generation: upserts the present ones, deletes the absent ones.
    pub async fn write_docs(
        &mut self,
        projection: &str,
        generation: i64,
        docs: &[(DocKey, Option<StoredDoc>)],
    ) -> Result<(), sqlx::Error> {
        let (puts, deletes) = split_docs(docs);
        match self {
            Tx::Postgres(tx) => {
                for chunk in puts.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    postgres_upsert(tx, projection, generation, chunk).await?;
                }
                for chunk in deletes.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    let (kinds, keys): (Vec<&str>, Vec<&str>) = chunk.iter().copied().unzip();
                    sqlx::query(DOC_DELETE_POSTGRES)
                        .bind(projection)
                        .bind(generation)
                        .bind(kinds)
                        .bind(keys)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            Tx::Sqlite(tx) => {
                for chunk in puts.chunks(SQLITE_ROWS_PER_STATEMENT) {
                    sqlite_upsert(tx, projection, generation, chunk).await?;
                }
                for chunk in deletes.chunks(SQLITE_ROWS_PER_STATEMENT) {
                    let mut query =
                        QueryBuilder::<Sqlite>::new("DELETE FROM read_docs WHERE projection = ");
                    query.push_bind(projection);
                    query.push(" AND generation = ");
                    query.push_bind(generation);
                    query.push(" AND (kind, key) IN (VALUES ");
                    let mut rows = query.separated(", ");
                    for (kind, key) in chunk {
                        rows.push("(");
                        rows.push_bind_unseparated(*kind);
                        rows.push_unseparated(", ");
                        rows.push_bind_unseparated(*key);
                        rows.push_unseparated(")");
                    }
                    query.push(")");
                    query.build().execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }
}

type Put<'a> = (&'a str, &'a str, &'a StoredDoc);

/// The columns of an `UNNEST` upsert.
struct PutColumns<'a> {
    kinds: Vec<&'a str>,
    keys: Vec<&'a str>,
    teams: Vec<Option<&'a str>>,
    statuses: Vec<Option<&'a str>>,
    sort_keys: Vec<&'a str>,
    docs: Vec<String>,
}

impl<'a> PutColumns<'a> {
    fn new(rows: &[Put<'a>]) -> Result<PutColumns<'a>, sqlx::Error> {
        let mut columns = PutColumns {
            kinds: Vec::with_capacity(rows.len()),
            keys: Vec::with_capacity(rows.len()),
            teams: Vec::with_capacity(rows.len()),
            statuses: Vec::with_capacity(rows.len()),
            sort_keys: Vec::with_capacity(rows.len()),
            docs: Vec::with_capacity(rows.len()),
        };
        for (kind, key, doc) in rows {
            columns.kinds.push(*kind);
            columns.keys.push(*key);
            columns.teams.push(doc.meta.team.as_deref());
            columns.statuses.push(doc.meta.status.as_deref());
            columns.sort_keys.push(doc.meta.sort_key.as_str());
            columns.docs.push(encode_doc(&doc.doc)?);
        }
        Ok(columns)
    }
}

async fn postgres_upsert(
    tx: &mut Transaction<'static, Postgres>,
    projection: &str,
    generation: i64,
    rows: &[Put<'_>],
) -> Result<(), sqlx::Error> {
    let columns = PutColumns::new(rows)?;
    sqlx::query(DOC_UPSERT_POSTGRES)
        .bind(projection)
        .bind(generation)
        .bind(columns.kinds)
        .bind(columns.keys)
        .bind(columns.teams)
        .bind(columns.statuses)
        .bind(columns.sort_keys)
        .bind(columns.docs)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn sqlite_upsert(
    tx: &mut Transaction<'static, Sqlite>,
    projection: &str,
    generation: i64,
    rows: &[Put<'_>],
) -> Result<(), sqlx::Error> {
    let encoded = rows
        .iter()
        .map(|(_, _, doc)| encode_doc(&doc.doc))
        .collect::<Result<Vec<_>, _>>()?;
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO read_docs (projection, generation, kind, key, team, status, sort_key, doc) ",
    );
    query.push_values(
        rows.iter().zip(encoded),
        |mut row, ((kind, key, doc), text)| {
            row.push_bind(projection)
                .push_bind(generation)
                .push_bind(*kind)
                .push_bind(*key)
                .push_bind(doc.meta.team.as_deref())
                .push_bind(doc.meta.status.as_deref())
                .push_bind(doc.meta.sort_key.as_str())
                .push_bind(text);
        },
    );
    query.push(DOC_UPSERT_CONFLICT);
    query.build().execute(&mut **tx).await?;
    Ok(())
}
/// Deletes up to [`DELETE_CHUNK`] documents of `generation` (or of every generation older than it,
/// with `older`); returns how many.
pub(crate) async fn delete_generation_chunk(
    db: &Database,
    projection: &str,
    generation: i64,
    older: bool,
) -> Result<u64, sqlx::Error> {
    let sql = if older {
        DELETE_OLDER_GENERATIONS
    } else {
        DELETE_GENERATION
    };
    on_pool!(db, |pool| sqlx::query(sql)
        .bind(projection)
        .bind(generation)
        .bind(DELETE_CHUNK)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
}

/// Every document of one generation, in no particular order.
pub(crate) async fn generation_docs(
    db: &Database,
    projection: &str,
    generation: i64,
) -> Result<Vec<(DocKey, StoredDoc)>, sqlx::Error> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
    );
    let rows: Vec<Row> = on_pool!(db, |pool| sqlx::query_as(GENERATION_DOCS)
        .bind(projection)
        .bind(generation)
        .fetch_all(pool)
        .await?);
    rows.into_iter()
        .map(|(kind, key, team, status, sort_key, doc)| {
            Ok((
                (kind, key),
                StoredDoc {
                    meta: DocMeta {
                        team,
                        status,
                        sort_key,
                    },
                    doc: decode_doc(&doc)?,
                },
            ))
        })
        .collect()
}

/// The documents of `kind` in the served generation: `(key, team, doc)`, by key.
pub(crate) async fn served_docs_of_kind(
    db: &Database,
    projection: &str,
    kind: &str,
) -> Result<Vec<(String, Option<String>, serde_json::Value)>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, String)> =
        on_pool!(db, |pool| sqlx::query_as(SERVED_DOCS_OF_KIND)
            .bind(projection)
            .bind(kind)
            .fetch_all(pool)
            .await?);
    rows.into_iter()
        .map(|(key, team, doc)| Ok((key, team, decode_doc(&doc)?)))
        .collect()
}
