//! The control plane: the daemon's model of networks and endpoints, and the operations the API
//! offers on it.
//!
//! Every operation validates first and changes state last, so a refused request leaves what was
//! good untouched. The datapath is reached only through [`Datapath::call`]; namespace work only
//! through the [`NetnsWorker`] thread.

pub mod announce;
pub mod dns;
pub mod publish;
pub mod routes;
pub mod server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use tokio::sync::Mutex;

use crate::api::{
    ApiError, AttachRequest, DnsRecord, DnsStats, DnsUpstreams, DnsUpstreamsSet, Endpoint, EndpointUpdate, ErrorCode, FdbAdd, FdbEntry,
    FdbFlush, FdbStats, Flushed, GcReport, Network, NetworkCreate, NetworkDetail, Peer, PeerAdd, PortInfo, Pruned, TunnelKey, Usage,
    Version,
};
use crate::datapath::{Datapath, DnsView, DNS_TTL};
use crate::fdb::Flush;
use crate::gateway::Gateway;
use crate::state::{self, EndpointState, NetworkState, Phase, Snapshot};
use crate::switch::{DropReason, SwitchError};
use crate::sys::{AttachSpec, NetnsRef, NetnsWorker, SysError};
use crate::types::{Mac, NetworkId, PortId};
use dns::{DnsCounters, Upstreams};
use publish::{bind_rule, parse_port_ranges};

/// Options the daemon was started with that shape control decisions.
#[derive(Debug, Clone)]
pub struct Options {
    /// Open TAPs with `IFF_VNET_HDR` and offloads.
    pub offloads: bool,
    /// Where `state.json` lives.
    pub state_dir: PathBuf,
    /// Keep the TAPs on a planned stop (like Docker's live-restore): containers keep their
    /// interfaces and the next start picks them up. Without it a planned stop removes them
    /// (the next start makes them again for every endpoint whose namespace still exists).
    pub live_restore: bool,
    /// Where subnets of networks created without one come from.
    pub pools: ipam::SubnetPools,
    /// MTU of the underlay the tunnel runs on; overlay networks default to what fits in it.
    pub underlay_mtu: u32,
    /// Where `tunnel.key` lives and the tunnel listens, when it runs.
    pub tunnel_listen: Option<std::net::SocketAddr>,
    /// Containers of non-internal networks reach beyond them through the daemon's sockets
    /// (egress NAT, on by default when rootless).
    pub egress: bool,
    /// What one container may hold in egress flows.
    pub egress_limits: crate::datapath::egress::Limits,
}

/// IPv4 (20) + UDP (8) around a sealed datagram, and the inner Ethernet header (14): what an
/// overlay network's MTU leaves out of the underlay's (see ARCHITECTURE.md).
pub const OVERLAY_HEADROOM: u32 = 20 + 8 + tunnel::OVERHEAD as u32 + 14;

