//! Egress NAT and published ports: the gateway terminates containers' flows in userspace and
//! carries them over ordinary sockets of the daemon, so containers reach the host and beyond
//! without any host interface (what a rootless daemon needs).
//!
//! - **TCP**: a container's SYN to a routed destination starts a non-blocking `connect` from the
//!   daemon. Only when it succeeds is the SYN given to the network's smoltcp stack (medium IP,
//!   any-IP), whose socket then completes the handshake as that destination; a refused connect
//!   answers the container with a RST. Bytes move between the smoltcp socket's ring buffers and
//!   the host socket without another copy. On TAPs with a virtio header the SYN's MSS is raised
//!   so that smoltcp sends 64 KiB segments, written to the TAP as TSO super-frames (partial
//!   checksum, `gso_size` = the container's MTU − 40): the container's kernel takes them like
//!   any GRO packet.
//! - **UDP**: one connected host socket per (container address, port, destination); idle flows
//!   expire.
//! - **ICMP echo**: one unprivileged ping socket per (container, destination, identifier).
//! - **Published ports**: a host listener per published port; each accepted connection (or
//!   datagram) enters the container *from the client's own address*, so the container sees who
//!   connected.
//!
//! What a container may reach: any unicast address outside every network of this daemon; the
//! gateway's own address maps to the host's 127.0.0.1, but only for the ports the network lists
//! in `host_loopback`, and never a listener of this daemon. Internal networks reach nothing.
//! Each container holds at most [`Limits::max_flows`] flows; the rest are refused and counted.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use ipnet::Ipv4Net;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    HardwareAddress, Icmpv4Message, Icmpv4Packet, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use crate::gateway::Gateway;
use crate::types::{Mac, PortId};

/// mio tokens at and above this value are egress flows; see [`LISTENER_BASE`].
pub const TOKEN_BASE: usize = 1 << 40;
/// mio tokens at and above this value are published-port listeners.
pub const LISTENER_BASE: usize = 1 << 41;
/// Bytes in front of every packet handed to the datapath: room for a virtio header (12) and an
/// Ethernet header (14).
pub const HEADROOM: usize = 12 + 14;
/// The largest IPv4 packet.
const MAX_PACKET: usize = 65535;
/// TCP buffers of a container's first flows (each way): deep enough for 64 KiB segments in
/// flight. Later flows of the same container get [`SMALL_BUF`], which bounds memory.
const BIG_BUF: usize = 512 * 1024;
const SMALL_BUF: usize = 32 * 1024;
const BIG_FLOWS: usize = 16;
/// A TCP flow whose container stops acknowledging for this long is aborted.
const STALL_SECS: u64 = 120;
/// The MSS offered to smoltcp in place of a vnet container's own (its TAP takes super-frames).
const SUPER_MSS: u16 = 65535 - 40 - 256;

/// How much one container may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Flows (TCP, UDP and ICMP together) one container may have open.
    pub max_flows: usize,
    /// An idle UDP or ICMP flow is closed after this long.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_flows: 512, idle: Duration::from_secs(60) }
    }
}

/// A network as egress sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub gw: Gateway,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    /// Containers may reach beyond the network (false for internal networks).
    pub egress: bool,
    /// Ports of the host's 127.0.0.1 reachable at the gateway's address (inclusive ranges).
    pub host_loopback: Vec<(u16, u16)>,
    /// The network's TAPs carry a virtio header (TSO super-frames may go to them).
    pub vnet: bool,
}

/// How egress reaches the host for a container's flow: [`HostSockets`], the real sockets of
/// the daemon's namespace; a test or fuzz target hands in a stand-in (e.g. socketpairs) so that
/// the whole path from a container's packet to a host socket and back runs with no connect.
pub trait HostNet: Send {
    /// A non-blocking TCP connection to `to`, under way.
    fn connect_tcp(&mut self, to: SocketAddrV4) -> io::Result<TcpStream>;
    /// Where a connection from [`HostNet::connect_tcp`] stands once its socket is ready:
    /// `Ok(true)` up, `Ok(false)` still under way, `Err` failed.
    fn tcp_established(&self, s: &TcpStream) -> io::Result<bool> {
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        match s.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// A non-blocking UDP socket connected to `to`.
    fn connect_udp(&mut self, to: SocketAddrV4) -> io::Result<UdpSocket>;
    /// A non-blocking unprivileged ICMP (ping) socket connected to `to`.
    fn connect_ping(&mut self, to: Ipv4Addr) -> io::Result<socket2::Socket>;
    /// Whether `ip` is one of the host's own addresses.
    fn is_local(&self, ip: Ipv4Addr) -> bool;
}

/// The daemon's own sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostSockets;

impl HostNet for HostSockets {
    fn connect_tcp(&mut self, to: SocketAddrV4) -> io::Result<TcpStream> {
        TcpStream::connect(SocketAddr::V4(to))
    }

    fn connect_udp(&mut self, to: SocketAddrV4) -> io::Result<UdpSocket> {
        let bind: SocketAddr = if to.ip().is_loopback() { "127.0.0.1:0" } else { "0.0.0.0:0" }.parse().expect("literal");
        UdpSocket::bind(bind).and_then(|s| s.connect(SocketAddr::V4(to)).map(|()| s))
    }

    fn connect_ping(&mut self, to: Ipv4Addr) -> io::Result<socket2::Socket> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM.nonblocking().cloexec(), Some(socket2::Protocol::ICMPV4))?;
        s.connect(&SocketAddr::V4(SocketAddrV4::new(to, 0)).into())?;
        Ok(s)
    }

    /// Binding to it works only then.
    fn is_local(&self, ip: Ipv4Addr) -> bool {
        std::net::UdpSocket::bind(SocketAddrV4::new(ip, 0)).is_ok()
    }
}

/// Counters, for `GET /v1/egress` (the control plane fills `enabled` and the limit).
pub type Stats = crate::api::EgressStats;

/// A packet for a container: `buf[HEADROOM..]` is the IPv4 packet; the datapath fills the
/// headroom and writes it to `to`.
#[derive(Debug)]
pub struct Out {
    pub to: PortId,
    pub gw_port: PortId,
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// A TCP super-frame: segment size for the virtio header.
    pub gso_size: Option<u16>,
    /// The TCP checksum holds only the pseudo-header sum (virtio NEEDS_CSUM).
    pub csum_partial: bool,
    pub buf: Vec<u8>,
}

/// A published port: a host socket whose traffic enters one container port.
#[derive(Debug)]
pub struct Publish {
    /// The endpoint's switch port: its removal removes the publication.
    pub owner: PortId,
    pub gw_port: PortId,
    pub container: SocketAddrV4,
    pub socket: PublishSocket,
}

/// The host side of a publication, already bound (the control plane binds it to report errors).
#[derive(Debug)]
pub enum PublishSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

#[derive(Debug, Clone, Copy)]
struct Client {
    port: PortId,
    gw_port: PortId,
    mac: Mac,
    flows: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    src: SocketAddrV4,
    dst: SocketAddrV4,
}

struct Stack {
    cfg: NetConfig,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Dev,
    dirty: bool,
    /// Flow slots of the TCP flows that have a socket here.
    tcp: Vec<usize>,
}

