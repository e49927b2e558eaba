//! Control API types: HTTP/1.1 + JSON on a Unix socket, under `/v1`.
//!
//! Shared by the daemon's control server and by `vswitchctl`; nothing behind this module does
//! I/O. Requests reject unknown fields. Every error is an [`ApiError`] with a stable
//! [`ErrorCode`] and a message written for the person who typed the command.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | /v1/version | | [`Version`] |
//! | GET | /v1/networks | | `[Network]` |
//! | POST | /v1/networks | [`NetworkCreate`] | 201 [`Network`] |
//! | GET | /v1/networks/{name} | | [`NetworkDetail`] |
//! | DELETE | /v1/networks/{name}[?force=true] | | 204 |
//! | POST | /v1/networks/{name}/endpoints | [`AttachRequest`] | 201 [`Endpoint`] |
//! | DELETE | /v1/networks/{name}/endpoints/{endpoint} | | 204 |
//! | GET | /v1/fdb[?network=NAME] | | `[FdbEntry]` |
//! | POST | /v1/fdb | [`FdbAdd`] | 201 [`FdbEntry`] |
//! | DELETE | /v1/fdb/{network}/{mac} | | 204 |
//! | POST | /v1/fdb/flush | [`FdbFlush`] | [`Flushed`] |
//! | GET | /v1/fdb/stats | | [`FdbStats`] |
//! | GET | /v1/ports | | `[PortInfo]` |
//! | POST | /v1/ports/impair | [`ImpairRequest`] | [`PortInfo`] |
//! | POST | /v1/ports | [`PortAdd`] | 201 [`InterfacePort`] |
//! | GET | /v1/ports/interfaces | | `[InterfacePort]` |
//! | DELETE | /v1/ports/{interface} | | 204 |
//! | PATCH | /v1/networks/{name}/endpoints/{endpoint} | [`EndpointUpdate`] | [`Endpoint`] |
//! | POST | /v1/networks/prune | | [`Pruned`] |
//! | POST | /v1/ipam/gc | | [`GcReport`] |
//! | GET | /v1/dns/records[?network=NAME] | | `[DnsRecord]` |
//! | GET | /v1/tunnel/key | | [`TunnelKey`] |
//! | POST | /v1/tunnel/key | | [`TunnelKey`] (a new key; only while no peer is set) |
//! | GET | /v1/tunnel/peers | | `[Peer]` |
//! | POST | /v1/tunnel/peers | [`PeerAdd`] | 201 [`Peer`] |
//! | DELETE | /v1/tunnel/peers/{public key, URL-safe base64} | | 204 |
//! | GET | /v1/dns/stats | | [`DnsStats`] |
//! | GET | /v1/networks/{name}/dns | | [`DnsUpstreams`] |
//! | PUT | /v1/networks/{name}/dns | [`DnsUpstreamsSet`] | [`DnsUpstreams`] |
//! | POST | /v1/trace | [`TraceRequest`] | [`Trace`] |
//! | GET | /v1/trace/live?target=PORT\[&count=N\] | | JSON lines of [`LiveFrame`], streamed |
//! | GET | /v1/capture?target=T\[&count=N\]\[&snaplen=B\] | | pcapng, streamed (chunked) |
//! | GET | /metrics (outside /v1) | | Prometheus text format 0.0.4 |

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub use crate::impair::{Counters as ImpairCounters, Distribution, Impairment, Loss};
use crate::types::{Mac, PortId};

/// The path prefix of every route.
pub const PREFIX: &str = "/v1";

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Version {
    pub version: String,
    pub api: String,
    /// The daemon runs without privileges: a helper in a user namespace wires the containers.
    #[serde(default)]
    pub rootless: bool,
    /// Rootless: the helper's pid. Network namespaces to attach must be owned by its user
    /// namespace, `/proc/PID/ns/user` (e.g. `nsenter -t PID -U --preserve-credentials --
    /// unshare -n CMD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_pid: Option<u32>,
}

