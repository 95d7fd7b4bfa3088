//! CRC-32C (Castagnoli), the checksum of v2 record batches.
//!
//! Backed by `crc-fast`, which picks at run time the widest carry-less
//! multiply the CPU has (AVX-512 VPCLMULQDQ folds ~4x faster than the
//! SSE4.2 `crc32` instruction the `crc32c` crate uses), so checking or
//! sealing a batch costs a small fraction of copying it.

use crc_fast::{CrcAlgorithm, Digest};

/// The CRC-32C of `data`.
pub(super) fn checksum(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// The CRC-32C of `A ++ data`, given `crc` = the CRC-32C of `A`.
pub(super) fn append(crc: u32, data: &[u8]) -> u32 {
    // The digest's running state is the finished CRC before its final
    // inversion; the truncation keeps the 32 bits a CRC-32 has.
    let mut digest = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    digest.update(data);
    digest.finalize() as u32
}

/// The CRC-32C polynomial, bit-reflected.
const CRC32C_POLY: u32 = 0x82F6_3B78;

/// `a * b` modulo the CRC-32C polynomial (bit-reflected: bit 31 is x^0).
/// Branch-free: the bits of `a` are data, and a branch on each would be
/// mispredicted half the time.
const fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 32;
    while bit > 0 {
        bit -= 1;
        product ^= b & 0u32.wrapping_sub((a >> bit) & 1);
        b = (b >> 1) ^ (CRC32C_POLY & 0u32.wrapping_sub(b & 1));
    }
    product
}

/// Length bits per digit of [`SHIFT_BYTES`].
const DIGIT_BITS: usize = 4;
const DIGITS: usize = usize::BITS as usize / DIGIT_BITS;

/// `SHIFT_BYTES[k][d]` is `x^(8 * d * 16^k)` modulo the polynomial: what
/// shifts a CRC past `d * 16^k` bytes. Computed at compile time, so that a
/// combine takes one product per non-zero hexadecimal digit of the length
/// (at most six below 16 MiB).
const SHIFT_BYTES: [[u32; 1 << DIGIT_BITS]; DIGITS] = {
    let mut table = [[0; 1 << DIGIT_BITS]; DIGITS];
    let mut unit = 1 << 23; // x^8: one byte
    let mut k = 0;
    while k < DIGITS {
        let mut power = 1 << 31; // x^0
        let mut d = 0;
        while d < 1 << DIGIT_BITS {
            table[k][d] = power;
            power = multmodp(unit, power);
            d += 1;
        }
        // x^(8 * 16^(k+1)) = (x^(8 * 16^k))^16
        unit = power;
        k += 1;
    }
    table
};

/// The CRC-32C of `A ++ B` from `crc(A)`, `crc(B)` and `B`'s length, in
/// one polynomial product per non-zero hexadecimal digit of the length,
/// plus one (the `crc32c` crate's version squares 32x32 bit matrices
/// instead and costs tens of microseconds).
pub(super) fn combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    // x^(8 len_b): shifts crc(A) past B's bytes.
    let mut shift = 1u32 << 31; // x^0
    for (k, powers) in SHIFT_BYTES.iter().enumerate() {
        let rest = len_b >> (k * DIGIT_BITS);
        if rest == 0 {
            break;
        }
        let digit = rest & ((1 << DIGIT_BITS) - 1);
        if digit != 0 {
            shift = multmodp(powers[digit], shift);
        }
    }
    multmodp(shift, crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked against an independent implementation (the `crc32c` crate),
    /// at lengths on both sides of the SIMD block sizes.
    #[test]
    fn agrees_with_the_crc32c_crate() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for len in [0, 1, 3, 15, 16, 63, 64, 65, 255, 256, 1_000, 4_096, 70_000] {
            let whole = &data[..len];
            assert_eq!(checksum(whole), ::crc32c::crc32c(whole), "len {len}");
            for split in [0, 1.min(len), len / 3, len / 2, len.saturating_sub(1), len] {
                let (a, b) = whole.split_at(split);
                assert_eq!(
                    append(checksum(a), b),
                    checksum(whole),
                    "len {len} split {split}"
                );
                assert_eq!(combine(checksum(a), checksum(b), b.len()), checksum(whole));
            }
        }
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        // A length with high bits set, beyond the lengths above.
        let big: Vec<u8> = (0..(1usize << 21) + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let (a, b) = big.split_at(1_000);
        assert_eq!(combine(checksum(a), checksum(b), b.len()), checksum(&big));
    }

    /// Every row of the shift table, against x^(8n) by square and
    /// multiply, for lengths no buffer here could have.
    #[test]
    fn combine_shifts_by_any_length() {
        fn shift_reference(mut n: usize) -> u32 {
            let (mut shift, mut power) = (1 << 31, 1 << 23); // x^0, x^8
            while n > 0 {
                if n & 1 == 1 {
                    shift = multmodp(power, shift);
                }
                power = multmodp(power, power);
                n >>= 1;
            }
            shift
        }
        let (a, b) = (0x1234_5678, 0x9ABC_DEF0);
        let mut lengths = vec![0, 1, 15, 16, 17, 0xdead_beef, usize::MAX - 1, usize::MAX];
        lengths.extend((0..usize::BITS).map(|k| 1usize << k));
        lengths.extend((0..usize::BITS).map(|k| (1usize << k) - 1));
        for n in lengths {
            assert_eq!(combine(a, b, n), multmodp(shift_reference(n), a) ^ b, "{n}");
        }
    }
}
