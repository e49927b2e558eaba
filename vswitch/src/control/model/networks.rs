//! Networks: creation (subnets, pools, MTU), removal, restore, garbage collection of leases.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::errors::{bad_address, bad_address6, setup_error};
use super::ports::PortIds;
use super::{check_name, Model, Net, OVERLAY_HEADROOM};
use crate::api::{ApiError, ErrorCode, GcReport, Network, NetworkCreate};
use crate::gateway::Gateway;
use crate::state::{NetworkState, Phase};
use crate::types::{Mac, NetworkId, PortId};

/// Smallest and largest MTU a network may have.
pub const MTU_MIN: u32 = 576;
pub const MTU_MAX: u32 = 65521;

/// A network the model took in: what the datapath must be told.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    pub name: String,
    pub id: NetworkId,
    pub gw_port: PortId,
    pub gw: Gateway,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub internal: bool,
    pub host_loopback: Vec<String>,
    /// Its uplink interface, and its VLAN id.
    pub uplink: Option<String>,
    pub vlan: Option<u16>,
}

/// A network about to go: its ports, for the datapath.
#[derive(Debug, Clone)]
pub struct RemovePlan {
    pub id: NetworkId,
    pub gw_port: PortId,
    pub endpoint_ports: Vec<PortId>,
    /// Its uplink's interface port (main port), removed with it.
    pub uplink: Option<(String, PortId)>,
}