/// The network id sealed with each frame: the same on every host for the same network name.
pub fn overlay_tag(name: &str) -> u32 {
    // FNV-1a: stable across builds and hosts, and cheap.
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The control plane. One request changes state at a time (the state mutex is held across an
/// attach), so validation and commit never interleave.
#[derive(Debug)]
pub struct Control {
    state: Mutex<State>,
    dp: Arc<Datapath>,
    netns: Arc<NetnsWorker>,
    opts: Options,
    dns_counters: Arc<DnsCounters>,
    upstreams: Arc<std::sync::RwLock<Upstreams>>,
}

#[derive(Debug)]
struct State {
    networks: BTreeMap<String, Net>,
    next_network: u32,
    ports: PortIds,
    /// This daemon's IPv6 ULA /48, random at the first start, kept in the state file.
    ula: Ipv6Net,
    /// Peer hosts of the tunnel, by public key (base64).
    peers: BTreeMap<String, PeerEntry>,
    /// Names peers announced: network → peer key → names.
    remote: BTreeMap<String, BTreeMap<String, Vec<announce::RemoteName>>>,
    /// Announcements being put together: (network, peer key) → chunks so far.
    assembly: HashMap<(String, String), announce::Assembly>,
    /// Generation of our last announcement (milliseconds since the epoch, or higher).
    announced: u64,
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
    /// DNS upstreams set for this network, as given (the forwarder has them parsed).
    upstreams: Vec<String>,
    /// Static MAC table entries: MAC → endpoint name (or `gateway`).
    static_macs: BTreeMap<Mac, String>,
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

/// Dense port ids, reused after release (the datapath indexes vectors with them).
#[derive(Debug, Default)]
struct PortIds {
    free: BTreeSet<u32>,
    next: u32,
}

impl PortIds {
    fn take(&mut self) -> PortId {
        match self.free.pop_first() {
            Some(id) => PortId(id),
            None => {
                self.next += 1;
                PortId(self.next - 1)
            }
        }
    }

    fn give_back(&mut self, id: PortId) {
        self.free.insert(id.0);
    }

    /// Ids in `used` are taken; the gaps below the highest are free.
    fn with_used(used: &BTreeSet<u32>) -> PortIds {
        let next = used.last().map_or(0, |m| m + 1);
        PortIds { free: (0..next).filter(|i| !used.contains(i)).collect(), next }
    }
}

impl Control {
    /// The control plane over a running datapath. DNS queries the gateways do not own are
    /// forwarded to `upstreams` (the defaults, then per network) by a task started here: call it
    /// inside the tokio runtime.
    pub fn new(
        dp: Arc<Datapath>,
        netns: Arc<NetnsWorker>,
        opts: Options,
        dns_counters: Arc<DnsCounters>,
        default_upstreams: Vec<std::net::SocketAddr>,
        dns_timeout: std::time::Duration,
    ) -> Control {
        let upstreams = Arc::new(std::sync::RwLock::new(Upstreams { default: default_upstreams, ..Default::default() }));
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(dns::run(rx, dp.clone(), upstreams.clone(), dns_counters.clone(), dns_timeout));
        let _ = dp.submit_fn(move |e| e.set_dns_forwarder(tx));
        let limits = opts.egress_limits;
        let _ = dp.submit_fn(move |e| e.set_egress_limits(limits));
        let st = State {
            networks: BTreeMap::new(),
            next_network: 0,
            ports: PortIds::default(),
            ula: random_ula(),
            peers: BTreeMap::new(),
            remote: BTreeMap::new(),
            assembly: HashMap::new(),
            announced: 0,
        };
        Control { state: Mutex::new(st), dp, netns, opts, dns_counters, upstreams }
    }

    /// Stops the datapath: every TAP fd is closed, so the kernel removes every TAP we made.
    pub async fn shutdown(&self) {
        let _in_flight_done = self.state.lock().await;
        let keep = self.opts.live_restore;
        let _ = self
            .dp
            .call(move |e| {
                if !keep {
                    e.unpersist_all();
                }
                e.stop()
            })
            .await;
        self.dp.join();
    }

    pub fn version(&self) -> Version {
        let userns_pid = self.netns.userns_pid();
        Version { version: env!("CARGO_PKG_VERSION").to_string(), api: "v1".to_string(), rootless: userns_pid.is_some(), userns_pid }
    }

    pub async fn networks(&self) -> Vec<Network> {
        let st = self.state.lock().await;
        st.networks.iter().map(|(name, n)| n.to_api(name)).collect()
    }

    pub async fn create_network(&self, req: NetworkCreate) -> Result<Network, ApiError> {
        check_name(&req.name, "network")?;
        let subnet: Option<Ipv4Net> = req
            .subnet
            .as_deref()
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::new(ErrorCode::InvalidSubnet, format!("subnet {s:?} is not an IPv4 CIDR like 10.89.0.0/24")))
            })
            .transpose()?;
        let gateway = req.gateway.as_deref().map(|g| g.parse::<Ipv4Addr>().map_err(|_| bad_address(g))).transpose()?;
        let subnet6: Option<Ipv6Net> = req
            .subnet6
            .as_deref()
            .map(|s6| {
                s6.parse()
                    .map_err(|_| ApiError::new(ErrorCode::InvalidSubnet, format!("subnet6 {s6:?} is not an IPv6 CIDR like fd00:89::/64")))
            })
            .transpose()?;
        let gw6 = req
            .gateway6
            .as_deref()
            .map(|g| g.parse::<Ipv6Addr>().map_err(|_| ApiError::new(ErrorCode::InvalidAddress, format!("{g:?} is not an IPv6 address"))))
            .transpose()?;
        parse_port_ranges(&req.host_loopback)?;
        let overlay_mtu = self.opts.underlay_mtu.saturating_sub(OVERLAY_HEADROOM);
        let mtu = req.mtu.unwrap_or(if req.overlay { overlay_mtu } else { 1500 });
        if !(576..=65521).contains(&mtu) {
            return Err(ApiError::new(ErrorCode::InvalidMtu, format!("MTU {mtu} is outside 576..=65521")));
        }
        if req.overlay && mtu > overlay_mtu {
            return Err(ApiError::new(
                ErrorCode::InvalidMtu,
                format!(
                    "MTU {mtu} does not fit the tunnel: an overlay network's frames must fit one {}-byte underlay datagram (at most {overlay_mtu})",
                    self.opts.underlay_mtu
                ),
            ));
        }
        let dual = subnet6.is_some() || req.ipv6;
        if dual && mtu < 1280 {
            return Err(ApiError::new(ErrorCode::InvalidMtu, format!("MTU {mtu} is below IPv6's minimum of 1280")));
        }
        let range: Option<ipnet::IpNet> = req
            .ip_range
            .as_deref()
            .map(|r| r.parse().map_err(|_| ApiError::new(ErrorCode::InvalidSubnet, format!("ip_range {r:?} is not a CIDR"))))
            .transpose()?;
        let aux: Vec<std::net::IpAddr> = req
            .aux_addresses
            .iter()
            .map(|a| a.parse().map_err(|_| ApiError::new(ErrorCode::InvalidAddress, format!("aux address {a:?} is not an IP address"))))
            .collect::<Result<_, _>>()?;

        let mut st = self.state.lock().await;
        if st.networks.contains_key(&req.name) {
            return Err(ApiError::new(ErrorCode::NetworkExists, format!("network {} already exists", req.name)));
        }
        let in_use = st.subnets_in_use();
        let subnet = match subnet {
            Some(s) => s,
            None => self.opts.pools.next_free_v4(&in_use, &routes::routed()).map_err(setup_error)?,
        };
        let subnet6 = match subnet6 {
            None if req.ipv6 => Some(
                ipam::SubnetPools::with_defaults(st.ula)
                    .map_err(setup_error)?
                    .next_free_v6(&in_use, &routes::routed())
                    .map_err(setup_error)?,
            ),
            other => other,
        };
        let opts4 = ipam::PoolOptions {
            range: match range {
                Some(ipnet::IpNet::V4(r)) => Some(r),
                Some(ipnet::IpNet::V6(_)) | None => None,
            },
            aux: aux
                .iter()
                .filter_map(|a| match a {
                    std::net::IpAddr::V4(v) => Some(*v),
                    _ => None,
                })
                .collect(),
        };
        let opts6 = ipam::Pool6Options {
            range: match range {
                Some(ipnet::IpNet::V6(r)) => Some(r),
                _ => None,
            },
            aux: aux
                .iter()
                .filter_map(|a| match a {
                    std::net::IpAddr::V6(v) => Some(*v),
                    _ => None,
                })
                .collect(),
        };
        if (opts6.range.is_some() || !opts6.aux.is_empty()) && subnet6.is_none() {
            return Err(ApiError::new(ErrorCode::InvalidAddress, "an IPv6 range or aux address needs an IPv6 subnet"));
        }
        let pool = ipam::Pool::with_options(subnet, gateway, opts4).map_err(setup_error)?;
        let pool6 = match subnet6 {
            Some(net6) => Some(ipam::Pool6::with_options(net6, gw6, opts6).map_err(setup_error)?),
            None => None,
        };
        if let Some((other, n)) = st.networks.iter().find(|(_, n)| overlaps(n.pool.subnet(), pool.subnet())) {
            return Err(ApiError::new(
                ErrorCode::SubnetOverlap,
                format!("subnet {} overlaps {} of network {other}", pool.subnet(), n.pool.subnet()),
            ));
        }
        if let Some(p6) = &pool6 {
            let clash = st.networks.iter().find_map(|(name, n)| {
                let theirs = n.pool6.as_ref()?.subnet();
                (theirs.contains(&p6.subnet().network()) || p6.subnet().contains(&theirs.network())).then_some((name, theirs))
            });
            if let Some((other, theirs)) = clash {
                return Err(ApiError::new(
                    ErrorCode::SubnetOverlap,
                    format!("subnet6 {} overlaps {theirs} of network {other}", p6.subnet()),
                ));
            }
        }
        let id = NetworkId(st.next_network);
        let gw_port = st.ports.take();
        let gw_mac = Mac::local_from(0x4757_0000_0000 | u64::from(id.0));
        let gw = Gateway { ip: pool.gateway(), mac: gw_mac, ip6: pool6.as_ref().map(|p| p.gateway()) };
        let prefix_len = pool.subnet().prefix_len();
        let egress_cfg = self.egress_config(gw, pool.subnet(), mtu, req.internal, &req.host_loopback);
        let added = self
            .dp
            .call(move |e| {
                let r = e.add_network(id, gw_port, gw, prefix_len, mtu);
                if let (Ok(()), Some(cfg)) = (&r, egress_cfg) {
                    e.set_egress_network(gw_port, cfg);
                }
                r
            })
            .await
            .map_err(internal)?;
        if let Err(e) = added {
            st.ports.give_back(gw_port);
            return Err(internal(e));
        }
        st.next_network += 1;
        let net = Net {
            id,
            pool,
            pool6,
            gw_mac,
            gw_port,
            mtu,
            internal: req.internal,
            overlay: req.overlay,
            egress: self.opts.egress && !req.internal,
            host_loopback: req.host_loopback,
            labels: req.labels,
            endpoints: BTreeMap::new(),
            upstreams: Vec::new(),
            static_macs: BTreeMap::new(),
        };
        let api = net.to_api(&req.name);
        st.networks.insert(req.name.clone(), net);
        if let Err(e) = self.save(&st) {
            // Not on disk, so not made: undo in the datapath too.
            if let Some(net) = st.networks.remove(&req.name) {
                let (id, gw_port) = (net.id, net.gw_port);
                let _ = self.dp.call(move |e| e.remove_network(id, gw_port)).await;
                st.ports.give_back(gw_port);
            }
            return Err(e);
        }
        self.local_change(&mut st);
        tracing::info!(network = %api.name, subnet = %api.subnet, gateway = %api.gateway, "network created");
        Ok(api)
    }

    pub async fn inspect_network(&self, name: &str) -> Result<NetworkDetail, ApiError> {
        let st = self.state.lock().await;
        let net = find_net(&st, name)?;
        Ok(NetworkDetail {
            network: net.to_api(name),
            usage: Usage { total: net.pool.capacity(), in_use: net.pool.in_use(), available: net.pool.available() },
            endpoint_list: net.endpoints.values().map(|e| e.api.clone()).collect(),
        })
    }

    pub async fn remove_network(&self, name: &str, force: bool) -> Result<(), ApiError> {
        let mut st = self.state.lock().await;
        let net = find_net(&st, name)?;
        if let Some((key, _)) = st.peers.iter().find(|(_, p)| p.networks.iter().any(|(n, _)| n == name)) {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!("network {name} is carried by tunnel peer {key}; remove the peer (or re-add it without this network) first"),
            ));
        }
        if !net.endpoints.is_empty() && !force {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!("network {name} has {} endpoint(s) attached; detach them or remove with --force", net.endpoints.len()),
            ));
        }
        let ports: Vec<PortId> = net.endpoints.values().map(|e| e.api.port).collect();
        let (id, gw_port) = (net.id, net.gw_port);
        for ep in find_net_mut(&mut st, name)?.endpoints.values_mut() {
            ep.phase = Phase::Detaching;
        }
        self.save(&st)?;
        let removed = self
            .dp
            .call(move |e| {
                let mut files = Vec::new();
                for p in ports {
                    files.extend(e.remove_tap(p));
                }
                e.remove_network(id, gw_port).map(|()| files)
            })
            .await
            .map_err(internal)?;
        let files = removed.map_err(internal)?;
        tokio::task::spawn_blocking(move || drop(files));
        let net = st.networks.remove(name).expect("found above under the same lock");
        for ep in net.endpoints.values() {
            st.ports.give_back(ep.api.port);
        }
        st.ports.give_back(net.gw_port);
        if let Ok(mut u) = self.upstreams.write() {
            u.per_network.remove(name);
        }
        st.remote.remove(name);
        st.assembly.retain(|(net, _), _| net != name);
        self.save(&st)?;
        self.local_change(&mut st);
        tracing::info!(network = name, "network removed");
        Ok(())
    }

    pub async fn attach(&self, network: &str, req: AttachRequest) -> Result<Endpoint, ApiError> {
        let netns = match (&req.netns, req.pid) {
            (Some(p), None) => NetnsRef::Path(PathBuf::from(p)),
            (None, Some(pid)) => NetnsRef::Pid(pid),
            _ => {
                return Err(ApiError::new(ErrorCode::InvalidRequest, "give exactly one of netns (a path) and pid"));
            }
        };
        // A TAP in the daemon's own namespace would wire the host itself into the switch.
        let own = crate::sys::netns::current_netns_id().ok();
        let netns_id = crate::sys::netns::netns_id(&netns).ok();
        if own.is_some() && netns_id == own {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{netns} is vswitchd's own network namespace; attach a container's namespace instead"),
            ));
        }
        let name = match &req.name {
            Some(n) => n.clone(),
            None => default_endpoint_name(&netns),
        };
        check_name(&name, "endpoint")?;
        if name == "gateway" {
            return Err(ApiError::new(ErrorCode::InvalidName, "endpoint name \"gateway\" is reserved for the network's gateway port"));
        }
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".to_string());
        for a in &req.aliases {
            check_name(a, "alias")?;
        }
        for srv in &req.srv {
            parse_srv(srv)?;
        }
        let requested_ip = req.ip.as_deref().map(|s| s.parse::<Ipv4Addr>().map_err(|_| bad_address(s))).transpose()?;
        let requested_ip6 = req
            .ip6
            .as_deref()
            .map(|s| s.parse::<Ipv6Addr>().map_err(|_| ApiError::new(ErrorCode::InvalidAddress, format!("{s:?} is not an IPv6 address"))))
            .transpose()?;
        if let Some(mac) = req.mac {
            if mac.is_multicast() || mac.is_zero() {
                return Err(ApiError::new(ErrorCode::InvalidAddress, format!("MAC {mac} is not a unicast address")));
            }
        }

        let mut st = self.state.lock().await;
        let second_network = netns_id.is_some() && st.has_netns(netns_id);
        let net = find_net_mut(&mut st, network)?;
        if net.endpoints.contains_key(&name) {
            return Err(ApiError::new(ErrorCode::EndpointExists, format!("endpoint {name} already exists on network {network}")));
        }
        let ip = match requested_ip {
            Some(ip) => net.pool.reserve_for(ip, &name).map(|()| ip),
            None => net.pool.allocate_for(&name),
        }
        .map_err(ipam_error)?;
        let ip6 = match (&mut net.pool6, requested_ip6) {
            (None, None) => Ok(None),
            (None, Some(_)) => {
                Err(ApiError::new(ErrorCode::AddressOutOfRange, format!("network {network} has no IPv6 subnet (create it with --subnet6)")))
            }
            (Some(p6), Some(a)) => p6.reserve_for(a, &name).map(|()| Some(a)).map_err(ipam_error),
            (Some(p6), None) => p6.allocate_for(&name).map(Some).map_err(ipam_error),
        };
        let ip6 = match ip6 {
            Ok(a) => a,
            Err(e) => {
                net.pool.release(ip);
                return Err(e);
            }
        };
        let mac = req.mac.unwrap_or_else(|| {
            let o = ip.octets();
            Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
        });
        if net.endpoints.values().any(|e| e.api.mac == mac) || mac == net.gw_mac {
            net.release(ip, ip6);
            return Err(ApiError::new(ErrorCode::MacTaken, format!("MAC {mac} is already used on network {network}")));
        }
        let prefix_len = net.pool.subnet().prefix_len();
        let api = Endpoint {
            name: name.clone(),
            network: network.to_string(),
            netns: netns.display(),
            ifname,
            mac,
            ip,
            prefix_len,
            ip6,
            port: PortId(0),
            aliases: req.aliases,
            srv: req.srv,
            published: Vec::new(),
        };
        // Like a container on several Docker networks: the first network gives the default
        // route, later ones only their subnet.
        let ep =
            Ep { api, offloads: Vec::new(), netns_id, phase: Phase::Attaching, default_route: !second_network, publish_ids: Vec::new() };
        let api = self.bring_up(&mut st, network, ep, false).await?;
        self.local_change(&mut st);
        tracing::info!(network, endpoint = %api.name, ip = %api.ip, mac = %api.mac, port = api.port.0, "attached");
        Ok(api)
    }

    /// Records `ep` (phase Attaching) and saves, makes its TAP (or reopens it with `reuse`),
    /// hands it to the datapath and marks it Attached. Any failure undoes all of it and
    /// releases the addresses. The addresses must already be leased in the network's pools.
    async fn bring_up(&self, st: &mut State, network: &str, mut ep: Ep, restoring: bool) -> Result<Endpoint, ApiError> {
        let port = st.ports.take();
        ep.api.port = port;
        ep.phase = Phase::Attaching;
        let name = ep.api.name.clone();
        let net = find_net_mut(st, network)?;
        let (net_id, mtu, gw_port) = (net.id, net.mtu, net.gw_port);
        let (ip, mac) = (ep.api.ip, ep.api.mac);
        let spec = AttachSpec {
            netns: NetnsRef::Path(PathBuf::from(&ep.api.netns)),
            ifname: ep.api.ifname.clone(),
            mtu,
            mac: ep.api.mac.0,
            addr: ep.api.ip,
            prefix_len: ep.api.prefix_len,
            gateway: if ep.default_route { net.pool.gateway() } else { Ipv4Addr::UNSPECIFIED },
            addr6: ep.api.ip6.zip(net.pool6.as_ref().map(|p| p.subnet().prefix_len())),
            gateway6: net.pool6.as_ref().filter(|_| ep.default_route && ep.api.ip6.is_some()).map(|p| p.gateway()),
            // No IPv6 on a network without an IPv6 subnet (as Docker does): no link-local
            // chatter flooded to every port by each new interface.
            disable_ipv6: net.pool6.is_none(),
            // Overlay networks too: the datapath segments their TCP super-frames before the
            // tunnel (which carries frames of at most the MTU), but not UDP ones (no USO).
            vnet_hdr: self.opts.offloads,
            uso: !net.overlay,
            gso_max_size: net.overlay.then(|| crate::datapath::overlay::tso_max_size(mtu)),
            // Persistent only once the state file says so (below): a crash before that takes
            // the TAP with the process, so nothing can leak.
            persist: false,
            reuse: restoring,
        };
        net.endpoints.insert(name.clone(), ep);
        let worker = self.netns.clone();
        let attached = tokio::task::spawn_blocking(move || worker.attach(spec)).await.map_err(internal);
        let attached = match attached.and_then(|r| r.map_err(sys_error)) {
            Ok(a) => a,
            Err(e) => {
                self.forget(st, network, &name);
                return Err(e);
            }
        };
        let (fd, hdr) = (attached.fd, attached.vnet_hdr_len);
        let added = self
            .dp
            .call(move |e| {
                e.add_tap(port, net_id, fd, hdr, mtu)?;
                e.egress_client(port, gw_port, ip, mac);
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(internal);
        if let Err(e) = added.and_then(|r| r.map_err(internal)) {
            self.forget(st, network, &name);
            return Err(e);
        }
        let ep = find_net_mut(st, network)?.endpoints.get_mut(&name).expect("inserted above under the same lock");
        if restoring {
            // Published ports come back with the endpoint; one that cannot be bound any more
            // is dropped with a warning (the endpoint itself is fine).
            let rules = std::mem::take(&mut ep.api.published);
            for rule in rules {
                match bind_rule(&rule) {
                    Ok(sockets) => {
                        let ids = self.start_listeners(gw_port, port, ip, &rule, sockets).await;
                        ep.api.published.push(rule);
                        ep.publish_ids.push(ids);
                    }
                    Err(e) => tracing::warn!(endpoint = %name, error = %e.error.message, "published port not restored"),
                }
            }
        }
        ep.phase = Phase::Attached;
        ep.offloads = attached.offloads.names();
        let api = ep.api.clone();
        if !restoring {
            // One write per attach: the endpoint is on disk before its TAP may outlive us.
            if let Err(e) = self.save(st) {
                self.close_tap(port).await;
                self.forget(st, network, &name);
                return Err(e);
            }
            let _ = self.dp.call(move |e| e.set_tap_persist(port, true)).await;
        }
        Ok(api)
    }

    /// Takes a TAP out of the datapath and closes it on a blocking thread: deleting a network
    /// device waits for RCU grace periods (tens of ms) and must not stall the datapath.
    async fn close_tap(&self, port: PortId) {
        if let Ok(Some(file)) = self.dp.call(move |e| e.remove_tap(port)).await {
            let _ = tokio::task::spawn_blocking(move || drop(file)).await;
        }
    }

    /// Drops an endpoint from the model: its addresses, its port id, its static MACs.
    fn forget(&self, st: &mut State, network: &str, name: &str) {
        let Some(net) = st.networks.get_mut(network) else { return };
        let Some(ep) = net.endpoints.remove(name) else { return };
        net.release(ep.api.ip, ep.api.ip6);
        net.static_macs.retain(|_, port| port != name);
        st.ports.give_back(ep.api.port);
    }

    pub async fn detach(&self, network: &str, name: &str) -> Result<(), ApiError> {
        let mut st = self.state.lock().await;
        let net = find_net_mut(&mut st, network)?;
        let Some(ep) = net.endpoints.get_mut(name) else {
            return Err(ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint {name} on network {network}")));
        };
        let port = ep.api.port;
        // Not persistent any more, so a crash from here on removes the TAP with the process.
        self.dp.call(move |e| e.set_tap_persist(port, false)).await.map_err(internal)?;
        self.forget(&mut st, network, name);
        let saved = self.save(&st);
        self.close_tap(port).await;
        self.local_change(&mut st);
        saved?;
        tracing::info!(network, endpoint = name, "detached");
        Ok(())
    }

    /// Renames an endpoint or replaces its aliases; DNS follows at once.
    pub async fn update_endpoint(&self, network: &str, name: &str, req: EndpointUpdate) -> Result<Endpoint, ApiError> {
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
        let mut st = self.state.lock().await;
        let net = find_net_mut(&mut st, network)?;
        if !net.endpoints.contains_key(name) {
            return Err(ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint {name} on network {network}")));
        }
        if let Some(new) = req.name.as_ref().filter(|n| n.as_str() != name) {
            if net.endpoints.contains_key(new) {
                return Err(ApiError::new(ErrorCode::EndpointExists, format!("endpoint {new} already exists on network {network}")));
            }
        }
        let mut ep = net.endpoints.remove(name).expect("checked above under the same lock");
        if let Some(new) = req.name {
            // The leases follow the name, so garbage collection keeps them.
            net.pool.release(ep.api.ip);
            let _ = net.pool.reserve_for(ep.api.ip, &new);
            if let (Some(p6), Some(a6)) = (&mut net.pool6, ep.api.ip6) {
                p6.release(a6);
                let _ = p6.reserve_for(a6, &new);
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
        if api.name != name {
            for port in net.static_macs.values_mut().filter(|p| p.as_str() == name) {
                port.clone_from(&api.name);
            }
        }
        net.endpoints.insert(api.name.clone(), ep);
        self.save(&st)?;
        self.local_change(&mut st);
        Ok(api)
    }

    /// Releases leases whose endpoint is gone (none should be; a lease can only be orphaned
    /// by a bug or a hand-edited state file).
    pub async fn ipam_gc(&self) -> Result<GcReport, ApiError> {
        let mut st = self.state.lock().await;
        let mut released = Vec::new();
        for (name, net) in st.networks.iter_mut() {
            let live: BTreeSet<String> = net.endpoints.keys().cloned().collect();
            let ips: BTreeSet<Ipv4Addr> = net.endpoints.values().map(|e| e.api.ip).collect();
            let ip6s: BTreeSet<Ipv6Addr> = net.endpoints.values().filter_map(|e| e.api.ip6).collect();
            let is_live = |owner: &str| live.contains(owner);
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
        if !released.is_empty() {
            self.save(&st)?;
        }
        Ok(GcReport { released })
    }

    /// Removes every network that has no endpoint.
    pub async fn prune_networks(&self) -> Result<Pruned, ApiError> {
        let empty: Vec<String> = {
            let st = self.state.lock().await;
            st.networks.iter().filter(|(_, n)| n.endpoints.is_empty()).map(|(k, _)| k.clone()).collect()
        };
        let mut removed = Vec::new();
        for name in empty {
            // One that gained an endpoint meanwhile is refused and kept.
            if self.remove_network(&name, false).await.is_ok() {
                removed.push(name);
            }
        }
        Ok(Pruned { removed })
    }

    pub async fn tunnel_key(&self) -> Result<TunnelKey, ApiError> {
        let listen = self.opts.tunnel_listen.ok_or_else(tunnel_off)?;
        let key = self.dp.call(|e| e.tunnel_public_key()).await.map_err(internal)?.ok_or_else(tunnel_off)?;
        let (addr, drops) = self.dp.call(|e| (e.tunnel_addr(), e.tunnel_drops())).await.map_err(internal)?;
        let drops = drops.map(|d| d.iter().map(|(r, n)| (r.as_str().to_string(), n)).collect()).unwrap_or_default();
        Ok(TunnelKey { public_key: b64(&key), listen: addr.unwrap_or(listen).to_string(), drops })
    }

    /// A new key pair for this host; refused while peers are set (they know the old key).
    pub async fn new_tunnel_key(&self) -> Result<TunnelKey, ApiError> {
        self.opts.tunnel_listen.ok_or_else(tunnel_off)?;
        let st = self.state.lock().await;
        if !st.peers.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "remove every tunnel peer before changing this host's key (they know the old one)",
            ));
        }
        let private = random_bytes::<32>();
        write_key(&self.opts.state_dir, &private).map_err(internal)?;
        let seed = random_bytes::<32>();
        self.dp.call(move |e| e.rekey_tunnel(private, seed)).await.map_err(internal)?.map_err(internal)?;
        drop(st);
        self.tunnel_key().await
    }

    pub async fn add_peer(&self, req: PeerAdd) -> Result<Peer, ApiError> {
        let mut st = self.state.lock().await;
        let key = req.public_key.clone();
        self.add_peer_locked(&mut st, req).await?;
        self.save(&st)?;
        self.announce(&mut st);
        drop(st);
        let peers = self.peers().await?;
        peers.into_iter().find(|p| p.public_key == key).ok_or_else(|| internal("peer vanished"))
    }

    async fn add_peer_locked(&self, st: &mut State, req: PeerAdd) -> Result<(), ApiError> {
        self.opts.tunnel_listen.ok_or_else(tunnel_off)?;
        let key = parse_key(&req.public_key)?;
        let canonical = b64(&key);
        if st.peers.contains_key(&canonical) {
            return Err(ApiError::new(ErrorCode::EndpointExists, format!("peer {canonical} exists; remove it first")));
        }
        let endpoint = req
            .endpoint
            .as_deref()
            .map(|e| {
                e.parse::<std::net::SocketAddr>()
                    .map_err(|_| ApiError::new(ErrorCode::InvalidAddress, format!("endpoint {e:?} is not IP:PORT")))
            })
            .transpose()?;
        if req.networks.is_empty() {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "name at least one overlay network the peer shares"));
        }
        let mut nets = Vec::new();
        let mut ports = Vec::new();
        for name in &req.networks {
            let net = find_net(st, name)?;
            if !net.overlay {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("network {name} is not an overlay network (create it with --overlay to span hosts)"),
                ));
            }
            let (id, mtu) = (net.id, net.mtu);
            let port = st.ports.take();
            ports.push((name.clone(), port));
            nets.push(crate::datapath::overlay::PeerNetwork { network: id, tag: overlay_tag(name), port, mtu });
        }
        let added = self.dp.call(move |e| e.add_peer(key, endpoint, &nets)).await.map_err(internal)?;
        if let Err(e) = added {
            for (_, p) in &ports {
                st.ports.give_back(*p);
            }
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("peer refused: {e}")));
        }
        tracing::info!(peer = %canonical, endpoint = ?endpoint, networks = ?req.networks, "tunnel peer added");
        st.peers.insert(canonical, PeerEntry { endpoint, networks: ports });
        Ok(())
    }

    pub async fn remove_peer(&self, key: &str) -> Result<(), ApiError> {
        let key = parse_key(key)?;
        let canonical = b64(&key);
        let mut st = self.state.lock().await;
        if !st.peers.contains_key(&canonical) {
            return Err(ApiError::new(ErrorCode::NotFound, format!("no tunnel peer {canonical}")));
        }
        self.dp.call(move |e| e.remove_peer(key)).await.map_err(internal)?.map_err(internal)?;
        if let Some(p) = st.peers.remove(&canonical) {
            for (_, port) in p.networks {
                st.ports.give_back(port);
            }
        }
        for names in st.remote.values_mut() {
            names.remove(&canonical);
        }
        st.assembly.retain(|(_, peer), _| *peer != canonical);
        self.save(&st)?;
        self.push_dns(&st);
        Ok(())
    }

    pub async fn peers(&self) -> Result<Vec<Peer>, ApiError> {
        let st = self.state.lock().await;
        let (infos, now) = self.dp.call(|e| (e.peer_infos(), e.now())).await.map_err(internal)?;
        Ok(st
            .peers
            .iter()
            .map(|(key, p)| {
                let info = infos.iter().find(|i| b64(&i.public_key) == *key);
                Peer {
                    public_key: key.clone(),
                    endpoint: info.and_then(|i| i.endpoint).or(p.endpoint).map(|e| e.to_string()),
                    networks: p.networks.iter().map(|(n, _)| n.clone()).collect(),
                    last_handshake_secs: info.and_then(|i| i.last_handshake).map(|t| now.saturating_sub(t).as_secs()),
                    handshakes: info.map_or(0, |i| i.handshakes),
                    rx_packets: info.map_or(0, |i| i.rx_packets),
                    rx_bytes: info.map_or(0, |i| i.rx_bytes),
                    tx_packets: info.map_or(0, |i| i.tx_packets),
                    tx_bytes: info.map_or(0, |i| i.tx_bytes),
                    drops: info.map(|i| i.drops.iter().map(|(r, n)| (r.as_str().to_string(), n)).collect()).unwrap_or_default(),
                }
            })
            .collect())
    }

    pub async fn dns_records(&self, network: Option<&str>) -> Result<Vec<DnsRecord>, ApiError> {
        let st = self.state.lock().await;
        if let Some(n) = network {
            find_net(&st, n)?;
        }
        Ok(st
            .networks
            .iter()
            .filter(|(n, _)| network.is_none_or(|want| want == n.as_str()))
            .flat_map(|(n, net)| {
                net.endpoints.values().map(move |e| DnsRecord {
                    network: n.clone(),
                    name: e.api.name.clone(),
                    aliases: e.api.aliases.clone(),
                    ipv4: vec![e.api.ip],
                    ipv6: e.api.ip6.into_iter().collect(),
                })
            })
            .collect())
    }

    pub async fn dns_upstreams(&self, network: &str) -> Result<DnsUpstreams, ApiError> {
        let st = self.state.lock().await;
        let net = find_net(&st, network)?;
        let u = self.upstreams.read().map_err(internal)?;
        let own: Vec<String> = u.per_network.get(network).map(|v| v.iter().map(|a| a.to_string()).collect()).unwrap_or_default();
        let effective = if net.internal { Vec::new() } else { u.for_network(network).iter().map(|a| a.to_string()).collect() };
        Ok(DnsUpstreams { network: network.to_string(), upstreams: own, effective, internal: net.internal })
    }

    pub async fn set_dns_upstreams(&self, network: &str, req: DnsUpstreamsSet) -> Result<DnsUpstreams, ApiError> {
        let addrs = req
            .upstreams
            .iter()
            .map(|s| dns::parse_upstream(s).map_err(|m| ApiError::new(ErrorCode::InvalidAddress, m)))
            .collect::<Result<Vec<_>, _>>()?;
        {
            let mut st = self.state.lock().await;
            find_net_mut(&mut st, network)?.upstreams = req.upstreams.clone();
            let mut u = self.upstreams.write().map_err(internal)?;
            if addrs.is_empty() {
                u.per_network.remove(network);
            } else {
                u.per_network.insert(network.to_string(), addrs);
            }
            drop(u);
            self.save(&st)?;
        }
        self.dns_upstreams(network).await
    }

    pub fn dns_stats(&self) -> DnsStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.dns_counters;
        DnsStats {
            queries: c.queries.load(Relaxed),
            answers: c.answers.load(Relaxed),
            forwarded: c.forwarded.load(Relaxed),
            forward_answers: c.forward_answers.load(Relaxed),
            failures: c.failures.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
        }
    }

    /// Writes the state file; a failure is logged and reported (the change stays in memory).
    fn save(&self, st: &State) -> Result<(), ApiError> {
        state::save(&self.opts.state_dir, &st.snapshot()).map_err(|e| {
            tracing::error!(error = %e, dir = %self.opts.state_dir.display(), "cannot write the state file");
            ApiError::new(ErrorCode::Internal, format!("the change could not be saved to {}: {e}", self.opts.state_dir.display()))
        })
    }

    /// Brings back what the state file describes: networks, then every endpoint whose
    /// namespace still exists (its TAP reopened, or made again), dropping the others and
    /// finishing interrupted detaches. Returns one line per endpoint dropped.
    ///
    /// # Errors
    /// When the datapath refuses a network of the snapshot, or the result cannot be saved.
    pub async fn restore(&self, snap: Snapshot) -> Result<Vec<String>, String> {
        let mut st = self.state.lock().await;
        let mut report = Vec::new();
        st.next_network = snap.next_network;
        if let Some(ula) = snap.ula {
            st.ula = ula;
        }
        let mut pending = Vec::new();
        for n in snap.networks {
            let (id, gw_port) = (NetworkId(n.id), PortId(n.gateway_port));
            let gw = Gateway { ip: n.pool.gateway(), mac: n.gateway_mac, ip6: n.pool6.as_ref().map(|p| p.gateway()) };
            let (prefix_len, mtu) = (n.pool.subnet().prefix_len(), n.mtu);
            let egress_cfg = self.egress_config(gw, n.pool.subnet(), mtu, n.internal, &n.host_loopback);
            self.dp
                .call(move |e| {
                    let r = e.add_network(id, gw_port, gw, prefix_len, mtu);
                    if let (Ok(()), Some(cfg)) = (&r, egress_cfg) {
                        e.set_egress_network(gw_port, cfg);
                    }
                    r
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("network {}: {e}", n.name))?;
            if !n.upstreams.is_empty() {
                let addrs: Vec<_> = n.upstreams.iter().filter_map(|u| dns::parse_upstream(u).ok()).collect();
                if let Ok(mut u) = self.upstreams.write() {
                    u.per_network.insert(n.name.clone(), addrs);
                }
            }
            let net = Net {
                id,
                pool: n.pool,
                pool6: n.pool6,
                gw_mac: n.gateway_mac,
                gw_port,
                mtu,
                internal: n.internal,
                overlay: n.overlay,
                egress: self.opts.egress && !n.internal,
                host_loopback: n.host_loopback,
                labels: n.labels,
                endpoints: BTreeMap::new(),
                upstreams: n.upstreams,
                static_macs: BTreeMap::new(),
            };
            st.networks.insert(n.name.clone(), net);
            pending.push((n.name, n.endpoints, n.static_macs));
        }
        // Until an endpoint is brought up again its port id is not in use.
        st.ports = PortIds::with_used(&snap_gateway_ports(&st));
        for (network, endpoints, statics) in pending {
            for e in endpoints {
                let ep = Ep {
                    api: e.endpoint,
                    offloads: Vec::new(),
                    netns_id: e.netns_id,
                    phase: e.phase,
                    default_route: e.default_route,
                    publish_ids: Vec::new(),
                };
                let (name, netns) = (ep.api.name.clone(), NetnsRef::Path(PathBuf::from(&ep.api.netns)));
                let (ifname, ip, ip6) = (ep.api.ifname.clone(), ep.api.ip, ep.api.ip6);
                let alive = e.netns_id.is_some() && crate::sys::netns::netns_id(&netns).ok() == e.netns_id;
                let why = match (ep.phase, alive) {
                    (Phase::Detaching, _) => "its detach was interrupted".to_string(),
                    (_, false) => format!("its namespace {} is gone", ep.api.netns),
                    (_, true) => {
                        // bring_up takes a fresh port id and leases nothing new.
                        match self.bring_up(&mut st, &network, ep, true).await {
                            Ok(_) => continue,
                            // bring_up has already forgotten it and released its addresses.
                            Err(err) => {
                                report.push(format!(
                                    "dropped endpoint {name} of network {network}: its TAP could not be restored: {}",
                                    err.error.message
                                ));
                                continue;
                            }
                        }
                    }
                };
                if alive {
                    // A TAP left behind (persistent) in a namespace that still exists.
                    let worker = self.netns.clone();
                    let _ = tokio::task::spawn_blocking(move || worker.delete_link(netns, &ifname)).await;
                }
                if let Some(net) = st.networks.get_mut(&network) {
                    net.release(ip, ip6);
                }
                report.push(format!("dropped endpoint {name} of network {network}: {why}"));
            }
            for (mac, port_name) in statics {
                let Some(net) = st.networks.get(&network) else { continue };
                let port = if port_name == "gateway" { Some(net.gw_port) } else { net.endpoints.get(&port_name).map(|e| e.api.port) };
                let Some(port) = port else { continue };
                let id = net.id;
                if let Ok(Ok(())) = self.dp.call(move |e| e.switch_mut().add_static(id, mac, port)).await {
                    if let Some(net) = st.networks.get_mut(&network) {
                        net.static_macs.insert(mac, port_name);
                    }
                }
            }
        }
        // On disk first, then persistent: the same order as an attach.
        self.save(&st).map_err(|e| e.error.message)?;
        let _ = self.dp.call(|e| e.persist_all_taps()).await;
        for p in snap.peers {
            let req = PeerAdd { public_key: p.public_key.clone(), endpoint: p.endpoint.map(|e| e.to_string()), networks: p.networks };
            if let Err(e) = self.add_peer_locked(&mut st, req).await {
                report.push(format!("dropped tunnel peer {}: {}", p.public_key, e.error.message));
            }
        }
        self.save(&st).map_err(|e| e.error.message)?;
        self.local_change(&mut st);
        Ok(report)
    }

    /// After a change to our own endpoints or peers: new records here, and our names to the
    /// peers. (Names received from peers only call `push_dns`: announcing in answer to an
    /// announcement would make hosts echo each other forever.)
    fn local_change(&self, st: &mut State) {
        self.push_dns(st);
        self.announce(st);
    }

    /// Sends our names of every overlay network to the peers that carry it.
    fn announce(&self, st: &mut State) {
        if st.peers.is_empty() {
            return;
        }
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        st.announced = now_ms.max(st.announced + 1);
        for (name, net) in &st.networks {
            if !net.overlay || !st.peers.values().any(|p| p.networks.iter().any(|(n, _)| n == name)) {
                continue;
            }
            let names: Vec<announce::RemoteName> = net
                .endpoints
                .values()
                .filter(|e| e.phase == Phase::Attached)
                .map(|e| announce::RemoteName {
                    name: e.api.name.clone(),
                    aliases: e.api.aliases.clone(),
                    v4: vec![e.api.ip],
                    v6: e.api.ip6.into_iter().collect(),
                })
                .collect();
            let frames = announce::frames(net.gw_mac, st.announced, &names);
            let id = net.id;
            let _ = self.dp.submit_fn(move |e| e.send_to_peers(id, frames));
        }
    }

    /// Takes one announcement chunk from a peer: checks it against what that peer may speak
    /// for, and replaces the peer's names once the whole generation is in.
    async fn receive_announcement(&self, key: [u8; 32], tag: u32, frame: Vec<u8>) {
        let chunk = match announce::parse(&frame) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "announcement dropped");
                return;
            }
        };
        let peer = b64(&key);
        let mut st = self.state.lock().await;
        let Some(network) = st.networks.iter().find(|(n, net)| net.overlay && overlay_tag(n) == tag).map(|(n, _)| n.clone()) else {
            return;
        };
        if !st.peers.get(&peer).is_some_and(|p| p.networks.iter().any(|(n, _)| *n == network)) {
            return;
        }
        let net = &st.networks[&network];
        let valid = |r: &announce::RemoteName| {
            check_name(&r.name, "name").is_ok()
                && r.aliases.iter().all(|a| check_name(a, "alias").is_ok())
                && r.v4.iter().all(|a| net.pool.subnet().contains(a))
                && r.v6.iter().all(|a| net.pool6.as_ref().is_some_and(|p| p.subnet().contains(a)))
        };
        if !chunk.entries.iter().all(valid) {
            tracing::warn!(%peer, network, "announcement with names or addresses outside the network refused");
            return;
        }
        let set = st.assembly.entry((network.clone(), peer.clone())).or_default().add(chunk);
        if let Some(names) = set {
            if names.len() > announce::MAX_ENTRIES {
                tracing::warn!(%peer, network, count = names.len(), "announcement too large, refused");
                return;
            }
            let changed = st.remote.get(&network).and_then(|m| m.get(&peer)) != Some(&names);
            st.remote.entry(network).or_default().insert(peer, names);
            if changed {
                self.push_dns(&st);
            }
        }
    }

    /// Starts the tasks that exchange names with peers: one takes announcements from the
    /// datapath, one re-announces every [`announce::EVERY`]. Call once, in the runtime.
    pub fn start_background(self: &Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let _ = self.dp.submit_fn(move |e| e.set_announce_sink(tx));
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((key, tag, frame)) = rx.recv().await {
                me.receive_announcement(key, tag, frame).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(announce::EVERY);
            loop {
                tick.tick().await;
                let mut st = me.state.lock().await;
                me.announce(&mut st);
            }
        });
    }

    /// Rebuilds the DNS records and every port's view from the model and hands them to the
    /// datapath in one job: a pointer swap there, no socket touched, no query lost.
    fn push_dns(&self, st: &State) {
        let mut records = ::dns::Records::new(DNS_TTL);
        for (name, net) in &st.networks {
            let entries = net
                .endpoints
                .values()
                .map(|e| ::dns::Entry {
                    name: e.api.name.clone(),
                    aliases: e.api.aliases.clone(),
                    v4: vec![e.api.ip],
                    v6: e.api.ip6.into_iter().collect(),
                    srv: e.api.srv.iter().filter_map(|s| parse_srv(s).ok()).collect(),
                })
                .collect();
            let mut entries: Vec<::dns::Entry> = entries;
            for names in st.remote.get(name).into_iter().flat_map(|m| m.values()) {
                entries.extend(names.iter().map(|r| ::dns::Entry {
                    name: r.name.clone(),
                    aliases: r.aliases.clone(),
                    v4: r.v4.clone(),
                    v6: r.v6.clone(),
                    ..Default::default()
                }));
            }
            records.set_network(name, None, entries);
        }
        let mut views = Vec::new();
        for (name, net) in &st.networks {
            for ep in net.endpoints.values() {
                let mut visible = vec![name.clone()];
                for (other, onet) in &st.networks {
                    if other != name && ep.netns_id.is_some() && onet.endpoints.values().any(|e| e.netns_id == ep.netns_id) {
                        visible.push(other.clone());
                    }
                }
                views.push((ep.api.port, DnsView { network: name.clone(), visible, internal: net.internal, mtu: net.mtu }));
            }
        }
        let records = Arc::new(records);
        if let Err(e) = self.dp.submit_fn(move |e| e.set_dns(records, views)) {
            tracing::error!(error = %e, "cannot update DNS records: datapath stopped");
        }
    }

    pub async fn fdb_show(&self, network: Option<&str>) -> Result<Vec<FdbEntry>, ApiError> {
        let st = self.state.lock().await;
        let only = network.map(|n| find_net(&st, n).map(|n| n.id)).transpose()?;
        let rows = self
            .dp
            .call(move |e| {
                let now = e.now();
                e.switch()
                    .fdb()
                    .iter()
                    .filter(|r| only.is_none_or(|n| n == r.network))
                    .map(|r| {
                        (r.network, r.mac, r.port, if r.is_static { 0 } else { now.saturating_sub(r.last_seen).as_secs() }, r.is_static)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(internal)?;
        let names = st.port_names();
        let mut out: Vec<FdbEntry> = rows
            .into_iter()
            .filter_map(|(net, mac, port, age_secs, is_static)| {
                let (network, port_name) = names.get(&port)?.clone();
                let _ = net;
                Some(FdbEntry { network, mac, port: port_name, port_id: port, age_secs, is_static })
            })
            .collect();
        out.sort_by(|a, b| (&a.network, a.mac).cmp(&(&b.network, b.mac)));
        Ok(out)
    }

    pub async fn fdb_add(&self, req: FdbAdd) -> Result<FdbEntry, ApiError> {
        if req.mac.is_multicast() || req.mac.is_zero() {
            return Err(ApiError::new(ErrorCode::InvalidAddress, format!("MAC {} is not a unicast address", req.mac)));
        }
        let mut st = self.state.lock().await;
        let net = find_net(&st, &req.network)?;
        let port = match net.endpoints.get(&req.port) {
            Some(ep) => ep.api.port,
            None if req.port == "gateway" => net.gw_port,
            None => return Err(ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint {} on network {}", req.port, req.network))),
        };
        let (id, mac) = (net.id, req.mac);
        self.dp.call(move |e| e.switch_mut().add_static(id, mac, port)).await.map_err(internal)?.map_err(|e| match e {
            SwitchError::Fdb(f @ crate::fdb::FdbError::Full) => ApiError::new(ErrorCode::FdbFull, f.to_string()),
            SwitchError::Fdb(f) => ApiError::new(ErrorCode::InvalidAddress, f.to_string()),
            other => internal(other),
        })?;
        find_net_mut(&mut st, &req.network)?.static_macs.insert(mac, req.port.clone());
        self.save(&st)?;
        Ok(FdbEntry { network: req.network, mac, port: req.port, port_id: port, age_secs: 0, is_static: true })
    }

    pub async fn fdb_del(&self, network: &str, mac: &str) -> Result<(), ApiError> {
        let mac: Mac = mac.parse().map_err(|e: crate::types::MacParseError| ApiError::new(ErrorCode::InvalidAddress, e.to_string()))?;
        let mut st = self.state.lock().await;
        let id = find_net(&st, network)?.id;
        let removed = self.dp.call(move |e| e.switch_mut().fdb_mut().remove(id, mac)).await.map_err(internal)?;
        if !removed {
            return Err(ApiError::new(ErrorCode::FdbEntryNotFound, format!("no entry for {mac} on network {network}")));
        }
        if find_net_mut(&mut st, network)?.static_macs.remove(&mac).is_some() {
            self.save(&st)?;
        }
        Ok(())
    }

    pub async fn fdb_flush(&self, req: FdbFlush) -> Result<Flushed, ApiError> {
        let st = self.state.lock().await;
        let what = match (&req.network, &req.port) {
            (None, None) => Flush::All,
            (Some(n), None) => Flush::Network(find_net(&st, n)?.id),
            (Some(n), Some(p)) => {
                let net = find_net(&st, n)?;
                let ep = net
                    .endpoints
                    .get(p)
                    .ok_or_else(|| ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint {p} on network {n}")))?;
                Flush::Port(ep.api.port)
            }
            (None, Some(_)) => return Err(ApiError::new(ErrorCode::InvalidRequest, "port needs network")),
        };
        let removed = self.dp.call(move |e| e.switch_mut().fdb_mut().flush(what, false)).await.map_err(internal)?;
        Ok(Flushed { removed: removed as u64 })
    }

    pub async fn fdb_stats(&self) -> Result<FdbStats, ApiError> {
        self.dp
            .call(|e| {
                let fdb = e.switch().fdb();
                let (cfg, c) = (fdb.config(), fdb.counters());
                FdbStats {
                    entries: fdb.len() as u64,
                    max_entries: cfg.max_entries as u64,
                    per_port_max: cfg.per_port_max as u64,
                    aging_secs: cfg.aging.as_secs(),
                    learned: c.learned,
                    aged: c.aged,
                    evicted: c.evicted,
                    moved: c.moved,
                    port_limit: c.port_limit,
                }
            })
            .await
            .map_err(internal)
    }

    pub async fn ports(&self) -> Result<Vec<PortInfo>, ApiError> {
        let st = self.state.lock().await;
        let mut rows = Vec::new();
        for (net_name, net) in &st.networks {
            rows.push((net.gw_port, net_name.clone(), "gateway".to_string(), "gateway", String::new(), net.gw_mac, Vec::new()));
            for ep in net.endpoints.values() {
                let a = &ep.api;
                rows.push((a.port, net_name.clone(), a.name.clone(), "tap", a.ifname.clone(), a.mac, ep.offloads.clone()));
            }
        }
        for (key, peer) in &st.peers {
            for (net_name, port) in &peer.networks {
                rows.push((*port, net_name.clone(), peer_port_name(key), "tunnel", String::new(), Mac::default(), Vec::new()));
            }
        }
        let ids: Vec<PortId> = rows.iter().map(|r| r.0).collect();
        let counters = self
            .dp
            .call(move |e| ids.iter().map(|p| (e.port_counters(*p).unwrap_or_default(), e.port_worker(*p))).collect::<Vec<_>>())
            .await
            .map_err(internal)?;
        Ok(rows
            .into_iter()
            .zip(counters)
            .map(|((id, network, name, kind, ifname, mac, offloads), (c, worker))| PortInfo {
                id,
                network,
                name,
                kind: kind.to_string(),
                ifname,
                mac,
                offloads,
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                segmented: c.segmented,
                coalesced: c.coalesced,
                drops: DropReason::ALL
                    .iter()
                    .filter(|r| c.drops[r.index()] > 0)
                    .map(|r| (r.as_str().to_string(), c.drops[r.index()]))
                    .collect(),
                worker,
            })
            .collect())
    }

    /// The datapath threads that read container TAPs, with their totals.
    pub async fn workers(&self) -> Result<Vec<crate::api::WorkerInfo>, ApiError> {
        self.dp.call(|e| e.worker_stats()).await.map_err(internal)
    }
}

impl State {
    /// Every subnet our networks use, both families.
    fn subnets_in_use(&self) -> Vec<ipnet::IpNet> {
        let mut v: Vec<ipnet::IpNet> = self.networks.values().map(|n| n.pool.subnet().into()).collect();
        v.extend(self.networks.values().filter_map(|n| n.pool6.as_ref().map(|p| ipnet::IpNet::from(p.subnet()))));
        v
    }

    /// What goes into the state file.
    fn snapshot(&self) -> Snapshot {
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
        }
    }

    /// True when some endpoint (on any network) lives in that namespace.
    fn has_netns(&self, id: Option<(u64, u64)>) -> bool {
        self.networks.values().flat_map(|n| n.endpoints.values()).any(|e| e.netns_id == id)
    }

    /// Port id → (network name, endpoint name or `gateway`).
    fn port_names(&self) -> BTreeMap<PortId, (String, String)> {
        let mut m = BTreeMap::new();
        for (net_name, net) in &self.networks {
            m.insert(net.gw_port, (net_name.clone(), "gateway".to_string()));
            for ep in net.endpoints.values() {
                m.insert(ep.api.port, (net_name.clone(), ep.api.name.clone()));
            }
        }
        for (key, peer) in &self.peers {
            for (net_name, port) in &peer.networks {
                m.insert(*port, (net_name.clone(), peer_port_name(key)));
            }
        }
        m
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
        }
    }
}

impl NetnsRef {
    fn display(&self) -> String {
        match self {
            NetnsRef::Path(p) => p.display().to_string(),
            NetnsRef::Pid(pid) => format!("/proc/{pid}/ns/net"),
        }
    }
}

fn default_endpoint_name(netns: &NetnsRef) -> String {
    match netns {
        NetnsRef::Pid(pid) => format!("pid-{pid}"),
        NetnsRef::Path(p) => match p.file_name().and_then(|f| f.to_str()) {
            // /proc/PID/ns/net names every namespace "net": use the PID instead.
            Some("net") => p
                .parent()
                .and_then(|d| d.parent())
                .and_then(|d| d.file_name())
                .and_then(|f| f.to_str())
                .map(|pid| format!("pid-{pid}"))
                .unwrap_or_else(|| "net".to_string()),
            Some(f) => f.to_string(),
            None => String::new(),
        },
    }
}

/// The gateway ports of every network in the model.
fn snap_gateway_ports(st: &State) -> BTreeSet<u32> {
    st.networks.values().map(|n| n.gw_port.0).collect()
}

fn find_net<'a>(st: &'a State, name: &str) -> Result<&'a Net, ApiError> {
    st.networks.get(name).ok_or_else(|| no_network(name))
}

fn find_net_mut<'a>(st: &'a mut State, name: &str) -> Result<&'a mut Net, ApiError> {
    st.networks.get_mut(name).ok_or_else(|| no_network(name))
}

