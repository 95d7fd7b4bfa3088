//! The codecs, each behind its cargo feature.
//!
//! Decompression never allocates beyond its cap: streaming decoders are read
//! into a buffer that grows at most to `cap + 1` bytes (one byte past the
//! cap proves the output is too large), and raw snappy's declared length is
//! checked before anything is allocated.

use bytes::{Bytes, BytesMut};

use super::Compression;
use crate::protocol::error::{DecodeErrorKind, EncodeError};

#[cfg(feature = "compression-lz4")]
mod lz4_block;

/// Decompresses `input`, failing with `DecompressedTooLarge` past `cap`
/// bytes. `magic` selects Kafka's legacy LZ4 framing for v0 messages.
pub(super) fn decompress(
    codec: Compression,
    input: &[u8],
    cap: usize,
    magic: i8,
) -> Result<Bytes, DecodeErrorKind> {
    let _ = (input, cap, magic);
    match codec {
        Compression::None => Err(DecodeErrorKind::Compression(
            "no codec to decompress with".into(),
        )),
        #[cfg(feature = "compression-gzip")]
        Compression::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(input), cap, input.len())
                .map(Bytes::from)
                .map_err(|e| e.with_codec(codec))
        }
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy => snappy::decompress(input, cap).map(Bytes::from),
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4 => lz4::decompress(input, cap, magic),
        #[cfg(feature = "compression-zstd")]
        Compression::Zstd => zstd_codec::decompress(input, cap).map(Bytes::from),
        #[allow(unreachable_patterns)]
        disabled => Err(DecodeErrorKind::Compression(disabled_message(disabled))),
    }
}

/// Compresses `input` onto the end of `out`.
pub(super) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (input, &out);
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        #[cfg(feature = "compression-gzip")]
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                bytes::BufMut::writer(out),
                flate2::Compression::default(),
            );
            enc.write_all(input)
                .and_then(|()| enc.finish().map(drop))
                .map_err(|e| EncodeError::Compression(format!("gzip: {e}")))
        }
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy => compress_in_blocks(codec, snappy::XERIAL_BLOCK, input, out),
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4 => compress_in_blocks(codec, lz4::BLOCK_MAX, input, out),
        #[cfg(feature = "compression-zstd")]
        Compression::Zstd => zstd_codec::compress(input, out),
        #[allow(unreachable_patterns)]
        disabled => Err(EncodeError::Compression(disabled_message(disabled))),
    }
}

/// Input bytes per block of the codecs whose output is a header, blocks
/// compressed independently of each other, and a trailer: LZ4 frames and
/// xerial snappy. A writer can compress each block as soon as its input is
/// complete, on the appending thread while the records are still in cache,
/// rather than the whole batch at the end. `None` for the other codecs.
pub(super) fn block_size(codec: Compression) -> Option<usize> {
    match codec {
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4 => Some(lz4::BLOCK_MAX),
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy => Some(snappy::XERIAL_BLOCK),
        _ => None,
    }
}

/// All of `input` in blocks of `size`, framed.
#[cfg(any(feature = "compression-lz4", feature = "compression-snappy"))]
fn compress_in_blocks(
    codec: Compression,
    size: usize,
    input: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    begin_blocks(codec, out);
    for block in input.chunks(size) {
        compress_block(codec, block, out)?;
    }
    end_blocks(codec, out);
    Ok(())
}

/// Writes what precedes the first block of a [`block_size`] codec.
pub(super) fn begin_blocks(codec: Compression, out: &mut BytesMut) {
    let _ = &out;
    match codec {
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4 => lz4::begin(out),
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy => snappy::begin(out),
        _ => {}
    }
}

/// Compresses one block of at most [`block_size`] bytes onto `out`; writes
/// nothing if it fails.
pub(super) fn compress_block(
    codec: Compression,
    block: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (block, &out);
    match codec {
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4 => lz4::compress_block(block, out),
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy => snappy::compress_block(block, out),
        other => Err(EncodeError::Compression(format!(
            "{} does not compress in blocks",
            other.name()
        ))),
    }
}

/// Writes what follows the last block of a [`block_size`] codec.
pub(super) fn end_blocks(codec: Compression, out: &mut BytesMut) {
    let _ = &out;
    #[cfg(feature = "compression-lz4")]
    if codec == Compression::Lz4 {
        lz4::end(out);
    }
    let _ = codec;
}