#[derive(Default)]
struct Dev {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    partial: bool,
}

#[derive(Debug)]
enum Flow {
    Tcp(TcpFlow),
    Udp(UdpFlow),
    Icmp(IcmpFlow),
}

impl Flow {
    fn key(&self) -> Key {
        match self {
            Flow::Tcp(f) => f.key,
            Flow::Udp(f) => f.key,
            Flow::Icmp(f) => f.key,
        }
    }

    fn gw_port(&self) -> PortId {
        match self {
            Flow::Tcp(f) => f.gw_port,
            Flow::Udp(f) => f.gw_port,
            Flow::Icmp(f) => f.gw_port,
        }
    }

    /// When a UDP or ICMP flow last carried something (TCP flows end with their connection).
    fn last_used(&self) -> Option<Duration> {
        match self {
            Flow::Tcp(_) => None,
            Flow::Udp(f) => Some(f.last),
            Flow::Icmp(f) => Some(f.last),
        }
    }
}

#[derive(Debug)]
struct TcpFlow {
    key: Key,
    gw_port: PortId,
    host: TcpStream,
    /// The container's SYN, held until the host connect completes.
    syn: Option<Vec<u8>>,
    handle: Option<SocketHandle>,
    /// The host socket may have more to read (edge-triggered).
    host_readable: bool,
    host_eof: bool,
    host_shut: bool,
}

#[derive(Debug)]
struct UdpFlow {
    key: Key,
    gw_port: PortId,
    sock: UdpSocket,
    last: Duration,
}

#[derive(Debug)]
struct IcmpFlow {
    key: Key,
    gw_port: PortId,
    sock: socket2::Socket,
    ident: u16,
    last: Duration,
}

#[derive(Debug)]
struct Listener {
    publish: Publish,
    /// The host address and port it is bound to.
    local: SocketAddr,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
}

/// Why egress refuses a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Egress is off for the network.
    Off,
    /// Loopback, multicast, broadcast, unspecified or reserved.
    NotUnicast,
    /// An address of one of the daemon's networks.
    DaemonNetwork,
    /// The host (the gateway's address or its own) on a port `--host-loopback` does not list.
    HostPortNotListed,
    /// The host on a port a publication of this daemon listens on.
    DaemonListener,
}

impl Refused {
    fn describe(self, dst: SocketAddrV4, listener: Option<String>) -> String {
        match self {
            Refused::Off => "egress is off for this network".into(),
            Refused::NotUnicast => format!("{} is not a unicast address", dst.ip()),
            Refused::DaemonNetwork => format!("{} is in a network of this daemon: switched, never routed", dst.ip()),
            Refused::HostPortNotListed => match listener {
                Some(l) => format!("port {} of the host is {l}, and the network does not list it in --host-loopback", dst.port()),
                None => format!("port {} of the host is not listed in the network's --host-loopback", dst.port()),
            },
            Refused::DaemonListener => format!("port {} is a listener of the daemon itself ({})", dst.port(), listener.unwrap_or_default()),
        }
    }
}

/// Everything egress holds; owned by the datapath thread.
pub struct Egress {
    limits: Limits,
    stacks: HashMap<PortId, Stack>,
    clients: HashMap<std::net::Ipv4Addr, Client>,
    by_port: HashMap<PortId, Ipv4Addr>,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    keys: HashMap<Key, usize>,
    listeners: Vec<Option<Listener>>,
    /// (container address, container port) → listener slot, for UDP replies.
    udp_published: HashMap<SocketAddrV4, usize>,
    out: Vec<Out>,
    stats: Stats,
    seed: u64,
    warned_icmp: bool,
    /// "cannot watch a host socket" was logged (once: a container opens flows at its rate).
    warned_watch: bool,
    /// The datapath clock at the last entry point.
    now: Duration,
    host: Box<dyn HostNet>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("stacks", &self.stacks.len()).field("stats", &self.stats).finish()
    }
}

impl Egress {
    pub fn new(limits: Limits, seed: u64) -> Egress {
        Egress {
            limits,
            stacks: HashMap::new(),
            clients: HashMap::new(),
            by_port: HashMap::new(),
            flows: Vec::new(),
            free: Vec::new(),
            keys: HashMap::new(),
            listeners: Vec::new(),
            udp_published: HashMap::new(),
            out: Vec::new(),
            stats: Stats::default(),
            seed,
            warned_icmp: false,
            warned_watch: false,
            now: Duration::ZERO,
            host: Box::new(HostSockets),
        }
    }

    /// The same, reaching the host through `host` instead of [`HostSockets`].
    pub fn with_host(self, host: Box<dyn HostNet>) -> Egress {
        Egress { host, ..self }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        for f in self.flows.iter().flatten() {
            match f {
                Flow::Tcp(_) => s.tcp_flows += 1,
                Flow::Udp(_) => s.udp_flows += 1,
                Flow::Icmp(_) => s.icmp_flows += 1,
            }
        }
        s
    }

    /// Adds (or reconfigures) the network whose gateway is `gw_port`.
    pub fn set_network(&mut self, gw_port: PortId, cfg: NetConfig, now: Duration) {
        if let Some(s) = self.stacks.get_mut(&gw_port) {
            if s.cfg.gw == cfg.gw && s.cfg.subnet == cfg.subnet && s.cfg.vnet == cfg.vnet {
                s.cfg = cfg;
                return;
            }
        }
        self.remove_network(gw_port);
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let stack = Stack::new(cfg, now, self.seed);
        self.stacks.insert(gw_port, stack);
    }

    /// Forgets a network and every flow through it.
    pub fn remove_network(&mut self, gw_port: PortId) {
        if self.stacks.remove(&gw_port).is_some() {
            self.end_flows_where(|f| f.gw_port() == gw_port);
        }
    }

    /// Registers a container: frames from `port` must come from `ip`; packets for `ip` go to
    /// `port`, towards `mac`.
    pub fn add_client(&mut self, port: PortId, gw_port: PortId, ip: Ipv4Addr, mac: Mac) {
        self.forget_port(port);
        self.clients.insert(ip, Client { port, gw_port, mac, flows: 0 });
        self.by_port.insert(port, ip);
    }

    /// A port went away: its flows end (host sockets close) and its publications go.
    pub fn forget_port(&mut self, port: PortId) {
        let Some(ip) = self.by_port.remove(&port) else { return };
        self.end_flows_where(|f| *f.key().src.ip() == ip);
        for slot in 0..self.listeners.len() {
            if self.listeners[slot].as_ref().is_some_and(|l| l.publish.owner == port) {
                self.listeners[slot] = None;
            }
        }
        self.udp_published.retain(|_, slot| self.listeners.get(*slot).is_some_and(Option::is_some));
        self.clients.remove(&ip);
    }

