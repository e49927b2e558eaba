//! The control plane, in three layers (like `quinn-proto` under `quinn`):
//!
//! - [`model`]: networks, endpoints, leases, peers, remote names and port ids, I/O-free and
//!   synchronous. Every change validates first and returns what must happen, so a refused
//!   request changes nothing.
//! - [`ops`]: one file per resource; each operation asks the model, then applies its decision
//!   through the effects (namespace thread, datapath jobs, state file) and undoes it on failure.
//! - [`front`]: front ends that only translate requests into operations (the HTTP API).
//!
//! Beside them: [`forwarder`], the DNS forwarder task the datapath hands queries to.

pub mod forwarder;
pub mod front;
pub mod model;
pub mod ops;

pub use model::{b64, overlay_tag, OVERLAY_HEADROOM};
pub use ops::{load_or_make_key, random_bytes, Control, Options};
