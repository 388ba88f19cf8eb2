//! Schema migrations: a dated, versioned list applied in order, tracked in `PRAGMA user_version`.
//!
//! Rules (the compatibility checklist for the DB schema):
//! - A migration, once released, is never edited; change the schema by appending one.
//! - Versions start at 1 and go up by one; dates never go backwards (a test checks both).
//! - All pending migrations and the new `user_version` are written in one `IMMEDIATE`
//!   transaction: a crash leaves the old schema, and two processes opening a fresh database at
//!   once apply each migration exactly once.
//! - A database whose version is newer than this build knows is refused with
//!   [`MigrationError::SchemaTooNew`] instead of being read with the wrong schema.

use rusqlite::{Connection, TransactionBehavior};

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The `user_version` the database has after this migration.
    pub version: u32,
    /// The day the migration was written (`YYYY-MM-DD`).
    pub date: &'static str,
    /// A short name, used in errors.
    pub name: &'static str,
    /// The SQL, run as one batch.
    pub sql: &'static str,
}

/// `m20260601_000001`: sandboxes and their labels.
const M20260601_000001_SANDBOXES: Migration = Migration {
    version: 1,
    date: "2026-06-01",
    name: "sandboxes",
    sql: "
CREATE TABLE sandboxes (
    id              TEXT    PRIMARY KEY NOT NULL CHECK (length(id) = 12),
    name            TEXT    NOT NULL UNIQUE,
    state           TEXT    NOT NULL,
    reason          TEXT,
    hypervisor      TEXT    NOT NULL,
    spec            TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    shim_pid        INTEGER,
    shim_start_time INTEGER,
    exit_code       INTEGER
) STRICT;
CREATE TABLE sandbox_labels (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, key)
) STRICT;
CREATE INDEX sandbox_labels_by_key_value ON sandbox_labels (key, value);
",
};

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[M20260601_000001_SANDBOXES];

/// The schema version this build writes and understands.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database was written by a newer nestbox.
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew {
        /// The database's `user_version`.
        found: u32,
        /// [`latest_version`].
        known: u32,
    },
    /// A migration's SQL failed; nothing was applied.
    #[error("migration {version} ({name}) failed")]
    Apply {
        /// The failing migration's version.
        version: u32,
        /// Its name.
        name: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// Beginning, reading the version of, or committing the migration transaction failed.
    #[error("could not run migrations")]
    Transaction(#[source] rusqlite::Error),
}

/// Brings the schema up to [`latest_version`]; returns the version it had before.
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrationError> {
    migrate_with(conn, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, migrations: &[Migration]) -> Result<u32, MigrationError> {
    let known = migrations.last().map_or(0, |m| m.version);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(MigrationError::Transaction)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(MigrationError::Transaction)?;
    if found > known {
        return Err(MigrationError::SchemaTooNew { found, known });
    }
    if found == known {
        return Ok(found);
    }
    for m in migrations.iter().filter(|m| m.version > found) {
        tx.execute_batch(m.sql).map_err(|source| MigrationError::Apply { version: m.version, name: m.name, source })?;
    }
    // PRAGMA takes no bound parameters; `known` is an integer we computed.
    tx.execute_batch(&format!("PRAGMA user_version = {known}")).map_err(MigrationError::Transaction)?;
    tx.commit().map_err(MigrationError::Transaction)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> u32 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn test_migrations_are_ordered() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert_eq!(m.date.len(), 10, "{}", m.name);
        }
        for w in MIGRATIONS.windows(2) {
            assert!(w[0].date <= w[1].date, "{} after {}", w[1].name, w[0].name);
        }
    }

    #[test]
    fn test_migrate_twice_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(version(&conn), latest_version());
        assert_eq!(migrate(&mut conn).unwrap(), latest_version());
        assert_eq!(version(&conn), latest_version());
    }

    #[test]
    fn test_migrate_refuses_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        let newer = latest_version() + 1;
        conn.execute_batch(&format!("PRAGMA user_version = {newer}")).unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(err, MigrationError::SchemaTooNew { found, known } if found == newer && known == latest_version()),
            "{err:?}"
        );
        assert_eq!(version(&conn), newer);
    }

    #[test]
    fn test_migrate_failure_applies_nothing() {
        let bad = [
            Migration { version: 1, date: "2026-01-01", name: "good", sql: "CREATE TABLE t1 (x INTEGER);" },
            Migration {
                version: 2,
                date: "2026-01-02",
                name: "bad",
                sql: "CREATE TABLE t2 (x INTEGER); THIS IS NOT SQL;",
            },
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        let err = migrate_with(&mut conn, &bad).unwrap_err();
        assert!(matches!(err, MigrationError::Apply { version: 2, name: "bad", .. }), "{err:?}");
        assert_eq!(version(&conn), 0);
        let tables: u32 =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('t1', 't2')", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 0);
    }
}