    /// Starts serving a published port. Returns its id (for [`Egress::unpublish`]).
    ///
    /// # Errors
    /// When epoll refuses the socket.
    pub fn publish(&mut self, reg: &Registry, p: Publish) -> io::Result<usize> {
        let slot = self.listeners.iter().position(Option::is_none).unwrap_or(self.listeners.len());
        let token = Token(LISTENER_BASE + slot);
        let container = p.container;
        let (local, tcp, udp) = match &p.socket {
            PublishSocket::Tcp(l) => {
                let local = l.local_addr()?;
                let l = l.try_clone()?;
                l.set_nonblocking(true)?;
                let mut l = TcpListener::from_std(l);
                reg.register(&mut l, token, Interest::READABLE)?;
                (local, Some(l), None)
            }
            PublishSocket::Udp(s) => {
                let local = s.local_addr()?;
                let s = s.try_clone()?;
                s.set_nonblocking(true)?;
                let mut s = UdpSocket::from_std(s);
                reg.register(&mut s, token, Interest::READABLE)?;
                (local, None, Some(s))
            }
        };
        let is_udp = udp.is_some();
        let l = Listener { publish: p, local, tcp, udp };
        if slot == self.listeners.len() {
            self.listeners.push(Some(l));
        } else {
            self.listeners[slot] = Some(l);
        }
        if is_udp {
            self.udp_published.insert(container, slot);
        }
        Ok(slot)
    }

    /// Stops serving a published port (the host socket closes).
    pub fn unpublish(&mut self, id: usize) {
        if let Some(l) = self.listeners.get_mut(id).and_then(Option::take) {
            if l.udp.is_some() {
                self.udp_published.remove(&l.publish.container);
            }
        }
    }

    /// Whether a publication of this daemon listens on `addr:port` (for UDP or TCP).
    fn own_port(&self, udp: bool, addr: Ipv4Addr, port: u16) -> bool {
        self.listeners.iter().flatten().any(|l| {
            let a = l.local;
            l.udp.is_some() == udp && a.port() == port && (a.ip() == std::net::IpAddr::V4(addr) || a.ip().is_unspecified())
        })
    }

    /// Takes the packets waiting for containers.
    pub fn take_out(&mut self, into: &mut Vec<Out>) {
        into.append(&mut self.out);
    }

    /// Gives a written packet's buffer back for reuse.
    pub fn recycle(&mut self, gw_port: PortId, buf: Vec<u8>) {
        if let Some(s) = self.stacks.get_mut(&gw_port) {
            if s.dev.pool.len() < 64 {
                s.dev.pool.push(buf);
            }
        }
    }

    /// Whether frames routed through this gateway go to egress at all.
    pub fn serves(&self, gw_port: PortId) -> bool {
        self.stacks.contains_key(&gw_port)
    }

    /// An IPv4 packet a container sent to its gateway's MAC that is not for the gateway itself
    /// (or is, for a port other than DNS).
    pub fn feed(&mut self, reg: &Registry, now: Duration, gw_port: PortId, ingress: PortId, ip: &[u8]) {
        self.now = now;
        let Ok(pkt) = Ipv4Packet::new_checked(ip) else {
            self.stats.malformed += 1;
            return;
        };
        let src = pkt.src_addr();
        if self.by_port.get(&ingress) != Some(&src) {
            self.stats.spoofed += 1;
            return;
        }
        if pkt.more_frags() || pkt.frag_offset() != 0 {
            self.stats.malformed += 1;
            return;
        }
        let Some(stack) = self.stacks.get(&gw_port) else { return };
        if !stack.cfg.egress {
            self.stats.denied += 1;
            return;
        }
        let len = usize::from(pkt.total_len()).min(ip.len());
        let ip = &ip[..len];
        match pkt.next_header() {
            IpProtocol::Tcp => self.feed_tcp(reg, gw_port, ip),
            IpProtocol::Udp => self.feed_udp(reg, now, gw_port, ip),
            IpProtocol::Icmp => self.feed_icmp(reg, now, gw_port, ip),
            _ => self.stats.denied += 1,
        }
    }

    /// Where a flow to `dst` really goes, if anywhere.
    fn destination(&self, gw_port: PortId, udp: bool, dst: SocketAddrV4) -> Option<SocketAddrV4> {
        self.route(gw_port, udp, dst).ok()
    }

    /// Where a flow to `dst` goes, or why it may not: the policy, shared by the datapath and
    /// [`Egress::explain`].
    fn route(&self, gw_port: PortId, udp: bool, dst: SocketAddrV4) -> Result<SocketAddrV4, Refused> {
        let cfg = &self.stacks.get(&gw_port).ok_or(Refused::Off)?.cfg;
        let ip = *dst.ip();
        // The gateway's address stands for the host's loopback.
        let host = if ip == cfg.gw.ip {
            Ipv4Addr::LOCALHOST
        } else {
            let special = ip.is_loopback()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_unspecified()
                || ip.octets()[0] == 0
                || ip.octets()[0] >= 240;
            if special {
                return Err(Refused::NotUnicast);
            }
            if self.stacks.values().any(|s| s.cfg.subnet.contains(&ip)) {
                return Err(Refused::DaemonNetwork);
            }
            if !self.host.is_local(ip) {
                return Ok(dst);
            }
            // The host's own addresses are the host too.
            ip
        };
        if !cfg.host_loopback.iter().any(|&(a, b)| (a..=b).contains(&dst.port())) {
            return Err(Refused::HostPortNotListed);
        }
        if self.own_port(udp, host, dst.port()) {
            return Err(Refused::DaemonListener);
        }
        Ok(SocketAddrV4::new(host, dst.port()))
    }

