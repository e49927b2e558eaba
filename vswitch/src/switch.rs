//! The forwarding decision: which port(s) an Ethernet frame goes to.
//!
//! I/O-free and clock-free. The datapath hands [`Switch::handle_frame`] the bytes of a plain
//! Ethernet frame (destination MAC at 0..6, source at 6..12, EtherType at 12..14), the port it
//! came in on, and `now`; it gets a [`Verdict`] back and does the sending itself. Frames never
//! cross networks: flooding and forwarding stay inside the ingress port's network, and the MAC
//! table is keyed by (network, MAC).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::fdb::{Fdb, FdbConfig, FdbError, Flush, Learn};
use crate::types::{Mac, NetworkId, PortId};

/// Ethernet header length: two MACs and the EtherType.
pub const ETH_HLEN: usize = 14;
/// The largest frame accepted even with GSO: a 64 KiB IP packet plus the Ethernet header.
pub const MAX_GSO_FRAME: usize = 65535 + ETH_HLEN;

/// Whether a frame of `len` bytes is not too long for a port whose largest non-GSO frame is
/// `max_frame` ([`DropReason::TooLong`] otherwise). `gso`: a super-frame, bounded by
/// [`MAX_GSO_FRAME`] only.
pub const fn fits(len: usize, max_frame: usize, gso: bool) -> bool {
    len <= MAX_GSO_FRAME && (gso || len <= max_frame)
}

/// Why a frame was dropped. Indexes [`PortCounters::drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    TooShort,
    /// Longer than the port's `max_frame` (without GSO) or than [`MAX_GSO_FRAME`].
    TooLong,
    /// Multicast, broadcast or all-zero source MAC.
    BadSource,
    /// The destination was learned on the ingress port itself.
    Hairpin,
    /// The ingress port does not exist (never counted: there is no port to count it on).
    UnknownPort,
    /// Sending failed; set by the datapath, never by the core.
    TxError,
    /// Reserved for the datapath.
    NoRoute,
    /// A GSO super-frame or partial checksum the datapath could not segment or complete
    /// (malformed headers, a bogus `gso_size`, lengths that do not add up); set by the datapath.
    BadOffload,
    /// A datapath worker had to hand the frame to the main datapath thread, which had not
    /// caught up (no buffer free, its queue full); set by the datapath.
    Overload,
    /// ARP from a container port whose sender address is not the port's own (or is the
    /// gateway's): ARP spoofing.
    ArpSpoof,
    /// IPv6 neighbour discovery from a container port that claims an address not its own (a
    /// neighbour advertisement for another target, a solicitation from another source, the
    /// gateway's address), or a router advertisement or redirect (only the gateway routes).
    NdSpoof,
    /// Sent to the gateway's MAC, but nothing the gateway answers or routes (a non-IP
    /// EtherType, another IP protocol, IPv6 beyond the gateway); set by the datapath.
    Unsupported,
    /// Storm control: the port sent more frames that would be flooded (broadcast, multicast,
    /// unknown unicast) or that come from sources it may not learn (over its MAC limit) than
    /// its token bucket allows ([`StormConfig`]).
    Storm,
    /// From an interface port: a frame whose 802.1Q tag names no network the port carries, or
    /// an untagged frame on a trunk without a native network; set by the datapath.
    Vlan,
    /// A DHCP client's message that is truncated or overloads its options into `sname`/
    /// `file` (never followed); set by the datapath.
    DhcpMalformed,
    /// A DHCP server's reply (UDP 67 -> 68) from an interface port that is no uplink: a rogue
    /// server (DHCP snooping); set by the datapath.
    DhcpSnoop,
}

impl DropReason {
    pub const COUNT: usize = 16;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::TooShort,
        DropReason::TooLong,
        DropReason::BadSource,
        DropReason::Hairpin,
        DropReason::UnknownPort,
        DropReason::TxError,
        DropReason::NoRoute,
        DropReason::BadOffload,
        DropReason::Overload,
        DropReason::ArpSpoof,
        DropReason::NdSpoof,
        DropReason::Unsupported,
        DropReason::Storm,
        DropReason::Vlan,
        DropReason::DhcpMalformed,
        DropReason::DhcpSnoop,
    ];

    /// Position in [`DropReason::ALL`] and in [`PortCounters::drops`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The snake_case name used in counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::BadSource => "bad_source",
            DropReason::Hairpin => "hairpin",
            DropReason::UnknownPort => "unknown_port",
            DropReason::TxError => "tx_error",
            DropReason::NoRoute => "no_route",
            DropReason::BadOffload => "bad_offload",
            DropReason::Overload => "overload",
            DropReason::ArpSpoof => "arp_spoof",
            DropReason::NdSpoof => "nd_spoof",
            DropReason::Unsupported => "unsupported",
            DropReason::Storm => "storm",
            DropReason::Vlan => "vlan",
            DropReason::DhcpMalformed => "dhcp_malformed",
            DropReason::DhcpSnoop => "dhcp_snoop",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of this one port (never the ingress port).
    Forward(PortId),
    /// Send it out of every port of the ingress port's network except the ingress port
    /// ([`Switch::ports_of`]).
    Flood,
    Drop(DropReason),
}

/// What a container port may claim about addresses in ARP and IPv6 neighbour discovery. Ports
/// without one (gateways, tunnel peers) are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortGuard {
    /// The port's leased IPv4 address: ARP from the port must name it (or 0.0.0.0, a probe)
    /// as sender. `None`: only the gateway's address is refused.
    pub ipv4: Option<Ipv4Addr>,
    /// The port's leased IPv6 address: neighbour discovery from the port may claim it, a
    /// link-local address or `::` only. `None`: only the gateway's address is refused.
    pub ipv6: Option<Ipv6Addr>,
    /// The network's gateway addresses, which no container may claim.
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
}

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 58;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;

/// True for frames a datapath worker must not forward on a grant of its own: ARP and IPv6
/// that is not plainly TCP or UDP (neighbour discovery, extension headers), which the core
/// checks against the port's [`PortGuard`].
pub fn needs_guard(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x06]) => true,
        Some([0x86, 0xdd]) => !matches!(frame.get(20), Some(6 | 17)),
        _ => false,
    }
}

