//! The fetch-sizing policy: how many bytes each partition's fetch asks for,
//! how much of the prefetch budget one broker's fetch reserves, and how
//! much its data may decompress to. Pure arithmetic, no state.

/// A partition's fetched data is decompressed up to this many bytes per
/// fetch, or its fetch size if larger (less when the buffer has less room):
/// highly compressed data would otherwise inflate one fetch to many times
/// the prefetch budget. Batches beyond it are fetched again later. Also
/// the memory a partition's fetch is sized to decode to (see
/// [`next_fetch_bytes`]).
pub(super) const DECODE_AHEAD_BYTES: usize = 4 << 20;
/// Floor of a partition's fetch size when its data inflates a lot, so that
/// a fetch still carries a useful amount.
const MIN_FETCH_BYTES: usize = 64 << 10;
/// A partition's fetch size until it is known how much its data inflates
/// when decoded (or its limit, if lower): large enough for plain records,
/// small enough that compressed data fetched before that is known is not
/// mostly dropped at the decompression budget. Later fetches exceed it
/// only if fewer than [`RECORDS_AHEAD`] records would fill them.
const FIRST_FETCH_BYTES: usize = 1 << 20;
/// Records a fetch larger than [`FIRST_FETCH_BYTES`] may carry: handing a
/// chunk out walks every record's struct, and that many stay in cache (2
/// MiB fetches of 100 B records took 9% more CPU than 1 MiB ones).
const RECORDS_AHEAD: usize = 10_000;

/// What a partition's next fetch asks for: `fetch_bytes` (from
/// [`next_fetch_bytes`]; 0 before anything was learnt, then the first
/// fetch's size) within the limit `max_part`.
pub(super) fn planned_fetch_bytes(fetch_bytes: i32, max_part: usize) -> i32 {
    let max_part = i32::try_from(max_part).unwrap_or(i32::MAX);
    match fetch_bytes {
        n if n > 0 => n.min(max_part),
        _ => max_part.min(FIRST_FETCH_BYTES as i32),
    }
}

/// The fetch size for a partition whose last data took `wire_used` bytes,
/// decoded to `mem_bytes` of memory and held `records` records: what
/// decodes to about [`DECODE_AHEAD_BYTES`] at the ratio just seen, past
/// [`FIRST_FETCH_BYTES`] only for large records (see [`RECORDS_AHEAD`]),
/// within `max_partition_bytes`; 0 (the first fetch's size) if nothing was
/// learnt. Large plain records are fetched in large pieces (fewer round
/// trips and wakeups per record: 4 MiB instead of 1 MiB took 13% less CPU
/// consuming 10 KiB records); small or compressed ones in smaller pieces,
/// so a chunk's records stay few enough to be handed out while still in
/// cache and compressed data is not fetched only to be dropped at the
/// decompression budget.
pub(super) fn next_fetch_bytes(
    max_partition_bytes: i32,
    wire_used: usize,
    mem_bytes: usize,
    records: usize,
) -> i32 {
    if wire_used == 0 || mem_bytes == 0 {
        return 0;
    }
    // In u128: the products cannot overflow.
    let wire = wire_used as u128;
    let by_memory = DECODE_AHEAD_BYTES as u128 * wire / mem_bytes as u128;
    let by_records =
        (RECORDS_AHEAD as u128 * wire / records.max(1) as u128).max(FIRST_FETCH_BYTES as u128);
    let bytes = by_memory.min(by_records).max(MIN_FETCH_BYTES as u128);
    i32::try_from(bytes)
        .unwrap_or(i32::MAX)
        .min(max_partition_bytes)
}

/// How one broker's fetch uses the prefetch budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FetchBudget {
    /// Bytes reserved while the fetch is in flight; also the request's
    /// `MaxBytes`.
    pub(super) reserved: usize,
    /// Bytes each partition's data may decompress to.
    pub(super) decode_budget: usize,
    /// Upper bound of each partition's `PartitionMaxBytes`.
    pub(super) partition_cap: i32,
}

