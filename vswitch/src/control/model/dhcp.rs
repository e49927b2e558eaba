//! The DHCP server's decisions: leases are IPAM leases (owner `dhcp:MAC`), so they are in the
//! state file, survive restarts and show in `network inspect`'s usage.

use std::net::Ipv4Addr;

use super::Model;
use crate::dhcp::{Answer, Kind, Lease, Query};
use crate::types::{Mac, PortId};

/// How long a lease lasts, in seconds (clients renew at half of it).
pub const LEASE_SECS: u32 = 3600;
/// The owner of an address a client declined (in use by something else): never handed out
/// again until `ipam gc`.
pub const DECLINED: &str = "dhcp-declined";

/// The IPAM owner of a DHCP client's lease.
pub fn lease_owner(mac: Mac) -> String {
    format!("dhcp:{mac}")
}

impl Model {
    /// Decides the answer to a DHCP client's message that came to the gateway `gw_port`:
    /// `(answer and lease to send, the model changed and must be saved)`. Networks with an
    /// uplink are the LAN's (its DHCP server answers there): nothing.
    pub fn dhcp(&mut self, gw_port: PortId, q: &Query) -> (Option<(Answer, Lease)>, bool) {
        let Some(net) = self.networks.values_mut().find(|n| n.gw_port == gw_port) else { return (None, false) };
        if net.uplink.is_some() {
            return (None, false);
        }
        let server = net.gateway().ip;
        let owner = lease_owner(q.mac);
        // A container already attached with this MAC gets its own address.
        let own = net.endpoints.values().find(|e| e.api.mac == q.mac).map(|e| e.api.ip);
        let current = own.or_else(|| net.pool.leases().find(|(_, o)| *o == owner).map(|(a, _)| a));
        let (prefix_len, mtu, subnet) = (net.pool.subnet().prefix_len(), u16::try_from(net.mtu).unwrap_or(u16::MAX), net.pool.subnet());
        let lease = |ip: Ipv4Addr| Lease { ip, prefix_len, server, mtu, lease_secs: LEASE_SECS };
        match q.kind {
            Kind::Discover => match current {
                Some(ip) => (Some((Answer::Offer, lease(ip))), false),
                None => match net.pool.allocate_for(&owner) {
                    Ok(ip) => (Some((Answer::Offer, lease(ip))), true),
                    // Pool exhausted: no offer (the client keeps asking).
                    Err(_) => (None, false),
                },
            },
            Kind::Request => {
                if q.server_id.is_some_and(|s| s != server) {
                    // The client took another server's offer: ours goes back to the pool.
                    let back = own.is_none() && current.is_some();
                    if let (true, Some(ip)) = (back, current) {
                        net.pool.release(ip);
                    }
                    return (None, back);
                }
                match (q.wanted(), current) {
                    (Some(w), Some(c)) if w == c => (Some((Answer::Ack, lease(c))), false),
                    // INIT-REBOOT with an address we never gave: take it when it is free.
                    (Some(w), None) if net.pool.reserve_for(w, &owner).is_ok() => (Some((Answer::Ack, lease(w))), true),
                    (Some(w), _) if !subnet.contains(&w) || current.is_some() || q.server_id.is_some() => {
                        (Some((Answer::Nak, lease(Ipv4Addr::UNSPECIFIED))), false)
                    }
                    _ => (None, false),
                }
            }
            Kind::Release => match current {
                Some(ip) if own.is_none() && ip == q.ciaddr => {
                    net.pool.release(ip);
                    (None, true)
                }
                _ => (None, false),
            },
            Kind::Decline => match (current, q.requested) {
                (Some(ip), Some(r)) if own.is_none() && ip == r => {
                    net.pool.release(ip);
                    let _ = net.pool.reserve_for(ip, DECLINED);
                    (None, true)
                }
                _ => (None, false),
            },
            Kind::Inform => (Some((Answer::Ack, lease(q.ciaddr))), false),
        }
    }

    /// The DHCP leases of a network: (address, client MAC).
    pub fn dhcp_leases(&self, network: &str) -> Vec<(Ipv4Addr, String)> {
        self.networks
            .get(network)
            .map(|n| n.pool.leases().filter_map(|(a, o)| o.strip_prefix("dhcp:").map(|m| (a, m.to_string()))).collect())
            .unwrap_or_default()
    }
}
