//! Feeds arbitrary bytes to `nestbox_snapshot::import` with small limits, and checks that a
//! refused archive leaves nothing behind and an accepted one is a complete, verified snapshot.
//!
//! The first byte picks how the rest is fed: even, as it is (so mostly refused by zstd); odd,
//! zstd-compressed first, so that the tar reader and the manifest checks see the bytes. Seed
//! with `fuzz/seeds/snapshot_import/` (a valid archive's tar, behind a 0x01).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nestbox_snapshot::{ImportLimits, import};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let input = if mode % 2 == 0 { rest.to_vec() } else { zstd::encode_all(rest, 1).expect("compressing in memory") };
    let snapshots = tempfile::tempdir().expect("a temporary directory");
    let limits = ImportLimits { max_total_bytes: 1 << 20, max_files: 8 };
    let result = import(&input[..], snapshots.path(), &limits);
    let left: Vec<_> = std::fs::read_dir(snapshots.path()).expect("listing").map(|e| e.unwrap().file_name()).collect();
    match result {
        Ok(manifest) => {
            assert_eq!(left, [manifest.id.as_str()], "an import leaves exactly its snapshot");
            manifest.verify(&snapshots.path().join(&manifest.id)).expect("an imported snapshot verifies");
        }
        Err(_) => assert!(left.is_empty(), "a refused import left {left:?} behind"),
    }
});