/// Runs `f` on `len` bytes of a per-thread scratch buffer, for block
/// compressors that need an initialised output slice: zeroed once per
/// thread instead of once per block, as growing `out` for each block would.
#[cfg(any(feature = "compression-lz4", feature = "compression-snappy"))]
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(buf.get_mut(..len).unwrap_or_default())
        }
        Err(_) => f(&mut vec![0; len]),
    })
}

fn disabled_message(codec: Compression) -> String {
    format!("{codec} support is not compiled in (enable the cargo feature compression-{codec})")
}

/// A decoding failure before it is tagged with the codec's name.
#[allow(dead_code)] // unused when every codec is disabled
trait WithCodec {
    fn with_codec(self, codec: Compression) -> DecodeErrorKind;
}

impl WithCodec for DecodeErrorKind {
    fn with_codec(self, codec: Compression) -> DecodeErrorKind {
        match self {
            DecodeErrorKind::Compression(msg) => {
                DecodeErrorKind::Compression(format!("{codec}: {msg}"))
            }
            other => other,
        }
    }
}

/// Grows `buf` to `len` bytes (zero-filled), doubling its capacity for
/// amortized growth but never past `limit`.
#[allow(dead_code)] // unused when every codec is disabled
fn grow(buf: &mut Vec<u8>, len: usize, limit: usize) {
    if len > buf.capacity() {
        let target = buf.capacity().saturating_mul(2).min(limit).max(len);
        buf.reserve_exact(target - buf.len());
    }
    buf.resize(len, 0);
}

/// Reads all of `reader`, failing once it yields more than `cap` bytes.
/// `hint` is the compressed size, used to guess the first allocation.
#[allow(dead_code)] // unused when every codec is disabled
fn read_bounded(
    mut reader: impl std::io::Read,
    cap: usize,
    hint: usize,
) -> Result<Vec<u8>, DecodeErrorKind> {
    let limit = cap.saturating_add(1);
    let mut buf = Vec::new();
    grow(
        &mut buf,
        hint.saturating_mul(4).clamp(256, 1 << 20).min(limit),
        limit,
    );
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled >= limit {
                return Err(DecodeErrorKind::DecompressedTooLarge { limit: cap });
            }
            let next = buf.len().saturating_mul(2).clamp(filled + 1, limit);
            grow(&mut buf, next, limit);
        }
        let Some(dst) = buf.get_mut(filled..) else {
            break;
        };
        match reader.read(dst) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DecodeErrorKind::Compression(e.to_string())),
        }
    }
    buf.truncate(filled);
    // Doubling may have left up to half the buffer unused, and the records
    // keep all of it alive while consumers count only what they hold.
    if buf.capacity() - filled > filled / 64 {
        buf.shrink_to_fit();
    }
    Ok(buf)
}

#[cfg(feature = "compression-snappy")]
mod snappy {
    use std::cell::RefCell;

    use bytes::{BufMut, BytesMut};

    use super::grow;
    use crate::protocol::error::{DecodeErrorKind, EncodeError};

    /// Header of the xerial framing written by snappy-java (and so by the
    /// Java client): magic, then format version 1 and minimum compatible
    /// version 1, big-endian.
    const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
    const XERIAL_HEADER_LEN: usize = 16;
    /// Uncompressed bytes per xerial block, as snappy-java writes them.
    pub(super) const XERIAL_BLOCK: usize = 32 * 1024;

    fn err(e: impl std::fmt::Display) -> DecodeErrorKind {
        DecodeErrorKind::Compression(format!("snappy: {e}"))
    }

    /// Decompresses xerial-framed or raw snappy.
    pub(super) fn decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, DecodeErrorKind> {
        let mut decoder = snap::raw::Decoder::new();
        let mut out = Vec::new();
        if input.starts_with(XERIAL_MAGIC) {
            let mut rest = input
                .get(XERIAL_HEADER_LEN..)
                .ok_or_else(|| err("truncated xerial header"))?;
            while !rest.is_empty() {
                let (len, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| err("truncated xerial block length"))?;
                let len = u32::from_be_bytes(*len) as usize;
                let block = tail
                    .get(..len)
                    .ok_or_else(|| err("truncated xerial block"))?;
                rest = tail.get(len..).unwrap_or_default();
                append_raw(&mut decoder, block, &mut out, cap)?;
            }
        } else {
            append_raw(&mut decoder, input, &mut out, cap)?;
        }
        Ok(out)
    }