/// `POST /v1/networks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    pub name: String,
    /// IPv4 subnet in CIDR form, e.g. `10.89.0.0/24`; default: the next free subnet of the
    /// daemon's address pools (never one the host already routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Defaults to the first host address of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// An IPv6 subnet (e.g. a ULA /64, `fd00:89::/64`) for dual-stack endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// Defaults to `::1` of `subnet6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// Dual-stack with an IPv6 /64 taken from the daemon's ULA prefix (when `subnet6` is not
    /// given).
    #[serde(default)]
    pub ipv6: bool,
    /// Hand out addresses only from this sub-range of the subnet (static addresses may still
    /// be anywhere in the subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// Addresses of the subnets that are never handed out (taken by something else).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux_addresses: Vec<String>,
    /// Defaults to 1500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// An internal network forwards nothing outside itself.
    #[serde(default)]
    pub internal: bool,
    /// The network may span hosts through the encrypted tunnel: its MTU defaults to what fits
    /// in one underlay datagram, and its TAPs carry plain frames (no TSO super-frames).
    #[serde(default)]
    pub overlay: bool,
    /// Ports of the host's loopback (127.0.0.1) that containers reach at the gateway's address
    /// through egress: `PORT`, `FIRST-LAST` or `all`. None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_loopback: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The network's 802.1Q VLAN id (1-4094): how its frames are tagged on its uplink and on
    /// trunk ports that list it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u32>,
    /// An interface of vswitchd's namespace that joins the network to a LAN: the subnet and
    /// gateway are the LAN's (its router), the switch answers DNS at an address of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
}

/// A network as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub id: u32,
    pub subnet: String,
    pub gateway: Ipv4Addr,
    pub gateway_mac: Mac,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux_addresses: Vec<String>,
    pub mtu: u32,
    pub internal: bool,
    #[serde(default)]
    pub overlay: bool,
    /// Host loopback ports reachable at the gateway's address (see [`NetworkCreate`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_loopback: Vec<String>,
    /// Containers of this network reach beyond it through the daemon's sockets (egress NAT).
    #[serde(default)]
    pub egress: bool,
    pub labels: BTreeMap<String, String>,
    pub endpoints: usize,
    /// The network's 802.1Q VLAN id, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The interface joining it to a LAN, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Where the switch answers DNS (and ARP, ping) on an uplink network: an address of the
    /// pool, since the gateway is the LAN's router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_address: Option<Ipv4Addr>,
}

/// `POST /v1/ports`: attach an interface of vswitchd's namespace to a network.
///
/// Without `vlan` or `trunk` the port is an access port (untagged frames, one network). With
/// `vlan` its frames carry that 802.1Q tag. With `trunk`, each listed VLAN id stands for the
/// network of that id (`NetworkCreate::vlan`), carried tagged; `network` is then one of them,
/// or, when it has no VLAN id among them, the native network of untagged frames.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PortAdd {
    pub network: String,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunk: Vec<u32>,
}

/// One network an interface port carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMember {
    pub network: String,
    /// The 802.1Q VLAN id of its frames on the interface (`None`: untagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub port: PortId,
}

/// An interface port (`POST /v1/ports` answers it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfacePort {
    pub interface: String,
    pub members: Vec<PortMember>,
    /// The network whose uplink this is (made and removed with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_of: Option<String>,
}

/// Address usage of a network's subnet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Host addresses the subnet can hand out (network, broadcast and gateway excluded).
    pub total: u64,
    pub in_use: u64,
    pub available: u64,
}

/// `GET /v1/networks/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkDetail {
    #[serde(flatten)]
    pub network: Network,
    pub usage: Usage,
    pub endpoint_list: Vec<Endpoint>,
    /// Addresses the DHCP server leased (to clients behind interface ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcp_leases: Vec<DhcpLease>,
}

/// A DHCP lease: an IPAM lease owned by `dhcp:MAC`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhcpLease {
    pub ip: Ipv4Addr,
    pub mac: String,
}

