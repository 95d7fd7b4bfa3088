//! What the HTTP server produces through: a [`Backend`]. kprf's own is
//! [`crate::kafka::KafkaBackend`] (rskafka); [`NullBackend`] accepts every
//! record without producing (the HTTP ceiling of the benchmark), and the
//! bench harness plugs in librdkafka.

use std::future::Future;

use bytes::Bytes;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition, or `None` for the producer's partitioner.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Bytes>,
    /// The value (the UTF-8 bytes of the pushed `data`).
    pub value: Bytes,
    /// Headers in request order.
    pub headers: Vec<(String, Bytes)>,
}

/// A producer the server sends through.
pub trait Backend: Send + Sync + 'static {
    /// The delivery of one accepted record: `Err` carries the message shown
    /// to the HTTP client.
    type Delivery: Future<Output = Result<(), String>> + Send + Unpin + 'static;

    /// The partition count of `topic`, `None` if the cluster does not know
    /// it. The server caches the answer.
    fn partitions(&self, topic: &str) -> impl Future<Output = Result<Option<i32>, String>> + Send;

    /// Buffers `record`; `Err` if the producer cannot even accept it.
    fn send(
        &self,
        record: OutRecord<'_>,
    ) -> impl Future<Output = Result<Self::Delivery, String>> + Send;

    /// Delivers what is buffered and stops the producer.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Appends the client's own figures to `out` (OpenMetrics text).
    fn encode_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

/// Accepts every record at once without producing: the HTTP ceiling.
#[derive(Debug, Default, Clone)]
pub struct NullBackend;

impl Backend for NullBackend {
    type Delivery = std::future::Ready<Result<(), String>>;

    async fn partitions(&self, _topic: &str) -> Result<Option<i32>, String> {
        Ok(Some(i32::MAX))
    }

    async fn send(&self, _record: OutRecord<'_>) -> Result<Self::Delivery, String> {
        Ok(std::future::ready(Ok(())))
    }

    async fn close(&self) {}
}
