//! The reads of the `events` table projections need besides the global log.

use edict_application::event_log::Checkpoint;

use crate::store::Database;

const LAG_POSTGRES: &str =
    "SELECT COUNT(*) FROM events WHERE (transaction_id, global_position) > ($1::text::xid8, $2)";
const LAG_SQLITE: &str = "SELECT COUNT(*) FROM events WHERE rowid > $1";
const LAST_POSITION_POSTGRES: &str = "SELECT COALESCE(MAX(global_position), 0) FROM events";
const LAST_POSITION_SQLITE: &str = "SELECT COALESCE(MAX(rowid), 0) FROM events";
const EVENT_TRANSACTION_POSTGRES: &str =
    "SELECT transaction_id::text FROM events WHERE global_position = $1";
const EVENT_TRANSACTION_SQLITE: &str = "SELECT '0' FROM events WHERE rowid = $1";

/// How many committed events come after `checkpoint` in the log.
pub(crate) async fn lag(db: &Database, checkpoint: Checkpoint) -> Result<i64, sqlx::Error> {
    match db {
        Database::Postgres(pool) => {
            sqlx::query_scalar(LAG_POSTGRES)
                .bind(checkpoint.transaction_id.to_string())
                .bind(checkpoint.position)
                .fetch_one(pool)
                .await
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar(LAG_SQLITE)
                .bind(checkpoint.position)
                .fetch_one(pool)
                .await
        }
    }
}

/// The highest global position in the log (an estimate of its length: positions may have holes).
pub(crate) async fn last_position(db: &Database) -> Result<i64, sqlx::Error> {
    match db {
        Database::Postgres(pool) => {
            sqlx::query_scalar(LAST_POSITION_POSTGRES)
                .fetch_one(pool)
                .await
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar(LAST_POSITION_SQLITE)
                .fetch_one(pool)
                .await
        }
    }
}

/// The checkpoint of the committed event at global position `position`, if there is one.
pub(crate) async fn event_checkpoint(
    db: &Database,
    position: i64,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let sql = match db {
        Database::Postgres(_) => EVENT_TRANSACTION_POSTGRES,
        Database::Sqlite(_) => EVENT_TRANSACTION_SQLITE,
    };
    let xid: Option<String> = on_pool!(db, |pool| sqlx::query_scalar(sql)
        .bind(position)
        .fetch_optional(pool)
        .await?);
    xid.map(|xid| {
        let transaction_id = xid
            .parse::<u64>()
            .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        Ok(Checkpoint {
            transaction_id,
            position,
        })
    })
    .transpose()
}
