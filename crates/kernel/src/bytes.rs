//! Checked little-endian readers over byte slices: every parser in this crate reads through these,
//! so a truncated or hostile image yields `None` instead of a panic.

/// `len` bytes at `offset`, or `None` when they run past the end (or the sum overflows).
pub(crate) fn slice(bytes: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    bytes.get(offset..offset.checked_add(len)?)
}

/// `N` bytes at `offset` as an array.
pub(crate) fn array<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    slice(bytes, offset, N)?.try_into().ok()
}

pub(crate) fn u8_at(bytes: &[u8], offset: usize) -> Option<u8> {
    bytes.get(offset).copied()
}

pub(crate) fn u16_le(bytes: &[u8], offset: usize) -> Option<u16> {
    array(bytes, offset).map(u16::from_le_bytes)
}

pub(crate) fn u32_le(bytes: &[u8], offset: usize) -> Option<u32> {
    array(bytes, offset).map(u32::from_le_bytes)
}

pub(crate) fn u64_le(bytes: &[u8], offset: usize) -> Option<u64> {
    array(bytes, offset).map(u64::from_le_bytes)
}

/// Up to the first `n` bytes, for error messages that name what was found.
pub(crate) fn head(bytes: &[u8], n: usize) -> Vec<u8> {
    bytes.iter().take(n).copied().collect()
}

/// Rounds `value` up to a multiple of `align` (a power of two), `None` on overflow.
pub(crate) fn align_up(value: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    Some(value.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_readers_reject_out_of_bounds() {
        let b = [1u8, 2, 3, 4, 5];
        assert_eq!(u32_le(&b, 1), Some(0x0504_0302));
        assert_eq!(u32_le(&b, 2), None);
        assert_eq!(u64_le(&b, 0), None);
        assert_eq!(slice(&b, usize::MAX, 2), None);
        assert_eq!(u8_at(&b, 5), None);
        assert_eq!(u16_le(&b, 3), Some(0x0504));
        assert_eq!(head(&b, 3), vec![1, 2, 3]);
        assert_eq!(align_up(5, 4), Some(8));
        assert_eq!(align_up(usize::MAX, 4), None);
    }
}