fn no_network(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NetworkNotFound, format!("no network named {name}"))
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Names: 1-64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidName,
            format!("{what} name {name:?} must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"),
        ))
    }
}

/// `_service._proto:PORT[:PRIORITY[:WEIGHT]]`.
fn parse_srv(s: &str) -> Result<::dns::Srv, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("SRV {s:?} must look like _service._proto:PORT[:PRIORITY[:WEIGHT]], e.g. _http._tcp:80"),
        )
    };
    let mut parts = s.split(':');
    let service = parts.next().ok_or_else(bad)?;
    let labels: Vec<&str> = service.split('.').collect();
    let label_ok =
        |l: &str| l.len() > 1 && l.len() <= 63 && l.starts_with('_') && l[1..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if labels.len() != 2 || !labels.iter().all(|l| label_ok(l)) {
        return Err(bad());
    }
    let mut num = |default: Option<u16>| match parts.next() {
        Some(p) => p.parse::<u16>().map_err(|_| bad()),
        None => default.ok_or_else(bad),
    };
    let port = num(None)?;
    let priority = num(Some(0))?;
    let weight = num(Some(0))?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(::dns::Srv { service: service.to_string(), port, priority, weight })
}

fn bad_address(s: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidAddress, format!("{s:?} is not an IPv4 address"))
}

