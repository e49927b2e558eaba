//! DNS over TCP on a network's gateway, served by a userspace TCP stack (smoltcp).
//!
//! One [`TcpDns`] per network, made on the first TCP segment to the gateway's port 53. It owns a
//! smoltcp interface of medium IP with the gateway's address and a small pool of listening
//! sockets. The datapath feeds it the IPv4 packets of frames for the gateway's port 53 and
//! takes back IPv4 packets to send, which it wraps in Ethernet towards the client's MAC (learned
//! from the client's own frames, so smoltcp needs no ARP). Messages are length-prefixed
//! (RFC 7766); each is answered by the same responder as UDP, with the TCP size limit.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet};

use crate::gateway::{Gateway, DNS_PORT};
use crate::types::{Mac, PortId};

/// Connections served at once per network; more wait in the client's SYN retries.
const SOCKETS: usize = 16;
const RX_BUF: usize = 4096;
const TX_BUF: usize = 16384;
/// An idle connection is closed after this long (RFC 7766 suggests seconds).
const IDLE: Duration = Duration::from_secs(10);

/// What a complete query needs from the caller.
#[derive(Debug)]
pub enum Query<'a> {
    /// Answer `bytes` for the client on `port`; the answer goes back with [`TcpDns::reply`].
    Ask { conn: ConnId, port: PortId, bytes: &'a [u8] },
}

/// A connection, stable across socket reuse (the generation changes when a socket is reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    slot: usize,
    generation: u64,
}

#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    generation: u64,
    buf: Vec<u8>,
    port: Option<PortId>,
    pending: bool,
}

/// The packets moving between the datapath and smoltcp.
#[derive(Debug, Default)]
struct Queue {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

/// The TCP side of one gateway's DNS.
pub struct TcpDns {
    gw: Gateway,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Queue,
    conns: Vec<Conn>,
    clients: HashMap<Ipv4Addr, (Mac, PortId)>,
}

impl std::fmt::Debug for TcpDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpDns").field("gw", &self.gw).field("conns", &self.conns.len()).finish()
    }
}

