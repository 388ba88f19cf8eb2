//! Payloads made by the real compressor tools with the kernel build's own flags
//! (`scripts/Makefile.lib`, `scripts/xz_wrap.sh`), stdin to stdout plus the appended size, in a
//! synthetic bzImage. Each tool that is not installed is reported as skipped.

use std::io::Write;
use std::process::{Command, Stdio};

use nestbox_kernel::bzimage::synthetic_bzimage;
use nestbox_kernel::{Compression, extract_vmlinux, pvh_entry, tiny_pvh_elf};

const BCJ_SAMPLE: &[u8] = include_bytes!("fixtures/bcj-x86.bin");

/// Runs `tool args` on `input`, or `None` when the tool is missing.
fn compress_with(tool: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = match Command::new(tool).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped {tool}: {e}");
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{tool} {args:?} failed");
    let mut payload = out.stdout;
    payload.extend_from_slice(&(input.len() as u32).to_le_bytes());
    Some(payload)
}

fn check(tool: &str, args: &[&str], format: Compression, code: &[u8]) {
    let vmlinux = tiny_pvh_elf(code);
    let Some(payload) = compress_with(tool, args, &vmlinux) else {
        return;
    };
    assert_eq!(Compression::detect(&payload), Some(format), "{tool}");
    let image = synthetic_bzimage(&payload, "6.1.0-1-test");
    let out = extract_vmlinux(&image).unwrap_or_else(|e| panic!("{tool}: {e:?}"));
    assert!(out == vmlinux, "{tool}: output differs");
    assert_eq!(pvh_entry(&out).unwrap(), 0x10_0000);
}

#[test]
fn test_gzip_payload() {
    check("gzip", &["-n", "-f", "-9"], Compression::Gzip, BCJ_SAMPLE);
}

#[test]
fn test_xz_payload_with_x86_bcj() {
    check("xz", &["--check=crc32", "--x86", "--lzma2=dict=32MiB"], Compression::Xz, BCJ_SAMPLE);
}

#[test]
fn test_lzma_payload() {
    check("lzma", &["-9"], Compression::Lzma, BCJ_SAMPLE);
}

#[test]
fn test_zstd_payload() {
    check("zstd", &["-22", "--ultra", "-q"], Compression::Zstd, BCJ_SAMPLE);
}

#[test]
fn test_lz4_legacy_payload_across_several_blocks() {
    // More than two 8 MiB blocks, so the block loop and the appended size both matter.
    let mut code = Vec::with_capacity(17 << 20);
    let mut i = 0u32;
    while code.len() < 17 << 20 {
        code.extend_from_slice(BCJ_SAMPLE);
        code.extend_from_slice(&i.to_le_bytes());
        i += 1;
    }
    check("lz4", &["-l", "-9", "-q"], Compression::Lz4Legacy, &code);
}
