//! Hardening and round-trip tests for record batches.
