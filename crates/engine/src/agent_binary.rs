//! The static guest agent, embedded at build time (see `build.rs`).

/// The `nestbox-agent` binary that becomes `/init` in the default guest image.
pub static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nestbox-agent"));

#[cfg(test)]
mod tests {
    #[test]
    fn test_agent_is_a_static_elf() {
        assert_eq!(&super::AGENT[..4], b"\x7fELF");
        // A static executable has no PT_INTERP program header.
        let phoff = u64::from_le_bytes(super::AGENT[0x20..0x28].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes(super::AGENT[0x36..0x38].try_into().unwrap()) as usize;
        let phnum = u16::from_le_bytes(super::AGENT[0x38..0x3a].try_into().unwrap()) as usize;
        let interp = (0..phnum).any(|i| {
            let off = phoff + i * phentsize;
            u32::from_le_bytes(super::AGENT[off..off + 4].try_into().unwrap()) == 3
        });
        assert!(!interp, "the embedded agent is dynamically linked");
    }
}
