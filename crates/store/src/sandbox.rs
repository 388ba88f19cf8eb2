//! Sandbox records: ids, names, labels, and the store operations on them.
//!
//! A record is inserted (state `creating`) before any directory, socket or process exists, so
//! the garbage collector can always account for what it finds. State changes go through
//! [`Store::update_state`], a compare-and-set in one `IMMEDIATE` transaction that calls
//! [`transition`]: two processes racing on one sandbox cannot both win, and no update is lost.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;

use crate::db::Store;
use crate::state::{SandboxState, TransitionError, transition};

/// Length of a sandbox id in hex digits.
pub const ID_LEN: usize = 12;
/// Longest sandbox name.
pub const MAX_NAME_LEN: usize = 63;
/// How many fresh ids `insert` tries before giving up on collisions.
const ID_ATTEMPTS: u32 = 8;

/// A sandbox id: 12 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SandboxId(String);

/// A malformed sandbox id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox id {id:?}: want {ID_LEN} lower-case hex digits")]
pub struct IdError {
    /// The text given.
    pub id: String,
}

impl SandboxId {
    /// Checks `s` is 12 lower-case hex digits.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError { id: s.to_owned() })
        }
    }

    /// A fresh random id.
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // RandomState is seeded from the OS once per process and differs per instance.
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        Self(format!("{:012x}", h.finish() & 0xffff_ffff_ffff))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated sandbox name: 1–63 characters, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SandboxName(String);

/// Why a name was refused; one variant per rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("sandbox name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("sandbox name is {len} characters long, the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The first character is not a letter or digit.
    #[error("sandbox name {name:?} must start with a letter or digit")]
    BadFirstChar {
        /// The name given.
        name: String,
    },
    /// A character outside `[a-zA-Z0-9_.-]`.
    #[error("sandbox name {name:?} has {ch:?} at {at}; allowed are letters, digits, '_', '.', '-'")]
    BadChar {
        /// The name given.
        name: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

impl SandboxName {
    /// Validates a user-supplied name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let Some(first) = s.chars().next() else {
            return Err(NameError::Empty);
        };
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: s.len() });
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::BadFirstChar { name: s.to_owned() });
        }
        if let Some((at, ch)) =
            s.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(NameError::BadChar { name: s.to_owned(), ch, at });
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A malformed `key=value` label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No `=` in the text.
    #[error("label {label:?} is not key=value")]
    NoEquals {
        /// The text given.
        label: String,
    },
    /// Nothing before the `=`.
    #[error("label {label:?} has an empty key")]
    EmptyKey {
        /// The text given.
        label: String,
    },
}

/// Splits `key=value` (the value may be empty and may contain `=`).
pub fn parse_label(s: &str) -> Result<(String, String), LabelError> {
    let (k, v) = s.split_once('=').ok_or_else(|| LabelError::NoEquals { label: s.to_owned() })?;
    if k.is_empty() {
        return Err(LabelError::EmptyKey { label: s.to_owned() });
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// The shim process that supervises a sandbox. The start time (from `/proc/<pid>/stat`) tells a
/// live shim from an unrelated process that reused its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShimProcess {
    /// Its pid.
    pub pid: u32,
    /// Its start time, in clock ticks after boot.
    pub start_time: u64,
}

/// What the caller supplies to create a record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSandbox {
    /// Its unique name.
    pub name: SandboxName,
    /// The hypervisor backend's name.
    pub hypervisor: String,
    /// The VM spec, stored as JSON.
    pub spec: serde_json::Value,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A stored sandbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sandbox {
    /// Its id.
    pub id: SandboxId,
    /// Its unique name.
    pub name: SandboxName,
    /// Where it is in its life cycle (with the crash reason).
    #[serde(flatten)]
    pub state: SandboxState,
    /// The hypervisor backend's name.
    pub hypervisor: String,
    /// The VM spec.
    pub spec: serde_json::Value,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// When the record was inserted, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When the record last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// The shim, once started.
    pub shim: Option<ShimProcess>,
    /// The VM's exit code, once it exited.
    pub exit_code: Option<i32>,
}

/// Which records [`Store::list`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListScope {
    /// Every record (`ps -a`).
    #[default]
    All,
    /// Those with [`SandboxState::is_active`] (`ps`).
    Active,
}

