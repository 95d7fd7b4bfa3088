//! read_committed filtering of aborted transactions, without I/O.
//!
//! Under read_committed the broker returns data only up to the last stable
//! offset, but that data still contains the batches of aborted transactions;
//! the client drops them. The fetch response lists, per partition, the
//! aborted transactions that overlap the returned range as
//! (producer id, first offset). Walking the batches in offset order, a
//! producer becomes "aborting" once a batch reaches that first offset, its
//! transactional batches are dropped while it is, and its ABORT marker (a
//! control batch) ends it. This is the algorithm of the Java consumer.

use std::collections::HashSet;

use crate::protocol::record::{ControlRecordKind, RecordBatch};

/// What the filter needs to know about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    /// The batch's producer id; negative when it has none.
    pub producer_id: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
    /// Whether the batch belongs to a transaction.
    pub is_transactional: bool,
    /// Whether the batch is a control batch (a transaction marker).
    pub is_control: bool,
    /// Whether it is a control batch holding an ABORT marker.
    pub is_abort_marker: bool,
}

impl BatchMeta {
    /// What the filter needs of a decoded batch.
    pub(crate) fn of(batch: &RecordBatch) -> Self {
        let is_abort_marker = matches!(
            batch.control_record(),
            Some(Ok(c)) if c.kind == ControlRecordKind::Abort
        );
        Self {
            producer_id: batch.producer_id,
            last_offset: batch.last_offset(),
            is_transactional: batch.is_transactional,
            is_control: batch.is_control,
            is_abort_marker,
        }
    }
}

/// Drops the batches of aborted transactions from one partition's data.
#[derive(Debug)]
pub(crate) struct AbortedFilter {
    /// (first offset, producer id), ascending by first offset.
    pending: Vec<(i64, i64)>,
    /// Index of the next entry of `pending` not yet reached.
    next: usize,
    /// Producers whose aborted transaction is in progress at this point.
    aborting: HashSet<i64>,
}

impl AbortedFilter {
    /// A filter for one partition's data, from the response's
    /// `(producer id, first offset)` list.
    pub fn new(aborted: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut pending: Vec<(i64, i64)> = aborted
            .into_iter()
            .map(|(producer_id, first_offset)| (first_offset, producer_id))
            .collect();
        pending.sort_unstable();
        Self {
            pending,
            next: 0,
            aborting: HashSet::new(),
        }
    }

    /// Whether the records of `batch` are to be delivered. Batches must be
    /// presented in offset order. Control batches are never delivered.
    pub fn keep(&mut self, batch: &BatchMeta) -> bool {
        if batch.producer_id >= 0 {
            // Every aborted transaction starting at or before this batch is
            // in progress from here on (until its marker).
            while let Some(&(first_offset, producer_id)) = self.pending.get(self.next) {
                if first_offset > batch.last_offset {
                    break;
                }
                self.aborting.insert(producer_id);
                self.next += 1;
            }
            if batch.is_abort_marker {
                self.aborting.remove(&batch.producer_id);
                return false;
            }
            if batch.is_transactional && self.aborting.contains(&batch.producer_id) {
                return false;
            }
        }
        !batch.is_control
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(producer_id: i64, last_offset: i64, transactional: bool) -> BatchMeta {
        BatchMeta {
            producer_id,
            last_offset,
            is_transactional: transactional,
            is_control: false,
            is_abort_marker: false,
        }
    }

    fn marker(producer_id: i64, offset: i64, abort: bool) -> BatchMeta {
        BatchMeta {
            producer_id,
            last_offset: offset,
            is_transactional: true,
            is_control: true,
            is_abort_marker: abort,
        }
    }

    #[test]
    fn nothing_aborted_keeps_data_and_drops_markers() {
        let mut f = AbortedFilter::new([]);
        assert!(f.keep(&data(-1, 4, false)));
        assert!(f.keep(&data(7, 9, true)));
        assert!(!f.keep(&marker(7, 10, false)));
        assert!(f.keep(&data(7, 12, true)));
    }

    #[test]
    fn aborted_transaction_is_dropped_until_its_marker() {
        // Producer 7: offsets 0-4 aborted (marker at 5), then 6-8 committed
        // (marker at 9). Producer 8 interleaves committed data at 3 and 7.
        let mut f = AbortedFilter::new([(7, 0)]);
        assert!(!f.keep(&data(7, 2, true)));
        assert!(f.keep(&data(8, 3, true)));
        assert!(!f.keep(&data(7, 4, true)));
        assert!(!f.keep(&marker(7, 5, true)));
        assert!(f.keep(&data(7, 6, true)));
        assert!(f.keep(&data(8, 7, true)));
        assert!(f.keep(&data(7, 8, true)));
        assert!(!f.keep(&marker(7, 9, false)));
    }

    #[test]
    fn abort_only_applies_from_its_first_offset() {
        // Producer 7 committed 0-1 (marker 2), then aborted from 3.
        let mut f = AbortedFilter::new([(7, 3)]);
        assert!(f.keep(&data(7, 1, true)));
        assert!(!f.keep(&marker(7, 2, false)));
        assert!(!f.keep(&data(7, 4, true)));
        assert!(!f.keep(&marker(7, 5, true)));
    }

    #[test]
    fn non_transactional_batches_of_an_aborting_producer_are_kept() {
        // Java checks `isTransactional`: an idempotent, non-transactional
        // batch that shares the producer id is not part of the abort.
        let mut f = AbortedFilter::new([(7, 0)]);
        assert!(!f.keep(&data(7, 1, true)));
        assert!(f.keep(&data(7, 2, false)));
    }

    #[test]
    fn several_aborted_transactions_out_of_order_in_the_list() {
        let mut f = AbortedFilter::new([(9, 10), (7, 0), (7, 20)]);
        assert!(!f.keep(&data(7, 1, true)));
        assert!(!f.keep(&marker(7, 2, true)));
        assert!(f.keep(&data(7, 5, true)));
        assert!(!f.keep(&marker(7, 6, false)));
        assert!(!f.keep(&data(9, 11, true)));
        assert!(!f.keep(&marker(9, 12, true)));
        assert!(f.keep(&data(9, 15, true)));
        assert!(!f.keep(&data(7, 21, true)));
        assert!(!f.keep(&marker(7, 22, true)));
        assert!(f.keep(&data(7, 23, true)));
    }

    #[test]
    fn a_batch_spanning_the_first_offset_is_aborted() {
        // The list may name an offset inside a batch the client fetched
        // from the middle (first offset 5, batch 3..=6).
        let mut f = AbortedFilter::new([(7, 5)]);
        assert!(!f.keep(&data(7, 6, true)));
    }

    #[test]
    fn only_control_batches_yield_nothing() {
        let mut f = AbortedFilter::new([(7, 0)]);
        assert!(!f.keep(&marker(7, 0, true)));
        assert!(!f.keep(&marker(8, 1, false)));
    }
}
