#![doc = include_str!("../README.md")]
//!
//! # Layers
//!
//! The crate is layered; each layer depends only on the ones above it:
//!
//! - [`protocol`]: sans-IO wire format — primitives, frames, headers, record
//!   batches and compression, every versioned request and response, error
//!   codes. No I/O, no tokio.
//! - [`connection`]: one broker connection — a sans-IO core (framing,
//!   correlation ids) driven by a small tokio task; TCP, TLS and SOCKS5
//!   transports; SASL; API version negotiation.
//! - [`cluster`]: bootstrap, the metadata cache, connections by role
//!   (short requests, produce, fetch, coordinators), retry backoff.
//! - [`client`]: the API users call — [`Client`](client::Client), topic
//!   administration, the producer (idempotent, transactional), the
//!   consumer, consumer groups, settings by Java/librdkafka property names.
//! - [`error`] and [`record`]: the error type and the records of the
//!   client API.
//!
//! `docs/design.md` in the repository follows a record through the layers.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod record;