impl Model {
    /// Validates `req` and takes the network in (id, gateway port, pools). `routed` is what the
    /// host routes, so an automatic subnet avoids it.
    ///
    /// # Errors
    /// Bad syntax, an MTU out of bounds, a name or subnet in use, exhausted address pools.
    pub fn create_network(&mut self, req: NetworkCreate, routed: &[IpNet]) -> Result<(NetworkPlan, Network), ApiError> {
        check_name(&req.name, "network")?;
        let subnet = req.subnet.as_deref().map(parse_subnet4).transpose()?;
        let gateway = req.gateway.as_deref().map(|g| g.parse::<Ipv4Addr>().map_err(|_| bad_address(g))).transpose()?;
        let subnet6 = req.subnet6.as_deref().map(parse_subnet6).transpose()?;
        let gw6 = req.gateway6.as_deref().map(|g| g.parse::<Ipv6Addr>().map_err(|_| bad_address6(g))).transpose()?;
        super::publish::parse_port_ranges(&req.host_loopback)?;
        let mtu = self.check_mtu(&req)?;
        let range: Option<IpNet> = req
            .ip_range
            .as_deref()
            .map(|r| r.parse().map_err(|_| ApiError::new(ErrorCode::InvalidSubnet, format!("ip_range {r:?} is not a CIDR"))))
            .transpose()?;
        let aux: Vec<IpAddr> = req
            .aux_addresses
            .iter()
            .map(|a| a.parse().map_err(|_| ApiError::new(ErrorCode::InvalidAddress, format!("aux address {a:?} is not an IP address"))))
            .collect::<Result<_, _>>()?;
        if self.networks.contains_key(&req.name) {
            return Err(ApiError::new(ErrorCode::NetworkExists, format!("network {} already exists", req.name)));
        }
        let vlan = req.vlan.map(super::check_vlan).transpose()?;
        if let Some((other, _)) = vlan.and_then(|v| self.networks.iter().find(|(_, n)| n.vlan == Some(v))) {
            return Err(ApiError::new(ErrorCode::InvalidVlan, format!("VLAN id {} is already network {other}'s", vlan.unwrap_or(0))));
        }
        if let Some(up) = &req.uplink {
            crate::sys::netns::validate_ifname(up).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.to_string()))?;
            if req.overlay || req.ipv6 || req.subnet6.is_some() {
                return Err(ApiError::new(ErrorCode::InvalidRequest, "a network with an uplink is IPv4 only and not an overlay"));
            }
            if req.subnet.is_none() {
                return Err(ApiError::new(ErrorCode::InvalidSubnet, "a network with an uplink needs --subnet (and --gateway): the LAN's"));
            }
            if self.ifports.contains_key(up) {
                return Err(ApiError::new(ErrorCode::InterfaceInUse, format!("interface {up} is already a port; remove it first")));
            }
        }
        let in_use = self.subnets_in_use();
        let subnet = match subnet {
            Some(s) => s,
            None => self.cfg.pools.next_free_v4(&in_use, routed).map_err(setup_error)?,
        };
        let subnet6 = match subnet6 {
            None if req.ipv6 => {
                Some(ipam::SubnetPools::with_defaults(self.ula).map_err(setup_error)?.next_free_v6(&in_use, routed).map_err(setup_error)?)
            }
            other => other,
        };
        let opts4 = ipam::PoolOptions {
            range: match range {
                Some(IpNet::V4(r)) => Some(r),
                _ => None,
            },
            aux: aux.iter().filter_map(|a| if let IpAddr::V4(v) = a { Some(*v) } else { None }).collect(),
        };
        let opts6 = ipam::Pool6Options {
            range: match range {
                Some(IpNet::V6(r)) => Some(r),
                _ => None,
            },
            aux: aux.iter().filter_map(|a| if let IpAddr::V6(v) = a { Some(*v) } else { None }).collect(),
        };
        if (opts6.range.is_some() || !opts6.aux.is_empty()) && subnet6.is_none() {
            return Err(ApiError::new(ErrorCode::InvalidAddress, "an IPv6 range or aux address needs an IPv6 subnet"));
        }
        let mut pool = ipam::Pool::with_options(subnet, gateway, opts4).map_err(setup_error)?;
        // On a LAN the gateway is its router: the switch answers DNS at an address of its own.
        let service_ip = match &req.uplink {
            Some(_) => Some(pool.allocate_for(super::SERVICE_OWNER).map_err(|e| {
                ApiError::new(ErrorCode::PoolExhausted, format!("no address left for the switch's DNS in the network's range: {e}"))
            })?),
            None => None,
        };
        let pool6 = subnet6.map(|net6| ipam::Pool6::with_options(net6, gw6, opts6).map_err(setup_error)).transpose()?;
        self.check_overlaps(pool.subnet(), pool6.as_ref().map(|p| p.subnet()))?;

        // Everything is checked: from here on the request is taken.
        let id = NetworkId(self.next_network);
        self.next_network += 1;
        let gw_port = self.ports.take();
        let net = Net {
            id,
            pool,
            pool6,
            gw_mac: Mac::local_from(0x4757_0000_0000 | u64::from(id.0)),
            gw_port,
            mtu,
            internal: req.internal,
            overlay: req.overlay,
            egress: self.cfg.egress && !req.internal && req.uplink.is_none(),
            host_loopback: req.host_loopback,
            labels: req.labels,
            endpoints: BTreeMap::new(),
            upstreams: Vec::new(),
            static_macs: BTreeMap::new(),
            vlan,
            uplink: req.uplink,
            service_ip,
        };
        let plan = plan_of(&req.name, &net);
        let api = net.to_api(&req.name);
        self.networks.insert(req.name, net);
        Ok((plan, api))
    }

    /// Forgets a network [`Model::create_network`] took in whose effects failed.
    pub fn undo_create_network(&mut self, plan: &NetworkPlan) {
        if self.networks.remove(&plan.name).is_some() {
            self.ports.give_back(plan.gw_port);
            if self.next_network == plan.id.0 + 1 {
                self.next_network = plan.id.0;
            }
        }
    }

    fn check_mtu(&self, req: &NetworkCreate) -> Result<u32, ApiError> {
        let overlay_mtu = self.cfg.underlay_mtu.saturating_sub(OVERLAY_HEADROOM);
        let mtu = req.mtu.unwrap_or(if req.overlay { overlay_mtu } else { 1500 });
        if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
            return Err(ApiError::new(ErrorCode::InvalidMtu, format!("MTU {mtu} is out of range: it must be {MTU_MIN} to {MTU_MAX}")));
        }
        if req.overlay && mtu > overlay_mtu {
            return Err(ApiError::new(
                ErrorCode::InvalidMtu,
                format!(
                    "MTU {mtu} does not fit the tunnel: an overlay network's frames must fit one {}-byte underlay datagram (at most {overlay_mtu})",
                    self.cfg.underlay_mtu
                ),
            ));
        }
        if (req.subnet6.is_some() || req.ipv6) && mtu < 1280 {
            return Err(ApiError::new(ErrorCode::InvalidMtu, format!("MTU {mtu} is below IPv6's minimum of 1280")));
        }
        Ok(mtu)
    }

    fn check_overlaps(&self, v4: Ipv4Net, v6: Option<Ipv6Net>) -> Result<(), ApiError> {
        if let Some((other, n)) = self.networks.iter().find(|(_, n)| overlaps(n.pool.subnet(), v4)) {
            return Err(ApiError::new(ErrorCode::SubnetOverlap, format!("subnet {v4} overlaps {} of network {other}", n.pool.subnet())));
        }
        let Some(v6) = v6 else { return Ok(()) };
        let clash = self.networks.iter().find_map(|(name, n)| {
            let theirs = n.pool6.as_ref()?.subnet();
            (theirs.contains(&v6.network()) || v6.contains(&theirs.network())).then_some((name, theirs))
        });
        match clash {
            Some((other, theirs)) => {
                Err(ApiError::new(ErrorCode::SubnetOverlap, format!("subnet6 {v6} overlaps {theirs} of network {other}")))
            }
            None => Ok(()),
        }
    }

    /// Every subnet our networks use, both families.
    fn subnets_in_use(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.networks.values().map(|n| n.pool.subnet().into()).collect();
        v.extend(self.networks.values().filter_map(|n| n.pool6.as_ref().map(|p| IpNet::from(p.subnet()))));
        v
    }

    /// Checks that a network may go and marks its endpoints as detaching (to be saved before
    /// the datapath lets go of them).
    ///
    /// # Errors
    /// No such network, a tunnel peer carries it, or it has endpoints and `force` is not set.
    pub fn begin_remove_network(&mut self, name: &str, force: bool) -> Result<RemovePlan, ApiError> {
        let net = self.net(name)?;
        if let Some((key, _)) = self.peers.iter().find(|(_, p)| p.networks.iter().any(|(n, _)| n == name)) {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!("network {name} is carried by tunnel peer {key}; remove the peer (or re-add it without this network) first"),
            ));
        }
        if let Some((i, _, _)) = self.ifports_of(name).into_iter().find(|(_, _, uplink)| !uplink) {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!("network {name} is carried by interface port {i}; remove it first (`vswitchctl port rm {i}`)"),
            ));
        }
        if !net.endpoints.is_empty() && !force {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!("network {name} has {} endpoint(s) attached; detach them or remove with --force", net.endpoints.len()),
            ));
        }
        let uplink = self.ifports_of(name).into_iter().find(|(_, _, up)| *up).map(|(i, p, _)| (i, p));
        let plan =
            RemovePlan { id: net.id, gw_port: net.gw_port, endpoint_ports: net.endpoints.values().map(|e| e.api.port).collect(), uplink };
        for ep in self.net_mut(name)?.endpoints.values_mut() {
            ep.phase = Phase::Detaching;
        }
        Ok(plan)
    }

    /// Forgets a network and everything on it (after the datapath let go of it).
    pub fn finish_remove_network(&mut self, name: &str) {
        for (i, _, _) in self.ifports_of(name) {
            self.forget_ifport(&i);
        }
        let Some(net) = self.networks.remove(name) else { return };
        for ep in net.endpoints.values() {
            self.ports.give_back(ep.api.port);
        }
        self.ports.give_back(net.gw_port);
        self.remote.remove(name);
        self.assembly.retain(|(n, _), _| n != name);
    }

    /// Networks without endpoints.
    pub fn empty_networks(&self) -> Vec<String> {
        self.networks.iter().filter(|(_, n)| n.endpoints.is_empty()).map(|(k, _)| k.clone()).collect()
    }

    /// Starts a restore: the saved counters and ULA; networks come next with
    /// [`Model::restore_network`].
    pub fn restore_globals(&mut self, next_network: u32, ula: Option<Ipv6Net>) {
        self.next_network = next_network;
        if let Some(ula) = ula {
            self.ula = ula;
        }
    }

    /// Takes in a saved network without its endpoints (they come back one by one with
    /// [`Model::restore_endpoint`]); returns what the datapath must be told.
    pub fn restore_network(&mut self, n: &NetworkState) -> NetworkPlan {
        let net = Net {
            id: NetworkId(n.id),
            pool: n.pool.clone(),
            pool6: n.pool6.clone(),
            gw_mac: n.gateway_mac,
            gw_port: PortId(n.gateway_port),
            mtu: n.mtu,
            internal: n.internal,
            overlay: n.overlay,
            egress: self.cfg.egress && !n.internal && n.uplink.is_none(),
            host_loopback: n.host_loopback.clone(),
            labels: n.labels.clone(),
            endpoints: BTreeMap::new(),
            upstreams: n.upstreams.clone(),
            static_macs: BTreeMap::new(),
            vlan: n.vlan,
            uplink: n.uplink.clone(),
            service_ip: n.service_ip,
        };
        let plan = plan_of(&n.name, &net);
        self.networks.insert(n.name.clone(), net);
        // Until an endpoint is brought up again its port id is not in use.
        let used: BTreeSet<u32> = self.networks.values().map(|n| n.gw_port.0).collect();
        self.ports = PortIds::with_used(&used);
        plan
    }

    /// Releases leases whose endpoint is gone (none should be; a lease can only be orphaned by
    /// a bug or a hand-edited state file). Returns `NETWORK ADDRESS` per lease released.
    pub fn ipam_gc(&mut self) -> GcReport {
        let mut released = Vec::new();
        for (name, net) in self.networks.iter_mut() {
            let mut live: BTreeSet<String> = net.endpoints.keys().cloned().collect();
            let mut ips: BTreeSet<Ipv4Addr> = net.endpoints.values().map(|e| e.api.ip).collect();
            if let Some(s) = net.service_ip {
                live.insert(super::SERVICE_OWNER.to_string());
                ips.insert(s);
            }
            // DHCP clients' leases are live until released (or the network goes).
            ips.extend(net.pool.leases().filter(|(_, o)| o.starts_with("dhcp:")).map(|(a, _)| a));
            let ip6s: BTreeSet<Ipv6Addr> = net.endpoints.values().filter_map(|e| e.api.ip6).collect();
            let is_live = |owner: &str| live.contains(owner) || owner.starts_with("dhcp:");
            let mut gone: Vec<String> = net.pool.gc(&is_live).into_iter().map(|a| a.to_string()).collect();
            let unowned: Vec<Ipv4Addr> = net.pool.used().filter(|a| !ips.contains(a)).collect();
            for a in unowned {
                net.pool.release(a);
                gone.push(a.to_string());
            }
            if let Some(p6) = &mut net.pool6 {
                gone.extend(p6.gc(&is_live).into_iter().map(|a| a.to_string()));
                let unowned: Vec<Ipv6Addr> = p6.used().filter(|a| !ip6s.contains(a)).collect();
                for a in unowned {
                    p6.release(a);
                    gone.push(a.to_string());
                }
            }
            released.extend(gone.into_iter().map(|a| format!("{name} {a}")));
        }
        GcReport { released }
    }
}