/// `POST /v1/networks/{name}/endpoints`: attach a container's network namespace.
///
/// Exactly one of `netns` (a path such as `/run/netns/NAME` or `/proc/PID/ns/net`) and `pid`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// Endpoint (container) name; defaults to the netns file name or `pid-N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Interface name inside the namespace; defaults to `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// A requested address inside the subnet; defaults to the next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A requested IPv6 address (dual-stack networks); defaults to the next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Services answered as SRV records: `_service._proto:PORT[:PRIORITY[:WEIGHT]]`, e.g.
    /// `_http._tcp:80`; `_http._tcp.NAME` then points at this endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub srv: Vec<String>,
    /// Who made the endpoint, for runtimes that find their endpoints again (e.g.
    /// `cni/CONTAINER_ID/IFNAME`); opaque to the daemon, at most 256 printable characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// An attached container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub network: String,
    pub netns: String,
    pub ifname: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub port: PortId,
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub srv: Vec<String>,
    /// Host ports published to this endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishRule>,
    /// Who made it (see [`AttachRequest::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Transport of a published port.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `POST /v1/networks/{name}/endpoints/{endpoint}/publish`: host ports `host_port..=host_port_end`
/// on `host_addr` lead to the endpoint's ports from `container_port` on (as many as host
/// ports). The container sees each client's own address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublishRule {
    #[serde(default)]
    pub proto: Proto,
    /// An IPv4 address of the host, or `0.0.0.0` for all of them.
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    /// The last port of a range; absent for one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_end: Option<u16>,
    pub container_port: u16,
}

impl PublishRule {
    /// The (host port, container port) pairs of the rule.
    pub fn ports(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (self.host_port..=self.last_host_port()).map(move |h| (h, self.container_port.wrapping_add(h - self.host_port)))
    }

    /// Whether the rule listens on `port` of `addr` (for the same transport).
    pub fn covers(&self, proto: Proto, addr: Ipv4Addr, port: u16) -> bool {
        self.proto == proto
            && (self.host_addr == addr || self.host_addr.is_unspecified() || addr.is_unspecified())
            && (self.host_port..=self.last_host_port()).contains(&port)
    }

    /// The last host port of the rule (the only one when it is not a range).
    pub fn last_host_port(&self) -> u16 {
        self.host_port_end.unwrap_or(self.host_port)
    }
}

/// One published port as listed by `GET /v1/publish`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Publication {
    pub network: String,
    pub endpoint: String,
    pub container_ip: Ipv4Addr,
    #[serde(flatten)]
    pub rule: PublishRule,
}

/// `GET /v1/egress`: flows held and why packets were refused.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EgressStats {
    pub enabled: bool,
    pub max_flows_per_endpoint: usize,
    pub tcp_flows: u64,
    pub udp_flows: u64,
    pub icmp_flows: u64,
    pub tcp_opened: u64,
    pub udp_opened: u64,
    pub icmp_opened: u64,
    pub published_accepted: u64,
    pub connect_failed: u64,
    pub denied: u64,
    pub over_limit: u64,
    pub spoofed: u64,
    pub malformed: u64,
    pub icmp_unavailable: u64,
}

/// `PATCH /v1/networks/{name}/endpoints/{endpoint}`: rename, or replace the aliases. DNS
/// records follow at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// Replaces the SRV services (same form as [`AttachRequest::srv`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<Vec<String>>,
}

/// One name the gateway answers: `GET /v1/dns/records`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsRecord {
    pub network: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub ipv4: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
}

/// A network's DNS upstreams: `GET /v1/networks/{name}/dns`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsUpstreams {
    pub network: String,
    /// Upstreams set for this network (empty: the daemon's defaults apply).
    pub upstreams: Vec<String>,
    /// Where forwarded queries actually go (empty: nowhere; unknown names get SERVFAIL, or
    /// NXDOMAIN on an internal network).
    pub effective: Vec<String>,
    pub internal: bool,
}

/// `PUT /v1/networks/{name}/dns`: `IP` or `IP:PORT` each; an empty list restores the defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct DnsUpstreamsSet {
    pub upstreams: Vec<String>,
}

/// `GET /v1/dns/stats`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct DnsStats {
    /// Queries that reached a gateway.
    pub queries: u64,
    /// Answered by the gateway itself (records, NODATA, NXDOMAIN, error answers).
    pub answers: u64,
    /// Sent to an upstream.
    pub forwarded: u64,
    /// Upstream answers relayed back.
    pub forward_answers: u64,
    /// Forwarded queries that got SERVFAIL (every upstream failed or none is set).
    pub failures: u64,
    /// Queries dropped unanswered (unreadable).
    pub dropped: u64,
}

