//! [`Pool`] (IPv4) and [`Pool6`] (IPv6): typed faces of the family-neutral [`Hosts`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hosts::{sat, Hosts};
use crate::{IpamError, SetupError};

/// Per-network options of a [`Pool`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolOptions {
    /// Hand out addresses only from this part of the subnet (Docker's `--ip-range`); a static
    /// address anywhere in the subnet can still be reserved. Host bits are cleared.
    #[serde(default)]
    pub range: Option<Ipv4Net>,
    /// Addresses never handed out nor reservable (Docker's `--aux-address`): a router, a DHCP
    /// server, anything else on the segment. Duplicates are ignored.
    #[serde(default)]
    pub aux: Vec<Ipv4Addr>,
}

/// Per-network options of a [`Pool6`]: see [`PoolOptions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool6Options {
    #[serde(default)]
    pub range: Option<Ipv6Net>,
    #[serde(default)]
    pub aux: Vec<Ipv6Addr>,
}

/// An address in use in a snapshot, with its owner when it is leased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease<A> {
    pub addr: A,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Everything a [`Pool`] is, as plain data: what it serializes as. [`Pool::restore`] (and
/// deserializing a [`Pool`]) checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSnapshot {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux: Vec<Ipv4Addr>,
    /// Where the next serial allocation starts looking.
    pub cursor: Ipv4Addr,
    /// The addresses in use, in address order.
    pub used: Vec<Lease<Ipv4Addr>>,
}

/// Everything a [`Pool6`] is, as plain data: see [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool6Snapshot {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux: Vec<Ipv6Addr>,
    pub cursor: Ipv6Addr,
    pub used: Vec<Lease<Ipv6Addr>>,
}

/// The IPv4 addresses of one subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    hosts: Hosts,
}

/// The IPv6 addresses of one subnet (a /64 is usual; /120 is the smallest accepted). The
/// subnet-router anycast address (host part 0) is never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool6 {
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    hosts: Hosts,
}

fn a4(n: u128) -> Ipv4Addr {
    Ipv4Addr::from(n as u32)
}

fn n4(a: Ipv4Addr) -> u128 {
    u32::from(a).into()
}

fn net4(n: IpNet) -> Option<Ipv4Net> {
    match n {
        IpNet::V4(n) => Some(n),
        IpNet::V6(_) => None,
    }
}

fn a6(n: u128) -> Ipv6Addr {
    Ipv6Addr::from(n)
}

fn n6(a: Ipv6Addr) -> u128 {
    a.into()
}

fn net6(n: IpNet) -> Option<Ipv6Net> {
    match n {
        IpNet::V6(n) => Some(n),
        IpNet::V4(_) => None,
    }
}

impl Pool {
    /// A pool for `subnet` (host bits are cleared) whose gateway is `gateway`, or the first host.
    ///
    /// # Errors
    /// [`IpamError::TooSmall`] below a /30; [`IpamError::BadGateway`] when the gateway is not a
    /// host address of the subnet.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Pool, IpamError> {
        let hosts = Hosts::new(subnet.into(), gateway.map(IpAddr::V4))?;
        Ok(Pool { subnet: subnet.trunc(), gateway: a4(hosts.gateway()), hosts })
    }
}

impl Pool6 {
    /// A pool for `subnet` (host bits are cleared) whose gateway is `gateway`, or `::1` of the
    /// subnet.
    ///
    /// # Errors
    /// [`IpamError::TooSmall`] beyond a /120; [`IpamError::BadGateway`] outside the subnet or on
    /// the subnet-router address.
    pub fn new(subnet: Ipv6Net, gateway: Option<Ipv6Addr>) -> Result<Pool6, IpamError> {
        let hosts = Hosts::new(subnet.into(), gateway.map(IpAddr::V6))?;
        Ok(Pool6 { subnet: subnet.trunc(), gateway: a6(hosts.gateway()), hosts })
    }
}

