//! Decoding of one LZ4 block, in safe Rust.
//!
//! `lz4_flex` copies a match byte by byte whenever it overlaps its own
//! output (its offset is shorter than its length), which is what repeated
//! records make: each record one long match on the one before. Consuming
//! 10 KiB lz4 records spent 60% of its CPU there. Here an overlapping match
//! is copied in runs that double in length, each run a plain `copy_within`.

use std::fmt;

/// Why a block did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockError {
    /// The output would not fit the space given.
    OutputTooSmall,
    /// The block ends inside a sequence.
    Truncated,
    /// A match refers to before the start of the output, or has offset 0.
    InvalidOffset,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutputTooSmall => "lz4 block decompresses to more than its room",
            Self::Truncated => "lz4 block ends inside a sequence",
            Self::InvalidOffset => "lz4 match offset outside the output",
        })
    }
}

/// Decodes the LZ4 block `src` into the start of `dst`; returns how many
/// bytes it wrote. Bytes of `dst` past that count may be overwritten too
/// (short copies are done 16 bytes at a time).
pub(super) fn decompress_into(src: &[u8], dst: &mut [u8]) -> Result<usize, BlockError> {
    let mut i = 0;
    let mut o = 0;
    loop {
        let token = *src.get(i).ok_or(BlockError::Truncated)?;
        i += 1;

        let mut literals = usize::from(token >> 4);
        if literals == 15 {
            literals = literals.saturating_add(extra_length(src, &mut i)?);
        }
        if literals <= 16 && i + 16 <= src.len() && o + 16 <= dst.len() {
            // One fixed-size copy instead of a call for a few bytes.
            if let (Some(to), Some(from)) = (dst.get_mut(o..o + 16), src.get(i..i + 16)) {
                to.copy_from_slice(from);
            }
        } else {
            let from = src
                .get(i..i.saturating_add(literals))
                .ok_or(BlockError::Truncated)?;
            dst.get_mut(o..o + literals)
                .ok_or(BlockError::OutputTooSmall)?
                .copy_from_slice(from);
        }
        i += literals;
        o += literals;
        if i == src.len() {
            // The last sequence has literals only.
            return Ok(o);
        }

        let offset = match src.get(i..i + 2) {
            Some(&[lo, hi]) => usize::from(u16::from_le_bytes([lo, hi])),
            _ => return Err(BlockError::Truncated),
        };
        i += 2;
        if offset == 0 || offset > o {
            return Err(BlockError::InvalidOffset);
        }
        let mut length = usize::from(token & 15) + 4;
        if length == 19 {
            length = length.saturating_add(extra_length(src, &mut i)?);
        }
        let end = o
            .checked_add(length)
            .filter(|&end| end <= dst.len())
            .ok_or(BlockError::OutputTooSmall)?;
        let start = o - offset;
        if offset >= 18 && length <= 18 && o + 18 <= dst.len() {
            // Short, not overlapping even at 18 bytes: one fixed-size copy.
            dst.copy_within(start..start + 18, o);
        } else if offset >= length {
            dst.copy_within(start..start + length, o);
        } else {
            // Overlapping: the output repeats the `offset` bytes before it.
            // After each copy, the repeating part is longer by what was
            // copied, and copying from `start` stays in step with it as
            // long as the amount copied so far is a multiple of `offset`.
            let mut copied = 0;
            while copied < length {
                let n = (length - copied).min(offset + copied);
                dst.copy_within(start..start + n, o + copied);
                copied += n;
            }
        }
        o = end;
    }
}