impl PortGuard {
    /// Why `frame` (an Ethernet frame from the guarded port) must not go anywhere, if it must
    /// not. Frames too short to hold what is checked pass: no host takes them as ARP or ND.
    pub fn check(&self, frame: &[u8]) -> Option<DropReason> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        match ethertype {
            ETHERTYPE_ARP => self.check_arp(frame.get(ETH_HLEN..)?),
            ETHERTYPE_IPV6 => self.check_nd(frame.get(ETH_HLEN..)?),
            _ => None,
        }
    }

    fn check_arp(&self, arp: &[u8]) -> Option<DropReason> {
        // htype(2) ptype(2) hlen plen op(2) sha(6) spa(4): an IPv4-over-Ethernet ARP only.
        if arp.get(2..6)? != [0x08, 0x00, 6, 4] {
            return None;
        }
        let spa = Ipv4Addr::from(<[u8; 4]>::try_from(arp.get(14..18)?).ok()?);
        let own = spa.is_unspecified() || self.ipv4.is_none_or(|a| a == spa);
        (!own || self.gateway4 == Some(spa)).then_some(DropReason::ArpSpoof)
    }

    fn check_nd(&self, ip6: &[u8]) -> Option<DropReason> {
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(ip6.get(8..24)?).ok()?);
        // Walk hop-by-hop, routing and destination options headers (hosts do too).
        let (mut next, mut off) = (*ip6.get(6)?, 40usize);
        for _ in 0..8 {
            if !matches!(next, 0 | 43 | 60) {
                break;
            }
            next = *ip6.get(off)?;
            off += (usize::from(*ip6.get(off + 1)?) + 1) * 8;
        }
        if next != IPPROTO_ICMPV6 {
            return None;
        }
        let icmp = ip6.get(off..)?;
        let claims = |a: Ipv6Addr| {
            let own = a.is_unspecified() || a.is_unicast_link_local() || self.ipv6.is_none_or(|o| o == a);
            !own || self.gateway6 == Some(a)
        };
        match *icmp.first()? {
            ND_ROUTER_ADVERT | ND_REDIRECT => Some(DropReason::NdSpoof),
            ND_NEIGHBOR_SOLICIT => claims(src).then_some(DropReason::NdSpoof),
            ND_NEIGHBOR_ADVERT => {
                let target = Ipv6Addr::from(<[u8; 16]>::try_from(icmp.get(8..24)?).ok()?);
                (claims(target) || claims(src)).then_some(DropReason::NdSpoof)
            }
            _ => None,
        }
    }
}

/// The MAC table's answer for a frame's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Broadcast or multicast: flooded.
    Multicast,
    /// Learned (or static) on this port of the network.
    Hit(PortId),
    /// Learned on the ingress port itself: dropped.
    Hairpin,
    /// An entry pointing at a port of another network (only a bad static entry can): flooded.
    Foreign(PortId),
    /// Unknown: flooded.
    Miss,
}

impl Lookup {
    pub const fn verdict(self) -> Verdict {
        match self {
            Lookup::Hit(p) => Verdict::Forward(p),
            Lookup::Hairpin => Verdict::Drop(DropReason::Hairpin),
            Lookup::Multicast | Lookup::Foreign(_) | Lookup::Miss => Verdict::Flood,
        }
    }
}

/// [`Switch::explain`]: each decision the switch would take for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    /// The ingress port's network.
    pub network: NetworkId,
    /// What learning the source would do (`None`: the frame was refused before).
    pub learn: Option<crate::fdb::Learn>,
    pub lookup: Option<Lookup>,
    pub verdict: Verdict,
}

/// The checks before learning: length, then a unicast, non-zero source. The (source,
/// destination) MACs, or why the frame is dropped.
fn check(frame: &[u8], max_frame: usize, gso: bool) -> Result<(Mac, Mac), DropReason> {
    let Some(hdr) = frame.first_chunk::<ETH_HLEN>() else {
        return Err(DropReason::TooShort);
    };
    if !fits(frame.len(), max_frame, gso) {
        return Err(DropReason::TooLong);
    }
    let &[d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, _, _] = hdr;
    let (dst, src) = (Mac([d0, d1, d2, d3, d4, d5]), Mac([s0, s1, s2, s3, s4, s5]));
    if src.is_multicast() || src.is_zero() {
        return Err(DropReason::BadSource);
    }
    Ok((src, dst))
}

/// A port's attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    pub network: NetworkId,
    /// Largest non-GSO frame, Ethernet header included (e.g. MTU + 18 to allow a VLAN tag and
    /// slack).
    pub max_frame: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("network {0} does not exist")]
    UnknownNetwork(NetworkId),
    #[error("port {0} does not exist")]
    UnknownPort(PortId),
    #[error("port {0} already exists")]
    PortExists(PortId),
    #[error("network {0} already exists")]
    NetworkExists(NetworkId),
    #[error("network {0} still has ports; remove them first")]
    NetworkHasPorts(NetworkId),
    #[error("port {port} is not on network {network}")]
    WrongNetwork { port: PortId, network: NetworkId },
    #[error(transparent)]
    Fdb(#[from] FdbError),
}

/// One port's totals. `tx_*` and [`DropReason::TxError`] are the datapath's to bump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// TCP super-frames cut into segments in software before leaving this port (towards the
    /// tunnel or a TAP without offloads); each segment counts in `tx_packets`.
    pub segmented: u64,
    /// Super-frames merged from in-order TCP segments before leaving this port (a TAP with a
    /// vnet header); each write counts once in `tx_packets`.
    pub coalesced: u64,
    /// Indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl PortCounters {
    pub fn drops_of(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
}

#[derive(Debug, Clone, Default)]
pub struct SwitchConfig {
    pub fdb: FdbConfig,
    pub storm: StormConfig,
}

/// Storm control: a token bucket per ingress port, charged one token by each frame that would
/// be flooded (broadcast, multicast, unknown unicast) and by each frame whose source MAC the
/// port may not learn (it is over `--fdb-per-port-max`, or the table is full). Frames that
/// find the bucket empty are dropped as [`DropReason::Storm`]. Unicast between learned MACs
/// never touches the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormConfig {
    /// Tokens added per second; 0 turns storm control off.
    pub rate: u32,
    /// Most tokens a port holds (the burst it may send at once); a new port starts full.
    pub burst: u32,
}

impl StormConfig {
    /// The daemon's default (`--flood-rate`): far above what ARP, neighbour discovery, DHCP
    /// or a container starting up send, far below what a flood costs.
    pub const DEFAULT_RATE: u32 = 2000;
    pub const OFF: StormConfig = StormConfig { rate: 0, burst: 0 };

    /// `rate` per second with a burst of one second's worth (at least 64).
    pub const fn per_second(rate: u32) -> StormConfig {
        StormConfig { rate, burst: if rate > 64 { rate } else { 64 } }
    }
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig::per_second(StormConfig::DEFAULT_RATE)
    }
}

/// One port's storm-control bucket, in nano-tokens (one frame is 10^9), so that refilling is
/// one multiplication and needs no division.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    nanotokens: u64,
    last: Duration,
}

const NANO: u64 = 1_000_000_000;

impl Bucket {
    fn full(cfg: StormConfig, now: Duration) -> Bucket {
        Bucket { nanotokens: u64::from(cfg.burst) * NANO, last: now }
    }

