//! `exec.start` `user`: resolving `uid`, `uid:gid`, `name` or `name:group` against the guest's
//! `/etc/passwd` and `/etc/group` into the ids, groups and environment a process runs with.
//!
//! The files are parsed here rather than through libc's `getpwnam`: the agent is a static
//! binary, where glibc's NSS lookups are unavailable, and the guest has only files anyway.

use std::fmt;

/// Where user names, primary groups and home directories come from.
pub const PASSWD: &str = "/etc/passwd";

/// Where group names and supplementary group members come from.
pub const GROUP: &str = "/etc/group";

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Real and effective user id.
    pub uid: u32,
    /// Real and effective group id.
    pub gid: u32,
    /// Supplementary groups (always holding `gid`).
    pub groups: Vec<u32>,
    /// The user's name, when `/etc/passwd` lists the uid.
    pub name: Option<String>,
    /// The user's home directory, when `/etc/passwd` lists the uid.
    pub home: Option<String>,
}

/// Why a `user` value cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    /// The value is empty or has an empty part.
    Malformed(String),
    /// No `/etc/passwd` entry has this name.
    UnknownUser(String),
    /// No `/etc/group` entry has this name.
    UnknownGroup(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Malformed(v) => write!(f, "'{v}': not uid, uid:gid, name or name:group"),
            UserError::UnknownUser(name) => write!(f, "{name}: no such user"),
            UserError::UnknownGroup(name) => write!(f, "{name}: no such group"),
        }
    }
}

/// One `/etc/passwd` line: `name:password:uid:gid:gecos:home:shell`.
#[derive(Debug)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One `/etc/group` line: `name:password:gid:member,member`.
#[derive(Debug)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry { name: f[0], uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5] })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        let members = f[3].split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
        Some(GroupEntry { name: f[0], gid: f[2].parse().ok()?, members })
    })
}

/// Resolves `spec` against the contents of `/etc/passwd` and `/etc/group` (`None` when a file
/// does not exist: numeric ids still work).
pub fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Identity, UserError> {
    let (user, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group_part.is_some_and(str::is_empty) {
        return Err(UserError::Malformed(spec.into()));
    }
    let passwd = passwd.unwrap_or_default();
    let (uid, entry) = match user.parse::<u32>() {
        Ok(uid) => (uid, passwd_entries(passwd).find(|e| e.uid == uid)),
        Err(_) => {
            let e =
                passwd_entries(passwd).find(|e| e.name == user).ok_or_else(|| UserError::UnknownUser(user.into()))?;
            (e.uid, Some(e))
        }
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group.unwrap_or_default())
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup(g.into()))?,
        },
        None => entry.as_ref().map_or(uid, |e| e.gid),
    };
    let mut groups = vec![gid];
    if let (Some(e), Some(group)) = (&entry, group) {
        for g in group_entries(group).filter(|g| g.members.contains(&e.name)) {
            if !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        name: entry.as_ref().map(|e| e.name.to_string()),
        home: entry.as_ref().map(|e| e.home.to_string()),
    })
}

/// Resolves `spec` against the guest's own files.
pub fn resolve_in_guest(spec: &str) -> Result<Identity, UserError> {
    let passwd = std::fs::read_to_string(PASSWD).ok();
    let group = std::fs::read_to_string(GROUP).ok();
    resolve(spec, passwd.as_deref(), group.as_deref())
}

/// Switches the calling process to `id`: groups, then gid, then uid (after which it could not).
/// Only async-signal-safe calls: meant for `pre_exec`, between fork and exec.
pub fn switch_to(groups: &[nix::unistd::Gid], gid: u32, uid: u32) -> std::io::Result<()> {
    nix::unistd::setgroups(groups)?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        alice:x:1000:100:Alice:/home/alice:/bin/sh\n\
        broken:line\n\
        bob:x:1001:1001::/home/bob:/bin/false\n";
    const GROUP_TEXT: &str = "root:x:0:\nusers:x:100:\nwheel:x:10:alice, bob\nbob:x:1001:\naudio:x:29:alice\n";

    fn id(spec: &str) -> Result<Identity, UserError> {
        resolve(spec, Some(PASSWD_TEXT), Some(GROUP_TEXT))
    }

    #[test]
    fn test_resolve_name_uses_passwd_and_group_membership() {
        let alice = id("alice").unwrap();
        assert_eq!((alice.uid, alice.gid, alice.groups.as_slice()), (1000, 100, [100, 10, 29].as_slice()));
        assert_eq!((alice.name.as_deref(), alice.home.as_deref()), (Some("alice"), Some("/home/alice")));
        let bob = id("bob:wheel").unwrap();
        assert_eq!((bob.uid, bob.gid, bob.groups), (1001, 10, vec![10]));
    }

    #[test]
    fn test_resolve_numeric_with_and_without_files() {
        let listed = id("1000").unwrap();
        assert_eq!((listed.gid, listed.name.as_deref()), (100, Some("alice")));
        let bare = resolve("4242", None, None).unwrap();
        assert_eq!(bare, Identity { uid: 4242, gid: 4242, groups: vec![4242], name: None, home: None });
        let pair = resolve("4242:77", None, None).unwrap();
        assert_eq!((pair.uid, pair.gid, pair.groups), (4242, 77, vec![77]));
        assert_eq!(id("0:audio").unwrap().gid, 29);
    }

    #[test]
    fn test_resolve_reports_unknown_names_and_bad_values() {
        assert_eq!(id("mallory"), Err(UserError::UnknownUser("mallory".into())));
        assert_eq!(resolve("alice", None, None), Err(UserError::UnknownUser("alice".into())));
        assert_eq!(id("alice:nogroup"), Err(UserError::UnknownGroup("nogroup".into())));
        assert_eq!(id(""), Err(UserError::Malformed("".into())));
        assert_eq!(id("alice:"), Err(UserError::Malformed("alice:".into())));
        assert_eq!(UserError::UnknownUser("mallory".into()).to_string(), "mallory: no such user");
    }
}
