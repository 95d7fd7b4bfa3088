//! Generates `src/protocol/messages/` from Kafka's JSON message definitions.
fn main() {}