    /// Decompresses one raw block onto `out`; its declared length is checked
    /// against the cap before any allocation.
    fn append_raw(
        decoder: &mut snap::raw::Decoder,
        block: &[u8],
        out: &mut Vec<u8>,
        cap: usize,
    ) -> Result<(), DecodeErrorKind> {
        let n = snap::raw::decompress_len(block).map_err(err)?;
        let start = out.len();
        let end = start
            .checked_add(n)
            .filter(|&end| end <= cap)
            .ok_or(DecodeErrorKind::DecompressedTooLarge { limit: cap })?;
        grow(out, end, cap);
        let dst = out.get_mut(start..).unwrap_or_default();
        let written = decoder.decompress(block, dst).map_err(err)?;
        out.truncate(start + written);
        Ok(())
    }

    /// The xerial header, which every Kafka client reads.
    pub(super) fn begin(out: &mut BytesMut) {
        out.reserve(XERIAL_HEADER_LEN);
        out.put_slice(XERIAL_MAGIC);
        out.put_i32(1);
        out.put_i32(1);
    }

    /// One xerial block: big-endian length, then the raw snappy block.
    pub(super) fn compress_block(block: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        thread_local! {
            // Its hash table is allocated and cleared on first use only.
            static ENCODER: RefCell<snap::raw::Encoder> = RefCell::new(snap::raw::Encoder::new());
        }
        super::with_scratch(snap::raw::max_compress_len(block.len()), |dst| {
            let n = ENCODER
                .with(|e| match e.try_borrow_mut() {
                    Ok(mut e) => e.compress(block, dst),
                    Err(_) => snap::raw::Encoder::new().compress(block, dst),
                })
                .map_err(|e| EncodeError::Compression(format!("snappy: {e}")))?;
            let compressed = dst.get(..n).unwrap_or_default();
            out.reserve(4 + n);
            out.put_u32(n as u32);
            out.put_slice(compressed);
            Ok(())
        })
    }
}

/// Decompressed batches' buffers, kept to be reused once nothing refers to
/// them any more (the records handed out from them are dropped).
///
/// A fresh buffer per batch cost the consumer of 10 KiB lz4 records a third
/// of its CPU: clearing it, and the page faults of memory the allocator had
/// just returned to the system (glibc trims the top of a thread's heap on
/// every large free). Kept per thread, at most [`MAX_KEPT`] buffers of at
/// most [`MAX_KEPT_LEN`] bytes each.
#[cfg(feature = "compression-lz4")]
mod recycled {
    use std::cell::RefCell;

    use bytes::{Bytes, BytesMut};

    const MAX_KEPT: usize = 4;
    const MAX_KEPT_LEN: usize = 8 << 20;
    /// Any kept buffer up to this size may serve a smaller batch.
    const MIN_KEPT_FIT: usize = 256 << 10;