/// `POST /v1/ipam/gc`: leases whose endpoint is gone, released.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct GcReport {
    /// `NETWORK ADDRESS` for each released lease.
    pub released: Vec<String>,
}

/// `POST /v1/networks/prune`: networks without endpoints, removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Pruned {
    pub removed: Vec<String>,
}

/// This host's tunnel identity: `GET /v1/tunnel/key`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TunnelKey {
    /// X25519 public key, standard base64 (the private key never leaves the daemon).
    pub public_key: String,
    /// The UDP address the tunnel listens on.
    pub listen: String,
    /// Datagrams the tunnel dropped, by reason, over all peers (and strangers).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

/// `POST /v1/tunnel/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct PeerAdd {
    /// The peer's public key, base64.
    pub public_key: String,
    /// `IP:PORT`; may be left out for a peer that only connects to us (its address is learned
    /// from its first authenticated packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Overlay networks this peer shares with us (same names on both hosts).
    pub networks: Vec<String>,
}

/// A peer host: `GET /v1/tunnel/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Peer {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub networks: Vec<String>,
    /// Seconds since the last completed handshake, if any.
    pub last_handshake_secs: Option<u64>,
    pub handshakes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Datagrams dropped for this peer, by reason.
    pub drops: BTreeMap<String, u64>,
}

/// One MAC table entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbEntry {
    pub network: String,
    pub mac: Mac,
    /// Endpoint name, or `gateway`.
    pub port: String,
    pub port_id: PortId,
    /// Seconds since the entry was last refreshed (0 for static entries).
    pub age_secs: u64,
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// `POST /v1/fdb`: a static entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FdbAdd {
    pub network: String,
    pub mac: Mac,
    /// Endpoint name on that network.
    pub port: String,
}

/// `POST /v1/fdb/flush`: learned entries of one network, one endpoint, or all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct FdbFlush {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Endpoint name; needs `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// How many entries a flush removed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flushed {
    pub removed: u64,
}

/// `GET /v1/fdb/stats`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FdbStats {
    pub entries: u64,
    pub max_entries: u64,
    pub per_port_max: u64,
    pub aging_secs: u64,
    pub learned: u64,
    pub aged: u64,
    pub evicted: u64,
    pub moved: u64,
    /// New source MACs not learned because their port was at its cap.
    pub port_limit: u64,
}

/// One port's counters: `GET /v1/ports`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortInfo {
    pub id: PortId,
    pub network: String,
    /// Endpoint name, or `gateway`.
    pub name: String,
    /// `tap` or `gateway`.
    pub kind: String,
    pub ifname: String,
    pub mac: Mac,
    /// Offloads negotiated with the kernel (`vnet_hdr`, `csum`, `tso4`, `tso6`, `ufo`/`uso`).
    pub offloads: Vec<String>,
    /// An interface port's 802.1Q VLAN id for this network (none: untagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// TCP super-frames segmented in software on their way out of this port.
    #[serde(default)]
    pub segmented: u64,
    /// Super-frames coalesced from TCP segments on their way out of this port.
    #[serde(default)]
    pub coalesced: u64,
    /// Dropped frames by reason (`too_short`, `too_long`, `bad_source`, `hairpin`, `tx_error`,
    /// `bad_offload`, `overload`, ...).
    pub drops: BTreeMap<String, u64>,
    /// The datapath worker that reads this TAP (0: the main datapath thread); absent for
    /// gateway and tunnel ports, which the main thread serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// Link impairments of frames from the container (`vswitchctl port impair --ingress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair_ingress: Option<ImpairState>,
    /// Link impairments of frames to the container (`--egress`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair_egress: Option<ImpairState>,
}

/// One direction's impairment (with the seed in use) and what it did since it was set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImpairState {
    pub impairment: Impairment,
    pub counters: ImpairCounters,
}

/// `POST /v1/ports/impair`: sets, changes (live: frames held keep their times) or clears
/// (`impairment` left out) a container port's link impairments. With neither `ingress` nor
/// `egress`, egress: frames the switch sends to the container, as netem on a link's far end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ImpairRequest {
    /// `ENDPOINT` (on one network only) or `NETWORK/ENDPOINT`.
    pub target: String,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default)]
    pub egress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<Impairment>,
}

