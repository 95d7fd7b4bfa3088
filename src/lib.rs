#![doc = include_str!("../README.md")]
//!
//! # Layers
//!
//! The crate is layered; each layer depends only on the ones above it:
//!
//! - `protocol`: sans-IO wire format — primitives, frames, headers, record
//!   batches and compression, every versioned request and response, error
//!   codes. No I/O, no tokio.
//! - `connection`: one broker connection — a sans-IO core (framing,
//!   correlation ids) driven by a small tokio task; TCP, TLS and SOCKS5
//!   transports; SASL; API version negotiation.
//! - `cluster`: bootstrap, the metadata cache, connections by role
//!   (short requests, produce, fetch, coordinators), retry backoff.
//! - [`client`]: the API users call — [`Client`](client::Client), topic
//!   administration, the admin client, the producer (idempotent,
//!   transactional), the consumer, consumer groups, settings by
//!   Java/librdkafka property names, transports and SASL
//!   ([`client::security`]).
//! - [`error`] and [`record`]: the error type and the records of the
//!   client API; [`ErrorCode`] and [`ApiKey`] name Kafka's error codes and
//!   APIs.
//!
//! `client`, `error`, `record` and the items at the crate root are the
//! stable API. The three layers below `client` are public only with the
//! `unstable` feature, for tools that speak the protocol themselves (the
//! repository's fake cluster and fuzz targets); they may change in any
//! release.
//!
//! `docs/design.md` in the repository follows a record through the layers.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

/// Declares a module that is public only with the `unstable` feature (a
/// layer below `client`, or the sans-IO machinery inside it): its API may
/// change in any release, and without the feature the compiler sees what
/// the client leaves unused in it (codecs for APIs the client never calls,
/// re-exports for the unstable API), hence the allowances.
macro_rules! unstable_mod {
    ($name:ident) => {
        #[cfg(feature = "unstable")]
        #[cfg_attr(docsrs, doc(cfg(feature = "unstable")))]
        pub mod $name;
        #[cfg(not(feature = "unstable"))]
        #[allow(dead_code, unused_imports)]
        mod $name;
    };
}
pub mod client;
pub mod error;
pub mod record;

unstable_mod!(protocol);
unstable_mod!(connection);
unstable_mod!(cluster);

pub use protocol::{ApiKey, ErrorCode};