/// How a peer's port is named in `port ls` and `fdb show`: `peer:` and its key's first
/// characters.
fn peer_port_name(key: &str) -> String {
    format!("peer:{}", key.get(..8).unwrap_or(key))
}

fn tunnel_off() -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, "the tunnel is off: start vswitchd with --listen ADDR:PORT")
}

/// Standard base64, as `wg` prints keys.
pub fn b64(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A 32-byte key in standard or URL-safe base64.
fn parse_key(s: &str) -> Result<[u8; 32], ApiError> {
    use base64::Engine as _;
    let bad = || ApiError::new(ErrorCode::InvalidRequest, format!("{s:?} is not a 32-byte key in base64"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// Bytes from the kernel's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b
}

/// The tunnel's private key file: `STATE_DIR/tunnel.key`, base64, mode 0600.
pub fn key_path(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("tunnel.key")
}

/// Reads the private key, making one (0600) at the first start.
///
/// # Errors
/// An unreadable or malformed key file (never overwritten), or a write failure.
pub fn load_or_make_key(state_dir: &std::path::Path) -> Result<[u8; 32], String> {
    let path = key_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_key(text.trim())
            .map_err(|_| format!("{} does not hold a base64 32-byte key; move it aside to make a new one", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<32>();
            write_key(state_dir, &key).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_key(state_dir: &std::path::Path, key: &[u8; 32]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = key_path(state_dir);
    let tmp = state_dir.join(".tunnel.key.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    writeln!(f, "{}", b64(key))?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

/// A random ULA /48 (RFC 4193 global id from the kernel's random source).
fn random_ula() -> Ipv6Net {
    let mut id = [0u8; 5];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut id);
    }
    ipam::SubnetPools::ula48(id)
}

fn setup_error(e: ipam::SetupError) -> ApiError {
    use ipam::SetupError as S;
    let code = match &e {
        S::Ipam(inner) => return ipam_error(inner.clone()),
        S::PoolExhausted { .. } => ErrorCode::PoolExhausted,
        S::SubnetOverlap { .. } => ErrorCode::SubnetOverlap,
        S::BadAux { .. } => ErrorCode::InvalidAddress,
        _ => ErrorCode::InvalidSubnet,
    };
    ApiError::new(code, e.to_string())
}

fn ipam_error(e: ipam::IpamError) -> ApiError {
    use ipam::IpamError as I;
    let code = match e {
        I::OutOfRange { .. } | I::Reserved { .. } => ErrorCode::AddressOutOfRange,
        I::Taken { .. } => ErrorCode::AddressTaken,
        I::Exhausted { .. } => ErrorCode::PoolExhausted,
        I::TooSmall { .. } | I::BadGateway { .. } => ErrorCode::InvalidSubnet,
    };
    ApiError::new(code, e.to_string())
}

fn sys_error(e: SysError) -> ApiError {
    let code = match &e {
        SysError::NetnsNotFound(_) => ErrorCode::NetnsNotFound,
        SysError::PermissionDenied(_) => ErrorCode::PermissionDenied,
        SysError::InvalidName(_) => ErrorCode::InvalidName,
        SysError::Exists(_) => ErrorCode::EndpointExists,
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, e.to_string())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("internal error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("c1", "x").is_ok());
        assert!(check_name("web.prod-1_a", "x").is_ok());
        for bad in ["", "-a", "a b", "a/b", &"x".repeat(65)] {
            assert_eq!(check_name(bad, "x").unwrap_err().error.code, ErrorCode::InvalidName);
        }
    }

    #[test]
    fn default_names() {
        assert_eq!(default_endpoint_name(&NetnsRef::Path("/run/netns/c1".into())), "c1");
        assert_eq!(default_endpoint_name(&NetnsRef::Path("/proc/42/ns/net".into())), "pid-42");
        assert_eq!(default_endpoint_name(&NetnsRef::Pid(7)), "pid-7");
    }

    #[test]
    fn srv_syntax() {
        let s = parse_srv("_http._tcp:80").unwrap();
        assert_eq!((s.service.as_str(), s.port, s.priority, s.weight), ("_http._tcp", 80, 0, 0));
        let s = parse_srv("_ldap._udp:389:10:5").unwrap();
        assert_eq!((s.port, s.priority, s.weight), (389, 10, 5));
        for bad in ["http._tcp:80", "_http:80", "_http._tcp", "_http._tcp:99999", "_http._tcp:80:1:2:3", "_h ttp._tcp:1"] {
            assert!(parse_srv(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ids_reuse() {
        let mut p = PortIds::default();
        assert_eq!(p.take(), PortId(0));
        assert_eq!(p.take(), PortId(1));
        p.give_back(PortId(0));
        assert_eq!(p.take(), PortId(0));
        assert_eq!(p.take(), PortId(2));
    }
}
