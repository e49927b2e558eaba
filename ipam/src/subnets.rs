//! [`SubnetPools`]: where the subnets of networks created without one come from.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{overlaps, span, SetupError};

/// A range of addresses split into equal subnets for networks: `base` into `/size` subnets
/// (like an entry of Docker's `default-address-pools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPool {
    pub base: IpNet,
    pub size: u8,
}

impl AddressPool {
    /// # Errors
    /// [`SetupError::BadAddressPool`]: `base` has host bits set, `size` is shorter than the
    /// base's prefix, or a `/size` network cannot hold a gateway and a host (IPv4 longer than
    /// /30, IPv6 longer than /120), or `size` is 0.
    pub fn new(base: IpNet, size: u8) -> Result<AddressPool, SetupError> {
        let pool = AddressPool { base, size };
        pool.check()?;
        Ok(pool)
    }

    fn check(&self) -> Result<(), SetupError> {
        let bad = |reason: String| SetupError::BadAddressPool { base: self.base, size: self.size, reason };
        let base = self.base;
        let most = if self.is_v6() { 120 } else { 30 };
        if base.trunc() != base {
            return Err(bad(format!("the base has host bits set (did you mean {}?)", base.trunc())));
        }
        if self.size < base.prefix_len() {
            return Err(bad(format!("/{} subnets are larger than the base itself", self.size)));
        }
        if self.size > most {
            return Err(bad(format!("a /{} network has no room for a gateway and a host (at most /{most})", self.size)));
        }
        if self.size == 0 {
            return Err(bad("a /0 network would cover every address".into()));
        }
        Ok(())
    }

    fn is_v6(&self) -> bool {
        matches!(self.base, IpNet::V6(_))
    }

    /// How many subnets the pool holds, saturating at `u64::MAX`.
    pub fn subnet_count(&self) -> u64 {
        1u64.checked_shl(u32::from(self.size.saturating_sub(self.base.prefix_len()))).unwrap_or(u64::MAX)
    }

    /// The first `/size` subnet of the pool that overlaps no span of `blocked` (sorted,
    /// disjoint): each step skips past a blocker, so this takes at most `blocked.len() + 1`
    /// steps however big the pool.
    fn first_free(&self, blocked: &[(u128, u128)]) -> Option<IpNet> {
        let (bs, be) = span(self.base);
        let width: u8 = if self.is_v6() { 128 } else { 32 };
        let step = 1u128.checked_shl(u32::from(width - self.size))?;
        let mut cur = bs;
        let mut i = 0;
        loop {
            let end = cur + (step - 1);
            while blocked.get(i).is_some_and(|(_, e)| *e < cur) {
                i += 1;
            }
            match blocked.get(i) {
                Some(&(s, e)) if s <= end => {
                    if e >= be {
                        return None;
                    }
                    // The first subnet boundary past the blocker.
                    let k = (e + 1 - bs).div_ceil(step);
                    cur = k.checked_mul(step).and_then(|x| bs.checked_add(x)).filter(|c| *c <= be)?;
                }
                _ => {
                    return Some(if self.is_v6() {
                        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(cur), self.size).ok()?)
                    } else {
                        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(u32::try_from(cur).ok()?), self.size).ok()?)
                    });
                }
            }
        }
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in /{}s", self.base, self.size)
    }
}

/// The address pools new networks get their subnets from, IPv4 and IPv6, tried in order.
///
/// Serializes as the list of its pools (checked when deserialized), like Docker's
/// `default-address-pools`: `[{"base": "10.89.0.0/16", "size": 24}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<AddressPool>", into = "Vec<AddressPool>")]
pub struct SubnetPools {
    pools: Vec<AddressPool>,
}

