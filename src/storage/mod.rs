//! Persistence: one sqlx `Any` pool over SQLite (default) or PostgreSQL, the migrations in
//! migrations/, and write transactions that serialize correctly on both.

pub mod blobs;
pub mod packs;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Transaction};
use std::time::Duration;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Other(String),
}

/// The database backend behind the `Any` pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool and the backend it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connect to `url` (`sqlite://path` or `postgres://…`), creating the SQLite file and its
    /// directory when needed, and apply migrations.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let url = if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if path != ":memory:" {
                if let Some(dir) = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StorageError::Other(format!("{}: {e}", dir.display())))?;
                }
            }
            if url.contains('?') {
                url.to_string()
            } else {
                format!("sqlite://{path}?mode=rwc")
            }
        } else {
            url.to_string()
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL for concurrent readers; FULL so every committed audit row is on disk.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Db { pool, backend })
    }

    /// Make `audit_log` append-only: from then on an `UPDATE` or `DELETE` of its rows (and on
    /// PostgreSQL a `TRUNCATE`) fails, whoever sends it. The service does this at every start.
    ///
    /// Kept out of the shared migrations because the two databases spell triggers differently.
    /// It stops mistakes and ordinary database users, not the database's owner, who can drop a
    /// trigger: against that, the hash chain and the signed checkpoints show what was changed.
    pub async fn guard_audit_log(&self) -> Result<(), StorageError> {
        match self.backend {
            Backend::Sqlite => {
                for op in ["UPDATE", "DELETE"] {
                    sqlx::query(&format!(
                        "CREATE TRIGGER IF NOT EXISTS audit_log_append_only_{} BEFORE {op} ON audit_log \
                         BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
                        op.to_ascii_lowercase()
                    ))
                    .execute(&self.pool)
                    .await?;
                }
            }
            Backend::Postgres => {
                // Instances starting together would race on CREATE OR REPLACE; one at a time.
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7365676501)")
                    .execute(&mut *tx)
                    .await?;
                // DROP + CREATE rather than CREATE OR REPLACE TRIGGER, which needs PostgreSQL 14.
                for statement in [
                    "CREATE OR REPLACE FUNCTION segel_audit_log_append_only() RETURNS trigger \
                     LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
                    "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
                    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION segel_audit_log_append_only()",
                    "DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log",
                    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log \
                     FOR EACH STATEMENT EXECUTE FUNCTION segel_audit_log_append_only()",
                ] {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// A write transaction: `BEGIN IMMEDIATE` on SQLite so two writers never deadlock on the
    /// upgrade from a read lock; a plain transaction on PostgreSQL (appends lock `audit_head`).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, StorageError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// The `VALUES` list of a multi-row `INSERT`: `row` once per row, each `{k}` in it (1-based,
/// up to `{per_row}`) becoming that row's k-th bound parameter, numbered on from the rows before:
/// `values_rows(2, 2, "({1}, 'x', {2})")` is `($1, 'x', $2), ($3, 'x', $4)`.
pub fn values_rows(rows: usize, per_row: usize, row: &str) -> String {
    let mut out = String::with_capacity(rows * (row.len() + 8));
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        let mut rest = row;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
            match rest[open + 1..close].parse::<usize>() {
                Ok(k) if (1..=per_row).contains(&k) => {
                    out.push_str(&format!("${}", r * per_row + k));
                }
                _ => out.push_str(&rest[open..(close + 1).min(rest.len())]),
            }
            rest = &rest[(close + 1).min(rest.len())..];
        }
        out.push_str(rest);
    }
    out
}

/// Milliseconds since the epoch of a clock reading.
pub fn millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_rows_numbers_parameters_on() {
        assert_eq!(
            super::values_rows(2, 2, "({1}, 'x', {2}, {2})"),
            "($1, 'x', $2, $2), ($3, 'x', $4, $4)"
        );
        assert_eq!(super::values_rows(1, 1, "({1}, '{}')"), "($1, '{}')");
        assert_eq!(super::values_rows(0, 3, "({1})"), "");
    }
}
