//! Sandbox ids: 12 lower-case hex digits from the kernel's random source.

use std::io::Read;

/// The length of an id.
pub const ID_LEN: usize = 12;

/// A fresh random id.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; ID_LEN / 2];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_ids_are_hex_and_distinct() {
        let a = super::new_id().unwrap();
        let b = super::new_id().unwrap();
        assert_eq!(a.len(), super::ID_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
