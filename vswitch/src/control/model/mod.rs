//! The control plane's model: networks, endpoints, address leases, tunnel peers, names from
//! other hosts and port ids. I/O-free and synchronous (no tokio, no files, no namespaces, no
//! clock), like `quinn-proto` under `quinn`.
//!
//! Every change is a method that validates the whole request first and only then changes the
//! model, returning what the effects must do (wire a namespace, add a TAP, tell the datapath,
//! save). A refused request therefore changes nothing. When an effect fails afterwards, the
//! operation calls the matching undo (`abandon_attach`, `undo_create_network`, …), which puts
//! the model back as it was, address allocators included.
//!
//! Callers feed the model what only I/O can tell (a namespace's identity, the host's routes,
//! the time) as arguments.

pub mod cluster;
mod dhcp;
mod dns;
pub mod docker;
mod endpoints;
mod errors;
mod fdb;
mod ifports;
mod names;
mod networks;
mod peers;
mod ports;
mod publish;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

pub use dhcp::{lease_owner, DECLINED, LEASE_SECS};
pub use endpoints::{AttachPlan, NetnsInfo};
use errors::no_network;
pub use errors::{internal, tunnel_off};
pub use ifports::{check_vlan, IfPortPlan, SERVICE_OWNER};
pub use names::{b64, check_name, default_endpoint_name, parse_key, parse_srv, parse_upstream};
pub use networks::{NetworkPlan, RemovePlan, MTU_MAX, MTU_MIN};
pub use peers::{PeerPlan, PeerRow};
use ports::PortIds;
pub use publish::{parse_port_ranges, PublishTarget, MAX_RANGE};

use crate::announce::{Assembly, RemoteName};
use crate::api::{ApiError, Endpoint, Network, Usage};
use crate::gateway::Gateway;
use crate::state::{self, EndpointState, NetworkState, Phase, Snapshot};
use crate::types::{Mac, NetworkId, PortId};

/// What the daemon was started with that shapes the model's decisions.
#[derive(Debug, Clone)]
pub struct Config {
    /// TAPs get `IFF_VNET_HDR` and offloads.
    pub offloads: bool,
    /// Containers of non-internal networks reach beyond them (egress).
    pub egress: bool,
    /// The tunnel runs (`--listen`).
    pub tunnel: bool,
    /// MTU of the underlay; overlay networks default to what fits in it.
    pub underlay_mtu: u32,
    /// Where subnets of networks created without one come from.
    pub pools: ipam::SubnetPools,
}

/// IPv4 (20) + UDP (8) around a sealed datagram, and the inner Ethernet header (14): what an
/// overlay network's MTU leaves out of the underlay's (see ARCHITECTURE.md).
pub const OVERLAY_HEADROOM: u32 = 20 + 8 + tunnel::OVERHEAD as u32 + 14;