impl TcpDns {
    pub fn new(gw: Gateway, prefix_len: u8, mtu: u32, now: Duration, seed: u64) -> TcpDns {
        let mut dev = Queue { mtu: mtu as usize, ..Default::default() };
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, instant(now));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(gw.ip), prefix_len));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let conns = (0..SOCKETS)
            .map(|_| {
                let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; RX_BUF]), tcp::SocketBuffer::new(vec![0; TX_BUF]));
                s.set_timeout(Some(smoltcp::time::Duration::from_millis(IDLE.as_millis() as u64)));
                let _ = s.listen(DNS_PORT);
                Conn { handle: sockets.add(s), generation: 0, buf: Vec::new(), port: None, pending: false }
            })
            .collect();
        TcpDns { gw, iface, sockets, dev, conns, clients: HashMap::new() }
    }

    /// Takes one IPv4 packet for the gateway's DNS port from `port` (client MAC `mac`).
    pub fn feed(&mut self, ip_packet: &[u8], mac: Mac, port: PortId) {
        if let Ok(p) = Ipv4Packet::new_checked(ip_packet) {
            self.clients.insert(p.src_addr(), (mac, port));
            self.dev.rx.push_back(ip_packet.to_vec());
        }
    }

    /// Runs the stack, then hands every complete query to `ask`, which answers with the bytes
    /// to send back (`Some`) or takes it away to answer later through [`TcpDns::reply`]
    /// (`None`). Returns the frames to send: (egress-side client port, Ethernet frame).
    pub fn poll(&mut self, now: Duration, mut ask: impl FnMut(Query<'_>) -> Option<Vec<u8>>) -> Vec<(PortId, Vec<u8>)> {
        self.iface.poll(instant(now), &mut self.dev, &mut self.sockets);
        for slot in 0..self.conns.len() {
            let conn = &mut self.conns[slot];
            let sock = self.sockets.get_mut::<tcp::Socket>(conn.handle);
            if !sock.is_open() {
                conn.generation += 1;
                conn.buf.clear();
                conn.pending = false;
                conn.port = None;
                let _ = sock.listen(DNS_PORT);
                continue;
            }
            if conn.port.is_none() {
                if let Some(ep) = sock.remote_endpoint() {
                    if let IpAddress::Ipv4(ip) = ep.addr {
                        conn.port = self.clients.get(&ip).map(|c| c.1);
                    }
                }
            }
            while sock.can_recv() && conn.buf.len() < 2 + 65535 {
                let mut chunk = [0u8; 1024];
                match sock.recv_slice(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                }
            }
            while !conn.pending && conn.buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([conn.buf[0], conn.buf[1]]));
                if conn.buf.len() < 2 + len {
                    break;
                }
                let Some(port) = conn.port else {
                    sock.abort();
                    break;
                };
                let id = ConnId { slot, generation: conn.generation };
                let answer = ask(Query::Ask { conn: id, port, bytes: &conn.buf[2..2 + len] });
                conn.buf.drain(..2 + len);
                match answer {
                    Some(a) => send_framed(sock, &a),
                    None => conn.pending = true,
                }
            }
            // The client finished sending and everything it asked was answered.
            if sock.state() == tcp::State::CloseWait && !conn.pending && conn.buf.len() < 2 && sock.send_queue() == 0 {
                sock.close();
            }
        }
        self.iface.poll(instant(now), &mut self.dev, &mut self.sockets);
        self.take_frames()
    }

    /// Answers a query that [`TcpDns::poll`]'s `ask` took away, if its connection still exists.
    pub fn reply(&mut self, conn: ConnId, answer: &[u8]) {
        let Some(c) = self.conns.get_mut(conn.slot) else { return };
        if c.generation != conn.generation {
            return;
        }
        c.pending = false;
        send_framed(self.sockets.get_mut::<tcp::Socket>(c.handle), answer);
    }

    /// When the stack next needs to run (retransmissions, timeouts), if ever.
    pub fn poll_delay(&mut self, now: Duration) -> Option<Duration> {
        self.iface.poll_delay(instant(now), &self.sockets).map(|d| Duration::from_micros(d.total_micros()))
    }

    /// Wraps smoltcp's outgoing IPv4 packets in Ethernet towards their client.
    fn take_frames(&mut self) -> Vec<(PortId, Vec<u8>)> {
        let mut out = Vec::new();
        for ip in self.dev.tx.drain(..) {
            let Ok(p) = Ipv4Packet::new_checked(&ip[..]) else { continue };
            let Some(&(mac, port)) = self.clients.get(&p.dst_addr()) else { continue };
            let mut frame = Vec::with_capacity(14 + ip.len());
            frame.extend_from_slice(&mac.0);
            frame.extend_from_slice(&self.gw.mac.0);
            frame.extend_from_slice(&[0x08, 0x00]);
            frame.extend_from_slice(&ip);
            out.push((port, frame));
        }
        out
    }
}

/// Sends one length-prefixed message; a message that does not fit the send buffer ends the
/// connection (the client sees it close and retries or gives up).
fn send_framed(sock: &mut tcp::Socket<'_>, msg: &[u8]) {
    let Ok(len) = u16::try_from(msg.len()) else {
        sock.abort();
        return;
    };
    if sock.send_capacity() - sock.send_queue() < 2 + msg.len() {
        sock.abort();
        return;
    }
    let _ = sock.send_slice(&len.to_be_bytes());
    let _ = sock.send_slice(msg);
}

fn instant(now: Duration) -> Instant {
    Instant::from_micros(now.as_micros() as i64)
}

impl Device for Queue {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((Rx(packet), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Segments come from local TAPs whose senders may leave the checksum to offload
        // (virtio NEEDS_CSUM): compute ours, do not verify theirs.
        let mut csum = ChecksumCapabilities::default();
        csum.tcp = Checksum::Tx;
        caps.checksum = csum;
        caps
    }
}

/// One received packet.
#[derive(Debug)]
pub struct Rx(Vec<u8>);

/// Where smoltcp writes a packet to send.
#[derive(Debug)]
pub struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl smoltcp::phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}
