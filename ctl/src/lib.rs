//! The client side of vswitch: `vswitchctl` (the admin CLI) and `vswitch-cni` (the CNI
//! plugin) share the HTTP client, the error mapping and the output formatting here. Both talk
//! HTTP/1.1 + JSON to vswitchd over its Unix socket (routes and types: `vswitch::api`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod cni;
pub mod error;
pub mod output;
pub mod topology;