/// One datapath thread that reads container TAPs: `GET /v1/workers`. Worker 0 is the main
/// datapath thread (it also serves the gateway, DNS, egress and the tunnel, and decides every
/// frame another worker hands it); workers 1.. forward on their own what worker 0 granted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: usize,
    /// Container TAPs it reads.
    pub ports: u64,
    /// Frames it forwarded on its own (always 0 for worker 0, which decides everything itself).
    pub forwarded: u64,
    /// Frames it handed to worker 0 (first frames of a flow, floods, the gateway, egress, the
    /// tunnel).
    pub handed_over: u64,
    /// Frames it dropped because worker 0 had not caught up.
    pub overload: u64,
    /// Worker 0 only: frames it decided for the other workers.
    pub decided_for_others: u64,
    /// Frames it read from TAPs another thread owns, right after writing to them while that
    /// thread slept (the reply of a round trip, without waiting for the other core to wake).
    #[serde(default)]
    pub picked_up: u64,
    /// Times it slept in epoll and woke up to events (a thread woken per frame costs a round
    /// trip a core's wakeup; see `picked_up`).
    #[serde(default)]
    pub wakeups: u64,
    /// Whether it runs `SCHED_FIFO` now (`--datapath-realtime`: by default while the CPUs are
    /// busy).
    #[serde(default)]
    pub realtime: bool,
}

/// `POST /v1/trace`: a frame built from these fields, run through the switch without being
/// sent. Left out: the source is the ingress endpoint (MAC, address); the destination MAC is
/// that of the endpoint owning `dst_ip` (the gateway's for its own address or anything outside
/// the subnet); `proto` is `udp` when a `dst_port` is given, else `icmp` (echo request).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    pub network: String,
    /// The endpoint the frame comes from.
    pub in_port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<Ipv4Addr>,
    /// `icmp`, `tcp` (a SYN), `udp` or `arp` (a request for `dst_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// For UDP to port 53: the name asked (type A). Default: the ingress endpoint's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
}

/// The answer to [`TraceRequest`]: each decision the switch took, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trace {
    pub network: String,
    pub in_port: String,
    /// The frame that was built, in one line.
    pub frame: String,
    pub steps: Vec<TraceStep>,
    /// `forward`, `flood`, `drop`, `gateway` (answered by the switch), `egress` (leaves through
    /// the daemon's sockets) or `refused` (egress policy).
    pub verdict: String,
    /// Why it was dropped or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
}

/// `GET /v1/trace/live?target=PORT&count=N`: one JSON line per frame that came in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveFrame {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// NETWORK/NAME of the port it came in on.
    pub port: String,
    pub len: u32,
    /// Its headers, in one line.
    pub frame: String,
    /// `forward NETWORK/NAME`, `flood`, or `drop REASON`.
    pub verdict: String,
}

/// One decision of a [`Trace`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceStep {
    /// `network`, `checks`, `learning`, `lookup`, `flood`, `output`, `gateway`, `dns`, `egress`.
    pub step: String,
    /// What happened, in a word or two (`learned`, `hit`, `miss`, `dropped`, ...).
    pub result: String,
    pub detail: String,
}

/// Every error the API returns: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { error: ErrorBody { code, message: message.into() } }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.error.message, self.error.code.as_str())
    }
}

impl std::error::Error for ApiError {}