    /// Takes one token if there is one, refilling for the time since the last call first.
    /// Time going backwards refills nothing.
    fn take(&mut self, cfg: StormConfig, now: Duration) -> bool {
        let cap = u64::from(cfg.burst) * NANO;
        if now > self.last {
            let ns = u64::try_from((now - self.last).as_nanos()).unwrap_or(u64::MAX);
            self.nanotokens = self.nanotokens.saturating_add(ns.saturating_mul(u64::from(cfg.rate))).min(cap);
            self.last = now;
        }
        if self.nanotokens >= NANO {
            self.nanotokens -= NANO;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Port {
    network: NetworkId,
    max_frame: usize,
    counters: PortCounters,
    guard: Option<PortGuard>,
    /// Storm control; `None` until the port's first charged frame (it then starts full).
    bucket: Option<Bucket>,
}

/// The learning switch: networks, their ports, and one MAC table shared by all networks.
#[derive(Debug)]
pub struct Switch {
    /// Indexed by `PortId.0`; port ids are small, dense, and reused.
    ports: Vec<Option<Port>>,
    /// Each network's ports, in the order they were added.
    networks: FxHashMap<NetworkId, Vec<PortId>>,
    fdb: Fdb,
    storm: StormConfig,
}

impl Switch {
    pub fn new(cfg: SwitchConfig) -> Self {
        Switch { ports: Vec::new(), networks: FxHashMap::default(), fdb: Fdb::new(cfg.fdb), storm: cfg.storm }
    }

    pub fn add_network(&mut self, net: NetworkId) -> Result<(), SwitchError> {
        if self.networks.contains_key(&net) {
            return Err(SwitchError::NetworkExists(net));
        }
        self.networks.insert(net, Vec::new());
        Ok(())
    }

    /// Removes an empty network and every MAC table entry of it.
    pub fn remove_network(&mut self, net: NetworkId) -> Result<(), SwitchError> {
        match self.networks.get(&net) {
            None => return Err(SwitchError::UnknownNetwork(net)),
            Some(ports) if !ports.is_empty() => return Err(SwitchError::NetworkHasPorts(net)),
            Some(_) => {}
        }
        self.networks.remove(&net);
        self.fdb.flush(Flush::Network(net), true);
        Ok(())
    }

    /// Adds `port` to an existing network. Port ids index a `Vec`: keep them small.
    pub fn add_port(&mut self, port: PortId, cfg: PortConfig) -> Result<(), SwitchError> {
        if self.port(port).is_some() {
            return Err(SwitchError::PortExists(port));
        }
        let ports = self.networks.get_mut(&cfg.network).ok_or(SwitchError::UnknownNetwork(cfg.network))?;
        ports.push(port);
        let idx = port.0 as usize;
        if self.ports.len() <= idx {
            self.ports.resize_with(idx + 1, || None);
        }
        self.ports[idx] =
            Some(Port { network: cfg.network, max_frame: cfg.max_frame, counters: PortCounters::default(), guard: None, bucket: None });
        // A reused id starts clean (entries are flushed on removal; this covers `fdb_mut` use).
        self.fdb.flush(Flush::Port(port), true);
        Ok(())
    }

    /// Removes `port` and every MAC table entry pointing at it, static ones included.
    pub fn remove_port(&mut self, port: PortId) -> Result<(), SwitchError> {
        let p = self.ports.get_mut(port.0 as usize).and_then(Option::take).ok_or(SwitchError::UnknownPort(port))?;
        if let Some(ports) = self.networks.get_mut(&p.network) {
            ports.retain(|&q| q != port);
        }
        while matches!(self.ports.last(), Some(None)) {
            self.ports.pop();
        }
        self.fdb.flush(Flush::Port(port), true);
        Ok(())
    }

    /// The ports of `net`; empty for an unknown network.
    pub fn ports_of(&self, net: NetworkId) -> &[PortId] {
        self.networks.get(&net).map_or(&[], Vec::as_slice)
    }

    pub fn port_network(&self, port: PortId) -> Option<NetworkId> {
        self.port(port).map(|p| p.network)
    }

    /// The largest non-GSO frame `port` takes.
    pub fn port_max_frame(&self, port: PortId) -> Option<usize> {
        self.port(port).map(|p| p.max_frame)
    }

    /// Decides where a frame received on `ingress` goes, learning its source MAC on the way.
    /// `gso`: the frame is a GSO super-frame (up to [`MAX_GSO_FRAME`]), so the port's
    /// `max_frame` does not apply. Never allocates; never panics on any bytes.
    pub fn handle_frame(&mut self, now: Duration, ingress: PortId, frame: &[u8], gso: bool) -> Verdict {
        let Some(port) = self.ports.get_mut(ingress.0 as usize).and_then(Option::as_mut) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        port.counters.rx_packets += 1;
        port.counters.rx_bytes += frame.len() as u64;
        let (net, max_frame) = (port.network, port.max_frame);
        let verdict = match port.guard.and_then(|g| g.check(frame)) {
            Some(reason) => Verdict::Drop(reason),
            None => match self.decide(now, ingress, net, max_frame, frame, gso) {
                (_, true) if !self.storm_admits(now, ingress) => Verdict::Drop(DropReason::Storm),
                (v, _) => v,
            },
        };
        if let Verdict::Drop(reason) = verdict {
            if let Some(port) = self.ports.get_mut(ingress.0 as usize).and_then(Option::as_mut) {
                port.counters.drops[reason.index()] += 1;
            }
        }
        verdict
    }

    /// Storm control for one charged frame from `ingress`: true when its bucket had a token
    /// (or storm control is off).
    fn storm_admits(&mut self, now: Duration, ingress: PortId) -> bool {
        let cfg = self.storm;
        if cfg.rate == 0 {
            return true;
        }
        let Some(port) = self.ports.get_mut(ingress.0 as usize).and_then(Option::as_mut) else { return true };
        port.bucket.get_or_insert_with(|| Bucket::full(cfg, now)).take(cfg, now)
    }

    /// The verdict, and whether storm control charges the frame (it would be flooded, or its
    /// source could not be learned).
    fn decide(&mut self, now: Duration, ingress: PortId, net: NetworkId, max_frame: usize, frame: &[u8], gso: bool) -> (Verdict, bool) {
        let (src, dst) = match check(frame, max_frame, gso) {
            Ok(macs) => macs,
            Err(reason) => return (Verdict::Drop(reason), false),
        };
        let unlearned = matches!(self.fdb.learn(now, net, src, ingress), Learn::PortLimit | Learn::TableFull);
        match self.lookup(now, ingress, net, dst) {
            Lookup::Hit(p) => (Verdict::Forward(p), unlearned),
            Lookup::Hairpin => (Verdict::Drop(DropReason::Hairpin), false),
            Lookup::Multicast | Lookup::Foreign(_) | Lookup::Miss => (Verdict::Flood, true),
        }
    }

    /// Where a frame to `dst` from `ingress` on `net` goes, without touching anything: the
    /// second half of [`Switch::handle_frame`], shared with [`Switch::explain`].
    fn lookup(&self, now: Duration, ingress: PortId, net: NetworkId, dst: Mac) -> Lookup {
        if dst.is_multicast() {
            return Lookup::Multicast;
        }
        match self.fdb.lookup(now, net, dst) {
            Some(p) if p == ingress => Lookup::Hairpin,
            // Entries only ever point at ports of their own network, unless someone wrote a
            // bad one through `fdb_mut`: then flood within the network rather than leak.
            Some(p) if self.port_network(p) == Some(net) => Lookup::Hit(p),
            Some(p) => Lookup::Foreign(p),
            None => Lookup::Miss,
        }
    }

    /// Checks ARP and neighbour discovery from `port` against `guard` from now on (`None`:
    /// not at all, as for a new port).
    pub fn set_port_guard(&mut self, port: PortId, guard: Option<PortGuard>) -> Result<(), SwitchError> {
        let p = self.ports.get_mut(port.0 as usize).and_then(Option::as_mut).ok_or(SwitchError::UnknownPort(port))?;
        p.guard = guard;
        Ok(())
    }

    /// The guard of `port`, if it has one.
    pub fn port_guard(&self, port: PortId) -> Option<PortGuard> {
        self.port(port).and_then(|p| p.guard)
    }

    /// What [`Switch::handle_frame`] would do with `frame` from `ingress`, step by step, without
    /// learning, counting or aging anything (for `vswitchctl trace`). `None` for an unknown port.
    pub fn explain(&self, now: Duration, ingress: PortId, frame: &[u8], gso: bool) -> Option<Explain> {
        let port = self.port(ingress)?;
        let net = port.network;
        let checked = match port.guard.and_then(|g| g.check(frame)) {
            Some(reason) => Err(reason),
            None => check(frame, port.max_frame, gso),
        };
        let (src, dst) = match checked {
            Ok(macs) => macs,
            Err(reason) => return Some(Explain { network: net, learn: None, lookup: None, verdict: Verdict::Drop(reason) }),
        };
        let learn = self.fdb.preview_learn(now, net, src, ingress);
        // The lookup comes after learning, which may have changed the destination's entry.
        let lookup = match learn {
            Learn::Learned | Learn::LearnedEvicting { .. } | Learn::Moved { .. } | Learn::Refreshed if dst == src => Lookup::Hairpin,
            Learn::PortLimit if dst == src => Lookup::Miss,
            Learn::LearnedEvicting { victim } if victim == (net, dst) => Lookup::Miss,
            _ => self.lookup(now, ingress, net, dst),
        };
        Some(Explain { network: net, learn: Some(learn), lookup: Some(lookup), verdict: lookup.verdict() })
    }

    /// Pins `mac` on `net` to `port`, which must be a port of `net`.
    pub fn add_static(&mut self, net: NetworkId, mac: Mac, port: PortId) -> Result<(), SwitchError> {
        if !self.networks.contains_key(&net) {
            return Err(SwitchError::UnknownNetwork(net));
        }
        let p = self.port(port).ok_or(SwitchError::UnknownPort(port))?;
        if p.network != net {
            return Err(SwitchError::WrongNetwork { port, network: net });
        }
        self.fdb.add_static(net, mac, port)?;
        Ok(())
    }

    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    pub fn counters(&self, port: PortId) -> Option<&PortCounters> {
        self.port(port).map(|p| &p.counters)
    }

    pub fn counters_mut(&mut self, port: PortId) -> Option<&mut PortCounters> {
        self.ports.get_mut(port.0 as usize).and_then(Option::as_mut).map(|p| &mut p.counters)
    }

    fn port(&self, port: PortId) -> Option<&Port> {
        self.ports.get(port.0 as usize).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_A: NetworkId = NetworkId(10);
    const NET_B: NetworkId = NetworkId(20);
    const MAX_FRAME: usize = 1500 + 18;

    const MAC_1: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
    const MAC_2: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
    const MAC_3: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x03]);

    fn t(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// An ARP request, "who has 10.89.0.2? tell 10.89.0.1", as it is on the wire: broadcast
    /// destination, EtherType 0x0806, then the 28-byte ARP body, padded to the 60-byte minimum.
    fn arp_request(src: Mac) -> Vec<u8> {
        let s = src.0;
        #[rustfmt::skip]
        let mut f = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,     // destination: broadcast
            s[0], s[1], s[2], s[3], s[4], s[5],     // source
            0x08, 0x06,                             // EtherType: ARP
            0x00, 0x01,                             // hardware type: Ethernet
            0x08, 0x00,                             // protocol type: IPv4
            0x06, 0x04,                             // hardware size 6, protocol size 4
            0x00, 0x01,                             // opcode: request
            s[0], s[1], s[2], s[3], s[4], s[5],     // sender MAC
            10, 89, 0, 1,                           // sender IP
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     // target MAC: unknown
            10, 89, 0, 2,                           // target IP
        ];
        f.resize(60, 0);
        assert_eq!(f.len(), 60);
        f
    }

    /// An IPv4 ICMP echo request from 10.89.0.1 to 10.89.0.2, with valid checksums.
    fn icmp_echo(dst: Mac, src: Mac) -> Vec<u8> {
        let (d, s) = (dst.0, src.0);
        #[rustfmt::skip]
        let mut f = vec![
            d[0], d[1], d[2], d[3], d[4], d[5],
            s[0], s[1], s[2], s[3], s[4], s[5],
            0x08, 0x00,                             // EtherType: IPv4
            // IPv4 header
            0x45, 0x00, 0x00, 0x54,                 // v4, IHL 5, total length 84
            0x12, 0x34, 0x40, 0x00,                 // id, DF
            0x40, 0x01, 0x00, 0x00,                 // TTL 64, ICMP, checksum (below)
            10, 89, 0, 1,
            10, 89, 0, 2,
            // ICMP echo request
            0x08, 0x00, 0x00, 0x00,                 // type 8, code 0, checksum (below)
            0x00, 0x2a, 0x00, 0x01,                 // id 42, seq 1
        ];
        f.extend((0u8..56).map(|i| i.wrapping_mul(7)));
        let ip_ck = inet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ip_ck.to_be_bytes());
        let icmp_ck = inet_checksum(&f[34..]);
        f[36..38].copy_from_slice(&icmp_ck.to_be_bytes());
        assert_eq!(f.len(), 14 + 84);
        assert_eq!(inet_checksum(&f[14..34]), 0);
        f
    }

    fn inet_checksum(b: &[u8]) -> u16 {
        let mut sum: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn port_cfg(network: NetworkId) -> PortConfig {
        PortConfig { network, max_frame: MAX_FRAME }
    }

    /// NET_A: ports 1, 2, 3. NET_B: ports 4, 5.
    fn switch() -> Switch {
        let mut sw = Switch::new(SwitchConfig::default());
        sw.add_network(NET_A).unwrap();
        sw.add_network(NET_B).unwrap();
        for p in 1..=3 {
            sw.add_port(PortId(p), port_cfg(NET_A)).unwrap();
        }
        for p in 4..=5 {
            sw.add_port(PortId(p), port_cfg(NET_B)).unwrap();
        }
        sw
    }

    fn drops(sw: &Switch, port: u32, r: DropReason) -> u64 {
        sw.counters(PortId(port)).unwrap().drops_of(r)
    }

    #[test]
    fn drop_reasons_table() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(DropReason::TooShort.as_str(), "too_short");
        assert_eq!(DropReason::BadSource.to_string(), "bad_source");
        assert_eq!(DropReason::NoRoute.as_str(), "no_route");
        let names: std::collections::HashSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    /// `arp_request` with sender IP `spa`.
    fn arp_from(src: Mac, spa: [u8; 4]) -> Vec<u8> {
        let mut f = arp_request(src);
        f[28..32].copy_from_slice(&spa);
        f
    }

    /// An IPv6 neighbour discovery message of ICMPv6 `kind` from `src`: for an advertisement
    /// (136) `target` is its target address; `ext` puts a destination options header first.
    fn nd(src: Mac, kind: u8, ip_src: Ipv6Addr, target: Ipv6Addr, ext: bool) -> Vec<u8> {
        let s = src.0;
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1, s[0], s[1], s[2], s[3], s[4], s[5], 0x86, 0xdd];
        let payload: u16 = if ext { 32 } else { 24 };
        f.extend([0x60, 0, 0, 0]);
        f.extend(payload.to_be_bytes());
        f.extend([if ext { 60 } else { 58 }, 255]);
        f.extend(ip_src.octets());
        f.extend("ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        if ext {
            f.extend([58, 0, 1, 4, 0, 0, 0, 0]); // destination options: PadN
        }
        f.extend([kind, 0, 0, 0, 0x20, 0, 0, 0]);
        f.extend(target.octets());
        f
    }

    const GUARD: PortGuard = PortGuard {
        ipv4: Some(Ipv4Addr::new(10, 89, 0, 2)),
        ipv6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        gateway4: Some(Ipv4Addr::new(10, 89, 0, 1)),
        gateway6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    };

    #[test]
    fn arp_claiming_another_address_is_dropped_and_counted() {
        let mut sw = switch();
        sw.set_port_guard(PortId(1), Some(GUARD)).unwrap();
        // The gateway's address (what arp_request claims), a neighbour's: dropped, not learned.
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp_from(MAC_1, [10, 89, 0, 1]), false), Verdict::Drop(DropReason::ArpSpoof));
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp_from(MAC_1, [10, 89, 0, 3]), false), Verdict::Drop(DropReason::ArpSpoof));
        assert_eq!(drops(&sw, 1, DropReason::ArpSpoof), 2);
        assert_eq!(sw.fdb().lookup(t(0), NET_A, MAC_1), None);
        // Its own address, and a probe (0.0.0.0), go on.
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp_from(MAC_1, [10, 89, 0, 2]), false), Verdict::Flood);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp_from(MAC_1, [0, 0, 0, 0]), false), Verdict::Flood);
        // A port without a guard (a gateway, a peer) is not checked; IP is never checked here.
        assert_eq!(sw.handle_frame(t(0), PortId(2), &arp_from(MAC_2, [10, 89, 0, 1]), false), Verdict::Flood);
        assert_eq!(sw.handle_frame(t(1), PortId(1), &icmp_echo(MAC_2, MAC_1), false), Verdict::Forward(PortId(2)));
        // Without a known own address only the gateway's is refused.
        sw.set_port_guard(PortId(1), Some(PortGuard { ipv4: None, ..GUARD })).unwrap();
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp_from(MAC_1, [10, 89, 0, 3]), false), Verdict::Flood);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp_from(MAC_1, [10, 89, 0, 1]), false), Verdict::Drop(DropReason::ArpSpoof));
        // Truncated ARP passes the guard (no host takes it); the switch's own checks apply.
        assert!(GUARD.check(&arp_from(MAC_1, [10, 89, 0, 1])[..30]).is_none());
    }

    #[test]
    fn neighbour_discovery_claiming_another_address_is_dropped_and_counted() {
        let mut sw = switch();
        sw.set_port_guard(PortId(1), Some(GUARD)).unwrap();
        let (own, gw, other) = (GUARD.ipv6.unwrap(), GUARD.gateway6.unwrap(), "fd00::3".parse::<Ipv6Addr>().unwrap());
        let ll: Ipv6Addr = "fe80::42:aff:fe59:2".parse().unwrap();
        let spoof = Verdict::Drop(DropReason::NdSpoof);
        for ext in [false, true] {
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 136, own, gw, ext), false), spoof, "NA for the gateway");
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 136, ll, other, ext), false), spoof, "NA for a neighbour");
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 135, gw, gw, ext), false), spoof, "NS from the gateway's address");
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 134, ll, ll, ext), false), spoof, "a router advertisement");
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 136, own, own, ext), false), Verdict::Flood);
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 136, ll, ll, ext), false), Verdict::Flood);
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 135, Ipv6Addr::UNSPECIFIED, own, ext), false), Verdict::Flood);
            assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 135, own, other, ext), false), Verdict::Flood);
        }
        assert_eq!(drops(&sw, 1, DropReason::NdSpoof), 8);
        // Unguarded ports are not checked.
        assert_eq!(sw.handle_frame(t(0), PortId(2), &nd(MAC_2, 136, own, gw, false), false), Verdict::Flood);
        // Without a known IPv6 address, the gateway's is still refused.
        sw.set_port_guard(PortId(1), Some(PortGuard { ipv6: None, ..GUARD })).unwrap();
        assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 136, own, other, false), false), Verdict::Flood);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &nd(MAC_1, 136, own, gw, false), false), spoof);
    }

    #[test]
    fn workers_leave_arp_and_neighbour_discovery_to_the_core() {
        assert!(needs_guard(&arp_request(MAC_1)));
        assert!(needs_guard(&nd(MAC_1, 136, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, false)));
        assert!(needs_guard(&nd(MAC_1, 136, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, true)));
        assert!(!needs_guard(&icmp_echo(MAC_1, MAC_2)));
        let mut tcp6 = nd(MAC_1, 136, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, false);
        tcp6[20] = 6;
        assert!(!needs_guard(&tcp6));
        assert!(!needs_guard(&[0u8; 5]));
    }

    #[test]
    fn arp_floods_then_reply_is_forwarded() {
        let mut sw = switch();
        let arp = arp_request(MAC_1);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp, false), Verdict::Flood);
        assert_eq!(sw.fdb().lookup(t(0), NET_A, MAC_1), Some(PortId(1)));
        // The reply (unicast to MAC_1) goes straight to port 1, and teaches MAC_2 on port 2.
        let reply = icmp_echo(MAC_1, MAC_2);
        assert_eq!(sw.handle_frame(t(1), PortId(2), &reply, false), Verdict::Forward(PortId(1)));
        let ping = icmp_echo(MAC_2, MAC_1);
        assert_eq!(sw.handle_frame(t(1), PortId(1), &ping, false), Verdict::Forward(PortId(2)));
        let c = sw.counters(PortId(1)).unwrap();
        assert_eq!(c.rx_packets, 2);
        assert_eq!(c.rx_bytes, (arp.len() + ping.len()) as u64);
        assert_eq!(c.drops, [0; DropReason::COUNT]);
        assert_eq!(c.tx_packets, 0, "tx is the datapath's to count");
        assert_eq!(sw.ports_of(NET_A), &[PortId(1), PortId(2), PortId(3)]);
    }

    #[test]
    fn unknown_unicast_and_multicast_flood() {
        let mut sw = switch();
        assert_eq!(sw.handle_frame(t(0), PortId(1), &icmp_echo(MAC_3, MAC_1), false), Verdict::Flood);
        let mcast = icmp_echo(Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]), MAC_1);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &mcast, false), Verdict::Flood);
        // Broadcast floods even from a known source.
        assert_eq!(sw.handle_frame(t(0), PortId(2), &arp_request(MAC_2), false), Verdict::Flood);
    }

    #[test]
    fn learned_entries_age_out_to_flooding() {
        let mut sw = switch();
        sw.handle_frame(t(0), PortId(2), &arp_request(MAC_2), false);
        let ping = icmp_echo(MAC_2, MAC_1);
        assert_eq!(sw.handle_frame(t(300), PortId(1), &ping, false), Verdict::Forward(PortId(2)));
        assert_eq!(sw.handle_frame(t(301), PortId(1), &ping, false), Verdict::Flood);
    }

    #[test]
    fn networks_never_mix() {
        let mut sw = switch();
        // The same MAC lives on both networks.
        sw.handle_frame(t(0), PortId(2), &arp_request(MAC_2), false);
        sw.handle_frame(t(0), PortId(5), &arp_request(MAC_2), false);
        assert_eq!(sw.handle_frame(t(1), PortId(1), &icmp_echo(MAC_2, MAC_1), false), Verdict::Forward(PortId(2)));
        assert_eq!(sw.handle_frame(t(1), PortId(4), &icmp_echo(MAC_2, MAC_1), false), Verdict::Forward(PortId(5)));
        // MAC_1 was learned on both networks, separately.
        assert_eq!(sw.fdb().lookup(t(1), NET_A, MAC_1), Some(PortId(1)));
        assert_eq!(sw.fdb().lookup(t(1), NET_B, MAC_1), Some(PortId(4)));
        // A MAC known only on NET_A floods on NET_B.
        sw.handle_frame(t(1), PortId(3), &arp_request(MAC_3), false);
        assert_eq!(sw.handle_frame(t(1), PortId(4), &icmp_echo(MAC_3, MAC_1), false), Verdict::Flood);
        assert_eq!(sw.ports_of(NET_B), &[PortId(4), PortId(5)]);
        assert_eq!(sw.port_network(PortId(4)), Some(NET_B));
    }

    #[test]
    fn hairpin_is_dropped() {
        let mut sw = switch();
        sw.handle_frame(t(0), PortId(1), &arp_request(MAC_1), false);
        sw.handle_frame(t(0), PortId(1), &arp_request(MAC_3), false);
        let f = icmp_echo(MAC_3, MAC_1);
        assert_eq!(sw.handle_frame(t(1), PortId(1), &f, false), Verdict::Drop(DropReason::Hairpin));
        // To itself, too.
        let f = icmp_echo(MAC_1, MAC_1);
        assert_eq!(sw.handle_frame(t(1), PortId(1), &f, false), Verdict::Drop(DropReason::Hairpin));
        assert_eq!(drops(&sw, 1, DropReason::Hairpin), 2);
    }

    #[test]
    fn malformed_frames_are_counted() {
        let mut sw = switch();
        for len in 0..ETH_HLEN {
            let v = sw.handle_frame(t(0), PortId(1), &vec![0x02; len], false);
            assert_eq!(v, Verdict::Drop(DropReason::TooShort));
        }
        // Exactly a header is fine.
        let mut hdr = icmp_echo(MAC_2, MAC_1);
        hdr.truncate(ETH_HLEN);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &hdr, false), Verdict::Flood);

        let mut big = icmp_echo(MAC_2, MAC_1);
        big.resize(MAX_FRAME, 0);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &big, false), Verdict::Flood);
        big.push(0);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &big, false), Verdict::Drop(DropReason::TooLong));

        for src in [Mac::BROADCAST, Mac([0x01, 0, 0x5e, 1, 2, 3]), Mac::default()] {
            let v = sw.handle_frame(t(0), PortId(1), &icmp_echo(MAC_2, src), false);
            assert_eq!(v, Verdict::Drop(DropReason::BadSource));
        }
        assert_eq!(sw.fdb().len(), 1, "only MAC_1 was learned");

        let c = sw.counters(PortId(1)).unwrap();
        assert_eq!(c.drops_of(DropReason::TooShort), ETH_HLEN as u64);
        assert_eq!(c.drops_of(DropReason::TooLong), 1);
        assert_eq!(c.drops_of(DropReason::BadSource), 3);
        assert_eq!(c.rx_packets, ETH_HLEN as u64 + 1 + 2 + 3);
        // The other ports saw nothing.
        assert_eq!(sw.counters(PortId(2)).unwrap(), &PortCounters::default());
    }

    #[test]
    fn unknown_ingress_port() {
        let mut sw = switch();
        let f = arp_request(MAC_1);
        assert_eq!(sw.handle_frame(t(0), PortId(99), &f, false), Verdict::Drop(DropReason::UnknownPort));
        assert_eq!(sw.handle_frame(t(0), PortId(0), &f, false), Verdict::Drop(DropReason::UnknownPort));
        assert_eq!(sw.handle_frame(t(0), PortId(u32::MAX), &[], true), Verdict::Drop(DropReason::UnknownPort));
        assert!(sw.counters(PortId(99)).is_none());
        assert!(sw.fdb().is_empty());
    }

    #[test]
    fn gso_allows_64k() {
        let mut sw = switch();
        sw.handle_frame(t(0), PortId(2), &arp_request(MAC_2), false);
        let mut f = icmp_echo(MAC_2, MAC_1);
        f.resize(MAX_GSO_FRAME, 0);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &f, false), Verdict::Drop(DropReason::TooLong));
        assert_eq!(sw.handle_frame(t(0), PortId(1), &f, true), Verdict::Forward(PortId(2)));
        f.push(0);
        assert_eq!(sw.handle_frame(t(0), PortId(1), &f, true), Verdict::Drop(DropReason::TooLong));
    }

    #[test]
    fn static_entry_beats_learning() {
        let mut sw = switch();
        sw.add_static(NET_A, MAC_2, PortId(2)).unwrap();
        // MAC_2 shows up as a source on port 3: not learned there.
        assert_eq!(sw.handle_frame(t(0), PortId(3), &arp_request(MAC_2), false), Verdict::Flood);
        assert_eq!(sw.fdb().lookup(t(0), NET_A, MAC_2), Some(PortId(2)));
        // And it never ages.
        let f = icmp_echo(MAC_2, MAC_1);
        assert_eq!(sw.handle_frame(t(100_000), PortId(1), &f, false), Verdict::Forward(PortId(2)));
        assert_eq!(sw.fdb_mut().learn(t(0), NET_A, MAC_2, PortId(3)), Learn::Ignored);
    }

    #[test]
    fn add_static_checks() {
        let mut sw = switch();
        assert!(matches!(sw.add_static(NetworkId(99), MAC_1, PortId(1)), Err(SwitchError::UnknownNetwork(NetworkId(99)))));
        assert!(matches!(sw.add_static(NET_A, MAC_1, PortId(42)), Err(SwitchError::UnknownPort(PortId(42)))));
        let e = sw.add_static(NET_A, MAC_1, PortId(4)).unwrap_err();
        assert!(matches!(e, SwitchError::WrongNetwork { port: PortId(4), network: NET_A }));
        assert_eq!(e.to_string(), "port 4 is not on network 10");
        let e = sw.add_static(NET_A, Mac::BROADCAST, PortId(1)).unwrap_err();
        assert!(matches!(e, SwitchError::Fdb(FdbError::InvalidMac(_))));
        assert!(sw.fdb().is_empty());
    }

    #[test]
    fn removed_port_entries_are_gone() {
        let mut sw = switch();
        sw.handle_frame(t(0), PortId(2), &arp_request(MAC_2), false);
        sw.add_static(NET_A, MAC_3, PortId(2)).unwrap();
        assert_eq!(sw.fdb().len(), 2);
        sw.remove_port(PortId(2)).unwrap();
        assert!(sw.fdb().is_empty());
        assert_eq!(sw.ports_of(NET_A), &[PortId(1), PortId(3)]);
        assert_eq!(sw.port_network(PortId(2)), None);
        assert!(sw.counters(PortId(2)).is_none());
        assert_eq!(sw.handle_frame(t(0), PortId(1), &icmp_echo(MAC_2, MAC_1), false), Verdict::Flood);
        assert!(matches!(sw.remove_port(PortId(2)), Err(SwitchError::UnknownPort(_))));
        // The id can be reused, on another network, with fresh counters.
        sw.add_port(PortId(2), port_cfg(NET_B)).unwrap();
        assert_eq!(sw.counters(PortId(2)), Some(&PortCounters::default()));
        assert_eq!(sw.ports_of(NET_B), &[PortId(4), PortId(5), PortId(2)]);
    }

    #[test]
    fn network_and_port_management() {
        let mut sw = switch();
        assert!(matches!(sw.add_network(NET_A), Err(SwitchError::NetworkExists(NET_A))));
        assert!(matches!(sw.add_port(PortId(1), port_cfg(NET_B)), Err(SwitchError::PortExists(_))));
        assert!(matches!(sw.add_port(PortId(9), port_cfg(NetworkId(7))), Err(SwitchError::UnknownNetwork(NetworkId(7)))));
        assert_eq!(sw.port_network(PortId(9)), None);
        assert!(sw.ports_of(NetworkId(7)).is_empty());

        sw.handle_frame(t(0), PortId(4), &arp_request(MAC_1), false);
        sw.fdb_mut().add_static(NET_B, MAC_2, PortId(5)).unwrap();
        assert!(matches!(sw.remove_network(NET_B), Err(SwitchError::NetworkHasPorts(NET_B))));
        sw.remove_port(PortId(4)).unwrap();
        // Entries of the network pointing at ports that are gone are dropped with it.
        sw.fdb_mut().add_static(NET_B, MAC_3, PortId(77)).unwrap();
        sw.remove_port(PortId(5)).unwrap();
        assert_eq!(sw.fdb().len(), 1);
        sw.remove_network(NET_B).unwrap();
        assert!(sw.fdb().is_empty());
        assert!(matches!(sw.remove_network(NET_B), Err(SwitchError::UnknownNetwork(_))));
        assert!(matches!(sw.add_port(PortId(4), port_cfg(NET_B)), Err(SwitchError::UnknownNetwork(_))));
    }

    #[test]
    fn bad_fdb_entries_do_not_leak_across_networks() {
        let mut sw = switch();
        // A static entry written directly into the table, pointing at a port of another network.
        sw.fdb_mut().add_static(NET_A, MAC_2, PortId(4)).unwrap();
        assert_eq!(sw.handle_frame(t(0), PortId(1), &icmp_echo(MAC_2, MAC_1), false), Verdict::Flood);
    }

    #[test]
    fn counters_mut_for_the_datapath() {
        let mut sw = switch();
        let c = sw.counters_mut(PortId(3)).unwrap();
        c.tx_packets += 1;
        c.tx_bytes += 60;
        c.drops[DropReason::TxError.index()] += 1;
        let c = sw.counters(PortId(3)).unwrap();
        assert_eq!((c.tx_packets, c.tx_bytes, c.drops_of(DropReason::TxError)), (1, 60, 1));
        assert!(sw.counters_mut(PortId(1000)).is_none());
    }

    #[test]
    fn explain_mirrors_handle_frame_and_changes_nothing() {
        let mut sw = switch();
        sw.handle_frame(t(0), PortId(2), &arp_request(MAC_2), false);
        let (fdb_before, counters_before) = (sw.fdb().counters(), sw.counters(PortId(1)).cloned());
        // To a learned MAC: learning would add MAC_1, the lookup hits port 2.
        let e = sw.explain(t(1), PortId(1), &icmp_echo(MAC_2, MAC_1), false).unwrap();
        assert_eq!(e.network, NET_A);
        assert_eq!(e.learn, Some(Learn::Learned));
        assert_eq!(e.lookup, Some(Lookup::Hit(PortId(2))));
        assert_eq!(e.verdict, Verdict::Forward(PortId(2)));
        // Nothing was learned or counted.
        assert_eq!(sw.fdb().lookup(t(1), NET_A, MAC_1), None);
        assert_eq!(sw.fdb().counters(), fdb_before);
        assert_eq!(sw.counters(PortId(1)).cloned(), counters_before);
        // Unknown: flood; known on the port: refreshed; bad source: dropped before learning.
        let e = sw.explain(t(1), PortId(2), &icmp_echo(MAC_3, MAC_2), false).unwrap();
        assert_eq!((e.learn, e.lookup, e.verdict), (Some(Learn::Refreshed), Some(Lookup::Miss), Verdict::Flood));
        let e = sw.explain(t(1), PortId(1), &icmp_echo(MAC_2, Mac::BROADCAST), false).unwrap();
        assert_eq!((e.learn, e.lookup, e.verdict), (None, None, Verdict::Drop(DropReason::BadSource)));
        let e = sw.explain(t(1), PortId(1), &arp_request(MAC_1), false).unwrap();
        assert_eq!((e.lookup, e.verdict), (Some(Lookup::Multicast), Verdict::Flood));
        // Another network never sees MAC_2 of NET_A.
        let e = sw.explain(t(1), PortId(4), &icmp_echo(MAC_2, MAC_1), false).unwrap();
        assert_eq!((e.network, e.lookup), (NET_B, Some(Lookup::Miss)));
        assert!(sw.explain(t(1), PortId(42), &arp_request(MAC_1), false).is_none());
        // The same frames through handle_frame give the same verdicts.
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for i in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let macs = [MAC_1, MAC_2, MAC_3, Mac::BROADCAST];
            let (d, s) = (macs[(x % 4) as usize], macs[((x >> 8) % 3) as usize]);
            let port = PortId(1 + ((x >> 16) % 5) as u32);
            let f = if x & 1 == 0 { icmp_echo(d, s) } else { arp_request(s) };
            let explained = sw.explain(t(i / 50), port, &f, false).unwrap();
            let mut probe = sw.fdb().clone();
            let learned = explained.learn.map(|_| probe.learn(t(i / 50), sw.port_network(port).unwrap(), s, port));
            assert_eq!(explained.learn, learned, "learning preview at {i}");
            assert_eq!(explained.verdict, sw.handle_frame(t(i / 50), port, &f, false), "frame {i}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut sw = switch();
        sw.set_port_guard(PortId(1), Some(GUARD)).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 200];
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            for b in &mut buf[..len] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if len >= 21 && x.is_multiple_of(3) {
                // ARP or ICMPv6 (often enough to reach the guard's parsers).
                buf[12..14].copy_from_slice(if x & 8 == 0 { &[0x08, 0x06] } else { &[0x86, 0xdd] });
                buf[20] = 58;
            }
            let port = PortId((x % 7) as u32);
            let v = sw.handle_frame(t(i / 100), port, &buf[..len], x & 1 == 0);
            if let Verdict::Forward(p) = v {
                assert_ne!(p, port);
                assert_eq!(sw.port_network(p), sw.port_network(port));
            }
        }
    }

    fn storm_switch(storm: StormConfig, per_port_max: usize) -> Switch {
        let fdb = FdbConfig { per_port_max, ..FdbConfig::default() };
        let mut sw = Switch::new(SwitchConfig { fdb, storm });
        sw.add_network(NET_A).unwrap();
        for p in 1..=3 {
            sw.add_port(PortId(p), port_cfg(NET_A)).unwrap();
        }
        sw
    }

    /// A unicast frame from `src` to `dst` (EtherType 0x88b5, 60 bytes).
    fn unicast(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f
    }

    fn random_src(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac([0x02, 0xf1, b[0], b[1], b[2], b[3]])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn storm_limits_floods_to_the_burst_then_the_rate() {
        let mut sw = storm_switch(StormConfig { rate: 100, burst: 10 }, 1024);
        let unknown = Mac([0x02, 0, 0, 0, 0, 0x99]);
        let verdicts: Vec<_> = (0..20).map(|_| sw.handle_frame(t(1), PortId(1), &unicast(unknown, MAC_1), false)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Flood), "{verdicts:?}");
        assert!(verdicts[10..].iter().all(|v| *v == Verdict::Drop(DropReason::Storm)), "{verdicts:?}");
        assert_eq!(drops(&sw, 1, DropReason::Storm), 10);
        // 100 per second: one token every 10 ms of virtual time, never more than the burst.
        assert_eq!(sw.handle_frame(t(1) + ms(10), PortId(1), &arp_request(MAC_1), false), Verdict::Flood);
        assert_eq!(sw.handle_frame(t(1) + ms(10), PortId(1), &arp_request(MAC_1), false), Verdict::Drop(DropReason::Storm));
        let later = t(60);
        let n = (0..50).filter(|_| sw.handle_frame(later, PortId(1), &arp_request(MAC_1), false) == Verdict::Flood).count();
        assert_eq!(n, 10, "a long pause refills the burst only");
        // Time going backwards refills nothing and panics nowhere.
        assert_eq!(sw.handle_frame(t(0), PortId(1), &arp_request(MAC_1), false), Verdict::Drop(DropReason::Storm));
    }

    #[test]
    fn storm_is_per_port_and_spares_known_unicast() {
        let mut sw = storm_switch(StormConfig { rate: 10, burst: 5 }, 1024);
        // Ports 2 and 3 learn their MACs, then port 1 exhausts its bucket with floods.
        sw.handle_frame(t(1), PortId(2), &unicast(MAC_3, MAC_2), false);
        sw.handle_frame(t(1), PortId(3), &unicast(MAC_2, MAC_3), false);
        for _ in 0..100 {
            sw.handle_frame(t(1), PortId(1), &arp_request(MAC_1), false);
        }
        assert_eq!(drops(&sw, 1, DropReason::Storm), 100 - 5);
        // Unicast between learned MACs is never charged, from any port, the flooder included.
        for _ in 0..1000 {
            assert_eq!(sw.handle_frame(t(1), PortId(2), &unicast(MAC_3, MAC_2), false), Verdict::Forward(PortId(3)));
            assert_eq!(sw.handle_frame(t(1), PortId(1), &unicast(MAC_2, MAC_1), false), Verdict::Forward(PortId(2)));
        }
        // Another port's bucket is its own.
        assert_eq!(sw.handle_frame(t(1), PortId(2), &arp_request(MAC_2), false), Verdict::Flood);
        assert_eq!(drops(&sw, 2, DropReason::Storm), 0);
    }

    #[test]
    fn storm_charges_sources_over_the_learn_limit() {
        let mut sw = storm_switch(StormConfig { rate: 1, burst: 3 }, 4);
        sw.handle_frame(t(1), PortId(2), &unicast(MAC_1, MAC_2), false);
        // Four new sources are learned; MAC_2 is known, so nothing floods.
        for i in 0..4 {
            assert_eq!(sw.handle_frame(t(1), PortId(1), &unicast(MAC_2, random_src(i)), false), Verdict::Forward(PortId(2)));
        }
        // Past the port's limit, known-destination frames from new sources take tokens.
        let v: Vec<_> = (4..10).map(|i| sw.handle_frame(t(1), PortId(1), &unicast(MAC_2, random_src(i)), false)).collect();
        assert_eq!(&v[..3], &[Verdict::Forward(PortId(2)); 3], "{v:?}");
        assert!(v[3..].iter().all(|v| *v == Verdict::Drop(DropReason::Storm)), "{v:?}");
        // A learned source still gets through.
        assert_eq!(sw.handle_frame(t(1), PortId(1), &unicast(MAC_2, random_src(0)), false), Verdict::Forward(PortId(2)));
        assert_eq!(sw.fdb().counters().port_limit, 6);
    }

    #[test]
    fn storm_off_and_default() {
        let mut sw = storm_switch(StormConfig::OFF, 1024);
        for _ in 0..100_000 {
            assert_eq!(sw.handle_frame(t(1), PortId(1), &arp_request(MAC_1), false), Verdict::Flood);
        }
        // The default holds a second's worth: a container that ARPs for a whole /22 at once
        // (1 022 requests) is never limited.
        let mut sw = storm_switch(StormConfig::default(), 1024);
        assert!((0..1022).all(|_| sw.handle_frame(t(1), PortId(1), &arp_request(MAC_1), false) == Verdict::Flood));
        // A million-frame flood over one second of virtual time gets through at the rate only.
        let mut flooded = 0u64;
        for i in 0..1_000_000u32 {
            let now = t(2) + Duration::from_micros(u64::from(i));
            if sw.handle_frame(now, PortId(2), &unicast(Mac([2, 0, 0, 0, 0, 0x99]), random_src(i)), false) == Verdict::Flood {
                flooded += 1;
            }
        }
        let (rate, burst) = (u64::from(StormConfig::DEFAULT_RATE), u64::from(StormConfig::default().burst));
        assert!(flooded <= rate + burst + 1 && flooded >= burst, "{flooded}");
        assert_eq!(drops(&sw, 2, DropReason::Storm), 1_000_000 - flooded);
    }
}
