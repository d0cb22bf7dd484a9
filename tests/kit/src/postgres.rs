//! Scratch PostgreSQL databases for tests and benchmarks.
//!
//! Tests run in parallel against one shared PostgreSQL server. Each one creates its own database with
//! [`create_isolated_postgres`] (a fresh `<prefix>_<uuid>`, migrated) and drops it at the end with
//! [`drop_isolated_postgres`]. [`test_database_url`] names the server: `EDICT_TEST_DATABASE_URL`, else
//! [`DEFAULT_TEST_DATABASE_URL`].

use std::time::Duration;

use anyhow::{Context, Result, bail};
use edict_infrastructure::store::Database;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The server tests use when `EDICT_TEST_DATABASE_URL` is not set (local trust authentication).
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The administrative URL of the test PostgreSQL server: `EDICT_TEST_DATABASE_URL` if set, else
/// [`DEFAULT_TEST_DATABASE_URL`].
pub fn test_database_url() -> String {
    std::env::var("EDICT_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// Creates a fresh database `<name_prefix>_<uuid>` on the server of `admin_url`, migrates it and connects
/// to it. Returns the open [`Database`] and its URL (the admin URL with the database name replaced).
///
/// `name_prefix` is lowercased, anything but `[a-z0-9_]` becomes `_`, and it is cut to 30 characters so the
/// name fits PostgreSQL's 63.
///
/// # Errors
/// When the server cannot be reached, `CREATE DATABASE` fails, or the schema cannot be created.
#[tracing::instrument(skip_all, fields(name_prefix), err)]
pub async fn create_isolated_postgres(
    admin_url: &str,
    name_prefix: &str,
) -> Result<(Database, String)> {
    let name = format!(
        "{}_{}",
        sanitize_prefix(name_prefix),
        uuid::Uuid::new_v4().simple()
    );
    let url = with_database(admin_url, &name)?;
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("cannot connect to the test PostgreSQL server")?;
    // CREATE DATABASE copies template1 and fails when another session is copying it at the same moment
    // ("source database is being accessed by other users"); parallel tests make that likely, so retry.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
        {
            Ok(_) => break,
            Err(error) if attempt < 20 && is_template_busy(&error) => {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(error) => return Err(error).context(format!("cannot create database {name}")),
        }
    }
    // Best effort: the admin connection is not needed any more.
    let _ = admin.close().await;
    let database = Database::connect(&url).await?;
    database.migrate().await?;
    Ok((database, url))
}

/// Drops the database named by `database_url` (as returned by [`create_isolated_postgres`]) through
/// `admin_url`, terminating its remaining connections. Close your own pool first to avoid noisy errors.
///
/// # Errors
/// When `database_url` names no database, or the drop fails. Callers cleaning up after a test usually
/// ignore them.
#[tracing::instrument(skip_all, err)]
pub async fn drop_isolated_postgres(admin_url: &str, database_url: &str) -> Result<()> {
    let Some(name) = database_name(database_url) else {
        bail!("the database URL names no database");
    };
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("cannot connect to the test PostgreSQL server")?;
    let dropped = sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    ))
    .execute(&mut admin)
    .await
    .map(drop)
    .with_context(|| format!("cannot drop database {name}"));
    let _ = admin.close().await;
    dropped
}

fn sanitize_prefix(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    if cleaned.is_empty() {
        "edict".to_owned()
    } else {
        cleaned
    }
}

fn is_template_busy(error: &sqlx::Error) -> bool {
    // 55006 object_in_use: "source database \"template1\" is being accessed by other users"
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "55006")
}

/// `url` with its path (the database name) replaced by `name`, keeping user, host, port and query.
fn with_database(url: &str, name: &str) -> Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("the test database URL has no scheme");
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(authority, _)| authority);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// The database name in a `postgres://…/name?…` URL.
fn database_name(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let before_query = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (_, path) = before_query.split_once('/')?;
    (!path.is_empty()).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t_1").ok(),
            Some("postgres://postgres@127.0.0.1:5432/t_1".to_owned())
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t_1").ok(),
            Some("postgres://u:p@h/t_1?sslmode=disable".to_owned())
        );
        assert_eq!(
            with_database("postgres://h:5432", "t_1").ok(),
            Some("postgres://h:5432/t_1".to_owned())
        );
    }

    #[test]
    fn database_name_is_the_path() {
        assert_eq!(
            database_name("postgres://u@h:1/abc_1?x=y").as_deref(),
            Some("abc_1")
        );
        assert_eq!(database_name("postgres://u@h:1"), None);
    }

    #[test]
    fn prefixes_are_made_safe_identifiers() {
        assert_eq!(sanitize_prefix("Store-Contract!"), "store_contract_");
        assert_eq!(sanitize_prefix(""), "edict");
        assert_eq!(sanitize_prefix(&"x".repeat(80)).len(), 30);
    }
}