    /// What [`Egress::feed`] would do with the IPv4 packet `ip` from `ingress`, changing
    /// nothing (for `vswitchctl trace`): `(allowed, what happens)`.
    pub fn explain(&self, gw_port: PortId, ingress: PortId, ip: &[u8]) -> (bool, String) {
        let refused = |why: String| (false, why);
        let Ok(pkt) = Ipv4Packet::new_checked(ip) else { return refused("not a valid IPv4 packet (counted as malformed)".into()) };
        let src = pkt.src_addr();
        match self.by_port.get(&ingress) {
            Some(&own) if own == src => {}
            Some(&own) => return refused(format!("source {src} is not the container's address {own} (counted as spoofed)")),
            None => return refused(format!("the ingress port has no egress address (source {src} counted as spoofed)")),
        }
        if pkt.more_frags() || pkt.frag_offset() != 0 {
            return refused("an IP fragment (counted as malformed)".into());
        }
        let Some(stack) = self.stacks.get(&gw_port) else { return refused("egress is off".into()) };
        if !stack.cfg.egress {
            return refused("the network is internal: nothing leaves it (counted as denied)".into());
        }
        let (proto, udp, src_port, dst_port) = match pkt.next_header() {
            IpProtocol::Tcp => match TcpPacket::new_checked(pkt.payload()) {
                Ok(t) => (6, false, t.src_port(), t.dst_port()),
                Err(_) => return refused("a truncated TCP header (counted as malformed)".into()),
            },
            IpProtocol::Udp => match UdpPacket::new_checked(pkt.payload()) {
                Ok(u) => (17, true, u.src_port(), u.dst_port()),
                Err(_) => return refused("a truncated UDP header (counted as malformed)".into()),
            },
            IpProtocol::Icmp => match Icmpv4Packet::new_checked(pkt.payload()) {
                Ok(i) if i.msg_type() == Icmpv4Message::EchoRequest => (1, true, i.echo_ident(), 0),
                Ok(_) => return refused("ICMP other than echo request (counted as denied)".into()),
                Err(_) => return refused("a truncated ICMP header (counted as malformed)".into()),
            },
            other => return refused(format!("protocol {other} is not forwarded (counted as denied)")),
        };
        let key = Key { proto, src: SocketAddrV4::new(src, src_port), dst: SocketAddrV4::new(pkt.dst_addr(), dst_port) };
        let published = self.listeners.iter().flatten().find(|l| l.publish.container == key.src && l.udp.is_some() == udp);
        if let Some(l) = published.filter(|_| proto != 1) {
            return (
                true,
                format!(
                    "from the container side of published port {}/{}: goes back to the client",
                    l.local,
                    if udp { "udp" } else { "tcp" }
                ),
            );
        }
        if self.keys.contains_key(&key) {
            return (true, "part of an egress flow already open".into());
        }
        let host = match self.route(gw_port, udp, key.dst) {
            Ok(h) if proto == 1 && h.ip().is_loopback() => return refused("the host's loopback is not pinged (counted as denied)".into()),
            Ok(h) => h,
            Err(r) => return refused(format!("{} (counted as denied)", r.describe(key.dst, self.listener_for(udp, key.dst)))),
        };
        if self.flows_of(src) >= self.limits.max_flows {
            return refused(format!("the container holds {} flows already, its limit (counted as over_limit)", self.flows_of(src)));
        }
        let via = if *host.ip() == *key.dst.ip() { String::new() } else { format!(" (stands for {host})") };
        let what = match proto {
            6 => "a TCP connect from the daemon's own socket, then smoltcp at the gateway",
            17 => "a UDP socket of the daemon",
            _ => "an unprivileged ping socket of the daemon",
        };
        (true, format!("allowed to {}{via}: {what}", key.dst))
    }

    /// The publication listening where `dst` (seen from the host) points, if any.
    fn listener_for(&self, udp: bool, dst: SocketAddrV4) -> Option<String> {
        self.listeners
            .iter()
            .flatten()
            .find(|l| l.udp.is_some() == udp && l.local.port() == dst.port())
            .map(|l| format!("published port {}/{} → {}", l.local, if udp { "udp" } else { "tcp" }, l.publish.container))
    }

    /// Flows the container at `ip` holds now.
    fn flows_of(&self, ip: Ipv4Addr) -> usize {
        self.clients.get(&ip).map_or(0, |c| c.flows)
    }

    fn client_has_room(&mut self, src: Ipv4Addr) -> bool {
        match self.clients.get(&src) {
            Some(c) if c.flows < self.limits.max_flows => true,
            _ => {
                self.stats.over_limit += 1;
                false
            }
        }
    }