/// A filter for [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListFilter {
    /// All or active only.
    pub scope: ListScope,
    /// Every one of these labels must be present with this value.
    pub labels: BTreeMap<String, String>,
}

/// Why a record operation failed; one variant per rule.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No record has this id.
    #[error("no such sandbox: {id}")]
    NotFound {
        /// The id asked for.
        id: SandboxId,
    },
    /// Another record has this name.
    #[error("sandbox name {name} is already in use by {existing}")]
    NameTaken {
        /// The name asked for.
        name: SandboxName,
        /// The record holding it.
        existing: SandboxId,
    },
    /// Fresh ids kept colliding (practically impossible).
    #[error("no free sandbox id after {attempts} attempts")]
    IdsExhausted {
        /// How many were tried.
        attempts: u32,
    },
    /// The record was not in the state the caller expected: someone else changed it first.
    #[error("sandbox {id} is {actual}, expected {expected}")]
    StateConflict {
        /// The record.
        id: SandboxId,
        /// What the caller read earlier.
        expected: SandboxState,
        /// What it is now.
        actual: SandboxState,
    },
    /// The move is illegal.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A stored value cannot be read back (a bug or a hand-edited database).
    #[error("sandbox {id} has an invalid {column}: {value:?}")]
    CorruptRow {
        /// The record.
        id: String,
        /// The column.
        column: &'static str,
        /// Its content.
        value: String,
    },
    /// SQLite failed.
    #[error("store query failed: {op}")]
    Query {
        /// What was being done.
        op: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

fn query(op: &'static str) -> impl FnOnce(rusqlite::Error) -> SandboxError {
    move |source| SandboxError::Query { op, source }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const COLUMNS: &str = "id, name, state, reason, hypervisor, spec, created_at_ms, updated_at_ms, \
                       shim_pid, shim_start_time, exit_code";

/// A row before its labels are attached and its text checked.
struct RawRow {
    id: String,
    name: String,
    state: String,
    reason: Option<String>,
    hypervisor: String,
    spec: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    shim_pid: Option<i64>,
    shim_start_time: Option<i64>,
    exit_code: Option<i32>,
}

impl RawRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            name: r.get(1)?,
            state: r.get(2)?,
            reason: r.get(3)?,
            hypervisor: r.get(4)?,
            spec: r.get(5)?,
            created_at_ms: r.get(6)?,
            updated_at_ms: r.get(7)?,
            shim_pid: r.get(8)?,
            shim_start_time: r.get(9)?,
            exit_code: r.get(10)?,
        })
    }

    fn check(self, labels: BTreeMap<String, String>) -> Result<Sandbox, SandboxError> {
        let corrupt = |column, value: String| SandboxError::CorruptRow { id: self.id.clone(), column, value };
        let id = SandboxId::parse(&self.id).map_err(|_| corrupt("id", self.id.clone()))?;
        let name = SandboxName::parse(&self.name).map_err(|_| corrupt("name", self.name.clone()))?;
        let state = SandboxState::from_parts(&self.state, self.reason.clone())
            .ok_or_else(|| corrupt("state", self.state.clone()))?;
        let spec = serde_json::from_str(&self.spec).map_err(|_| corrupt("spec", self.spec.clone()))?;
        let shim = match (self.shim_pid, self.shim_start_time) {
            (None, None) => None,
            (Some(pid), Some(start)) => Some(ShimProcess {
                pid: u32::try_from(pid).map_err(|_| corrupt("shim_pid", pid.to_string()))?,
                start_time: u64::try_from(start).map_err(|_| corrupt("shim_start_time", start.to_string()))?,
            }),
            (pid, start) => return Err(corrupt("shim_pid", format!("{pid:?}/{start:?}"))),
        };
        Ok(Sandbox {
            id,
            name,
            state,
            hypervisor: self.hypervisor,
            spec,
            labels,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            shim,
            exit_code: self.exit_code,
        })
    }
}