    thread_local! {
        /// Buffers handed out, with their capacities (`Bytes` does not tell).
        static KEPT: RefCell<Vec<(Bytes, usize)>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer for at least `len` bytes: a kept one nothing else refers to
    /// (its contents are stale, its length whatever it was), or a new one.
    /// A kept buffer far larger than `len` is left for a larger batch: the
    /// records of a small one would hold on to all of it.
    pub(super) fn take(len: usize) -> BytesMut {
        let fits = |capacity: usize| capacity <= len.saturating_mul(2).max(MIN_KEPT_FIT);
        let reused = KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            let free = kept
                .iter()
                .position(|(b, capacity)| fits(*capacity) && b.is_unique())?;
            kept.swap_remove(free).0.try_into_mut().ok()
        });
        match reused {
            Some(mut b) => {
                if b.capacity() < len {
                    // Growing would copy the stale bytes along.
                    b.clear();
                }
                b.reserve(len.saturating_sub(b.len()));
                b
            }
            None => BytesMut::with_capacity(len),
        }
    }

    /// Keeps a reference to `b` for [`take`] if its buffer (of `capacity`
    /// bytes) is not too large.
    pub(super) fn keep(b: Bytes, capacity: usize) -> Bytes {
        if capacity <= MAX_KEPT_LEN {
            KEPT.with(|kept| {
                let mut kept = kept.borrow_mut();
                if kept.len() == MAX_KEPT {
                    // The oldest is the likeliest to be free, but also the
                    // one whose records may be kept longest; dropping it
                    // only ends its reuse.
                    kept.remove(0);
                }
                kept.push((b.clone(), capacity));
            });
        }
        b
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_buffer_is_reused_only_once_nothing_else_refers_to_it() {
            let first = keep(Bytes::from(vec![7u8; 1000]), 1000);
            let ptr = first.as_ptr();
            // Still referred to: a new buffer.
            let other = take(1000);
            assert_ne!(other.as_ptr(), ptr);
            drop(first);
            let reused = take(500);
            assert_eq!(reused.as_ptr(), ptr);
            // Stale contents are kept, not cleared.
            assert_eq!(reused.len(), 1000);
            assert_eq!(reused[999], 7);
            // Taken out: not handed out twice.
            assert_ne!(take(10).as_ptr(), ptr);
        }

        #[test]
        fn oversized_buffers_are_neither_kept_nor_lent_to_small_batches() {
            let kept = || KEPT.with(|k| k.borrow().len());
            let before = kept();
            drop(keep(
                Bytes::from(vec![0u8; MAX_KEPT_LEN + 1]),
                MAX_KEPT_LEN + 1,
            ));
            assert_eq!(kept(), before);

            let big = keep(Bytes::from(vec![0u8; 4 << 20]), 4 << 20);
            let big_ptr = big.as_ptr();
            drop(big);
            // A 1 KiB batch does not get the 4 MiB buffer...
            assert_ne!(take(1024).as_ptr(), big_ptr);
            // ...but one of at least half its size does.
            assert_eq!(take(2 << 20).as_ptr(), big_ptr);
        }
    }
}

#[cfg(feature = "compression-lz4")]
mod lz4 {
    use bytes::{BufMut, Bytes, BytesMut};
    use lz4_flex::frame::FrameDecoder;

    use super::lz4_block::BlockError;
    use super::{read_bounded, recycled, WithCodec};
    use crate::protocol::error::{DecodeErrorKind, EncodeError};
    use crate::protocol::record::Compression;

    const FRAME_MAGIC: [u8; 4] = 0x184D_2204u32.to_le_bytes();

    pub(super) fn decompress(
        input: &[u8],
        cap: usize,
        magic: i8,
    ) -> Result<Bytes, DecodeErrorKind> {
        let fixed;
        let input = if magic == 0 {
            // Kafka's v0 writer (KAFKA-3160) computed the frame header
            // checksum over the wrong bytes; Java reads v0 ignoring it. Put
            // the right checksum in a copy so the standard decoder accepts it.
            fixed = fix_header_checksum(input);
            fixed.as_deref().unwrap_or(input)
        } else {
            input
        };
        if let Some(out) = decompress_independent(input, cap) {
            return out.map_err(|e| e.with_codec(Compression::Lz4));
        }
        read_bounded(FrameDecoder::new(input), cap, input.len())
            .map(Bytes::from)
            .map_err(|e| e.with_codec(Compression::Lz4))
    }

    /// The frame flags this fast path reads (LZ4 frame format 1.6).
    const FLG_VERSION_MASK: u8 = 0xC0;
    const FLG_VERSION_01: u8 = 0x40;
    const FLG_INDEPENDENT: u8 = 0x20;
    const FLG_BLOCK_CHECKSUM: u8 = 0x10;
    const FLG_CONTENT_SIZE: u8 = 0x08;
    const FLG_CONTENT_CHECKSUM: u8 = 0x04;
    const FLG_DICT_ID: u8 = 0x01;
    const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