/// The network id sealed with each frame: the same on every host for the same network name.
pub fn overlay_tag(name: &str) -> u32 {
    // FNV-1a: stable across builds and hosts, and cheap.
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The model. One change at a time: the operations hold it under one lock across a change.
#[derive(Debug)]
pub struct Model {
    cfg: Config,
    networks: BTreeMap<String, Net>,
    next_network: u32,
    ports: PortIds,
    /// This daemon's IPv6 ULA /48, random at the first start, kept in the state file.
    ula: Ipv6Net,
    /// Peer hosts of the tunnel, by public key (base64).
    peers: BTreeMap<String, PeerEntry>,
    /// Names peers announced: network → peer key → names.
    remote: BTreeMap<String, BTreeMap<String, Vec<RemoteName>>>,
    /// Announcements being put together: (network, peer key) → chunks so far.
    assembly: HashMap<(String, String), Assembly>,
    /// Generation of our last announcement (milliseconds since the epoch, or higher).
    announced: u64,
    /// Interface ports by interface name.
    ifports: BTreeMap<String, ifports::IfPort>,
}

#[derive(Debug, Clone)]
struct PeerEntry {
    endpoint: Option<std::net::SocketAddr>,
    /// Each network the peer carries, with the port that stands for the peer in it.
    networks: Vec<(String, PortId)>,
}

#[derive(Debug)]
struct Net {
    id: NetworkId,
    pool: ipam::Pool,
    pool6: Option<ipam::Pool6>,
    gw_mac: Mac,
    gw_port: PortId,
    mtu: u32,
    internal: bool,
    overlay: bool,
    /// Containers reach beyond the network (egress on and not internal).
    egress: bool,
    /// Host loopback ports reachable at the gateway (as given).
    host_loopback: Vec<String>,
    labels: BTreeMap<String, String>,
    endpoints: BTreeMap<String, Ep>,
    /// DNS upstreams set for this network, as given.
    upstreams: Vec<String>,
    /// Static MAC table entries: MAC → endpoint name (or `gateway`).
    static_macs: BTreeMap<Mac, String>,
    /// 802.1Q VLAN id (its tag on its uplink and on trunks).
    vlan: Option<u16>,
    /// The interface joining it to a LAN.
    uplink: Option<String>,
    /// On an uplink network, the pool address the switch's gateway port answers at (the
    /// pool's gateway is the LAN's router).
    service_ip: Option<Ipv4Addr>,
}

#[derive(Debug)]
struct Ep {
    api: Endpoint,
    offloads: Vec<String>,
    /// (dev, inode) of the namespace: the same container may sit on several networks.
    netns_id: Option<(u64, u64)>,
    phase: Phase,
    /// This endpoint gives its container the default route (its first network).
    default_route: bool,
    /// The datapath's listener ids of each rule in `api.published` (same order).
    publish_ids: Vec<Vec<usize>>,
}

/// One row of `port ls` before the datapath's counters are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRow {
    pub id: PortId,
    pub network: String,
    pub name: String,
    pub kind: &'static str,
    pub ifname: String,
    pub mac: Mac,
    pub offloads: Vec<String>,
    pub vlan: Option<u16>,
}

impl Model {
    /// An empty model with the IPv6 ULA /48 `ula`.
    pub fn new(cfg: Config, ula: Ipv6Net) -> Model {
        Model {
            cfg,
            networks: BTreeMap::new(),
            next_network: 0,
            ports: PortIds::default(),
            ula,
            peers: BTreeMap::new(),
            remote: BTreeMap::new(),
            assembly: HashMap::new(),
            announced: 0,
            ifports: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What goes into the state file.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: state::VERSION,
            ula: Some(self.ula),
            next_network: self.next_network,
            networks: self
                .networks
                .iter()
                .map(|(name, n)| NetworkState {
                    name: name.clone(),
                    id: n.id.0,
                    pool: n.pool.clone(),
                    pool6: n.pool6.clone(),
                    gateway_mac: n.gw_mac,
                    gateway_port: n.gw_port.0,
                    mtu: n.mtu,
                    internal: n.internal,
                    overlay: n.overlay,
                    host_loopback: n.host_loopback.clone(),
                    labels: n.labels.clone(),
                    upstreams: n.upstreams.clone(),
                    endpoints: n
                        .endpoints
                        .values()
                        .map(|e| EndpointState {
                            endpoint: e.api.clone(),
                            netns_id: e.netns_id,
                            phase: e.phase,
                            default_route: e.default_route,
                        })
                        .collect(),
                    static_macs: n.static_macs.clone(),
                    vlan: n.vlan,
                    uplink: n.uplink.clone(),
                    service_ip: n.service_ip,
                })
                .collect(),
            peers: self
                .peers
                .iter()
                .map(|(key, p)| state::PeerState {
                    public_key: key.clone(),
                    endpoint: p.endpoint,
                    networks: p.networks.iter().map(|(n, _)| n.clone()).collect(),
                })
                .collect(),
            interface_ports: self.ifport_states(),
        }
    }

    pub fn networks(&self) -> Vec<Network> {
        self.networks.iter().map(|(name, n)| n.to_api(name)).collect()
    }

    pub fn network(&self, name: &str) -> Result<Network, ApiError> {
        Ok(self.net(name)?.to_api(name))
    }

    /// Address usage of a network.
    pub fn usage(&self, name: &str) -> Result<Usage, ApiError> {
        let p = &self.net(name)?.pool;
        Ok(Usage { total: p.capacity(), in_use: p.in_use(), available: p.available() })
    }

    /// The endpoints of a network, by name.
    pub fn endpoints(&self, network: &str) -> Result<Vec<Endpoint>, ApiError> {
        Ok(self.net(network)?.endpoints.values().map(|e| e.api.clone()).collect())
    }

