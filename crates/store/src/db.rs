//! Opening the store: one SQLite write connection per process, set up in one place.
//!
//! [`StoreOptions`] is built from a filesystem path (never a `sqlite://` URL string) and sets
//! WAL journaling (readers never block the writer), a busy timeout (concurrent CLIs wait for
//! each other instead of failing with `SQLITE_BUSY`) and foreign keys (labels go with their
//! sandbox). Opening runs the [migrations](crate::migrations).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::migrations::{self, MigrationError};

/// How long a writer waits for another process's write lock before giving up.
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 10_000;

/// Where the store lives and how connections are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The database file; created if missing (its directory must exist).
    pub path: PathBuf,
    /// See [`DEFAULT_BUSY_TIMEOUT_MS`].
    pub busy_timeout: Duration,
}

impl StoreOptions {
    /// Options for the database at `path`, with the default busy timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), busy_timeout: Duration::from_millis(DEFAULT_BUSY_TIMEOUT_MS) }
    }

    /// Sets the busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite could not open or create the file.
    #[error("cannot open store {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A connection setting could not be applied.
    #[error("cannot set {pragma} on store {path}")]
    Pragma {
        /// The database file.
        path: PathBuf,
        /// The setting (`journal_mode`, `busy_timeout`, `foreign_keys`).
        pragma: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused WAL mode (for example on a filesystem without shared memory).
    #[error("store {path} is in journal mode {mode}, not wal")]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate store {path}")]
    Migration {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: MigrationError,
    },
}

/// The sandbox index: one write connection. Open one per process (or per thread); SQLite's
/// locking and the busy timeout serialize writers across them.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(&StoreOptions::new(path.as_ref()))
    }

    /// Opens (creating if needed) the store described by `options`, and migrates it.
    pub fn open_with(options: &StoreOptions) -> Result<Self, OpenError> {
        let path = options.path.clone();
        // No SQLITE_OPEN_URI: the path is a path, whatever characters it holds.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags)
            .map_err(|source| OpenError::Open { path: path.clone(), source })?;
        let pragma = |pragma: &'static str| {
            let path = path.clone();
            move |source| OpenError::Pragma { path, pragma, source }
        };
        conn.busy_timeout(options.busy_timeout).map_err(pragma("busy_timeout"))?;
        // Switching a fresh database to WAL takes an exclusive lock that SQLite does not wait
        // for (the busy handler is not called): of several processes opening a new store at
        // once, all but one get SQLITE_BUSY. Retry that for as long as the busy timeout.
        let deadline = std::time::Instant::now() + options.busy_timeout;
        let mode: String = loop {
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                result => break result.map_err(pragma("journal_mode"))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NotWal { path, mode });
        }
        conn.pragma_update(None, "foreign_keys", true).map_err(pragma("foreign_keys"))?;
        // WAL + NORMAL is durable across application crashes; only power loss may drop the
        // last commits, which reconcile handles like any other crash.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(pragma("synchronous"))?;
        migrations::migrate(&mut conn).map_err(|source| OpenError::Migration { path: path.clone(), source })?;
        Ok(Self { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_open_sets_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::new(dir.path().join("store.db")).busy_timeout(Duration::from_millis(1234));
        let store = Store::open_with(&opts).unwrap();
        let q = |sql: &str| -> String {
            store.conn.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0)).map(|v| format!("{v:?}")).unwrap()
        };
        assert_eq!(q("PRAGMA journal_mode"), "Text(\"wal\")");
        assert_eq!(q("PRAGMA foreign_keys"), "Integer(1)");
        assert_eq!(q("PRAGMA busy_timeout"), "Integer(1234)");
        assert_eq!(store.path(), opts.path);
    }

    #[test]
    fn test_many_openers_of_a_fresh_store_all_succeed() {
        // Each opener switches the new file to WAL; SQLite answers all but one with BUSY
        // without waiting, which `open` must retry.
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let openers: Vec<_> = (0..8)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(&path).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn test_open_twice_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let a = Store::open(&path).unwrap();
        let b = Store::open(&path).unwrap();
        drop(a);
        drop(b);
        let c = Store::open(&path).unwrap();
        let v: u32 = c.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, migrations::latest_version());
    }

    #[test]
    fn test_open_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(Store::open(&path).unwrap());
        let newer = migrations::latest_version() + 7;
        Connection::open(&path).unwrap().execute_batch(&format!("PRAGMA user_version = {newer}")).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                OpenError::Migration { source: MigrationError::SchemaTooNew { found, .. }, .. }
                    if *found == newer
            ),
            "{err:?}"
        );
    }

    #[test]
    fn test_open_path_is_not_a_uri() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file:odd?mode=ro");
        Store::open(&path).unwrap();
        assert!(path.exists());
    }

    #[test]
    fn test_open_missing_directory_is_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(dir.path().join("no/such/dir/store.db")).unwrap_err();
        assert!(matches!(err, OpenError::Open { .. }), "{err:?}");
    }
}