    /// Decodes a single frame of independent blocks (what the Java client,
    /// librdkafka and this crate write) block by block straight into one
    /// buffer sized up front: no intermediate block buffer, no copy out of
    /// it, no regrowth. `None` for anything else (linked blocks, a
    /// dictionary, trailing frames), which the streaming decoder then
    /// handles, errors included. Checksums inside the frame are skipped:
    /// the batch CRC-32C already covers these bytes.
    fn decompress_independent(input: &[u8], cap: usize) -> Option<Result<Bytes, DecodeErrorKind>> {
        let rest = input.strip_prefix(&FRAME_MAGIC)?;
        let (&flg, rest) = rest.split_first()?;
        let (&bd, rest) = rest.split_first()?;
        if flg & FLG_VERSION_MASK != FLG_VERSION_01
            || flg & FLG_INDEPENDENT == 0
            || flg & FLG_DICT_ID != 0
        {
            return None;
        }
        let block_max: usize = match (bd >> 4) & 0x07 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            _ => return None,
        };
        let content_size = if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 };
        // Content size (if any), then the header checksum byte, which is
        // checked here as the streaming decoder would (a mismatch goes to
        // it, for its error).
        let descriptor = input.get(4..6 + content_size)?;
        if *rest.get(content_size)? != (xxh32(descriptor, 0) >> 8) as u8 {
            return None;
        }
        let body = rest.get(content_size + 1..)?;
        let block_checksum = if flg & FLG_BLOCK_CHECKSUM != 0 { 4 } else { 0 };
        let trailer = if flg & FLG_CONTENT_CHECKSUM != 0 {
            4
        } else {
            0
        };

        // First pass: check the block structure and bound the output, so
        // the buffer is allocated once (never beyond `cap`).
        let mut bound = 0usize;
        let mut r = body;
        loop {
            let (size, tail) = r.split_first_chunk::<4>()?;
            let size = u32::from_le_bytes(*size);
            if size == 0 {
                if tail.len() != trailer {
                    return None;
                }
                break;
            }
            let len = (size & !BLOCK_UNCOMPRESSED) as usize;
            r = tail.get(len + block_checksum..)?;
            bound = bound.saturating_add(if size & BLOCK_UNCOMPRESSED != 0 {
                len
            } else {
                block_max
            });
        }

        // `out[..filled]` is the output so far; the bytes after it, up to
        // `out.len()`, are left from the buffer's last use and are
        // overwritten without being cleared first.
        let mut out = recycled::take(bound.min(cap));
        let mut filled = 0usize;
        let mut r = body;
        loop {
            let (size, tail) = r.split_first_chunk::<4>()?;
            let size = u32::from_le_bytes(*size);
            if size == 0 {
                out.truncate(filled);
                let capacity = out.capacity();
                return Some(Ok(recycled::keep(out.freeze(), capacity)));
            }
            let len = (size & !BLOCK_UNCOMPRESSED) as usize;
            let block = tail.get(..len)?;
            r = tail.get(len + block_checksum..)?;
            let room = if size & BLOCK_UNCOMPRESSED != 0 {
                if filled.saturating_add(len) > cap {
                    return Some(Err(DecodeErrorKind::DecompressedTooLarge { limit: cap }));
                }
                len
            } else {
                block_max.min(cap.saturating_sub(filled))
            };
            if out.len() < filled + room {
                out.resize(filled + room, 0);
            }
            let dst = out.get_mut(filled..filled + room).unwrap_or_default();
            if size & BLOCK_UNCOMPRESSED != 0 {
                dst.copy_from_slice(block);
                filled += len;
                continue;
            }
            match super::lz4_block::decompress_into(block, dst) {
                Ok(n) => filled += n,
                Err(BlockError::OutputTooSmall) if room < block_max => {
                    return Some(Err(DecodeErrorKind::DecompressedTooLarge { limit: cap }))
                }
                Err(e) => return Some(Err(DecodeErrorKind::Compression(e.to_string()))),
            }
        }
    }

    /// A copy of `input` with a correct frame header checksum, or `None` if
    /// it is already correct or not a frame.
    pub(in crate::protocol::record) fn fix_header_checksum(input: &[u8]) -> Option<Vec<u8>> {
        if !input.starts_with(&FRAME_MAGIC) {
            return None;
        }
        let flg = *input.get(4)?;
        let descriptor_len = 2
            + if flg & 0x08 != 0 { 8 } else { 0 } // content size
            + if flg & 0x01 != 0 { 4 } else { 0 }; // dictionary id
        let descriptor = input.get(4..4 + descriptor_len)?;
        let checksum = (xxh32(descriptor, 0) >> 8) as u8;
        if *input.get(4 + descriptor_len)? == checksum {
            return None;
        }
        let mut copy = input.to_vec();
        *copy.get_mut(4 + descriptor_len)? = checksum;
        Some(copy)
    }

    /// XXH32 of a short input (frame descriptors are under 16 bytes; longer
    /// inputs are not needed and not supported).
    pub(in crate::protocol::record) fn xxh32(data: &[u8], seed: u32) -> u32 {
        const P1: u32 = 0x9E37_79B1;
        const P2: u32 = 0x85EB_CA77;
        const P3: u32 = 0xC2B2_AE3D;
        const P4: u32 = 0x27D4_EB2F;
        const P5: u32 = 0x1656_67B1;
        debug_assert!(data.len() < 16);
        let mut h = seed.wrapping_add(P5).wrapping_add(data.len() as u32);
        let mut words = data.chunks_exact(4);
        for w in &mut words {
            let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            h = h
                .wrapping_add(v.wrapping_mul(P3))
                .rotate_left(17)
                .wrapping_mul(P4);
        }
        for &b in words.remainder() {
            h = h
                .wrapping_add(u32::from(b).wrapping_mul(P5))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        h ^= h >> 15;
        h = h.wrapping_mul(P2);
        h ^= h >> 13;
        h = h.wrapping_mul(P3);
        h ^= h >> 16;
        h
    }

    /// Block size this writer uses: the frame format's smallest, which the
    /// Java client and librdkafka use too, so any reader's buffers fit it.
    pub(super) const BLOCK_MAX: usize = 64 * 1024;
    /// Block maximum size code for 64 KiB in the frame descriptor's BD byte.
    const BD_64K: u8 = 4 << 4;

    /// The header of a standard LZ4 frame of independent 64 KiB blocks
    /// without checksums (the batch CRC-32C covers these bytes), which the
    /// Java client and librdkafka both read.
    pub(super) fn begin(out: &mut BytesMut) {
        let flg = FLG_VERSION_01 | FLG_INDEPENDENT;
        let descriptor_checksum = (xxh32(&[flg, BD_64K], 0) >> 8) as u8;
        out.reserve(7);
        out.put_slice(&FRAME_MAGIC);
        out.put_slice(&[flg, BD_64K, descriptor_checksum]);
    }

    /// One block, compressed straight from the caller's bytes (a streaming
    /// frame encoder would first copy them into its own block buffer).
    pub(super) fn compress_block(block: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        debug_assert!(block.len() <= BLOCK_MAX);
        let bound = lz4_flex::block::get_maximum_output_size(block.len());
        super::with_scratch(bound, |dst| {
            let written = lz4_flex::block::compress_into(block, dst)
                .map_err(|e| EncodeError::Compression(format!("lz4: {e}")))?;
            out.reserve(4 + written.min(block.len()));
            match dst.get(..written).filter(|_| written < block.len()) {
                Some(compressed) => {
                    out.put_u32_le(written as u32);
                    out.put_slice(compressed);
                }
                None => {
                    // Incompressible: stored as is, flagged in the block size.
                    out.put_u32_le(block.len() as u32 | BLOCK_UNCOMPRESSED);
                    out.put_slice(block);
                }
            }
            Ok(())
        })
    }

    /// The frame's end mark.
    pub(super) fn end(out: &mut BytesMut) {
        out.put_u32_le(0);
    }
}