    /// The endpoints of every network, with their network's name.
    pub fn all_endpoints(&self) -> impl Iterator<Item = (&str, &Endpoint)> {
        self.networks.iter().flat_map(|(n, net)| net.endpoints.values().map(move |e| (n.as_str(), &e.api)))
    }

    /// The network's id and gateway port.
    pub fn network_ports(&self, name: &str) -> Result<(NetworkId, PortId), ApiError> {
        let n = self.net(name)?;
        Ok((n.id, n.gw_port))
    }

    /// Every port of the model: gateways, endpoints, tunnel peers.
    pub fn port_rows(&self) -> Vec<PortRow> {
        let mut rows = Vec::new();
        for (net_name, net) in &self.networks {
            rows.push(PortRow {
                id: net.gw_port,
                network: net_name.clone(),
                name: "gateway".into(),
                kind: "gateway",
                ifname: String::new(),
                mac: net.gw_mac,
                offloads: Vec::new(),
                vlan: None,
            });
            for ep in net.endpoints.values() {
                let a = &ep.api;
                rows.push(PortRow {
                    id: a.port,
                    network: net_name.clone(),
                    name: a.name.clone(),
                    kind: "tap",
                    ifname: a.ifname.clone(),
                    mac: a.mac,
                    offloads: ep.offloads.clone(),
                    vlan: None,
                });
            }
        }
        for (ifname, p) in &self.ifports {
            for m in &p.members {
                rows.push(PortRow {
                    id: m.port,
                    network: m.network.clone(),
                    name: ifname.clone(),
                    kind: "interface",
                    ifname: ifname.clone(),
                    mac: Mac::default(),
                    offloads: vec!["vnet_hdr".into()],
                    vlan: m.vlan,
                });
            }
        }
        for (key, peer) in &self.peers {
            for (net_name, port) in &peer.networks {
                rows.push(PortRow {
                    id: *port,
                    network: net_name.clone(),
                    name: names::peer_port_name(key),
                    kind: "tunnel",
                    ifname: String::new(),
                    mac: Mac::default(),
                    offloads: Vec::new(),
                    vlan: None,
                });
            }
        }
        rows
    }

    /// Port id → (network name, endpoint name or `gateway` or `peer:…`).
    pub fn port_names(&self) -> BTreeMap<PortId, (String, String)> {
        self.port_rows().into_iter().map(|r| (r.id, (r.network, r.name))).collect()
    }

    fn net(&self, name: &str) -> Result<&Net, ApiError> {
        self.networks.get(name).ok_or_else(|| no_network(name))
    }

    fn net_mut(&mut self, name: &str) -> Result<&mut Net, ApiError> {
        self.networks.get_mut(name).ok_or_else(|| no_network(name))
    }
}

impl Net {
    /// Gives an endpoint's addresses back to the pools.
    fn release(&mut self, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) {
        self.pool.release(ip);
        if let (Some(p6), Some(a)) = (&mut self.pool6, ip6) {
            p6.release(a);
        }
    }

    fn gateway(&self) -> Gateway {
        Gateway { ip: self.service_ip.unwrap_or(self.pool.gateway()), mac: self.gw_mac, ip6: self.pool6.as_ref().map(|p| p.gateway()) }
    }

    fn to_api(&self, name: &str) -> Network {
        Network {
            name: name.to_string(),
            id: self.id.0,
            subnet: self.pool.subnet().to_string(),
            gateway: self.pool.gateway(),
            gateway_mac: self.gw_mac,
            subnet6: self.pool6.as_ref().map(|p| p.subnet().to_string()),
            gateway6: self.pool6.as_ref().map(|p| p.gateway()),
            ip_range: self
                .pool
                .range()
                .map(|r| r.to_string())
                .or_else(|| self.pool6.as_ref().and_then(|p| p.range()).map(|r| r.to_string())),
            aux_addresses: self
                .pool
                .aux()
                .iter()
                .map(ToString::to_string)
                .chain(self.pool6.iter().flat_map(|p| p.aux()).map(|a| a.to_string()))
                .collect(),
            mtu: self.mtu,
            internal: self.internal,
            overlay: self.overlay,
            host_loopback: self.host_loopback.clone(),
            egress: self.egress,
            labels: self.labels.clone(),
            endpoints: self.endpoints.len(),
            vlan: self.vlan,
            uplink: self.uplink.clone(),
            dns_address: self.service_ip,
        }
    }
}