    fn feed_tcp(&mut self, reg: &Registry, gw_port: PortId, ip: &[u8]) {
        let pkt = Ipv4Packet::new_unchecked(ip);
        let Ok(tcp) = TcpPacket::new_checked(pkt.payload()) else {
            self.stats.malformed += 1;
            return;
        };
        let key = Key {
            proto: 6,
            src: SocketAddrV4::new(pkt.src_addr(), tcp.src_port()),
            dst: SocketAddrV4::new(pkt.dst_addr(), tcp.dst_port()),
        };
        let new_syn = tcp.syn() && !tcp.ack() && !tcp.rst();
        let vnet = self.stacks.get(&gw_port).is_some_and(|s| s.cfg.vnet);
        if let Some(&slot) = self.keys.get(&key) {
            let stale = new_syn && self.tcp_closed(slot);
            if !stale {
                if let Some(Some(Flow::Tcp(f))) = self.flows.get(slot) {
                    if f.syn.is_some() {
                        return; // a retransmitted SYN while the host connect is under way
                    }
                }
                self.push_rx(gw_port, ip, vnet && tcp.syn());
                return;
            }
            self.end_flow(slot, true);
        }
        if !new_syn {
            // No flow: smoltcp answers with a RST.
            self.push_rx(gw_port, ip, false);
            return;
        }
        let Some(host) = self.destination(gw_port, false, key.dst) else {
            self.stats.denied += 1;
            self.send_rst(gw_port, ip);
            return;
        };
        if !self.client_has_room(*key.src.ip()) {
            self.send_rst(gw_port, ip);
            return;
        }
        let stream = match self.host.connect_tcp(host) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%host, error = %e, "egress connect failed");
                self.stats.connect_failed += 1;
                self.send_rst(gw_port, ip);
                return;
            }
        };
        let mut syn = ip.to_vec();
        if vnet {
            raise_mss(&mut syn);
        }
        let flow = Flow::Tcp(TcpFlow {
            key,
            gw_port,
            host: stream,
            syn: Some(syn),
            handle: None,
            host_readable: false,
            host_eof: false,
            host_shut: false,
        });
        if self.insert_flow(reg, key, flow, Interest::READABLE | Interest::WRITABLE).is_some() {
            self.stats.tcp_opened += 1;
        }
    }

    fn tcp_closed(&self, slot: usize) -> bool {
        let Some(Some(Flow::Tcp(f))) = self.flows.get(slot) else { return false };
        let Some(h) = f.handle else { return false };
        let Some(stack) = self.stacks.get(&f.gw_port) else { return true };
        matches!(stack.sockets.get::<tcp::Socket>(h).state(), tcp::State::Closed | tcp::State::TimeWait)
    }

    fn push_rx(&mut self, gw_port: PortId, ip: &[u8], raise: bool) {
        let Some(stack) = self.stacks.get_mut(&gw_port) else { return };
        let mut b = take_buf(&mut stack.dev.pool);
        b.extend_from_slice(ip);
        if raise {
            raise_mss(&mut b);
        }
        stack.dev.rx.push_back(b);
        stack.dirty = true;
    }

    fn insert_flow(&mut self, reg: &Registry, key: Key, mut flow: Flow, interest: Interest) -> Option<usize> {
        let slot = self.free.pop().unwrap_or(self.flows.len());
        let token = Token(TOKEN_BASE + slot);
        let res = match &mut flow {
            Flow::Tcp(f) => reg.register(&mut f.host, token, interest),
            Flow::Udp(f) => reg.register(&mut f.sock, token, interest),
            Flow::Icmp(f) => reg.register(&mut SourceFd(&f.sock.as_raw_fd()), token, interest),
        };
        if let Err(e) = res {
            if !self.warned_watch {
                self.warned_watch = true;
                tracing::warn!(error = %e, "egress: cannot watch a host socket (logged once; such flows are refused)");
            }
            self.free.push(slot);
            return None;
        }
        if slot == self.flows.len() {
            self.flows.push(Some(flow));
        } else {
            self.flows[slot] = Some(flow);
        }
        self.keys.insert(key, slot);
        if let Some(c) = self.clients.get_mut(key.src.ip()) {
            c.flows += 1;
        }
        Some(slot)
    }

    /// Ends every flow `doomed` picks (see [`Egress::end_flow`]).
    fn end_flows_where(&mut self, doomed: impl Fn(&Flow) -> bool) {
        let slots: Vec<usize> = (0..self.flows.len()).filter(|&i| self.flows[i].as_ref().is_some_and(&doomed)).collect();
        for slot in slots {
            self.end_flow(slot, true);
        }
    }

    /// Forgets a flow: its host socket closes (which also takes it out of epoll) and its
    /// smoltcp socket goes; with `abort`, that socket first sends the container a RST (a flow
    /// whose connection finished has nothing left to say).
    fn end_flow(&mut self, slot: usize, abort: bool) {
        let Some(flow) = self.flows.get_mut(slot).and_then(Option::take) else { return };
        let (key, gw_port) = (flow.key(), flow.gw_port());
        if let Flow::Tcp(TcpFlow { handle: Some(h), .. }) = flow {
            if let Some(stack) = self.stacks.get_mut(&gw_port) {
                if abort {
                    stack.sockets.get_mut::<tcp::Socket>(h).abort();
                    let _ = stack.iface.poll(instant(self.now), &mut stack.dev, &mut stack.sockets);
                    stack.drain_tx_into(&self.clients, &mut self.out, &mut self.stats, gw_port);
                }
                stack.sockets.remove(h);
                stack.tcp.retain(|&t| t != slot);
            }
        }
        self.keys.remove(&key);
        if let Some(c) = self.clients.get_mut(key.src.ip()) {
            c.flows = c.flows.saturating_sub(1);
        }
        self.free.push(slot);
    }

    fn send_rst(&mut self, gw_port: PortId, ip: &[u8]) {
        let pkt = Ipv4Packet::new_unchecked(ip);
        let Ok(tcp) = TcpPacket::new_checked(pkt.payload()) else { return };
        let seg_len = tcp.payload().len() + usize::from(tcp.syn()) + usize::from(tcp.fin());
        let repr = TcpRepr {
            src_port: tcp.dst_port(),
            dst_port: tcp.src_port(),
            control: TcpControl::Rst,
            seq_number: if tcp.ack() { tcp.ack_number() } else { TcpSeqNumber(0) },
            ack_number: Some(tcp.seq_number() + seg_len),
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let (src, dst) = (pkt.dst_addr(), pkt.src_addr());
        self.emit_l4(gw_port, src, dst, IpProtocol::Tcp, repr.buffer_len(), |buf| {
            let mut t = TcpPacket::new_unchecked(buf);
            repr.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &ChecksumCapabilities::default());
        });
    }

    /// Builds an IPv4 packet from `src` to the client `dst` whose payload `fill` writes, and
    /// queues it.
    fn emit_l4(
        &mut self,
        gw_port: PortId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let Some(client) = self.clients.get(&dst).copied() else { return };
        let Some(stack) = self.stacks.get_mut(&gw_port) else { return };
        let total = 20 + payload_len;
        if total > stack.cfg.mtu as usize {
            self.stats.malformed += 1;
            return;
        }
        let mut buf = take_buf(&mut stack.dev.pool);
        buf.resize(HEADROOM + total, 0);
        let repr = Ipv4Repr { src_addr: src, dst_addr: dst, next_header: proto, payload_len, hop_limit: 64 };
        let mut p = Ipv4Packet::new_unchecked(&mut buf[HEADROOM..]);
        repr.emit(&mut p, &ChecksumCapabilities::default());
        fill(p.payload_mut());
        self.out.push(Out {
            to: client.port,
            gw_port,
            dst_mac: client.mac,
            src_mac: stack.cfg.gw.mac,
            gso_size: None,
            csum_partial: false,
            buf,
        });
    }

    fn feed_udp(&mut self, reg: &Registry, now: Duration, gw_port: PortId, ip: &[u8]) {
        let pkt = Ipv4Packet::new_unchecked(ip);
        let Ok(udp) = UdpPacket::new_checked(pkt.payload()) else {
            self.stats.malformed += 1;
            return;
        };
        let key = Key {
            proto: 17,
            src: SocketAddrV4::new(pkt.src_addr(), udp.src_port()),
            dst: SocketAddrV4::new(pkt.dst_addr(), udp.dst_port()),
        };
        let payload = udp.payload();
        // A reply from a published UDP port goes out of the published socket.
        if let Some(&slot) = self.udp_published.get(&key.src) {
            if let Some(Some(Listener { udp: Some(s), .. })) = self.listeners.get(slot) {
                let _ = s.send_to(payload, SocketAddr::V4(key.dst));
                return;
            }
        }
        let slot = match self.keys.get(&key) {
            Some(&slot) => slot,
            None => {
                let Some(host) = self.destination(gw_port, true, key.dst) else {
                    self.stats.denied += 1;
                    return;
                };
                if !self.client_has_room(*key.src.ip()) {
                    return;
                }
                let sock = match self.host.connect_udp(host) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%host, error = %e, "egress UDP socket failed");
                        self.stats.connect_failed += 1;
                        return;
                    }
                };
                let flow = Flow::Udp(UdpFlow { key, gw_port, sock, last: now });
                let Some(slot) = self.insert_flow(reg, key, flow, Interest::READABLE) else { return };
                self.stats.udp_opened += 1;
                slot
            }
        };
        if let Some(Some(Flow::Udp(f))) = self.flows.get_mut(slot) {
            f.last = now;
            let _ = f.sock.send(payload);
        }
    }

    fn feed_icmp(&mut self, reg: &Registry, now: Duration, gw_port: PortId, ip: &[u8]) {
        let pkt = Ipv4Packet::new_unchecked(ip);
        let Ok(icmp) = Icmpv4Packet::new_checked(pkt.payload()) else {
            self.stats.malformed += 1;
            return;
        };
        if icmp.msg_type() != Icmpv4Message::EchoRequest {
            self.stats.denied += 1;
            return;
        }
        let ident = icmp.echo_ident();
        let key = Key { proto: 1, src: SocketAddrV4::new(pkt.src_addr(), ident), dst: SocketAddrV4::new(pkt.dst_addr(), 0) };
        let slot = match self.keys.get(&key) {
            Some(&slot) => slot,
            None => {
                // The gateway answers its own address; the host's loopback is not pinged.
                let Some(host) = self.destination(gw_port, true, key.dst).filter(|h| !h.ip().is_loopback()) else {
                    self.stats.denied += 1;
                    return;
                };
                if !self.client_has_room(*key.src.ip()) {
                    return;
                }
                let sock = match self.host.connect_ping(*host.ip()) {
                    Ok(s) => s,
                    Err(e) => {
                        self.stats.icmp_unavailable += 1;
                        if !self.warned_icmp {
                            self.warned_icmp = true;
                            tracing::warn!(error = %e, "egress: no ping socket (is the daemon's group in net.ipv4.ping_group_range?); ICMP echo is not forwarded");
                        }
                        return;
                    }
                };
                let flow = Flow::Icmp(IcmpFlow { key, gw_port, sock, ident, last: now });
                let Some(slot) = self.insert_flow(reg, key, flow, Interest::READABLE) else { return };
                self.stats.icmp_opened += 1;
                slot
            }
        };
        if let Some(Some(Flow::Icmp(f))) = self.flows.get_mut(slot) {
            f.last = now;
            // The kernel puts its own identifier in and computes the checksum.
            let _ = f.sock.send(icmp.into_inner());
        }
    }

    /// A readiness event for an egress token.
    pub fn event(&mut self, reg: &Registry, now: Duration, token: Token, readable: bool) {
        self.now = now;
        if token.0 >= LISTENER_BASE {
            self.listener_event(reg, token.0 - LISTENER_BASE);
            return;
        }
        let slot = token.0 - TOKEN_BASE;
        match self.flows.get_mut(slot) {
            Some(Some(Flow::Tcp(f))) => {
                if f.syn.is_some() {
                    self.tcp_connected(slot);
                    return;
                }
                // Readable: more from the host; writable: room for what the container sent.
                // Either way the stack's next poll pumps the flow.
                if readable {
                    f.host_readable = true;
                }
                let gw = f.gw_port;
                if let Some(s) = self.stacks.get_mut(&gw) {
                    s.dirty = true;
                }
            }
            Some(Some(Flow::Udp(_))) => self.udp_readable(slot, now),
            Some(Some(Flow::Icmp(_))) => self.icmp_readable(slot, now),
            _ => {}
        }
    }

    /// The host connect of a TCP flow finished: on success the held SYN goes to smoltcp.
    fn tcp_connected(&mut self, slot: usize) {
        let Some(Some(Flow::Tcp(f))) = self.flows.get_mut(slot) else { return };
        match self.host.tcp_established(&f.host) {
            Ok(true) => {}
            Ok(false) => return, // not yet
            Err(_) => {
                self.fail_connect(slot);
                return;
            }
        }
        let _ = f.host.set_nodelay(true);
        let (gw_port, key) = (f.gw_port, f.key);
        let Some(syn) = f.syn.take() else { return };
        // This flow is counted already.
        let mut sock = flow_socket(self.flows_of(*key.src.ip()).saturating_sub(1));
        let Some(stack) = self.stacks.get_mut(&gw_port) else { return };
        // Nothing else may be queued while the new socket listens: it would take any SYN.
        let _ = stack.iface.poll(instant(self.now), &mut stack.dev, &mut stack.sockets);
        let _ = sock.listen(IpListenEndpoint { addr: Some(IpAddress::Ipv4(*key.dst.ip())), port: key.dst.port() });
        let h = stack.sockets.add(sock);
        stack.tcp.push(slot);
        stack.dev.rx.push_back(syn);
        let _ = stack.iface.poll(instant(self.now), &mut stack.dev, &mut stack.sockets);
        stack.dirty = true;
        if let Some(Some(Flow::Tcp(f))) = self.flows.get_mut(slot) {
            f.handle = Some(h);
            f.host_readable = true;
        }
        if stack.sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen {
            // The SYN was not taken (malformed options, say): give up on the flow.
            self.end_flow(slot, true);
        }
    }

    fn fail_connect(&mut self, slot: usize) {
        self.stats.connect_failed += 1;
        let Some(Some(Flow::Tcp(f))) = self.flows.get_mut(slot) else { return };
        let (gw, syn) = (f.gw_port, f.syn.take());
        if let Some(syn) = syn {
            self.send_rst(gw, &syn);
        }
        self.end_flow(slot, true);
    }

    fn udp_readable(&mut self, slot: usize, now: Duration) {
        let mut buf = [0u8; MAX_PACKET];
        loop {
            let Some(Some(Flow::Udp(f))) = self.flows.get_mut(slot) else { return };
            let n = match f.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            f.last = now;
            let (gw, key) = (f.gw_port, f.key);
            self.emit_udp(gw, key.dst, key.src, &buf[..n]);
        }
    }

    fn emit_udp(&mut self, gw_port: PortId, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        let repr = UdpRepr { src_port: from.port(), dst_port: to.port() };
        let (src, dst) = (*from.ip(), *to.ip());
        self.emit_l4(gw_port, src, dst, IpProtocol::Udp, 8 + payload.len(), |b| {
            let mut u = UdpPacket::new_unchecked(b);
            repr.emit(
                &mut u,
                &IpAddress::Ipv4(src),
                &IpAddress::Ipv4(dst),
                payload.len(),
                |p| p.copy_from_slice(payload),
                &ChecksumCapabilities::default(),
            );
        });
    }

    fn icmp_readable(&mut self, slot: usize, now: Duration) {
        let mut buf = [0u8; MAX_PACKET];
        loop {
            let Some(Some(Flow::Icmp(f))) = self.flows.get_mut(slot) else { return };
            let n = match (&f.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            f.last = now;
            let (gw, key, ident) = (f.gw_port, f.key, f.ident);
            let data = &buf[..n];
            let Ok(reply) = Icmpv4Packet::new_checked(data) else { continue };
            if reply.msg_type() != Icmpv4Message::EchoReply {
                continue;
            }
            let (src, dst) = (*key.dst.ip(), *key.src.ip());
            self.emit_l4(gw, src, dst, IpProtocol::Icmp, data.len(), |b| {
                b.copy_from_slice(data);
                let mut p = Icmpv4Packet::new_unchecked(b);
                p.set_echo_ident(ident);
                p.fill_checksum();
            });
        }
    }

    fn listener_event(&mut self, reg: &Registry, slot: usize) {
        loop {
            let Some(Some(l)) = self.listeners.get_mut(slot) else { return };
            let (gw_port, container) = (l.publish.gw_port, l.publish.container);
            let gw = self.stacks.get(&gw_port).map(|s| s.cfg.gw.ip);
            if let Some(t) = &l.tcp {
                match t.accept() {
                    Ok((stream, peer)) => match shown_client(peer, gw) {
                        Some(peer) => self.accept_published(reg, gw_port, container, stream, peer),
                        None => drop(stream),
                    },
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            } else if let Some(u) = &l.udp {
                let mut buf = [0u8; MAX_PACKET];
                match u.recv_from(&mut buf) {
                    Ok((n, peer)) => {
                        if let Some(peer) = shown_client(peer, gw) {
                            self.stats.published_accepted += 1;
                            self.emit_udp(gw_port, peer, container, &buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            } else {
                return;
            }
        }
    }

    /// A connection to a published port: smoltcp connects into the container from the
    /// client's own address and port.
    fn accept_published(&mut self, reg: &Registry, gw_port: PortId, container: SocketAddrV4, stream: TcpStream, peer: SocketAddrV4) {
        let key = Key { proto: 6, src: container, dst: peer };
        if self.keys.contains_key(&key) || !self.client_has_room(*container.ip()) {
            return; // dropping the stream closes it
        }
        let mut sock = flow_socket(self.flows_of(*container.ip()));
        let Some(stack) = self.stacks.get_mut(&gw_port) else { return };
        let remote = (IpAddress::Ipv4(*container.ip()), container.port());
        let local = IpListenEndpoint { addr: Some(IpAddress::Ipv4(*peer.ip())), port: peer.port() };
        if sock.connect(stack.iface.context(), remote, local).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let h = stack.sockets.add(sock);
        let slot = self.free.last().copied().unwrap_or(self.flows.len());
        stack.tcp.push(slot);
        stack.dirty = true;
        let flow = Flow::Tcp(TcpFlow {
            key,
            gw_port,
            host: stream,
            syn: None,
            handle: Some(h),
            host_readable: true,
            host_eof: false,
            host_shut: false,
        });
        if self.insert_flow(reg, key, flow, Interest::READABLE | Interest::WRITABLE) != Some(slot) {
            if let Some(stack) = self.stacks.get_mut(&gw_port) {
                stack.sockets.remove(h);
                stack.tcp.retain(|&t| t != slot);
            }
            return;
        }
        self.stats.published_accepted += 1;
    }

    /// Runs every stack that has work: feeds it, moves bytes between its sockets and the host
    /// sockets, and queues what it sends.
    pub fn poll(&mut self, now: Duration) {
        self.now = now;
        let ports: Vec<PortId> = self.stacks.iter().filter(|(_, s)| s.dirty).map(|(p, _)| *p).collect();
        for gw in ports {
            self.poll_stack(gw, now);
        }
    }

    fn poll_stack(&mut self, gw_port: PortId, now: Duration) {
        let Some(stack) = self.stacks.get_mut(&gw_port) else { return };
        stack.dirty = false;
        let _ = stack.iface.poll(instant(now), &mut stack.dev, &mut stack.sockets);
        let mut done = Vec::new();
        for &slot in &stack.tcp {
            let Some(Some(Flow::Tcp(f))) = self.flows.get_mut(slot) else { continue };
            let Some(h) = f.handle else { continue };
            if pump(f, stack.sockets.get_mut::<tcp::Socket>(h)) {
                done.push(slot);
            }
        }
        let _ = stack.iface.poll(instant(now), &mut stack.dev, &mut stack.sockets);
        stack.drain_tx_into(&self.clients, &mut self.out, &mut self.stats, gw_port);
        for slot in done {
            self.end_flow(slot, false);
        }
    }

    /// How long until some stack needs to run again (retransmissions, timers).
    pub fn poll_delay(&mut self, now: Duration) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        for s in self.stacks.values_mut() {
            if s.sockets.iter().next().is_none() {
                continue;
            }
            if let Some(d) = s.iface.poll_delay(instant(now), &s.sockets) {
                let d = Duration::from_micros(d.total_micros());
                if d.is_zero() {
                    s.dirty = true;
                }
                next = Some(next.map_or(d, |n: Duration| n.min(d)));
            }
        }
        next
    }

    /// Closes idle UDP and ICMP flows; called about once a second.
    pub fn sweep(&mut self, now: Duration) {
        self.now = now;
        let idle = self.limits.idle;
        self.end_flows_where(|f| f.last_used().is_some_and(|t| now.saturating_sub(t) > idle));
    }
}

/// The address a published port's client has inside the container: its own, except where the
/// container could not take it as a source: the host's loopback and IPv6 clients appear as the
/// gateway (which stands for the host).
fn shown_client(peer: SocketAddr, gw: Option<Ipv4Addr>) -> Option<SocketAddrV4> {
    match peer {
        SocketAddr::V4(p) if !p.ip().is_loopback() && !p.ip().is_unspecified() => Some(p),
        other => gw.map(|gw| SocketAddrV4::new(gw, other.port())),
    }
}

/// Moves bytes both ways for one TCP flow. Returns true when the flow is finished.
fn pump(f: &mut TcpFlow, sock: &mut tcp::Socket<'_>) -> bool {
    // Container → host.
    let mut failed = false;
    while sock.can_recv() {
        let r = sock.recv(|buf| match f.host.write(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                failed = true;
                break;
            }
        }
    }
    // The container finished sending and everything reached the host.
    if !f.host_shut
        && !sock.may_recv()
        && sock.recv_queue() == 0
        && sock.state() != tcp::State::SynReceived
        && sock.state() != tcp::State::SynSent
        && sock.state() != tcp::State::Listen
    {
        let _ = f.host.shutdown(std::net::Shutdown::Write);
        f.host_shut = true;
    }
    // Host → container.
    while f.host_readable && !f.host_eof && sock.may_send() && sock.send_queue() < sock.send_capacity() {
        let r = sock.send(|buf| match f.host.read(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => {
                f.host_eof = true;
                sock.close();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => f.host_readable = false,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                failed = true;
                break;
            }
            Err(_) => break,
        }
    }
    if failed {
        sock.abort();
        return true;
    }
    match sock.state() {
        tcp::State::Closed | tcp::State::TimeWait => {
            if !f.host_shut {
                let _ = f.host.shutdown(std::net::Shutdown::Both);
            }
            true
        }
        _ => false,
    }
}

impl Stack {
    fn new(cfg: NetConfig, now: Duration, seed: u64) -> Stack {
        let mut dev = Dev { partial: cfg.vnet, ..Dev::default() };
        let mut c = Config::new(HardwareAddress::Ip);
        c.random_seed = seed;
        let mut iface = Interface::new(c, &mut dev, instant(now));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.gw.ip), cfg.subnet.prefix_len()));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.gw.ip);
        iface.set_any_ip(true);
        Stack { cfg, iface, sockets: SocketSet::new(Vec::new()), dev, dirty: false, tcp: Vec::new() }
    }

    /// Hands smoltcp's outgoing packets to the datapath, addressed to their containers.
    fn drain_tx_into(&mut self, clients: &HashMap<Ipv4Addr, Client>, out: &mut Vec<Out>, stats: &mut Stats, gw_port: PortId) {
        let mtu = self.cfg.mtu as usize;
        for buf in self.dev.tx.drain(..) {
            let ip = &buf[HEADROOM..];
            let Ok(p) = Ipv4Packet::new_checked(ip) else { continue };
            let Some(c) = clients.get(&p.dst_addr()).filter(|c| c.gw_port == gw_port) else { continue };
            let big = ip.len() > mtu;
            if big && !self.cfg.vnet {
                stats.malformed += 1;
                continue;
            }
            let tcp = p.next_header() == IpProtocol::Tcp;
            out.push(Out {
                to: c.port,
                gw_port,
                dst_mac: c.mac,
                src_mac: self.cfg.gw.mac,
                gso_size: (big && tcp).then(|| (mtu - 40) as u16),
                csum_partial: self.dev.partial && tcp,
                buf,
            });
        }
    }
}

/// A smoltcp socket for one TCP flow of a container that holds `flows_before` others: its
/// first flows get buffers deep enough for 64 KiB segments in flight, later ones small ones
/// (memory stays bounded under a connection flood).
fn flow_socket(flows_before: usize) -> tcp::Socket<'static> {
    let size = if flows_before < BIG_FLOWS { BIG_BUF } else { SMALL_BUF };
    let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; size]), tcp::SocketBuffer::new(vec![0; size]));
    sock.set_ack_delay(None);
    sock.set_nagle_enabled(false);
    // A container that vanished (or stopped acknowledging) ends the flow in time.
    sock.set_timeout(Some(smoltcp::time::Duration::from_secs(STALL_SECS)));
    sock
}

