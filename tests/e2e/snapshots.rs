//! Snapshots end to end under QEMU: a counter in the guest's memory and files is snapshotted;
//! clones continue it from the snapshot, each on its own; restore rolls the original back; an
//! exported snapshot imported into a fresh home restores the same state.

use crate::common::{Home, ok, stderr};
use crate::require_vm;

const COUNTER: &str = "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done' \
                       </dev/null >/dev/null 2>&1 & sleep 1; cat /tmp/counter";

fn counter(home: &Home, sb: &str) -> u64 {
    let out = ok(home, &["exec", sb, "--", "cat", "/tmp/counter"]);
    out.trim().parse().unwrap_or_else(|_| panic!("{sb}: no counter: {out:?}"))
}

fn has_file(home: &Home, sb: &str, path: &str) -> bool {
    home.output(["exec", sb, "--", "test", "-e", path]).status.success()
}

#[test]
fn test_snapshot_clone_restore_and_export_import_keep_the_guest_state() {
    require_vm!();
    let home = Home::new();
    ok(&home, &["run", "-d", "--name", "orig", "--memory", "256M"]);
    ok(&home, &["exec", "orig", "--", "sh", "-c", COUNTER]);
    let before = counter(&home, "orig");
    let snap = ok(&home, &["snapshot", "orig", "--name", "s1"]).trim().to_owned();
    let after = counter(&home, "orig");
    assert!(after >= before, "the original runs on after the snapshot");
    let ls = ok(&home, &["snapshot", "ls"]);
    assert!(ls.contains(&snap[..12]) && ls.contains("s1"), "{ls}");

    // Three clones: each has the counter (a cold boot would have none) from about where the
    // snapshot was taken, and counts on by itself.
    let clones: Vec<String> =
        ok(&home, &["clone", "s1", "--name", "c", "-n", "3"]).lines().map(str::to_owned).collect();
    assert_eq!(clones.len(), 3, "{clones:?}");
    for c in ["c-1", "c-2", "c-3"] {
        let first = counter(&home, c);
        assert!(first >= before && first < before + 100, "{c} continues from the snapshot: {first} vs {before}");
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert!(counter(&home, c) > first, "{c}'s counter runs on");
    }
    ok(&home, &["exec", "c-1", "--", "sh", "-c", "echo mine > /tmp/own"]);
    assert!(has_file(&home, "c-1", "/tmp/own"));
    for other in ["c-2", "c-3", "orig"] {
        assert!(!has_file(&home, other, "/tmp/own"), "c-1's write shows in {other}");
    }

    // Restore rolls the original back: what it wrote since is gone, its counter is back.
    ok(&home, &["exec", "orig", "--", "sh", "-c", "echo later > /tmp/later"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let moved_on = counter(&home, "orig");
    ok(&home, &["restore", "orig", "s1"]);
    assert!(!has_file(&home, "orig", "/tmp/later"), "the restore rolled the file back");
    let rolled = counter(&home, "orig");
    assert!(rolled < moved_on && rolled >= before, "counter back to the snapshot: {rolled} (was {moved_on})");

    // Export, then import into a fresh home: a clone there has the same state.
    let archive = home.path().join("s1.tar.zst");
    ok(&home, &["snapshot", "export", "s1", "-o", archive.to_str().unwrap()]);
    let fresh = Home::new();
    let imported = ok(&fresh, &["snapshot", "import", archive.to_str().unwrap()]);
    assert_eq!(imported.trim(), snap, "the same snapshot id");
    ok(&fresh, &["clone", &snap, "--name", "far", "--restore-mode", "copy"]);
    let far = counter(&fresh, "far");
    assert!(far >= before && far < before + 100, "the imported snapshot's state: {far} vs {before}");
    // A second import of the same snapshot is refused, and leaves nothing behind.
    let again = fresh.output(["snapshot", "import", archive.to_str().unwrap()]);
    assert!(!again.status.success() && stderr(&again).contains("exists"), "{}", stderr(&again));

    for (h, sbs) in [(&home, vec!["orig", "c-1", "c-2", "c-3"]), (&fresh, vec!["far"])] {
        for sb in sbs {
            ok(h, &["rm", "-f", sb]);
        }
    }
    ok(&home, &["snapshot", "rm", "s1"]);
    assert!(ok(&home, &["snapshot", "ls", "--format", "json"]).trim() == "[]");
    home.assert_clean();
    fresh.assert_clean();
}

#[test]
fn test_snapshot_bad_input_is_refused() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["snapshot", "nope"]);
    assert_eq!(out.status.code(), Some(121), "{}", stderr(&out));
    let out = home.output(["clone", "nope"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("no snapshot \"nope\""), "{}", stderr(&out));
    let out = home.output(["clone", "x", "--restore-mode", "eager"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("eager"), "{}", stderr(&out));
    let garbage = home.path().join("garbage.tar.zst");
    std::fs::write(&garbage, b"not an archive at all").unwrap();
    let out = home.output(["snapshot", "import", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(home.path().join("snapshots")).unwrap().flatten().collect();
    assert!(left.is_empty(), "a failed import leaves nothing: {left:?}");
    // A stopped sandbox has no running state to snapshot.
    ok(&home, &["create", "--name", "idle"]);
    let out = home.output(["snapshot", "idle"]);
    assert_eq!(out.status.code(), Some(118), "{}", stderr(&out));
    ok(&home, &["rm", "idle"]);
}