/// The methods both pools share, for their own address types.
macro_rules! pool_methods {
    ($Pool:ident, $Addr:ty, $Net:ty, $Opts:ident, $Snap:ident, $V:ident, $a:ident, $n:ident, $net:ident) => {
        impl $Pool {
            /// A pool with an allocation range and auxiliary addresses (see the options' fields).
            ///
            /// # Errors
            /// The errors of `new` (as [`SetupError::Ipam`]); [`SetupError::BadRange`] when the
            /// range is not inside the subnet or leaves nothing to hand out;
            /// [`SetupError::BadAux`] when an auxiliary address is outside the subnet or is its
            /// network, broadcast or gateway address; [`SetupError::UnusableSubnet`] for a
            /// multicast, broadcast, loopback, link-local or 0.0.0.0/8 (or IPv6 alike) subnet.
            pub fn with_options(subnet: $Net, gateway: Option<$Addr>, options: $Opts) -> Result<$Pool, SetupError> {
                crate::check_usable(IpNet::$V(subnet.trunc()))?;
                let mut pool = $Pool::new(subnet, gateway)?;
                pool.hosts.set_options(options.range.map(IpNet::$V), options.aux.into_iter().map(IpAddr::$V), false)?;
                Ok(pool)
            }

            pub fn subnet(&self) -> $Net {
                self.subnet
            }

            pub fn gateway(&self) -> $Addr {
                self.gateway
            }

            /// The allocation range, if one was set.
            pub fn range(&self) -> Option<$Net> {
                self.hosts.range().and_then($net)
            }

            /// The auxiliary addresses, in order.
            pub fn aux(&self) -> Vec<$Addr> {
                self.hosts.aux().map($a).collect()
            }

            pub fn options(&self) -> $Opts {
                $Opts { range: self.range(), aux: self.aux() }
            }

            /// Addresses that can be assigned (network, broadcast, gateway and auxiliary
            /// addresses excluded), inside the allocation range or not; saturates at `u64::MAX`.
            pub fn capacity(&self) -> u64 {
                sat(self.hosts.capacity())
            }

            pub fn in_use(&self) -> u64 {
                sat(self.hosts.in_use())
            }

            /// `capacity() - in_use()`, saturating.
            pub fn available(&self) -> u64 {
                sat(self.hosts.available())
            }

            /// Addresses that `allocate` may hand out: those of the allocation range (the whole
            /// subnet without one) minus the gateway and auxiliary addresses; saturating.
            pub fn range_capacity(&self) -> u64 {
                sat(self.hosts.range_capacity())
            }

            /// How many more addresses `allocate` can hand out; saturating.
            pub fn range_available(&self) -> u64 {
                sat(self.hosts.range_available())
            }

            pub fn is_used(&self, addr: $Addr) -> bool {
                self.hosts.is_used($n(addr))
            }

            /// The owner of a leased address (None when it is free or in use without an owner).
            pub fn owner(&self, addr: $Addr) -> Option<&str> {
                self.hosts.owner($n(addr))
            }

            /// Takes the next free address of the allocation range after the last one handed
            /// out, wrapping around once.
            ///
            /// # Errors
            /// [`IpamError::Exhausted`] when every address of the allocation range is in use.
            pub fn allocate(&mut self) -> Result<$Addr, IpamError> {
                self.hosts.allocate(None).map($a)
            }

            /// Like `allocate`, leasing the address to `owner` (any string: an endpoint or
            /// container id) for [`Self::release_owner`] and [`Self::gc`].
            ///
            /// # Errors
            /// [`IpamError::Exhausted`].
            pub fn allocate_for(&mut self, owner: &str) -> Result<$Addr, IpamError> {
                self.hosts.allocate(Some(owner)).map($a)
            }

            /// Takes a specific address of the subnet, inside the allocation range or not.
            ///
            /// # Errors
            /// Outside the subnet, a network/broadcast/subnet-router/gateway/auxiliary address,
            /// or already in use.
            pub fn reserve(&mut self, addr: $Addr) -> Result<(), IpamError> {
                self.hosts.reserve(addr.into(), None)
            }

            /// Like `reserve`, leasing the address to `owner`.
            ///
            /// # Errors
            /// As `reserve`.
            pub fn reserve_for(&mut self, addr: $Addr, owner: &str) -> Result<(), IpamError> {
                self.hosts.reserve(addr.into(), Some(owner))
            }

            /// Gives an address back (leased or not); returns false when it was not in use.
            pub fn release(&mut self, addr: $Addr) -> bool {
                self.hosts.release($n(addr))
            }

            /// Gives back every address leased to `owner`; returns them in order.
            pub fn release_owner(&mut self, owner: &str) -> Vec<$Addr> {
                self.hosts.release_where(|o| o == owner).into_iter().map($a).collect()
            }

            /// Gives back every lease whose owner `live` says is gone; returns them in order.
            /// Addresses in use without an owner (`allocate`, `reserve`) are left alone.
            pub fn gc(&mut self, live: &dyn Fn(&str) -> bool) -> Vec<$Addr> {
                self.hosts.release_where(|o| !live(o)).into_iter().map($a).collect()
            }

            /// The leased addresses and their owners, in address order.
            pub fn leases(&self) -> impl Iterator<Item = ($Addr, &str)> + '_ {
                self.hosts.leases().map(|(a, o)| ($a(a), o))
            }

            /// Every address in use, leased or not, in order.
            pub fn used(&self) -> impl Iterator<Item = $Addr> + '_ {
                self.hosts.used().map($a)
            }

            /// Checks that `addr` could be assigned to an endpoint, ignoring whether it is in use.
            ///
            /// # Errors
            /// [`IpamError::OutOfRange`] or [`IpamError::Reserved`].
            pub fn check_assignable(&self, addr: $Addr) -> Result<(), IpamError> {
                self.hosts.check(addr.into()).map(drop)
            }

            /// The pool as plain data, leases and serial cursor included.
            pub fn snapshot(&self) -> $Snap {
                $Snap {
                    subnet: self.subnet,
                    gateway: self.gateway,
                    range: self.range(),
                    aux: self.aux(),
                    cursor: $a(self.hosts.cursor()),
                    used: self.hosts.entries().map(|(a, o)| Lease { addr: $a(a), owner: o.map(str::to_owned) }).collect(),
                }
            }

            /// The pool a snapshot describes, exactly (it goes on allocating where it left off).
            ///
            /// # Errors
            /// [`SetupError::BadSnapshot`] naming the first thing wrong: a subnet with host bits
            /// or too small, a gateway, range, auxiliary address or cursor that does not fit, an
            /// address in use that is not assignable or is listed twice.
            pub fn restore(snapshot: $Snap) -> Result<$Pool, SetupError> {
                let s = snapshot;
                let hosts = Hosts::restore(
                    s.subnet.into(),
                    s.gateway.into(),
                    s.range.map(IpNet::$V),
                    s.aux.into_iter().map(IpAddr::$V),
                    s.cursor.into(),
                    s.used.into_iter().map(|l| (IpAddr::$V(l.addr), l.owner)),
                )?;
                Ok($Pool { subnet: s.subnet, gateway: s.gateway, hosts })
            }
        }

        impl Serialize for $Pool {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.snapshot().serialize(s)
            }
        }

        /// Checked: see `restore`.
        impl<'de> Deserialize<'de> for $Pool {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$Pool, D::Error> {
                $Pool::restore($Snap::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

pool_methods!(Pool, Ipv4Addr, Ipv4Net, PoolOptions, PoolSnapshot, V4, a4, n4, net4);
pool_methods!(Pool6, Ipv6Addr, Ipv6Net, Pool6Options, Pool6Snapshot, V6, a6, n6, net6);

#[cfg(test)]
mod tests;
