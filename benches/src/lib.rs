//! Benchmarks of the vswitch switch core; see `benches/switch.rs`.
//!
//! Run with `cargo bench -p vswitch-benches`.
