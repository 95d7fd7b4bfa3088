//! What was fetched and waits for the application, and the prefetch
//! budget's accounting.

use std::{collections::VecDeque, sync::Arc};

use super::ConsumedRecord;
use crate::error::Error;

/// Something for the application, in arrival order.
pub(super) enum Ready {
    /// Records of one partition.
    Chunk(ReadyChunk),
    /// A failure concerning one partition (or the whole consumer).
    Error(Error),
}

/// Fetched records of one partition waiting for the application.
pub(super) struct ReadyChunk {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// The partition's generation when fetched; stale chunks are dropped.
    pub(super) generation: u64,
    pub(super) records: Vec<ConsumedRecord>,
    /// The partition's position once this chunk is handed out.
    pub(super) next_offset: i64,
    /// Leader epoch of the chunk's last batch.
    pub(super) last_epoch: Option<i32>,
    /// Bytes accounted to the prefetch buffer.
    pub(super) bytes: usize,
}

/// The queue of items for the application and the bytes they hold.
#[derive(Default)]
pub(super) struct Prefetched {
    pub(super) ready: VecDeque<Ready>,
    /// Bytes of chunks fetched and not yet released by the application.
    pub(super) buffered: usize,
    /// Bytes promised to in-flight fetches.
    pub(super) reserved: usize,
    /// Largest `buffered` seen.
    pub(super) peak: usize,
}

impl Prefetched {
    /// Bytes the budget `max_buffered` still has room for.
    pub(super) fn available(&self, max_buffered: usize) -> usize {
        max_buffered.saturating_sub(self.buffered.saturating_add(self.reserved))
    }

    /// Returns bytes to the prefetch budget.
    pub(super) fn release(&mut self, bytes: usize) {
        self.buffered = self.buffered.saturating_sub(bytes);
    }

    /// Queues a chunk for the application.
    pub(super) fn push_chunk(&mut self, chunk: ReadyChunk) {
        self.buffered += chunk.bytes;
        self.peak = self.peak.max(self.buffered);
        self.ready.push_back(Ready::Chunk(chunk));
    }

    /// Queues an error for the application.
    pub(super) fn push_error(&mut self, error: Error) {
        self.ready.push_back(Ready::Error(error));
    }

    /// Drops the partition's chunks waiting for the application.
    pub(super) fn clear(&mut self, topic: &str, partition: i32) {
        let mut freed = 0;
        self.ready.retain(|r| match r {
            Ready::Chunk(c) if &*c.topic == topic && c.partition == partition => {
                freed += c.bytes;
                false
            }
            _ => true,
        });
        self.release(freed);
    }
}