#[cfg(feature = "compression-zstd")]
mod zstd_codec {
    use std::cell::RefCell;

    use bytes::BytesMut;
    use zstd::zstd_safe::DCtx;

    use super::{read_bounded, WithCodec};
    use crate::protocol::error::{DecodeErrorKind, EncodeError};
    use crate::protocol::record::Compression;

    /// Compression level of the Java client and librdkafka by default.
    const LEVEL: i32 = 3;
    /// A cached decoder context larger than this (it grew for a frame with
    /// a large window) is dropped rather than kept for the thread's life.
    const MAX_CACHED_DCTX: usize = 16 << 20;

    thread_local! {
        // zstd contexts cost hundreds of KiB (compression: MiBs) to set up,
        // more than a small batch costs to code, so each thread keeps one.
        static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { RefCell::new(None) };
    }

    pub(super) fn decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, DecodeErrorKind> {
        DCTX.with(|cell| {
            // A busy cell (impossible unless re-entered) falls back to a fresh context.
            let mut slot = cell.try_borrow_mut().ok();
            let mut ctx = slot
                .as_mut()
                .and_then(|s| s.take())
                .unwrap_or_else(DCtx::create);
            let out = decompress_with(&mut ctx, input, cap);
            if let Some(slot) = slot.as_mut() {
                if ctx.sizeof() <= MAX_CACHED_DCTX {
                    **slot = Some(ctx);
                }
            }
            out
        })
    }

