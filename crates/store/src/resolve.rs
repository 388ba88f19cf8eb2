//! Turning what a user typed (`SB` on the command line) into one sandbox record.
//!
//! In order: an exact id, an exact name, then an id prefix that matches exactly one record. An
//! ambiguous prefix lists every candidate; an unknown input names itself.

use crate::db::Store;
use crate::sandbox::{Sandbox, SandboxError, SandboxId};

/// Why `SB` did not name exactly one sandbox; one variant per rule.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing was given.
    #[error("empty sandbox id or name")]
    Empty,
    /// No id, name or id prefix matches.
    #[error("no such sandbox: {input}")]
    Unknown {
        /// What was typed.
        input: String,
    },
    /// The prefix matches several ids.
    #[error("sandbox id prefix {input} is ambiguous: it matches {}", join(candidates))]
    Ambiguous {
        /// What was typed.
        input: String,
        /// Every matching id, sorted.
        candidates: Vec<SandboxId>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] SandboxError),
}

fn join(ids: &[SandboxId]) -> String {
    ids.iter().map(SandboxId::as_str).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// Finds the sandbox `input` names: exact id, exact name, or unambiguous id prefix.
    pub fn resolve(&self, input: &str) -> Result<Sandbox, ResolveError> {
        if input.is_empty() {
            return Err(ResolveError::Empty);
        }
        if let Ok(id) = SandboxId::parse(input) {
            match self.get(&id) {
                Ok(sb) => return Ok(sb),
                Err(SandboxError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(id) = self.id_by_name(input)? {
            return Ok(self.get(&id)?);
        }
        let is_hex_prefix =
            input.len() < crate::sandbox::ID_LEN && input.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if is_hex_prefix {
            let mut ids = self.ids_with_prefix(input)?;
            match ids.len() {
                0 => {}
                1 => return Ok(self.get(&ids.remove(0))?),
                _ => {
                    return Err(ResolveError::Ambiguous { input: input.to_owned(), candidates: ids });
                }
            }
        }
        Err(ResolveError::Unknown { input: input.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sandbox::{NewSandbox, SandboxName};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store.db")).unwrap();
        (dir, store)
    }

    /// Inserts a record and forces its id, so prefixes are predictable.
    fn insert_with_id(s: &mut Store, name: &str, id: &str) {
        let sb = s
            .insert(NewSandbox {
                name: SandboxName::parse(name).unwrap(),
                hypervisor: "qemu".into(),
                spec: serde_json::json!({}),
                labels: BTreeMap::new(),
            })
            .unwrap();
        s.conn.execute("UPDATE sandboxes SET id = ?2 WHERE id = ?1", [sb.id.as_str(), id]).unwrap();
    }

    #[test]
    fn test_resolve_rules() {
        let (_d, mut s) = store();
        insert_with_id(&mut s, "web", "abc111111111");
        insert_with_id(&mut s, "db", "abc222222222");
        insert_with_id(&mut s, "abc2", "fff000000000");

        assert_eq!(s.resolve("abc111111111").unwrap().name.as_str(), "web");
        assert_eq!(s.resolve("db").unwrap().id.as_str(), "abc222222222");
        assert_eq!(s.resolve("abc1").unwrap().name.as_str(), "web");
        // A name wins over an id prefix.
        assert_eq!(s.resolve("abc2").unwrap().id.as_str(), "fff000000000");
        assert_eq!(s.resolve("f").unwrap().name.as_str(), "abc2");

        let err = s.resolve("abc").unwrap_err();
        assert_eq!(err.to_string(), "sandbox id prefix abc is ambiguous: it matches abc111111111, abc222222222");
        assert!(matches!(err, ResolveError::Ambiguous { candidates, .. } if candidates.len() == 2));

        let err = s.resolve("nope").unwrap_err();
        assert_eq!(err.to_string(), "no such sandbox: nope");
        assert!(matches!(s.resolve("0"), Err(ResolveError::Unknown { .. })));
        assert!(matches!(s.resolve("000000000000"), Err(ResolveError::Unknown { .. })));
        assert!(matches!(s.resolve(""), Err(ResolveError::Empty)));
        // Upper-case hex is not an id prefix.
        assert!(matches!(s.resolve("ABC1"), Err(ResolveError::Unknown { .. })));
    }
}
