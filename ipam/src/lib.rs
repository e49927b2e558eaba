//! ipam: an I/O-free IPv4 address allocator, one [`Pool`] per network subnet.
//!
//! A pool hands out host addresses of its subnet: never the network address, the broadcast
//! address or the gateway. Allocation is serial: it continues after the last address handed out,
//! so a freed address is not reused at once (a restarted container's peers may still cache the
//! old MAC for it). Nothing here reads a clock or touches the system.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Why an allocation or a reservation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{addr} is outside subnet {subnet}")]
    OutOfRange { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("{addr} is the {what} address of {subnet} and cannot be assigned")]
    Reserved { addr: Ipv4Addr, what: &'static str, subnet: Ipv4Net },
    #[error("{addr} is already in use")]
    Taken { addr: Ipv4Addr },
    #[error("subnet {subnet} has no free address left ({used} in use)")]
    Exhausted { subnet: Ipv4Net, used: u64 },
    #[error("subnet {subnet} is too small: it needs room for a gateway and at least one host (a /30 or larger)")]
    TooSmall { subnet: Ipv4Net },
    #[error("gateway {gateway} is not a host address of {subnet}")]
    BadGateway { gateway: Ipv4Addr, subnet: Ipv4Net },
}

/// The addresses of one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: BTreeSet<u32>,
    /// Where the next serial search starts.
    cursor: u32,
}