/// An empty buffer from `pool` (or a new one).
fn take_buf(pool: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let mut b = pool.pop().unwrap_or_default();
    b.clear();
    b
}

/// Raises the MSS option of a SYN (the container's TAP takes TSO super-frames, so smoltcp may
/// send segments far larger than the container's MTU). The checksum is not fixed up: smoltcp
/// does not verify it on these TAPs (their senders leave checksums to offload).
fn raise_mss(ip: &mut [u8]) {
    let Some(&b0) = ip.first() else { return };
    let ihl = usize::from(b0 & 0x0f) * 4;
    let Some(tcp) = ip.get_mut(ihl..) else { return };
    if tcp.len() < 20 {
        return;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    let Some(opts) = tcp.get_mut(20..doff) else { return };
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return;
                }
                if kind == 2 && len == 4 {
                    opts[i + 2..i + 4].copy_from_slice(&SUPER_MSS.to_be_bytes());
                    return;
                }
                i += len;
            }
        }
    }
}

fn instant(now: Duration) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.as_micros() as i64)
}

impl Device for Dev {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((Rx { packet, pool: Some(&mut self.pool) }, Tx { tx: &mut self.tx, pool: None }))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx { tx: &mut self.tx, pool: Some(&mut self.pool) })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MAX_PACKET;
        // Containers on vnet TAPs leave checksums to offload: verify nothing on receive. On
        // send, vnet TAPs take a partial checksum (the datapath sets NEEDS_CSUM); plain TAPs
        // need the real one.
        let mut csum = ChecksumCapabilities::default();
        csum.ipv4 = Checksum::Tx;
        csum.tcp = if self.partial { Checksum::None } else { Checksum::Tx };
        caps.checksum = csum;
        caps
    }
}

