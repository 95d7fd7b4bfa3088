#![doc = include_str!("../README.md")]
//!
//! # Layers
//!
//! The crate is layered; each layer depends only on the ones above it:
//!
//! - [`protocol`]: sans-IO wire format — primitives, frames, headers, record
//!   batches and compression, every versioned request and response, error
//!   codes. No I/O, no tokio.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod record;