/// The bytes 255, 255, ..., n that extend a length of 15: their sum.
fn extra_length(src: &[u8], i: &mut usize) -> Result<usize, BlockError> {
    let mut sum = 0usize;
    loop {
        let b = *src.get(*i).ok_or(BlockError::Truncated)?;
        *i += 1;
        // Saturating: a length that large fails the bounds checks anyway.
        sum = sum.saturating_add(usize::from(b));
        if b != 255 {
            return Ok(sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(src: &[u8], room: usize) -> Result<Vec<u8>, BlockError> {
        let mut dst = vec![0u8; room];
        let n = decompress_into(src, &mut dst)?;
        dst.truncate(n);
        Ok(dst)
    }

    /// Inputs with every kind of match: runs (offset 1), short periods,
    /// repeats far back, and noise.
    fn sample(seed: u32, len: usize) -> Vec<u8> {
        let mut next = crate::protocol::record::xorshift(seed | 1);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let r = next();
            let n = (r >> 8) as usize % 300 + 1;
            match r % 4 {
                0 => out.extend(std::iter::repeat_n(r as u8, n)),
                1 if !out.is_empty() => {
                    let back = (r >> 20) as usize % out.len().min(70_000) + 1;
                    let from = out.len() - back;
                    for k in 0..n {
                        out.push(out[from + k]);
                    }
                }
                2 => out.extend((0..n).map(|k| b"abc"[k % 3])),
                _ => out.extend((0..n).map(|_| next() as u8)),
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn decodes_what_lz4_flex_writes() {
        for (seed, len) in [
            (1, 0),
            (2, 1),
            (3, 15),
            (4, 4096),
            (5, 65_536),
            (6, 200_000),
        ] {
            let input = sample(seed, len);
            let block = lz4_flex::block::compress(&input);
            assert_eq!(decode(&block, len).unwrap(), input, "{len} bytes");
            // Exactly the room needed, with no slack for the wide copies.
            if len > 0 {
                assert_eq!(
                    decode(&block, len - 1),
                    Err(BlockError::OutputTooSmall),
                    "{len} bytes"
                );
            }
        }
    }

    #[test]
    fn repeated_records_decode() {
        // The benchmark's shape: one record repeated, a match overlapping
        // itself many times over.
        let record: Vec<u8> = sample(9, 10_252);
        let input = record.repeat(7);
        let block = lz4_flex::block::compress(&input);
        assert_eq!(decode(&block, input.len()).unwrap(), input);
    }

    #[test]
    fn rejects_bad_offsets_and_truncation() {
        // Literal "a", then a match with offset 2 (before the start).
        assert_eq!(
            decode(&[0x10, b'a', 2, 0], 100),
            Err(BlockError::InvalidOffset)
        );
        assert_eq!(
            decode(&[0x10, b'a', 0, 0], 100),
            Err(BlockError::InvalidOffset)
        );
        assert_eq!(decode(&[0x10, b'a', 1], 100), Err(BlockError::Truncated));
        assert_eq!(decode(&[0xF0, 255], 1000), Err(BlockError::Truncated));
        assert_eq!(decode(&[0x30, b'a'], 100), Err(BlockError::Truncated));
        assert_eq!(decode(&[], 100), Err(BlockError::Truncated));
        // Literal "a", then a run of 4 + 15 + 255 + 10 more of it.
        let run = [0x1F, b'a', 1, 0, 255, 10, 0x00];
        assert_eq!(decode(&run, 285).unwrap(), vec![b'a'; 285]);
        assert_eq!(decode(&run, 284), Err(BlockError::OutputTooSmall));
    }

    /// The format, decoded the plainest way: a byte at a time, every check
    /// in the order the decoder makes it.
    fn reference(src: &[u8], room: usize) -> Result<Vec<u8>, BlockError> {
        let mut out = Vec::new();
        let mut i = 0;
        let byte = |i: usize| src.get(i).copied().ok_or(BlockError::Truncated);
        let extend = |i: &mut usize, mut n: usize| -> Result<usize, BlockError> {
            loop {
                let b = byte(*i)?;
                *i += 1;
                n = n.saturating_add(usize::from(b));
                if b != 255 {
                    return Ok(n);
                }
            }
        };
        loop {
            let token = byte(i)?;
            i += 1;
            let mut literals = usize::from(token >> 4);
            if literals == 15 {
                literals = extend(&mut i, literals)?;
            }
            let from = src
                .get(i..i.saturating_add(literals))
                .ok_or(BlockError::Truncated)?;
            if out.len() + literals > room {
                return Err(BlockError::OutputTooSmall);
            }
            for &b in from {
                out.push(b);
            }
            i += literals;
            if i == src.len() {
                return Ok(out);
            }
            let offset = usize::from(byte(i)?) | usize::from(byte(i + 1)?) << 8;
            i += 2;
            if offset == 0 || offset > out.len() {
                return Err(BlockError::InvalidOffset);
            }
            let mut length = usize::from(token & 15) + 4;
            if length == 19 {
                length = extend(&mut i, length)?;
            }
            if out.len() + length > room {
                return Err(BlockError::OutputTooSmall);
            }
            for _ in 0..length {
                out.push(out[out.len() - offset]);
            }
        }
    }

    /// The decoder gives what the reference gives, errors included, and
    /// whatever `lz4_flex` decodes it decodes to the same bytes.
    fn agrees(block: &[u8], room: usize) -> Result<(), TestCaseError> {
        let ours = decode(block, room);
        prop_assert_eq!(&ours, &reference(block, room));
        let mut dst = vec![0u8; room];
        if let Ok(n) = lz4_flex::block::decompress_into(block, &mut dst) {
            prop_assert_eq!(ours, Ok(dst[..n].to_vec()));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn agrees_on_any_bytes(src in proptest::collection::vec(any::<u8>(), 0..300), room in 0usize..2000) {
            agrees(&src, room)?;
        }

        #[test]
        fn agrees_on_damaged_blocks(
            seed in any::<u32>(),
            len in 1usize..5000,
            damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            slack in 0usize..64,
        ) {
            let input = sample(seed, len);
            let mut block = lz4_flex::block::compress(&input);
            for (at, byte) in damage {
                let at = at % block.len();
                block[at] = byte;
            }
            agrees(&block, len + slack)?;
        }

        #[test]
        fn round_trips(seed in any::<u32>(), len in 0usize..100_000) {
            let input = sample(seed, len);
            let block = lz4_flex::block::compress(&input);
            prop_assert_eq!(decode(&block, len).unwrap(), input);
        }
    }
}