#[derive(Debug)]
pub struct Rx<'a> {
    packet: Vec<u8>,
    pool: Option<&'a mut Vec<Vec<u8>>>,
}

#[derive(Debug)]
pub struct Tx<'a> {
    tx: &'a mut Vec<Vec<u8>>,
    pool: Option<&'a mut Vec<Vec<u8>>>,
}

impl smoltcp::phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.packet);
        if let Some(pool) = self.pool.filter(|p| p.len() < 64) {
            pool.push(self.packet);
        }
        r
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.pool.map(take_buf).unwrap_or_default();
        buf.resize(HEADROOM + len, 0);
        let r = f(&mut buf[HEADROOM..]);
        self.tx.push(buf);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mss_is_raised_in_place() {
        // IPv4 (20) + TCP with options: MSS 1460, NOP, NOP, SACK permitted.
        let mut p = vec![0u8; 20 + 28];
        p[0] = 0x45;
        p[20 + 12] = 7 << 4;
        p[40..48].copy_from_slice(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]);
        raise_mss(&mut p);
        assert_eq!(u16::from_be_bytes([p[42], p[43]]), SUPER_MSS);
        // Truncated or looping options never panic.
        for cut in 0..p.len() {
            let mut q = p[..cut].to_vec();
            if q.len() > 32 {
                q[32] = 0xf0;
            }
            raise_mss(&mut q);
        }
        let mut bad = p.clone();
        bad[41] = 0; // option length 0
        raise_mss(&mut bad);
    }

    fn egress_with_client() -> (mio::Poll, Egress) {
        let poll = mio::Poll::new().unwrap();
        let mut e = Egress::new(Limits::default(), 7);
        let gw = Gateway { ip: Ipv4Addr::new(10, 89, 0, 1), mac: Mac([2, 0x56, 0, 0, 0, 1]), ip6: None };
        let cfg =
            NetConfig { gw, subnet: "10.89.0.0/24".parse().unwrap(), mtu: 1500, egress: true, host_loopback: vec![(9, 9)], vnet: true };
        e.set_network(PortId(0), cfg, Duration::ZERO);
        e.add_client(PortId(1), PortId(0), Ipv4Addr::new(10, 89, 0, 2), Mac([2, 0x42, 10, 89, 0, 2]));
        (poll, e)
    }

    proptest::proptest! {
        /// Any bytes from a container are a counted drop or a flow, never a panic; a header
        /// that claims to be from the container's address gets past the spoofing check.
        #[test]
        fn arbitrary_packets_never_panic(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), proto in 0u8..3) {
            let (poll, mut e) = egress_with_client();
            if bytes.len() >= 20 {
                bytes[0] = 0x45;
                bytes[9] = [1, 6, 17][usize::from(proto)];
                bytes[12..16].copy_from_slice(&[10, 89, 0, 2]);
                // Mostly to the loopback-mapped gateway address: no packet leaves the test.
                bytes[16..20].copy_from_slice(&[10, 89, 0, 1]);
                let len = bytes.len() as u16;
                bytes[2..4].copy_from_slice(&len.to_be_bytes());
                if bytes.len() >= 24 {
                    // The discard port: whatever gets through goes nowhere that listens.
                    bytes[22..24].copy_from_slice(&9u16.to_be_bytes());
                }
            }
            e.feed(poll.registry(), Duration::from_millis(1), PortId(0), PortId(1), &bytes);
            e.poll(Duration::from_millis(2));
            let mut out = Vec::new();
            e.take_out(&mut out);
            e.sweep(Duration::from_secs(120));
        }
    }

    #[test]
    fn spoofed_and_foreign_sources_are_counted() {
        let (poll, mut e) = egress_with_client();
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[9] = 17;
        p[24..26].copy_from_slice(&8u16.to_be_bytes()); // UDP length: header only
        p[12..16].copy_from_slice(&[10, 89, 0, 9]); // not the port's address
        p[16..20].copy_from_slice(&[192, 0, 2, 1]);
        e.feed(poll.registry(), Duration::ZERO, PortId(0), PortId(1), &p);
        assert_eq!(e.stats().spoofed, 1);
        p[12..16].copy_from_slice(&[10, 89, 0, 2]);
        p[16..20].copy_from_slice(&[10, 89, 0, 7]); // its own network: never through egress
        e.feed(poll.registry(), Duration::ZERO, PortId(0), PortId(1), &p);
        assert_eq!(e.stats().denied, 1);
        assert_eq!(e.stats().udp_opened, 0);
    }

    #[test]
    fn the_daemons_own_listeners_are_never_a_destination() {
        let (poll, mut e) = egress_with_client();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let gw = Ipv4Addr::new(10, 89, 0, 1);
        let mut cfg = e.stacks[&PortId(0)].cfg.clone();
        cfg.host_loopback = vec![(1, 65535)];
        e.set_network(PortId(0), cfg, Duration::ZERO);
        let dst = SocketAddrV4::new(gw, port);
        assert_eq!(e.destination(PortId(0), false, dst), Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)));
        let p = Publish {
            owner: PortId(1),
            gw_port: PortId(0),
            container: SocketAddrV4::new(Ipv4Addr::new(10, 89, 0, 2), 80),
            socket: PublishSocket::Tcp(l),
        };
        let id = e.publish(poll.registry(), p).unwrap();
        assert_eq!(e.destination(PortId(0), false, dst), None, "a published listener of the daemon");
        assert!(e.destination(PortId(0), true, dst).is_some(), "the same port over UDP is not ours");
        e.unpublish(id);
        assert!(e.destination(PortId(0), false, dst).is_some());
    }
}