    fn decompress_with(
        ctx: &mut DCtx<'static>,
        input: &[u8],
        cap: usize,
    ) -> Result<Vec<u8>, DecodeErrorKind> {
        let err = |e: std::io::Error| DecodeErrorKind::Compression(format!("zstd: {e}"));
        // One frame that declares its size (as one-shot compressors write
        // it): decoded into a buffer of exactly that size, with no window
        // allocated and no slack for the records to keep alive.
        let whole_frame = zstd::zstd_safe::find_frame_compressed_size(input) == Ok(input.len());
        if let (true, Ok(Some(size))) =
            (whole_frame, zstd::zstd_safe::get_frame_content_size(input))
        {
            let Some(size) = usize::try_from(size).ok().filter(|&n| n <= cap) else {
                return Err(DecodeErrorKind::DecompressedTooLarge { limit: cap });
            };
            // A declared size far beyond what the input could plausibly
            // hold is only believed as it is decoded (below).
            if size <= input.len().saturating_mul(PLAUSIBLE_RATIO).max(1 << 20) {
                return decompress_sized(ctx, input, size);
            }
        }
        let mut decoder = zstd::stream::read::Decoder::with_context(input, ctx);
        // A frame may declare a window (history buffer) of up to 2 GiB that
        // the decoder allocates up front. Bound it by the output cap, but
        // allow 8 MiB so frames from streaming compressors (which declare a
        // window from the level, not the content size) still decode.
        let bits = usize::BITS - cap.saturating_sub(1).leading_zeros();
        decoder.window_log_max(bits.clamp(23, 27)).map_err(err)?;
        read_bounded(decoder, cap, input.len()).map_err(|e| e.with_codec(Compression::Zstd))
    }

    /// Compression ratios up to which a frame's declared size is allocated
    /// up front.
    const PLAUSIBLE_RATIO: usize = 256;

    /// Decodes a frame declaring `size` bytes into a buffer of that size.
    fn decompress_sized(
        ctx: &mut DCtx<'static>,
        input: &[u8],
        size: usize,
    ) -> Result<Vec<u8>, DecodeErrorKind> {
        let mut out = Vec::with_capacity(size);
        match ctx.decompress(&mut out, input) {
            Ok(n) if n == size => Ok(out),
            Ok(n) => Err(DecodeErrorKind::Compression(format!(
                "zstd: the frame declares {size} bytes but holds {n}"
            ))),
            Err(code) => Err(DecodeErrorKind::Compression(format!(
                "zstd: {}",
                zstd::zstd_safe::get_error_name(code)
            ))),
        }
    }

    pub(super) fn compress(input: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        let err = |e: std::io::Error| EncodeError::Compression(format!("zstd: {e}"));
        COMPRESSOR.with(|cell| {
            let mut slot = cell.try_borrow_mut().ok();
            let mut compressor = match slot.as_mut().and_then(|s| s.take()) {
                Some(c) => c,
                None => zstd::bulk::Compressor::new(LEVEL).map_err(err)?,
            };
            let start = out.len();
            out.resize(start + zstd::zstd_safe::compress_bound(input.len()), 0);
            let dst = out.get_mut(start..).unwrap_or_default();
            // One-shot: the frame records the content size, so decoders
            // size their window to the batch.
            let result = compressor.compress_to_buffer(input, dst);
            if let Some(slot) = slot.as_mut() {
                **slot = Some(compressor);
            }
            match result {
                Ok(n) => {
                    out.truncate(start + n);
                    Ok(())
                }
                Err(e) => {
                    out.truncate(start);
                    Err(err(e))
                }
            }
        })
    }
}

#[cfg(test)]
pub(super) mod test_support {
    //! Access to codec internals for the record tests.
    #[cfg(feature = "compression-lz4")]
    pub(in crate::protocol::record) use super::lz4::{fix_header_checksum, xxh32};
}

