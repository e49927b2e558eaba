//! Endpoints: attach (addresses, MAC, interface name, default route), restore, detach,
//! rename and aliases.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::errors::{bad_address, bad_address6, ipam_error, no_endpoint};
use super::{check_name, default_endpoint_name, parse_srv, Ep, Model};
use crate::api::{ApiError, AttachRequest, Endpoint, EndpointUpdate, ErrorCode};
use crate::state::{EndpointState, Phase};
use crate::sys::{AttachSpec, NetnsRef};
use crate::types::{Mac, NetworkId, PortId};

/// What only the namespace itself can tell about an attach's target, found by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsInfo {
    /// The namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub path: String,
    /// Its (device, inode), when it could be opened.
    pub id: Option<(u64, u64)>,
    /// The daemon's own namespace's (device, inode).
    pub own: Option<(u64, u64)>,
}

/// An endpoint the model took in (phase `Attaching`, addresses leased, port id taken): what
/// the namespace thread and the datapath must do.
#[derive(Debug)]
pub struct AttachPlan {
    pub network: String,
    pub name: String,
    pub port: PortId,
    pub net_id: NetworkId,
    pub gw_port: PortId,
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub mac: Mac,
    pub mtu: u32,
    /// The namespace work: TAP, MAC, MTU, addresses, routes.
    pub spec: AttachSpec,
    /// The allocators as they were before a new attach, so one that fails leaves them as if
    /// it had never been asked (`None` for a restore: its addresses were leased before).
    pools_before: Option<(ipam::Pool, Option<ipam::Pool6>)>,
}

