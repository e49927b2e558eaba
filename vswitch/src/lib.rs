//! vswitch: a userspace virtual switch for containers.
//!
//! Layers, from the bottom:
//! - [`types`], [`fdb`], [`switch`], [`gateway`]: the I/O-free switch core. They take time and
//!   frame bytes as arguments and return decisions or bytes; no sockets, no clock, no tokio.
//! - [`api`]: the control API types (serde), shared with `vswitchctl`.
//! - `sys` (feature `daemon`): the only module with `unsafe`: TAP ioctls, netns, netlink.
//! - `datapath`, `control` (feature `daemon`): the I/O that drives the cores.
#![cfg_attr(not(feature = "daemon"), forbid(unsafe_code))]

pub mod announce;
pub mod api;
pub mod fdb;
pub mod gateway;
pub mod impair;
pub mod switch;
pub mod trace;
pub mod types;

#[cfg(feature = "daemon")]
pub mod control;
#[cfg(feature = "daemon")]
pub mod datapath;
#[cfg(feature = "daemon")]
pub mod dhcp;
#[cfg(feature = "state")]
pub mod state;
#[cfg(feature = "daemon")]
pub mod sys;

pub use types::{Mac, NetworkId, PortId};
