//! How records are stored: one row of the journal holds a run of a tenant's records with
//! consecutive numbers (those of one commit), each framed as its length (u32, little
//! endian), a CRC-32 of (tenant, sequence number, payload), then the payload. SQLite keeps
//! its own pages whole across crashes (its write-ahead log has checksums); the checksum
//! catches what SQLite cannot: a flipped bit inside a stored value, or a value moved to
//! another row or tenant.

/// Bytes before each payload: its length and its checksum.
pub(crate) const HEADER: usize = 8;

/// The checksum of `payload`, record `seq` of `tenant`.
pub(crate) fn checksum(tenant: &str, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(tenant.len() as u64).to_le_bytes());
    h.update(tenant.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends the stored form of `payload`, record `seq` of `tenant`, to `out`.
pub(crate) fn encode_into(out: &mut Vec<u8>, tenant: &str, seq: u64, payload: &[u8]) {
    put(out, checksum(tenant, seq, payload), payload);
}

/// Appends the stored form of `payload`, whose [`checksum`] is `sum`, to `out`.
pub(crate) fn put(out: &mut Vec<u8>, sum: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The stored form of one record.
pub(crate) fn encode(tenant: &str, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    encode_into(&mut out, tenant, seq, payload);
    out
}

/// The records of a row that starts at `first`: each `Ok((seq, payload))`, until the first
/// damaged one, which is `Err((seq, what is wrong))` and ends the run.
pub(crate) fn decode_run<'a>(
    tenant: &'a str,
    first: u64,
    mut stored: &'a [u8],
) -> impl Iterator<Item = Result<(u64, &'a [u8]), (u64, &'static str)>> + 'a {
    let mut seq = first;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || stored.is_empty() {
            return None;
        }
        let item = decode_one(tenant, seq, stored);
        match item {
            Ok((payload, rest)) => {
                stored = rest;
                seq += 1;
                Some(Ok((seq - 1, payload)))
            }
            Err(why) => {
                failed = true;
                Some(Err((seq, why)))
            }
        }
    })
}

pub(crate) fn decode_one<'a>(
    tenant: &str,
    seq: u64,
    stored: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), &'static str> {
    let Some((head, rest)) = stored.split_first_chunk::<HEADER>() else {
        return Err("shorter than its header");
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if rest.len() < len {
        return Err("shorter than its length");
    }
    let (payload, rest) = rest.split_at(len);
    if sum != checksum(tenant, seq, payload) {
        return Err("checksum mismatch");
    }
    Ok((payload, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            encode_into(&mut out, "acme", 7 + i as u64, r);
        }
        out
    }

    #[test]
    fn round_trip() {
        let stored = run(&[b"one", b"", b"three"]);
        let got: Vec<_> = decode_run("acme", 7, &stored).collect();
        assert_eq!(got, [Ok((7, &b"one"[..])), Ok((8, &b""[..])), Ok((9, &b"three"[..]))]);
        assert_eq!(encode("acme", 7, b"one"), run(&[b"one"]));
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_caught() {
        let stored = run(&[b"a record", b"another record of some length"]);
        for byte in 0..stored.len() {
            for bit in 0..8 {
                let mut bad = stored.clone();
                bad[byte] ^= 1 << bit;
                let got: Vec<_> = decode_run("acme", 7, &bad).collect();
                assert!(got.iter().any(Result::is_err), "flip of bit {bit} of byte {byte}: {got:?}");
            }
        }
        // A cut inside a record is damage; a cut between records leaves fewer records (the
        // row's `last` column tells the reader how many there must be).
        for len in 1..stored.len() {
            let got: Vec<_> = decode_run("acme", 7, &stored[..len]).collect();
            assert!(got.last().is_some_and(Result::is_err) || got.len() < 2, "cut at {len}");
        }
    }

    #[test]
    fn a_record_under_another_key_is_caught() {
        let stored = run(&[b"x"]);
        assert!(decode_run("acme", 8, &stored).next().unwrap().is_err());
        assert!(decode_run("acm", 7, &stored).next().unwrap().is_err());
        // The tenant's length is in the checksum: moving a byte between name and seq fails.
        let mut other = Vec::new();
        encode_into(&mut other, "acme", 7, b"x");
        assert!(decode_run("acmex", 7, &other).next().unwrap().is_err());
    }

    #[test]
    fn the_run_stops_at_the_first_damage() {
        let mut stored = run(&[b"one", b"two", b"three"]);
        let second = HEADER + 3 + HEADER; // the first payload byte of record 8
        stored[second] ^= 1;
        let got: Vec<_> = decode_run("acme", 7, &stored).collect();
        assert_eq!(got, [Ok((7, &b"one"[..])), Err((8, "checksum mismatch"))]);
    }
}