/// Stable error codes. New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON for this route, or has unknown fields.
    InvalidRequest,
    InvalidName,
    InvalidSubnet,
    InvalidAddress,
    InvalidMtu,
    NetworkExists,
    NetworkNotFound,
    NetworkInUse,
    SubnetOverlap,
    EndpointExists,
    EndpointNotFound,
    AddressOutOfRange,
    AddressTaken,
    PoolExhausted,
    MacTaken,
    NetnsNotFound,
    FdbEntryNotFound,
    FdbFull,
    PermissionDenied,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    /// A host port is published already (by this daemon) or taken by another program.
    PortInUse,
    /// Cluster mode: the store (etcd) does not answer, so a cluster operation cannot be done
    /// now (the data plane keeps working; try again when it is back).
    ClusterUnavailable,
    /// No such interface in vswitchd's network namespace.
    InterfaceNotFound,
    /// The interface is already a port.
    InterfaceInUse,
    /// A VLAN id out of 1-4094, or one no network has.
    InvalidVlan,
    Internal,
    /// A code this build does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the daemon answers with.
    pub const fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest | InvalidName | InvalidSubnet | InvalidAddress | InvalidMtu | AddressOutOfRange | InvalidVlan => 400,
            PermissionDenied => 403,
            NetworkNotFound | EndpointNotFound | NetnsNotFound | FdbEntryNotFound | NotFound | InterfaceNotFound => 404,
            MethodNotAllowed => 405,
            NetworkExists | NetworkInUse | SubnetOverlap | EndpointExists | AddressTaken | PoolExhausted | MacTaken | FdbFull
            | PortInUse | InterfaceInUse => 409,
            PayloadTooLarge => 413,
            Internal | Unknown => 500,
            ClusterUnavailable => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            InvalidName => "invalid_name",
            InvalidSubnet => "invalid_subnet",
            InvalidAddress => "invalid_address",
            InvalidMtu => "invalid_mtu",
            NetworkExists => "network_exists",
            NetworkNotFound => "network_not_found",
            NetworkInUse => "network_in_use",
            SubnetOverlap => "subnet_overlap",
            EndpointExists => "endpoint_exists",
            EndpointNotFound => "endpoint_not_found",
            AddressOutOfRange => "address_out_of_range",
            AddressTaken => "address_taken",
            PoolExhausted => "pool_exhausted",
            MacTaken => "mac_taken",
            NetnsNotFound => "netns_not_found",
            FdbEntryNotFound => "fdb_entry_not_found",
            FdbFull => "fdb_full",
            PermissionDenied => "permission_denied",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            PayloadTooLarge => "payload_too_large",
            PortInUse => "port_in_use",
            ClusterUnavailable => "cluster_unavailable",
            InterfaceNotFound => "interface_not_found",
            InterfaceInUse => "interface_in_use",
            InvalidVlan => "invalid_vlan",
            Internal => "internal",
            Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<NetworkCreate, _> = serde_json::from_str(r#"{"name":"a","subnet":"10.0.0.0/24","colour":"red"}"#);
        assert!(r.unwrap_err().to_string().contains("unknown field `colour`"));
    }

    #[test]
    fn error_code_wire_form_matches_as_str() {
        for code in [ErrorCode::InvalidSubnet, ErrorCode::NetworkNotFound, ErrorCode::AddressTaken] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}

/// `GET /v1/cluster`: cluster mode as this host sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterStatus {
    /// This host's name in the cluster.
    pub host: String,
    /// The key prefix in the store.
    pub prefix: String,
    /// Each store endpoint and whether it answered just now.
    pub endpoints: Vec<ClusterEndpoint>,
    /// The store answered this host's last keep-alive in time: cluster operations work.
    pub healthy: bool,
    /// The store's last error, while it is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// This host's lease (hex), its time to live, and when it last renewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    pub lease_ttl_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renewed_secs: Option<u64>,
    pub hosts: Vec<ClusterHost>,
    /// The cluster's networks made here, with this host's address block.
    pub networks: Vec<ClusterNetwork>,
    /// Values in the store that were refused (malformed) and cluster changes that could not
    /// be made here, each with its reason.
    pub problems: Vec<String>,
}

/// One store endpoint of `cluster status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterEndpoint {
    pub endpoint: String,
    pub healthy: bool,
    /// The member is the store's leader.
    #[serde(default)]
    pub leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A host registered in the cluster: `GET /v1/cluster/hosts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterHost {
    pub name: String,
    pub public_key: String,
    /// Its tunnel's underlay address.
    pub endpoint: String,
    /// Seconds since it last renewed its lease (when the store could tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_secs: Option<u64>,
    /// This host.
    #[serde(default)]
    pub this_host: bool,
}

/// A cluster network made on this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterNetwork {
    pub name: String,
    pub subnet: String,
    /// The address block this host hands out from.
    pub block: String,
    /// Names of other hosts' containers on it that this host's DNS answers.
    #[serde(default)]
    pub remote_names: usize,
}
