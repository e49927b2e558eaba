//! ipam: an I/O-free IP address manager for vswitch networks.
//!
//! * [`Pool`] / [`Pool6`]: the IPv4 / IPv6 addresses of one network's subnet. A pool hands out
//!   host addresses: never the network address, the IPv4 broadcast address, the gateway or an
//!   auxiliary address. Allocation is serial: it continues after the last address handed out, so
//!   a freed address is not reused at once (a restarted container's peers may still cache the
//!   old MAC for it). An allocation range (`ip_range`) narrows what [`Pool::allocate`] hands out
//!   while [`Pool::reserve`] still takes any assignable address of the subnet. Addresses may be
//!   leased to an owner ([`Pool::allocate_for`]) so that leases of owners that are gone can be
//!   collected ([`Pool::gc`]).
//! * [`SubnetPools`]: address pools (like Docker's `default-address-pools`) that subnets for new
//!   networks are carved from, skipping subnets other networks use and subnets the host routes.
//! * Snapshots: pools serialize (serde) as a [`PoolSnapshot`] / [`Pool6Snapshot`] that keeps the
//!   leases and the serial cursor; deserializing checks everything ([`Pool::restore`]).
//!
//! Nothing here reads a clock or touches the system: facts about the host (its routes) come in
//! as arguments.
#![forbid(unsafe_code)]

mod hosts;
mod pool;
mod subnets;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

pub use pool::{Lease, Pool, Pool6, Pool6Options, Pool6Snapshot, PoolOptions, PoolSnapshot};
pub use subnets::{AddressPool, SubnetPools};

/// Why an allocation or a reservation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{addr} is outside subnet {subnet}")]
    OutOfRange { addr: IpAddr, subnet: IpNet },
    /// `what`: "network", "broadcast", "subnet-router", "gateway" or "auxiliary".
    #[error("{addr} is the {what} address of {subnet} and cannot be assigned")]
    Reserved { addr: IpAddr, what: &'static str, subnet: IpNet },
    #[error("{addr} is already in use")]
    Taken { addr: IpAddr },
    /// With an allocation range, `subnet` is that range and `used` counts its addresses in use.
    #[error("subnet {subnet} has no free address left ({used} in use)")]
    Exhausted { subnet: IpNet, used: u64 },
    #[error("subnet {subnet} is too small: it needs room for a gateway and at least one host (IPv4 /30, IPv6 /120 or larger)")]
    TooSmall { subnet: IpNet },
    #[error("gateway {gateway} is not a host address of {subnet}")]
    BadGateway { gateway: IpAddr, subnet: IpNet },
}

/// Why a pool, its options, a snapshot or a choice of subnet is unusable. (Apart from
/// [`IpamError`], which callers match exhaustively, so that it keeps its variants.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The subnet or gateway of a pool built with options.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("IP range {range} cannot be used in subnet {subnet}: {reason}")]
    BadRange { range: IpNet, subnet: IpNet, reason: String },
    #[error("auxiliary address {addr} cannot be used in subnet {subnet}: {reason}")]
    BadAux { addr: IpAddr, subnet: IpNet, reason: String },
    #[error("address pool {base} split into /{size} subnets is invalid: {reason}")]
    BadAddressPool { base: IpNet, size: u8, reason: String },
    /// `pools`: the pools of that family, or "none configured".
    #[error("no free {family} subnet left in the address pools ({pools}): other networks and host routes cover them all")]
    PoolExhausted { family: &'static str, pools: String },
    /// `what`: "network" (a subnet in use) or "host route".
    #[error("subnet {subnet} overlaps {what} {other}")]
    SubnetOverlap { subnet: IpNet, other: IpNet, what: &'static str },
    #[error("invalid snapshot of pool {subnet}: {reason}")]
    BadSnapshot { subnet: IpNet, reason: String },
    /// A subnet no network can live in: `what` names the special range it overlaps.
    #[error("subnet {subnet} overlaps the {what} range {range}; choose a unicast subnet")]
    UnusableSubnet { subnet: IpNet, what: &'static str, range: IpNet },
}

/// Special ranges no network's subnet may overlap: hosts treat these addresses specially (or
/// not at all), so an endpoint there could not be wired.
const UNUSABLE: [(&str, &str); 10] = [
    ("0.0.0.0/8", "\"this network\""),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("::/127", "unspecified and loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("fec0::/10", "deprecated site-local"),
];

/// Why `subnet` cannot be a network's subnet, if it cannot.
///
/// # Errors
/// [`SetupError::UnusableSubnet`] naming the special range it overlaps.
pub fn check_usable(subnet: IpNet) -> Result<(), SetupError> {
    for (range, what) in UNUSABLE {
        let range: IpNet = range.parse().expect("a valid CIDR");
        if range.contains(&subnet.network()) || subnet.contains(&range.network()) {
            return Err(SetupError::UnusableSubnet { subnet, what, range });
        }
    }
    Ok(())
}

/// An address as a number (IPv4 addresses are below 2^32).
fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

fn addr_of(v6: bool, n: u128) -> IpAddr {
    if v6 {
        Ipv6Addr::from(n).into()
    } else {
        Ipv4Addr::from(n as u32).into()
    }
}

/// The first and last address of a network, as numbers (host bits ignored).
fn span(net: IpNet) -> (u128, u128) {
    (num(net.network()), num(net.broadcast()))
}

/// Whether two networks share an address (never across families).
fn overlaps(a: IpNet, b: IpNet) -> bool {
    let ((a0, a1), (b0, b1)) = (span(a), span(b));
    a.network().is_ipv6() == b.network().is_ipv6() && a0 <= b1 && b0 <= a1
}