impl Pool {
    /// A pool for `subnet` (host bits are cleared) whose gateway is `gateway`, or the first host.
    ///
    /// # Errors
    /// [`IpamError::TooSmall`] below a /30; [`IpamError::BadGateway`] when the gateway is not a
    /// host address of the subnet.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Pool, IpamError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(IpamError::TooSmall { subnet });
        }
        let first = u32::from(subnet.network()) + 1;
        let gateway = gateway.unwrap_or(Ipv4Addr::from(first));
        let g = u32::from(gateway);
        if !subnet.contains(&gateway) || g == u32::from(subnet.network()) || g == u32::from(subnet.broadcast()) {
            return Err(IpamError::BadGateway { gateway, subnet });
        }
        Ok(Pool { subnet, gateway, used: BTreeSet::new(), cursor: first })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Host addresses that can be handed out (network, broadcast and gateway excluded).
    pub fn capacity(&self) -> u64 {
        (1u64 << (32 - self.subnet.prefix_len())) - 3
    }

    pub fn in_use(&self) -> u64 {
        self.used.len() as u64
    }

    pub fn available(&self) -> u64 {
        self.capacity() - self.in_use()
    }

    pub fn is_used(&self, addr: Ipv4Addr) -> bool {
        self.used.contains(&u32::from(addr))
    }

    /// Takes the next free address after the last one handed out, wrapping around once.
    ///
    /// # Errors
    /// [`IpamError::Exhausted`] when every host address is in use.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let (lo, hi) = self.host_range();
        let start = self.cursor.clamp(lo, hi);
        let candidates = (start..=hi).chain(lo..start);
        for a in candidates {
            if a != u32::from(self.gateway) && !self.used.contains(&a) {
                self.used.insert(a);
                self.cursor = if a == hi { lo } else { a + 1 };
                return Ok(Ipv4Addr::from(a));
            }
        }
        Err(IpamError::Exhausted { subnet: self.subnet, used: self.in_use() })
    }

    /// Takes a specific address.
    ///
    /// # Errors
    /// Outside the subnet, the network/broadcast/gateway address, or already in use.
    pub fn reserve(&mut self, addr: Ipv4Addr) -> Result<(), IpamError> {
        self.check_assignable(addr)?;
        if !self.used.insert(u32::from(addr)) {
            return Err(IpamError::Taken { addr });
        }
        Ok(())
    }

    /// Gives an address back; returns false when it was not in use.
    pub fn release(&mut self, addr: Ipv4Addr) -> bool {
        self.used.remove(&u32::from(addr))
    }

    /// Checks that `addr` could be assigned to an endpoint, ignoring whether it is in use.
    ///
    /// # Errors
    /// [`IpamError::OutOfRange`] or [`IpamError::Reserved`].
    pub fn check_assignable(&self, addr: Ipv4Addr) -> Result<(), IpamError> {
        let subnet = self.subnet;
        if !subnet.contains(&addr) {
            return Err(IpamError::OutOfRange { addr, subnet });
        }
        let what = if addr == subnet.network() {
            "network"
        } else if addr == subnet.broadcast() {
            "broadcast"
        } else if addr == self.gateway {
            "gateway"
        } else {
            return Ok(());
        };
        Err(IpamError::Reserved { addr, what, subnet })
    }

    fn host_range(&self) -> (u32, u32) {
        (u32::from(self.subnet.network()) + 1, u32::from(self.subnet.broadcast()) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(cidr: &str) -> Pool {
        Pool::new(cidr.parse().unwrap(), None).unwrap()
    }

    #[test]
    fn allocates_hosts_skipping_gateway() {
        let mut p = pool("10.0.0.0/29"); // hosts .1-.6, gateway .1
        let got: Vec<_> = (0..5).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(p.allocate(), Err(IpamError::Exhausted { subnet: p.subnet(), used: 5 }));
        assert_eq!(p.capacity(), 5);
        assert_eq!(p.available(), 0);
    }

    #[test]
    fn freed_address_is_not_reused_at_once() {
        let mut p = pool("10.0.0.0/24");
        let a = p.allocate().unwrap();
        assert!(p.release(a));
        let b = p.allocate().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn reserve_checks() {
        let mut p = pool("10.0.0.0/24");
        assert!(matches!(p.reserve("10.0.1.5".parse().unwrap()), Err(IpamError::OutOfRange { .. })));
        assert!(matches!(p.reserve("10.0.0.0".parse().unwrap()), Err(IpamError::Reserved { what: "network", .. })));
        assert!(matches!(p.reserve("10.0.0.255".parse().unwrap()), Err(IpamError::Reserved { what: "broadcast", .. })));
        assert!(matches!(p.reserve("10.0.0.1".parse().unwrap()), Err(IpamError::Reserved { what: "gateway", .. })));
        p.reserve("10.0.0.9".parse().unwrap()).unwrap();
        assert!(matches!(p.reserve("10.0.0.9".parse().unwrap()), Err(IpamError::Taken { .. })));
    }

    #[test]
    fn bad_pools() {
        assert!(matches!(Pool::new("10.0.0.0/31".parse().unwrap(), None), Err(IpamError::TooSmall { .. })));
        let gw = Some("10.0.1.1".parse().unwrap());
        assert!(matches!(Pool::new("10.0.0.0/24".parse().unwrap(), gw), Err(IpamError::BadGateway { .. })));
        let p = Pool::new("10.0.0.77/24".parse().unwrap(), None).unwrap();
        assert_eq!(p.subnet().to_string(), "10.0.0.0/24");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Reserve(u8),
        Release(u8),
    }

    proptest! {
        /// The pool agrees with a BTreeSet model: no address twice, never a reserved one.
        #[test]
        fn matches_model(ops in prop::collection::vec(prop_oneof![
            Just(Op::Allocate),
            any::<u8>().prop_map(|b| Op::Reserve(b % 16)),
            any::<u8>().prop_map(|b| Op::Release(b % 16)),
        ], 1..200)) {
            let mut p = pool("10.9.0.0/28");
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => match p.allocate() {
                        Ok(a) => {
                            prop_assert!(p.check_assignable(a).is_ok());
                            prop_assert!(model.insert(a));
                        }
                        Err(IpamError::Exhausted { .. }) => prop_assert_eq!(model.len() as u64, p.capacity()),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    },
                    Op::Reserve(h) => {
                        let a = Ipv4Addr::new(10, 9, 0, h);
                        let ok = p.reserve(a).is_ok();
                        let expect = p.check_assignable(a).is_ok() && !model.contains(&a);
                        prop_assert_eq!(ok, expect);
                        if ok { model.insert(a); }
                    }
                    Op::Release(h) => {
                        let a = Ipv4Addr::new(10, 9, 0, h);
                        prop_assert_eq!(p.release(a), model.remove(&a));
                    }
                }
                prop_assert_eq!(p.in_use(), model.len() as u64);
            }
        }
    }
}
