//! How one record is stored: a CRC-32 of (tenant, sequence number, payload), then the
//! payload. SQLite keeps its own pages whole across crashes (its write-ahead log has
//! checksums); this checksum catches what SQLite cannot: a flipped bit inside a stored value,
//! or a value moved to another row.

/// Bytes before the payload.
pub(crate) const HEADER: usize = 4;

fn checksum(tenant: &str, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(tenant.len() as u64).to_le_bytes());
    h.update(tenant.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The stored form of `payload`, the record `seq` of `tenant`.
pub(crate) fn encode(tenant: &str, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&checksum(tenant, seq, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a stored record, or what is wrong with it.
pub(crate) fn decode<'a>(tenant: &str, seq: u64, stored: &'a [u8]) -> Result<&'a [u8], &'static str> {
    let Some((head, payload)) = stored.split_first_chunk::<HEADER>() else {
        return Err("shorter than its checksum");
    };
    if u32::from_le_bytes(*head) != checksum(tenant, seq, payload) {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let stored = encode("acme", 7, b"payload");
        assert_eq!(decode("acme", 7, &stored), Ok(&b"payload"[..]));
        assert_eq!(decode("acme", 7, &encode("acme", 7, b"")), Ok(&b""[..]));
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_caught() {
        let stored = encode("acme", 7, b"a record of some length");
        for byte in 0..stored.len() {
            for bit in 0..8 {
                let mut bad = stored.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode("acme", 7, &bad).is_err(), "flip of bit {bit} of byte {byte}");
            }
        }
        for len in 0..stored.len() {
            assert!(decode("acme", 7, &stored[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn a_record_under_another_key_is_caught() {
        let stored = encode("acme", 7, b"x");
        assert!(decode("acme", 8, &stored).is_err());
        assert!(decode("acm", 7, &stored).is_err());
        // The tenant's length is in the checksum: moving a byte between name and seq fails.
        assert!(decode("acmex", 7, &encode("acme", 7, b"x")).is_err());
    }
}
