//! kprf: an HTTP producer proxy for Kafka on rskafka. See the README.

pub mod backend;
pub mod config;
pub mod kafka;
pub mod metrics;
pub mod ratelimit;
pub mod server;
pub mod wal;

pub use backend::{Backend, NullBackend, OutRecord};
pub use config::Config;
pub use server::{run, Shutdown};