impl Store {
    /// Inserts a new record in state `creating` with a fresh id, before anything else about
    /// the sandbox exists. Fails with [`SandboxError::NameTaken`] if the name is in use.
    pub fn insert(&mut self, new: NewSandbox) -> Result<Sandbox, SandboxError> {
        let spec = new.spec.to_string();
        let now = now_ms();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(query("begin insert"))?;
        let existing: Option<String> = tx
            .query_row("SELECT id FROM sandboxes WHERE name = ?1", [new.name.as_str()], |r| r.get(0))
            .optional()
            .map_err(query("look up name"))?;
        if let Some(existing) = existing {
            return Err(SandboxError::NameTaken { name: new.name, existing: SandboxId(existing) });
        }
        let mut id = None;
        for _ in 0..ID_ATTEMPTS {
            let candidate = SandboxId::generate();
            let taken: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM sandboxes WHERE id = ?1)", [candidate.as_str()], |r| r.get(0))
                .map_err(query("look up id"))?;
            if !taken {
                id = Some(candidate);
                break;
            }
        }
        let id = id.ok_or(SandboxError::IdsExhausted { attempts: ID_ATTEMPTS })?;
        let state = SandboxState::Creating;
        tx.execute(
            "INSERT INTO sandboxes (id, name, state, reason, hypervisor, spec, created_at_ms, \
             updated_at_ms) VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?6)",
            params![id.as_str(), new.name.as_str(), state.name(), new.hypervisor, spec, now],
        )
        .map_err(query("insert sandbox"))?;
        for (k, v) in &new.labels {
            tx.execute(
                "INSERT INTO sandbox_labels (sandbox_id, key, value) VALUES (?1, ?2, ?3)",
                params![id.as_str(), k, v],
            )
            .map_err(query("insert label"))?;
        }
        tx.commit().map_err(query("commit insert"))?;
        Ok(Sandbox {
            id,
            name: new.name,
            state,
            hypervisor: new.hypervisor,
            spec: new.spec,
            labels: new.labels,
            created_at_ms: now,
            updated_at_ms: now,
            shim: None,
            exit_code: None,
        })
    }

    /// The record with this id.
    pub fn get(&self, id: &SandboxId) -> Result<Sandbox, SandboxError> {
        get_on(&self.conn, id)
    }

    /// The records matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Sandbox>, SandboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM sandboxes ORDER BY created_at_ms, rowid"))
            .map_err(query("list sandboxes"))?;
        let raws = stmt
            .query_map([], RawRow::from_row)
            .map_err(query("list sandboxes"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("list sandboxes"))?;
        let mut out = Vec::new();
        for raw in raws {
            let labels = labels_on(&self.conn, &raw.id)?;
            let sb = raw.check(labels)?;
            if filter.scope == ListScope::Active && !sb.state.is_active() {
                continue;
            }
            if filter.labels.iter().all(|(k, v)| sb.labels.get(k) == Some(v)) {
                out.push(sb);
            }
        }
        Ok(out)
    }

    /// Moves `id` from `expected_from` to `to`, atomically: the current state is read and the
    /// new one written in one `IMMEDIATE` transaction. Fails with
    /// [`SandboxError::StateConflict`] if the record is no longer in `expected_from` (someone
    /// else moved it), and with [`SandboxError::Transition`] if the move is illegal. Only the
    /// state's name is compared, not a crash reason.
    pub fn update_state(
        &mut self,
        id: &SandboxId,
        expected_from: &SandboxState,
        to: SandboxState,
    ) -> Result<Sandbox, SandboxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(query("begin update"))?;
        let current = get_on(&tx, id)?;
        if current.state.name() != expected_from.name() {
            return Err(SandboxError::StateConflict {
                id: id.clone(),
                expected: expected_from.clone(),
                actual: current.state,
            });
        }
        transition(id.as_str(), &current.state, &to)?;
        let now = now_ms().max(current.updated_at_ms);
        let changed = tx
            .execute(
                "UPDATE sandboxes SET state = ?2, reason = ?3, updated_at_ms = ?4 \
                 WHERE id = ?1 AND state = ?5",
                params![id.as_str(), to.name(), to.reason(), now, current.state.name()],
            )
            .map_err(query("update state"))?;
        debug_assert_eq!(changed, 1, "the immediate transaction holds the write lock");
        tx.commit().map_err(query("commit update"))?;
        Ok(Sandbox { state: to, updated_at_ms: now, ..current })
    }

    /// Records (or clears) the shim process of `id`.
    pub fn set_shim(&mut self, id: &SandboxId, shim: Option<ShimProcess>) -> Result<(), SandboxError> {
        self.update_columns(
            id,
            "UPDATE sandboxes SET shim_pid = ?2, shim_start_time = ?3, updated_at_ms = ?4 WHERE id = ?1",
            params![
                id.as_str(),
                shim.map(|s| s.pid),
                shim.map(|s| i64::try_from(s.start_time).unwrap_or(i64::MAX)),
                now_ms()
            ],
        )
    }

    /// Replaces the stored spec of `id` (what its creation settled, such as how its disk was made).
    pub fn set_spec(&mut self, id: &SandboxId, spec: &serde_json::Value) -> Result<(), SandboxError> {
        self.update_columns(
            id,
            "UPDATE sandboxes SET spec = ?2, updated_at_ms = ?3 WHERE id = ?1",
            params![id.as_str(), spec.to_string(), now_ms()],
        )
    }

    /// Records (or clears) the VM's exit code for `id`.
    pub fn set_exit_code(&mut self, id: &SandboxId, code: Option<i32>) -> Result<(), SandboxError> {
        self.update_columns(
            id,
            "UPDATE sandboxes SET exit_code = ?2, updated_at_ms = ?3 WHERE id = ?1",
            params![id.as_str(), code, now_ms()],
        )
    }

    fn update_columns(
        &mut self,
        id: &SandboxId,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<(), SandboxError> {
        let n = self.conn.execute(sql, params).map_err(query("update sandbox"))?;
        if n == 0 {
            return Err(SandboxError::NotFound { id: id.clone() });
        }
        Ok(())
    }

    /// Deletes the record of `id` and its labels.
    pub fn remove(&mut self, id: &SandboxId) -> Result<(), SandboxError> {
        let n =
            self.conn.execute("DELETE FROM sandboxes WHERE id = ?1", [id.as_str()]).map_err(query("remove sandbox"))?;
        if n == 0 {
            return Err(SandboxError::NotFound { id: id.clone() });
        }
        Ok(())
    }

    /// Ids starting with `prefix`, sorted.
    pub(crate) fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<SandboxId>, SandboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM sandboxes WHERE substr(id, 1, ?2) = ?1 ORDER BY id")
            .map_err(query("match id prefix"))?;
        let ids = stmt
            .query_map(params![prefix, i64::try_from(prefix.len()).unwrap_or(i64::MAX)], |r| r.get::<_, String>(0))
            .map_err(query("match id prefix"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("match id prefix"))?;
        Ok(ids.into_iter().map(SandboxId).collect())
    }

    /// The id of the record named `name`, if any.
    pub(crate) fn id_by_name(&self, name: &str) -> Result<Option<SandboxId>, SandboxError> {
        self.conn
            .query_row("SELECT id FROM sandboxes WHERE name = ?1", [name], |r| r.get::<_, String>(0))
            .optional()
            .map(|o| o.map(SandboxId))
            .map_err(query("look up name"))
    }
}