fn plan_of(name: &str, net: &Net) -> NetworkPlan {
    NetworkPlan {
        name: name.to_string(),
        id: net.id,
        gw_port: net.gw_port,
        gw: net.gateway(),
        subnet: net.pool.subnet(),
        mtu: net.mtu,
        internal: net.internal,
        host_loopback: net.host_loopback.clone(),
        uplink: net.uplink.clone(),
        vlan: net.vlan,
    }
}

/// A CIDR whose address is the network's own: `10.89.70.5/24` is refused with the CIDR that
/// was probably meant, rather than silently changed.
fn parse_cidr(s: &str, what: &str, example: &str) -> Result<IpNet, ApiError> {
    let net: IpNet = s.parse().map_err(|_| not_cidr(s, what, example))?;
    if net != net.trunc() {
        return Err(ApiError::new(ErrorCode::InvalidSubnet, format!("{what} {s} has host bits set: did you mean {}?", net.trunc())));
    }
    Ok(net)
}

fn not_cidr(s: &str, what: &str, example: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidSubnet, format!("{what} {s:?} is not a CIDR like {example}"))
}

fn parse_subnet4(s: &str) -> Result<Ipv4Net, ApiError> {
    const EXAMPLE: &str = "10.89.0.0/24";
    match parse_cidr(s, "subnet", EXAMPLE)? {
        IpNet::V4(n) => Ok(n),
        IpNet::V6(_) => Err(not_cidr(s, "subnet", EXAMPLE)),
    }
}

fn parse_subnet6(s: &str) -> Result<Ipv6Net, ApiError> {
    const EXAMPLE: &str = "fd00:89::/64";
    match parse_cidr(s, "subnet6", EXAMPLE)? {
        IpNet::V6(n) => Ok(n),
        IpNet::V4(_) => Err(not_cidr(s, "subnet6", EXAMPLE)),
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