impl Model {
    /// Validates an attach and takes the endpoint in: leases its addresses, chooses its MAC and
    /// interface name, takes a port id. The endpoint stays `Attaching` until
    /// [`Model::attached`]; [`Model::abandon_attach`] undoes all of it.
    ///
    /// # Errors
    /// Bad names or addresses, the daemon's own namespace, a name, address or MAC in use.
    pub fn attach(&mut self, network: &str, req: AttachRequest, netns: NetnsInfo) -> Result<AttachPlan, ApiError> {
        if netns.own.is_some() && netns.id == netns.own {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{} is vswitchd's own network namespace; attach a container's namespace instead", netns.path),
            ));
        }
        let name = req.name.clone().unwrap_or_else(|| default_endpoint_name(&netns.path));
        check_name(&name, "endpoint")?;
        if name == "gateway" {
            return Err(ApiError::new(ErrorCode::InvalidName, "endpoint name \"gateway\" is reserved for the network's gateway port"));
        }
        for a in &req.aliases {
            check_name(a, "alias")?;
        }
        for srv in &req.srv {
            parse_srv(srv)?;
        }
        if let Some(o) = &req.owner {
            if o.is_empty() || o.len() > 256 || o.chars().any(char::is_control) {
                return Err(ApiError::new(ErrorCode::InvalidRequest, "owner must be 1-256 printable characters"));
            }
        }
        let requested_ip = req.ip.as_deref().map(|s| s.parse::<Ipv4Addr>().map_err(|_| bad_address(s))).transpose()?;
        let requested_ip6 = req.ip6.as_deref().map(|s| s.parse::<Ipv6Addr>().map_err(|_| bad_address6(s))).transpose()?;
        if let Some(mac) = req.mac {
            if mac.is_multicast() || mac.is_zero() {
                return Err(ApiError::new(ErrorCode::InvalidAddress, format!("MAC {mac} is not a unicast address")));
            }
        }
        let second_network = netns.id.is_some() && self.has_netns(netns.id);
        let ifname = match req.ifname.clone() {
            Some(i) => i,
            None => self.free_ifname(netns.id),
        };
        let net = self.net_mut(network)?;
        if net.endpoints.contains_key(&name) {
            return Err(ApiError::new(ErrorCode::EndpointExists, format!("endpoint {name} already exists on network {network}")));
        }
        // The leases are the last checks: the pools as they were come back on any refusal.
        let before = (net.pool.clone(), net.pool6.clone());
        let leased = lease(net, network, &name, requested_ip, requested_ip6).and_then(|(ip, ip6)| {
            let o = ip.octets();
            let mac = req.mac.unwrap_or(Mac([0x02, 0x42, o[0], o[1], o[2], o[3]]));
            if net.endpoints.values().any(|e| e.api.mac == mac) || mac == net.gw_mac {
                return Err(ApiError::new(ErrorCode::MacTaken, format!("MAC {mac} is already used on network {network}")));
            }
            Ok((ip, ip6, mac))
        });
        let (ip, ip6, mac) = match leased {
            Ok(l) => l,
            Err(e) => {
                (net.pool, net.pool6) = before;
                return Err(e);
            }
        };
        let api = Endpoint {
            name,
            network: network.to_string(),
            netns: netns.path,
            ifname,
            mac,
            ip,
            prefix_len: net.pool.subnet().prefix_len(),
            ip6,
            port: PortId(0),
            aliases: req.aliases,
            srv: req.srv,
            published: Vec::new(),
            owner: req.owner,
        };
        // Like a container on several Docker networks: the first network gives the default
        // route, later ones only their subnet.
        let ep = Ep {
            api,
            offloads: Vec::new(),
            netns_id: netns.id,
            phase: Phase::Attaching,
            default_route: !second_network,
            publish_ids: Vec::new(),
        };
        Ok(self.take_in(network, ep, false, Some(before)))
    }

    /// Takes a saved endpoint back in (its addresses are still leased in the restored pools),
    /// to be brought up again with `reuse`.
    ///
    /// # Errors
    /// Its network is not in the model.
    pub fn restore_endpoint(&mut self, network: &str, e: EndpointState) -> Result<AttachPlan, ApiError> {
        self.net(network)?;
        let ep = Ep {
            api: e.endpoint,
            offloads: Vec::new(),
            netns_id: e.netns_id,
            phase: e.phase,
            default_route: e.default_route,
            publish_ids: Vec::new(),
        };
        Ok(self.take_in(network, ep, true, None))
    }

    /// Drops a saved endpoint that will not come back, releasing its addresses.
    pub fn drop_restored(&mut self, network: &str, e: &EndpointState) {
        if let Some(net) = self.networks.get_mut(network) {
            net.release(e.endpoint.ip, e.endpoint.ip6);
        }
    }

    fn take_in(&mut self, network: &str, mut ep: Ep, reuse: bool, pools_before: Option<(ipam::Pool, Option<ipam::Pool6>)>) -> AttachPlan {
        let port = self.ports.take();
        ep.api.port = port;
        ep.phase = Phase::Attaching;
        let net = self.networks.get_mut(network).expect("checked by the caller");
        let a = &ep.api;
        let spec = AttachSpec {
            netns: NetnsRef::Path(PathBuf::from(&a.netns)),
            ifname: a.ifname.clone(),
            mtu: net.mtu,
            mac: a.mac.0,
            addr: a.ip,
            prefix_len: a.prefix_len,
            gateway: if ep.default_route { net.pool.gateway() } else { Ipv4Addr::UNSPECIFIED },
            addr6: a.ip6.zip(net.pool6.as_ref().map(|p| p.subnet().prefix_len())),
            gateway6: net.pool6.as_ref().filter(|_| ep.default_route && a.ip6.is_some()).map(|p| p.gateway()),
            // No IPv6 on a network without an IPv6 subnet (as Docker does): no link-local
            // chatter flooded to every port by each new interface.
            disable_ipv6: net.pool6.is_none(),
            // Overlay networks too: the datapath segments their TCP super-frames before the
            // tunnel (which carries frames of at most the MTU), but not UDP ones (no USO).
            vnet_hdr: self.cfg.offloads,
            uso: !net.overlay,
            gso_max_size: net.overlay.then(|| crate::datapath::overlay::tso_max_size(net.mtu)),
            // Persistent only once the state file says so: a crash before that takes the TAP
            // with the process, so nothing can leak.
            persist: false,
            reuse,
            handover: false,
            find_by_mac: false,
        };
        let spec = super::docker::adjust_spec(spec, a);
        let plan = AttachPlan {
            network: network.to_string(),
            name: a.name.clone(),
            port,
            net_id: net.id,
            gw_port: net.gw_port,
            ip: a.ip,
            ip6: a.ip6,
            mac: a.mac,
            mtu: net.mtu,
            spec,
            pools_before,
        };
        net.endpoints.insert(plan.name.clone(), ep);
        plan
    }

    /// The endpoint's TAP is up and switched: it is `Attached`, with the offloads its TAP got.
    pub fn attached(&mut self, plan: &AttachPlan, offloads: Vec<String>) -> Result<Endpoint, ApiError> {
        let ep = self.ep_mut(&plan.network, &plan.name)?;
        ep.phase = Phase::Attached;
        ep.offloads = offloads;
        Ok(ep.api.clone())
    }

    /// Undoes [`Model::attach`] or [`Model::restore_endpoint`] whose effects failed. A new
    /// attach leaves the allocators exactly as before it; a restored endpoint's addresses are
    /// released.
    pub fn abandon_attach(&mut self, plan: AttachPlan) {
        let Some(before) = plan.pools_before else {
            self.forget(&plan.network, &plan.name);
            return;
        };
        if let Some(net) = self.networks.get_mut(&plan.network) {
            if net.endpoints.remove(&plan.name).is_some() {
                (net.pool, net.pool6) = before;
                net.static_macs.retain(|_, port| *port != plan.name);
                self.ports.give_back(plan.port);
            }
        }
    }

    /// The port of an endpoint about to be detached.
    ///
    /// # Errors
    /// No such network or endpoint.
    pub fn endpoint_port(&self, network: &str, name: &str) -> Result<PortId, ApiError> {
        let net = self.net(network)?;
        net.endpoints.get(name).map(|e| e.api.port).ok_or_else(|| no_endpoint(network, name))
    }

    /// An endpoint with the namespace identity it was attached with.
    ///
    /// # Errors
    /// No such network or endpoint.
    pub fn endpoint(&self, network: &str, name: &str) -> Result<(Endpoint, Option<(u64, u64)>), ApiError> {
        let net = self.net(network)?;
        net.endpoints.get(name).map(|e| (e.api.clone(), e.netns_id)).ok_or_else(|| no_endpoint(network, name))
    }

    /// Drops an endpoint: its addresses, its port id, its static MACs.
    pub fn forget(&mut self, network: &str, name: &str) {
        let Some(net) = self.networks.get_mut(network) else { return };
        let Some(ep) = net.endpoints.remove(name) else { return };
        net.release(ep.api.ip, ep.api.ip6);
        net.static_macs.retain(|_, port| port != name);
        self.ports.give_back(ep.api.port);
    }

    /// Renames an endpoint (its leases follow the name) or replaces its aliases or SRV records.
    ///
    /// # Errors
    /// Bad names, no such endpoint, the new name in use.
    pub fn update_endpoint(&mut self, network: &str, name: &str, req: EndpointUpdate) -> Result<Endpoint, ApiError> {
        if let Some(n) = &req.name {
            check_name(n, "endpoint")?;
            if n == "gateway" {
                return Err(ApiError::new(ErrorCode::InvalidName, "endpoint name \"gateway\" is reserved"));
            }
        }
        for a in req.aliases.iter().flatten() {
            check_name(a, "alias")?;
        }
        for srv in req.srv.iter().flatten() {
            parse_srv(srv)?;
        }
        let net = self.net_mut(network)?;
        if !net.endpoints.contains_key(name) {
            return Err(no_endpoint(network, name));
        }
        if let Some(new) = req.name.as_ref().filter(|n| n.as_str() != name) {
            if net.endpoints.contains_key(new) {
                return Err(ApiError::new(ErrorCode::EndpointExists, format!("endpoint {new} already exists on network {network}")));
            }
        }
        let mut ep = net.endpoints.remove(name).expect("checked above");
        if let Some(new) = req.name {
            // The leases follow the name, so garbage collection keeps them.
            net.pool.release(ep.api.ip);
            let _ = net.pool.reserve_for(ep.api.ip, &new);
            if let (Some(p6), Some(a6)) = (&mut net.pool6, ep.api.ip6) {
                p6.release(a6);
                let _ = p6.reserve_for(a6, &new);
            }
            for port in net.static_macs.values_mut().filter(|p| p.as_str() == name) {
                port.clone_from(&new);
            }
            ep.api.name = new;
        }
        if let Some(aliases) = req.aliases {
            ep.api.aliases = aliases;
        }
        if let Some(srv) = req.srv {
            ep.api.srv = srv;
        }
        let api = ep.api.clone();
        net.endpoints.insert(api.name.clone(), ep);
        Ok(api)
    }

    /// True when some endpoint (on any network) lives in that namespace.
    fn has_netns(&self, id: Option<(u64, u64)>) -> bool {
        self.networks.values().flat_map(|n| n.endpoints.values()).any(|e| e.netns_id == id)
    }

    /// The first of `eth0`, `eth1`, … that no endpoint of the namespace `id` uses.
    fn free_ifname(&self, id: Option<(u64, u64)>) -> String {
        let used: Vec<&str> = self
            .networks
            .values()
            .flat_map(|n| n.endpoints.values())
            .filter(|e| id.is_some() && e.netns_id == id)
            .map(|e| e.api.ifname.as_str())
            .collect();
        (0..).map(|i| format!("eth{i}")).find(|n| !used.contains(&n.as_str())).expect("an unbounded range")
    }

    pub(super) fn ep_mut(&mut self, network: &str, name: &str) -> Result<&mut Ep, ApiError> {
        self.net_mut(network)?.endpoints.get_mut(name).ok_or_else(|| no_endpoint(network, name))
    }
}

/// Leases the requested (or next free) addresses of both families to `name`.
fn lease(
    net: &mut super::Net,
    network: &str,
    name: &str,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
) -> Result<(Ipv4Addr, Option<Ipv6Addr>), ApiError> {
    let ip = match ip {
        Some(ip) => net.pool.reserve_for(ip, name).map(|()| ip),
        None => net.pool.allocate_for(name),
    }
    .map_err(ipam_error)?;
    let ip6 = match (&mut net.pool6, ip6) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::AddressOutOfRange,
                format!("network {network} has no IPv6 subnet (create it with --subnet6)"),
            ));
        }
        (Some(p6), Some(a)) => Some(p6.reserve_for(a, name).map(|()| a).map_err(ipam_error)?),
        (Some(p6), None) => Some(p6.allocate_for(name).map_err(ipam_error)?),
    };
    Ok((ip, ip6))
}