impl SubnetPools {
    /// 10.89.0.0/16 in /24s: 256 networks.
    pub const DEFAULT_V4: AddressPool = AddressPool { base: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 89, 0, 0), 16)), size: 24 };
    /// The size of the IPv6 subnets carved from the ULA prefix: /64, what SLAAC and most
    /// IPv6 stacks expect.
    pub const DEFAULT_V6_SIZE: u8 = 64;

    /// # Errors
    /// [`SetupError::BadAddressPool`]: a pool is invalid (see [`AddressPool::new`]) or overlaps
    /// an earlier one.
    pub fn new(pools: Vec<AddressPool>) -> Result<SubnetPools, SetupError> {
        for (i, p) in pools.iter().enumerate() {
            p.check()?;
            if let Some(q) = pools[..i].iter().find(|q| overlaps(q.base, p.base)) {
                return Err(SetupError::BadAddressPool { base: p.base, size: p.size, reason: format!("it overlaps pool {q}") });
            }
        }
        Ok(SubnetPools { pools })
    }

    /// [`Self::DEFAULT_V4`] and `ula` (a ULA /48, say from [`Self::ula48`]) in /64s.
    ///
    /// # Errors
    /// [`SetupError::BadAddressPool`] when `ula` has host bits set or is longer than a /64.
    pub fn with_defaults(ula: Ipv6Net) -> Result<SubnetPools, SetupError> {
        SubnetPools::new(vec![Self::DEFAULT_V4, AddressPool { base: ula.into(), size: Self::DEFAULT_V6_SIZE }])
    }

    /// The unique local /48 (RFC 4193) of a 40-bit global id, which the caller draws at random
    /// once and keeps: `fdXX:XXXX:XXXX::/48`.
    pub fn ula48(global_id: [u8; 5]) -> Ipv6Net {
        let [a, b, c, d, e] = global_id;
        Ipv6Net::new_assert(Ipv6Addr::from([0xfd, a, b, c, d, e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 48)
    }

    pub fn pools(&self) -> &[AddressPool] {
        &self.pools
    }

    /// The first IPv4 subnet of the pools that overlaps neither a subnet `in_use` by another
    /// network nor a prefix `routed` on the host (so a VPN's route never collides). Default
    /// routes (/0) in `routed` are ignored; an interface address with its prefix (10.1.2.3/16)
    /// blocks its whole network.
    ///
    /// # Errors
    /// [`SetupError::PoolExhausted`].
    pub fn next_free_v4(&self, in_use: &[IpNet], routed: &[IpNet]) -> Result<Ipv4Net, SetupError> {
        match self.next_free(false, in_use, routed)? {
            IpNet::V4(n) => Ok(n),
            IpNet::V6(_) => Err(self.exhausted(false)),
        }
    }

    /// The first IPv6 subnet of the pools that overlaps nothing in use or routed: see
    /// [`Self::next_free_v4`].
    ///
    /// # Errors
    /// [`SetupError::PoolExhausted`].
    pub fn next_free_v6(&self, in_use: &[IpNet], routed: &[IpNet]) -> Result<Ipv6Net, SetupError> {
        match self.next_free(true, in_use, routed)? {
            IpNet::V6(n) => Ok(n),
            IpNet::V4(_) => Err(self.exhausted(true)),
        }
    }

    fn next_free(&self, v6: bool, in_use: &[IpNet], routed: &[IpNet]) -> Result<IpNet, SetupError> {
        let family = |n: &&IpNet| n.network().is_ipv6() == v6;
        let mut spans: Vec<(u128, u128)> =
            in_use.iter().filter(family).chain(routed.iter().filter(family).filter(|r| r.prefix_len() > 0)).map(|n| span(*n)).collect();
        spans.sort_unstable();
        let mut blocked: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match blocked.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => blocked.push((s, e)),
            }
        }
        self.pools.iter().filter(|p| p.is_v6() == v6).find_map(|p| p.first_free(&blocked)).ok_or_else(|| self.exhausted(v6))
    }

    fn exhausted(&self, v6: bool) -> SetupError {
        let pools: Vec<String> = self.pools.iter().filter(|p| p.is_v6() == v6).map(ToString::to_string).collect();
        SetupError::PoolExhausted {
            family: if v6 { "IPv6" } else { "IPv4" },
            pools: if pools.is_empty() { "none configured".into() } else { pools.join(", ") },
        }
    }

    /// Checks a subnet asked for explicitly against the subnets `in_use` by other networks and
    /// the prefixes `routed` on the host (default routes ignored).
    ///
    /// # Errors
    /// [`SetupError::SubnetOverlap`] naming the first overlap.
    pub fn check_free(subnet: IpNet, in_use: &[IpNet], routed: &[IpNet]) -> Result<(), SetupError> {
        let hit = |nets: &[IpNet], what: &'static str, skip_default: bool| match nets
            .iter()
            .find(|n| !(skip_default && n.prefix_len() == 0) && overlaps(**n, subnet))
        {
            Some(other) => Err(SetupError::SubnetOverlap { subnet, other: *other, what }),
            None => Ok(()),
        };
        hit(in_use, "network", false)?;
        hit(routed, "host route", true)
    }
}

impl TryFrom<Vec<AddressPool>> for SubnetPools {
    type Error = SetupError;

    fn try_from(pools: Vec<AddressPool>) -> Result<SubnetPools, SetupError> {
        SubnetPools::new(pools)
    }
}

impl From<SubnetPools> for Vec<AddressPool> {
    fn from(p: SubnetPools) -> Vec<AddressPool> {
        p.pools
    }
}

#[cfg(test)]
mod tests;
