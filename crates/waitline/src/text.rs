//! Short texts (queue names, numbers, ids) read as two words from their two ends, so that
//! checking one takes a few instructions instead of a loop over its bytes.

/// Every byte of a text of 4 to 16 bytes, in two words read from its two ends (overlapping
/// when shorter than 16; a text under 8 bytes is its first and last 4 bytes, both words
/// alike); `None` for other lengths. Texts of one length are equal exactly when their words
/// are.
#[inline]
pub(crate) fn words(s: &[u8]) -> Option<[u64; 2]> {
    let n = s.len();
    match n {
        8..=16 => Some([word_at(s, 0)?, word_at(s, n - 8)?]),
        4..=7 => {
            let w = u64::from(half_at(s, 0)?) | (u64::from(half_at(s, n - 4)?) << 32);
            Some([w, w])
        }
        _ => None,
    }
}

/// The bytes of a text of 4 to 16 bytes in place, the rest zero (the `u128` of its bytes
/// padded to 16, little-endian): read as [`words`] reads them, from its two ends, the second
/// piece shifted to where it ends (the bytes where the two overlap are the same), so that a
/// copy of a short name is two loads and two stores, not a call of `memcpy`; `None` for
/// other lengths.
#[inline]
pub(crate) fn packed(s: &[u8]) -> Option<u128> {
    let n = s.len();
    match n {
        8..=16 => Some(u128::from(word_at(s, 0)?) | (u128::from(word_at(s, n - 8)?) << (8 * (n - 8)))),
        4..=7 => {
            Some(u128::from(u64::from(half_at(s, 0)?) | (u64::from(half_at(s, n - 4)?) << (8 * (n - 4)))))
        }
        _ => None,
    }
}

#[inline(always)]
fn word_at(s: &[u8], at: usize) -> Option<u64> {
    s.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

#[inline(always)]
fn half_at(s: &[u8], at: usize) -> Option<u32> {
    s.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Whether all 8 bytes of `w` are printable ASCII (0x20..=0x7E), without a branch per byte:
/// a byte below 0x20 borrows into its high bit when 0x20 is taken from it (while its own
/// high bit was clear), one above 0x7E has its high bit set before or after 1 is added.
/// A borrow or carry out of one byte reaches the next only from a byte that is itself
/// flagged, so the answer for the word is exact.
#[inline]
pub(crate) const fn printable(w: u64) -> bool {
    let below = w.wrapping_sub(0x20 * ONES) & !w;
    let above = w.wrapping_add(ONES) | w;
    (below | above) & HIGHS == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_cover_every_byte_from_4_to_16() {
        let text = b"0123456789abcdefXYZ";
        assert_eq!(words(&text[..3]), None);
        assert_eq!(words(&text[..17]), None);
        assert_eq!(words(b""), None);
        assert_eq!(words(&text[..4]), Some([0x3332_3130_3332_3130; 2]));
        assert_eq!(words(&text[..6]), Some([0x3534_3332_3332_3130; 2]));
        assert_eq!(words(&text[..8]), Some([0x3736_3534_3332_3130; 2]));
        assert_eq!(words(&text[..10]), Some([0x3736_3534_3332_3130, 0x3938_3736_3534_3332]));
        assert_eq!(words(&text[..16]), Some([0x3736_3534_3332_3130, 0x6665_6463_6261_3938]));
        // A change of any one byte changes the words, at every length.
        for n in 4..=16 {
            for i in 0..n {
                let mut other = text[..n].to_vec();
                other[i] ^= 0x40;
                assert_ne!(words(&other), words(&text[..n]), "length {n}, byte {i}");
            }
        }
    }

    #[test]
    fn packed_is_the_bytes_zero_padded_from_4_to_16() {
        let text = "0123456789abcdefXYZ".as_bytes();
        for n in 0..=text.len() {
            let mut padded = [0; 16];
            let expected = (4..=16).contains(&n).then(|| {
                padded[..n].copy_from_slice(&text[..n]);
                u128::from_le_bytes(padded)
            });
            assert_eq!(packed(&text[..n]), expected, "length {n}");
        }
    }

    #[test]
    fn a_word_is_printable_only_when_every_byte_is() {
        for b in 0..=u8::MAX {
            let expected = (0x20..=0x7e).contains(&b);
            for at in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[at] = b;
                assert_eq!(printable(u64::from_le_bytes(bytes)), expected, "byte {b:#x} at {at}");
                // Next to the bytes whose borrow or carry could reach it.
                let mut bytes = [0xff; 8];
                bytes[at] = b;
                assert!(!printable(u64::from_le_bytes(bytes)));
                let mut bytes = [0x20; 8];
                bytes[at] = b;
                assert_eq!(printable(u64::from_le_bytes(bytes)), expected, "byte {b:#x} at {at}");
                let mut bytes = [0x7e; 8];
                bytes[at] = b;
                assert_eq!(printable(u64::from_le_bytes(bytes)), expected, "byte {b:#x} at {at}");
            }
        }
    }
}
