//! The only module with `unsafe`: TAP ioctls, network namespaces and rtnetlink.
//!
//! - [`netns`]: [`NetnsWorker`], the dedicated thread that enters container network
//!   namespaces and creates + configures TAP interfaces there ([`NetnsWorker::attach`]).
//! - [`tap`]: `/dev/net/tun` (TUNSETIFF, vnet header, offloads, persistence).
//! - [`netlink`]: synchronous rtnetlink requests (link, address, route).
//! - `ffi`: `struct ifreq` layouts and the raw syscall wrappers; every `unsafe` block is there.

mod ffi;
pub mod netlink;
pub mod netns;
pub mod tap;

#[cfg(test)]
mod tests;

pub use netns::{current_netns_id, AttachSpec, Attached, NetnsRef, NetnsWorker, SysError};
pub use tap::{set_persist, Offloads, VNET_HDR_LEN};