#[cfg(all(test, feature = "compression-lz4"))]
mod lz4_fast_path_tests {
    use std::io::Write;

    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

    use super::lz4;
    use crate::protocol::error::DecodeErrorKind;
    use crate::protocol::record::Compression;

    /// Compressible but not trivially so, and spanning several 64 KiB blocks.
    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b'A' + ((i * 7 + i / 13) % 26) as u8)
            .collect()
    }

    fn frame(info: FrameInfo, input: &[u8]) -> Vec<u8> {
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(input).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn independent_blocks_with_and_without_checksums_round_trip() {
        let input = data(300_000);
        for (block_checksums, content_checksum, size) in [
            (false, false, BlockSize::Max64KB),
            (true, true, BlockSize::Max64KB),
            (false, true, BlockSize::Max256KB),
            (false, false, BlockSize::Max4MB),
        ] {
            let info = FrameInfo::new()
                .block_size(size)
                .block_mode(BlockMode::Independent)
                .block_checksums(block_checksums)
                .content_checksum(content_checksum);
            let f = frame(info, &input);
            let out = lz4::decompress(&f, 1 << 20, 2).unwrap();
            assert!(
                out == input,
                "{block_checksums} {content_checksum} {size:?}"
            );
        }
    }

    /// The writer's frames, read back by lz4_flex's standard streaming
    /// decoder (not this module's fast path): empty, one byte, block
    /// boundaries, and incompressible blocks, which are stored raw.
    #[test]
    fn written_frames_are_standard() {
        let mut next = crate::protocol::record::xorshift(0x9E37_79B9);
        let noise: Vec<u8> = (0..200_000).map(|_| next() as u8).collect();
        let compressible = data(300_000);
        for input in [
            &compressible[..0],
            &compressible[..1],
            &compressible[..65_536],
            &compressible[..65_537],
            &compressible[..],
            &noise[..],
        ] {
            let mut out = bytes::BytesMut::new();
            super::compress(Compression::Lz4, input, &mut out).unwrap();
            let mut back = Vec::new();
            std::io::Read::read_to_end(
                &mut lz4_flex::frame::FrameDecoder::new(&out[..]),
                &mut back,
            )
            .unwrap();
            assert!(back == input, "{} bytes", input.len());
            assert_eq!(lz4::decompress(&out, 1 << 20, 2).unwrap(), input);
            if input.len() == noise.len() {
                // Raw blocks: frame overhead only, no expansion.
                assert!(out.len() <= input.len() + 7 + 4 * 4 + 4, "{}", out.len());
            } else if input.len() > 1000 {
                assert!(
                    out.len() < input.len() / 2,
                    "{} of {}",
                    out.len(),
                    input.len()
                );
            }
        }
    }

    #[test]
    fn linked_blocks_still_decode_through_the_streaming_decoder() {
        let input = data(200_000);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Linked);
        let out = lz4::decompress(&frame(info, &input), 1 << 20, 2).unwrap();
        assert!(out == input);
    }

    #[test]
    fn output_beyond_the_cap_is_refused() {
        let input = data(300_000);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent);
        let f = frame(info, &input);
        for cap in [0, 1000, 299_999] {
            match lz4::decompress(&f, cap, 2) {
                Err(DecodeErrorKind::DecompressedTooLarge { limit }) => assert_eq!(limit, cap),
                other => panic!("cap {cap}: {other:?}"),
            }
        }
        assert_eq!(lz4::decompress(&f, 300_000, 2).unwrap().len(), 300_000);
    }

    #[test]
    fn truncated_or_corrupt_frames_fail() {
        let input = data(100_000);
        let info = FrameInfo::new().block_mode(BlockMode::Independent);
        let f = frame(info, &input);
        // Inside the header, inside the first block.
        for cut in [5, 21] {
            assert!(
                lz4::decompress(&f[..cut], 1 << 20, 2).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = f.clone();
        // A literal length run past the block: the block decoder must refuse.
        if let Some(b) = bad.get_mut(11) {
            *b = 0xFF;
        }
        assert!(lz4::decompress(&bad, 1 << 20, 2).map_or(true, |o| o != input));
    }
}