fn get_on(conn: &rusqlite::Connection, id: &SandboxId) -> Result<Sandbox, SandboxError> {
    let raw = conn
        .query_row(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"), [id.as_str()], RawRow::from_row)
        .optional()
        .map_err(query("get sandbox"))?
        .ok_or_else(|| SandboxError::NotFound { id: id.clone() })?;
    let labels = labels_on(conn, &raw.id)?;
    raw.check(labels)
}

fn labels_on(conn: &rusqlite::Connection, id: &str) -> Result<BTreeMap<String, String>, SandboxError> {
    let mut stmt = conn
        .prepare_cached("SELECT key, value FROM sandbox_labels WHERE sandbox_id = ?1")
        .map_err(query("read labels"))?;
    stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(query("read labels"))?
        .collect::<Result<_, _>>()
        .map_err(query("read labels"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn new_sandbox(name: &str, labels: &[(&str, &str)]) -> NewSandbox {
        NewSandbox {
            name: SandboxName::parse(name).unwrap(),
            hypervisor: "qemu".into(),
            spec: serde_json::json!({"cpus": 1, "memory_mib": 128}),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn test_name_rules() {
        assert!(SandboxName::parse("a").is_ok());
        assert!(SandboxName::parse("Web-1.prod_2").is_ok());
        assert!(SandboxName::parse(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert_eq!(SandboxName::parse(""), Err(NameError::Empty));
        assert_eq!(SandboxName::parse(&"x".repeat(MAX_NAME_LEN + 1)), Err(NameError::TooLong { len: 64 }));
        assert!(matches!(SandboxName::parse("-a"), Err(NameError::BadFirstChar { .. })));
        assert!(matches!(SandboxName::parse(".."), Err(NameError::BadFirstChar { .. })));
        assert_eq!(SandboxName::parse("a/b"), Err(NameError::BadChar { name: "a/b".into(), ch: '/', at: 1 }));
        assert!(matches!(SandboxName::parse("aé"), Err(NameError::BadChar { ch: 'é', .. })));
        assert!(matches!(SandboxName::parse("a b"), Err(NameError::BadChar { ch: ' ', .. })));
    }

    #[test]
    fn test_id_rules_and_generation() {
        assert!(SandboxId::parse("0123456789ab").is_ok());
        assert!(SandboxId::parse("0123456789AB").is_err());
        assert!(SandboxId::parse("0123456789a").is_err());
        assert!(SandboxId::parse("0123456789abc").is_err());
        assert!(SandboxId::parse("0123456789ag").is_err());
        let ids: std::collections::BTreeSet<_> = (0..1000).map(|_| SandboxId::generate()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            SandboxId::parse(id.as_str()).unwrap();
        }
    }

    #[test]
    fn test_parse_label() {
        assert_eq!(parse_label("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_label("a=").unwrap(), ("a".into(), String::new()));
        assert!(matches!(parse_label("ab"), Err(LabelError::NoEquals { .. })));
        assert!(matches!(parse_label("=b"), Err(LabelError::EmptyKey { .. })));
    }

    #[test]
    fn test_insert_get_round_trip() {
        let (_d, mut s) = store();
        let sb = s.insert(new_sandbox("web", &[("env", "prod"), ("team", "a")])).unwrap();
        assert_eq!(sb.state, SandboxState::Creating);
        let got = s.get(&sb.id).unwrap();
        assert_eq!(got, sb);
        assert_eq!(got.labels.len(), 2);
        assert_eq!(got.spec["memory_mib"], 128);
    }

    #[test]
    fn test_insert_name_taken() {
        let (_d, mut s) = store();
        let a = s.insert(new_sandbox("web", &[])).unwrap();
        let err = s.insert(new_sandbox("web", &[])).unwrap_err();
        assert!(matches!(&err, SandboxError::NameTaken { existing, .. } if *existing == a.id), "{err:?}");
        assert_eq!(s.list(&ListFilter::default()).unwrap().len(), 1);
    }

    #[test]
    fn test_get_and_remove_unknown() {
        let (_d, mut s) = store();
        let id = SandboxId::parse("000000000000").unwrap();
        assert!(matches!(s.get(&id), Err(SandboxError::NotFound { .. })));
        assert!(matches!(s.remove(&id), Err(SandboxError::NotFound { .. })));
        assert!(matches!(s.set_exit_code(&id, Some(1)), Err(SandboxError::NotFound { .. })));
    }

    #[test]
    fn test_update_state_compare_and_set() {
        let (_d, mut s) = store();
        let sb = s.insert(new_sandbox("web", &[])).unwrap();
        let sb2 = s.update_state(&sb.id, &SandboxState::Creating, SandboxState::Created).unwrap();
        assert_eq!(sb2.state, SandboxState::Created);
        assert!(sb2.updated_at_ms >= sb.updated_at_ms);
        // A stale expectation loses.
        let err = s.update_state(&sb.id, &SandboxState::Creating, SandboxState::Created).unwrap_err();
        assert!(matches!(&err, SandboxError::StateConflict { actual: SandboxState::Created, .. }), "{err:?}");
        // An illegal move is refused and changes nothing.
        let err = s.update_state(&sb.id, &SandboxState::Created, SandboxState::Paused).unwrap_err();
        assert_eq!(err.to_string(), format!("cannot pause sandbox {}: it is created", sb.id));
        assert_eq!(s.get(&sb.id).unwrap().state, SandboxState::Created);
        // The crash reason is stored.
        s.update_state(&sb.id, &SandboxState::Created, SandboxState::Starting).unwrap();
        let crashed = SandboxState::Crashed { reason: "shim died".into() };
        s.update_state(&sb.id, &SandboxState::Starting, crashed.clone()).unwrap();
        assert_eq!(s.get(&sb.id).unwrap().state, crashed);
        // Restarting clears it.
        s.update_state(&sb.id, &crashed, SandboxState::Starting).unwrap();
        assert_eq!(s.get(&sb.id).unwrap().state.reason(), None);
    }

    #[test]
    fn test_shim_and_exit_code() {
        let (_d, mut s) = store();
        let sb = s.insert(new_sandbox("web", &[])).unwrap();
        let shim = ShimProcess { pid: 4242, start_time: 123_456 };
        s.set_shim(&sb.id, Some(shim)).unwrap();
        s.set_exit_code(&sb.id, Some(3)).unwrap();
        let got = s.get(&sb.id).unwrap();
        assert_eq!(got.shim, Some(shim));
        assert_eq!(got.exit_code, Some(3));
        s.set_shim(&sb.id, None).unwrap();
        assert_eq!(s.get(&sb.id).unwrap().shim, None);
    }

    #[test]
    fn test_list_filters() {
        let (_d, mut s) = store();
        let a = s.insert(new_sandbox("a", &[("env", "prod")])).unwrap();
        let b = s.insert(new_sandbox("b", &[("env", "dev")])).unwrap();
        let c = s.insert(new_sandbox("c", &[("env", "prod"), ("tier", "web")])).unwrap();
        for (id, to) in
            [(&a.id, SandboxState::Created), (&a.id, SandboxState::Starting), (&a.id, SandboxState::Running)]
        {
            let from = s.get(id).unwrap().state;
            s.update_state(id, &from, to).unwrap();
        }
        let names =
            |f: &ListFilter| -> Vec<String> { s.list(f).unwrap().into_iter().map(|x| x.name.to_string()).collect() };
        assert_eq!(names(&ListFilter::default()), ["a", "b", "c"]);
        assert_eq!(names(&ListFilter { scope: ListScope::Active, ..Default::default() }), ["a"]);
        let prod = ListFilter { labels: [("env".to_owned(), "prod".to_owned())].into(), ..Default::default() };
        assert_eq!(names(&prod), ["a", "c"]);
        let prod_web = ListFilter {
            labels: [("env".into(), "prod".into()), ("tier".into(), "web".into())].into(),
            ..Default::default()
        };
        assert_eq!(names(&prod_web), ["c"]);
        let _ = (b, c);
    }

    #[test]
    fn test_remove_cascades_labels() {
        let (_d, mut s) = store();
        let a = s.insert(new_sandbox("a", &[("k", "v")])).unwrap();
        s.remove(&a.id).unwrap();
        let n: i64 = s.conn.query_row("SELECT count(*) FROM sandbox_labels", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        assert!(matches!(s.get(&a.id), Err(SandboxError::NotFound { .. })));
        // The name is free again.
        s.insert(new_sandbox("a", &[])).unwrap();
    }

    #[test]
    fn test_corrupt_state_is_typed_error() {
        let (_d, mut s) = store();
        let a = s.insert(new_sandbox("a", &[])).unwrap();
        s.conn.execute("UPDATE sandboxes SET state = 'zombie'", []).unwrap();
        assert!(matches!(s.get(&a.id), Err(SandboxError::CorruptRow { column: "state", .. })));
    }
}