/// Sizes one broker's fetch of partitions asking for `asks` bytes each
/// (from [`planned_fetch_bytes`]), with `available` bytes of the prefetch
/// budget free; `None` while it must wait for the application to make room
/// for at least the largest partition's fetch, so that answers fit what
/// was reserved.
pub(super) fn size_fetch(
    available: usize,
    max_bytes: i32,
    max_partition_bytes: i32,
    asks: &[i32],
) -> Option<FetchBudget> {
    let (planned, largest) = asks
        .iter()
        .map(|ask| usize::try_from(*ask).unwrap_or(0))
        .fold((0usize, 1usize), |(sum, largest), ask| {
            (sum.saturating_add(ask), largest.max(ask))
        });
    if available < largest {
        return None;
    }
    let reserved = available
        .min(usize::try_from(max_bytes).unwrap_or(0))
        .min(planned);
    Some(FetchBudget {
        reserved,
        // Half the room, as decoded records take about as much memory
        // again as their bytes; never below the largest fetch.
        decode_budget: (available / 2 / asks.len().max(1))
            .min(DECODE_AHEAD_BYTES)
            .max(largest),
        partition_cap: i32::try_from(reserved)
            .unwrap_or(i32::MAX)
            .min(max_partition_bytes),
    })
}

/// A partition's `PartitionMaxBytes` in a fetch: what it asked for, within
/// the fetch's cap.
pub(super) fn capped_partition_bytes(asked: i32, budget: &FetchBudget) -> i32 {
    match asked {
        n if n > 0 => n.min(budget.partition_cap),
        _ => budget.partition_cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_PART: i32 = 4 << 20;

    #[test]
    fn inflating_data_is_fetched_in_smaller_pieces() {
        let max_part = usize::try_from(MAX_PART).unwrap();
        let fetch = |wire, mem, records| next_fetch_bytes(MAX_PART, wire, mem, records) as usize;
        // Large plain records: the target, within the configured limit.
        let n = fetch(100_000, 101_000, 10);
        assert_eq!(n, DECODE_AHEAD_BYTES * 100 / 101);
        assert!(n <= max_part);
        assert_eq!(next_fetch_bytes(1 << 20, 100_000, 101_000, 10), 1 << 20);
        // Small plain records: no more than the first fetch's size, or
        // RECORDS_AHEAD of them if those take more.
        assert_eq!(fetch(100_000, 200_000, 1_000), FIRST_FETCH_BYTES);
        assert_eq!(
            fetch(300_000, 400_000, 1_000),
            RECORDS_AHEAD * 300 // 300 B each: 3 MB, under the memory target
        );
        // Nothing learnt: 0, the first fetch's size.
        assert_eq!(fetch(0, 0, 0), 0);
        assert_eq!(planned_fetch_bytes(0, max_part), FIRST_FETCH_BYTES as i32);
        assert_eq!(planned_fetch_bytes(0, 512 << 10), 512 << 10);
        assert_eq!(planned_fetch_bytes(3 << 20, max_part), 3 << 20);
        assert_eq!(planned_fetch_bytes(8 << 20, 2 << 20), 2 << 20);
        // Every record filtered out (control records, aborted ones): the
        // memory target alone.
        assert_eq!(fetch(100_000, 101_000, 0), n);
        // Ten times inflation: a tenth of the target.
        assert_eq!(fetch(100_000, 1_000_000, 10), DECODE_AHEAD_BYTES / 10);
        // Never below the floor.
        assert_eq!(fetch(1, 1 << 40, 1), MIN_FETCH_BYTES);
    }

    #[test]
    fn a_fetch_waits_for_room_for_its_largest_partition_and_reserves_what_it_asks() {
        // Not enough room for the 1 MiB partition.
        assert_eq!(
            size_fetch(512 << 10, 50 << 20, MAX_PART, &[1 << 20, 1000]),
            None
        );
        let budget = size_fetch(64 << 20, 50 << 20, MAX_PART, &[1 << 20, 1000]).unwrap();
        assert_eq!(budget.reserved, (1 << 20) + 1000);
        assert_eq!(budget.decode_budget, DECODE_AHEAD_BYTES);
        assert_eq!(budget.partition_cap, (1 << 20) + 1000);
        assert_eq!(capped_partition_bytes(1000, &budget), 1000);
        assert_eq!(capped_partition_bytes(0, &budget), (1 << 20) + 1000);
        // The request limit caps the reservation and with it each partition.
        let budget = size_fetch(64 << 20, 1 << 20, MAX_PART, &[1 << 20, 1 << 20]).unwrap();
        assert_eq!(budget.reserved, 1 << 20);
        assert_eq!(capped_partition_bytes(2 << 20, &budget), 1 << 20);
        // Little room: the decode budget shrinks, never below the largest ask.
        let budget = size_fetch(2 << 20, 50 << 20, MAX_PART, &[1 << 20, 1 << 20]).unwrap();
        assert_eq!(budget.reserved, 2 << 20);
        assert_eq!(budget.decode_budget, 1 << 20);
    }
}
