//! The tunnel's I/O: one UDP socket, driven by the datapath thread around the I/O-free
//! [`tunnel::Tunnel`] core.
//!
//! Each (peer, network) pair is a switch port, so MACs behind a peer are learned against that
//! peer and a flood reaches every peer of the network once. Datagrams are drained with a budget
//! like TAPs; each is opened in place in a batch buffer, decided, and emitted with the rest of
//! the batch. Handshakes, keepalives and queued frames come out of `poll_transmit`.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{max_frame, Engine, PortIo, BUDGET};
use crate::switch::PortConfig;
use crate::types::{NetworkId, PortId};

/// The epoll token of the tunnel socket.
pub(super) const TOKEN: Token = Token(usize::MAX - 1);
/// Receive and send buffer of the tunnel socket: several MB, so a burst waits instead of
/// being dropped by the kernel.
const SOCKET_BUFFER: usize = 8 << 20;
/// A sealed datagram of the largest frame we carry, with room to spare.
const OUT_LEN: usize = 65535 + tunnel::OVERHEAD + 64;

/// The tunnel core, its socket and the ports of its peers.
pub(super) struct TunnelIo {
    core: tunnel::Tunnel,
    sock: UdpSocket,
    /// quinn-udp's view of the socket: GSO on send, GRO and recvmmsg on receive, each probed
    /// and turned off where the kernel refuses.
    udp: quinn_udp::UdpSocketState,
    ports: HashMap<(tunnel::PeerId, u32), PortId>,
    out: Box<[u8]>,
    /// Sealed datagrams waiting to go out in one `sendmsg` (UDP GSO).
    gso: Gso,
    /// Where a GRO'd read lands before it is split into datagrams.
    rx: Box<[u8]>,
}

/// Equal-size datagrams to one destination, sent together with one `sendmsg` and the
/// `UDP_SEGMENT` option (the last may be shorter).
#[derive(Debug, Default)]
struct Gso {
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for TunnelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelIo").field("sock", &self.sock).field("ports", &self.ports.len()).finish()
    }
}

/// One network a peer carries: its id, its tag on the wire, the port that stands for the
/// peer in it, and its MTU.
#[derive(Debug, Clone, Copy)]
pub struct PeerNetwork {
    pub network: NetworkId,
    pub tag: u32,
    pub port: PortId,
    pub mtu: u32,
}

impl Engine {
    /// Starts the tunnel on `sock` (non-blocking) with this host's private key.
    ///
    /// # Errors
    /// A bad configuration or a socket epoll cannot watch.
    pub fn enable_tunnel(&mut self, private_key: [u8; 32], sock: UdpSocket, seed: [u8; 32]) -> io::Result<()> {
        let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let cfg = tunnel::Config::new(private_key, unix_now.saturating_sub(self.now()));
        let core = tunnel::Tunnel::new(cfg, seed).map_err(|e| io::Error::other(e.to_string()))?;
        sock.set_nonblocking(true)?;
        if let Err(e) = crate::sys::set_socket_buffers(std::os::fd::AsFd::as_fd(&sock), SOCKET_BUFFER) {
            tracing::warn!(error = %e, "cannot enlarge the tunnel socket's buffers; bursts may overflow them");
        }
        self.poll.registry().register(&mut SourceFd(&sock.as_raw_fd()), TOKEN, Interest::READABLE)?;
        let udp = quinn_udp::UdpSocketState::new((&sock).into())?;
        tracing::info!(gso_segments = udp.max_gso_segments(), gro_segments = udp.gro_segments(), "tunnel socket offloads");
        self.tun = Some(TunnelIo {
            core,
            sock,
            udp,
            ports: HashMap::new(),
            out: vec![0u8; OUT_LEN].into_boxed_slice(),
            gso: Gso { buf: Vec::with_capacity(65536), ..Gso::default() },
            rx: vec![0u8; 65536].into_boxed_slice(),
        });
        Ok(())
    }

    /// Replaces the tunnel core with one for a new key, keeping the socket.
    ///
    /// # Errors
    /// No tunnel, peers still set, or a configuration the core refuses.
    pub fn rekey_tunnel(&mut self, private_key: [u8; 32], seed: [u8; 32]) -> Result<(), String> {
        let t = self.tun.as_mut().ok_or("the tunnel is off")?;
        if t.core.peers().next().is_some() {
            return Err("peers are still set".into());
        }
        let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let cfg = tunnel::Config::new(private_key, unix_now.saturating_sub(self.start.elapsed()));
        t.core = tunnel::Tunnel::new(cfg, seed).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// This host's public key, when the tunnel runs.
    pub fn tunnel_public_key(&self) -> Option<[u8; 32]> {
        self.tun.as_ref().map(|t| t.core.public_key())
    }

    /// The tunnel's local address, when it runs.
    pub fn tunnel_addr(&self) -> Option<SocketAddr> {
        self.tun.as_ref().and_then(|t| t.sock.local_addr().ok())
    }

    /// Adds a peer host and a port for it in each network it carries.
    ///
    /// # Errors
    /// No tunnel, a key the core refuses, or a port the switch refuses (nothing is left half
    /// added).
    pub fn add_peer(&mut self, key: [u8; 32], endpoint: Option<SocketAddr>, nets: &[PeerNetwork]) -> Result<(), String> {
        let t = self.tun.as_mut().ok_or("the tunnel is off: start vswitchd with --listen ADDR:PORT")?;
        let peer = t.core.add_peer(key, endpoint).map_err(|e| e.to_string())?;
        for (k, n) in nets.iter().enumerate() {
            let cfg = PortConfig { network: n.network, max_frame: max_frame(n.mtu) };
            if let Err(e) = self.switch.add_port(n.port, cfg) {
                for done in &nets[..k] {
                    let _ = self.switch.remove_port(done.port);
                    self.set_port(done.port, None);
                }
                if let Some(t) = self.tun.as_mut() {
                    t.core.remove_peer(peer);
                }
                return Err(e.to_string());
            }
            self.set_port(n.port, Some(PortIo::Tunnel { peer, tag: n.tag }));
            if let Some(t) = self.tun.as_mut() {
                t.ports.insert((peer, n.tag), n.port);
            }
        }
        Ok(())
    }

    /// Removes a peer host and its ports; returns the ports' ids.
    ///
    /// # Errors
    /// No tunnel or no such peer.
    pub fn remove_peer(&mut self, key: [u8; 32]) -> Result<Vec<PortId>, String> {
        let t = self.tun.as_mut().ok_or("the tunnel is off")?;
        let peer = t.core.peer_by_key(&key).ok_or("no such peer")?;
        t.core.remove_peer(peer);
        let ports: Vec<PortId> = t.ports.iter().filter(|((p, _), _)| *p == peer).map(|(_, port)| *port).collect();
        t.ports.retain(|(p, _), _| *p != peer);
        for port in &ports {
            let _ = self.switch.remove_port(*port);
            self.set_port(*port, None);
        }
        Ok(ports)
    }

    /// Sends control frames (name announcements) of network `net` to every peer carrying it.
    pub fn send_to_peers(&mut self, net: NetworkId, frames: Vec<Vec<u8>>) {
        let now = self.now();
        let targets: Vec<(tunnel::PeerId, u32)> = self
            .switch
            .ports_of(net)
            .iter()
            .filter_map(|p| match self.ports.get(p.0 as usize) {
                Some(Some(PortIo::Tunnel { peer, tag })) => Some((*peer, *tag)),
                _ => None,
            })
            .collect();
        let Some(t) = self.tun.as_mut() else { return };
        for (peer, tag) in targets {
            for f in &frames {
                if let tunnel::SendResult::Datagram { len, to } = t.core.send(now, peer, tag, f, &mut t.out) {
                    t.queue(len, to);
                }
            }
        }
        self.flush_tunnel();
    }

    /// Where announcements from peers go.
    pub fn set_announce_sink(&mut self, tx: tokio::sync::mpsc::Sender<super::Announcement>) {
        self.announce_tx = Some(tx);
    }

    /// Every peer's state.
    pub fn peer_infos(&self) -> Vec<tunnel::PeerInfo> {
        self.tun.as_ref().map(|t| t.core.peers().collect()).unwrap_or_default()
    }

    /// Drops the tunnel core counted, for the API.
    pub fn tunnel_drops(&self) -> Option<tunnel::DropCounts> {
        self.tun.as_ref().map(|t| t.core.drops())
    }

    /// Seals batch frame `i` (`bufs[i][frame_start..len]`) for a peer and sends it.
    pub(super) fn tunnel_send(&mut self, to: PortId, peer: tunnel::PeerId, tag: u32, i: usize, frame_start: usize, len: usize) {
        let now = self.now();
        let Some(t) = self.tun.as_mut() else { return };
        let frame = &self.bufs[i][frame_start..len];
        let result = t.core.send(now, peer, tag, frame, &mut t.out);
        let ok = match result {
            tunnel::SendResult::Datagram { len: n, to: addr } => {
                t.queue(n, addr);
                true
            }
            tunnel::SendResult::Queued => true,
            tunnel::SendResult::Dropped(_) => false,
        };
        self.count_tx(to, len - frame_start, ok);
    }

    /// Sends what the core has queued and the datagrams batched for GSO: called at the end of
    /// every batch.
    pub(super) fn flush_tunnel_batch(&mut self) {
        self.flush_tunnel();
        if let Some(t) = self.tun.as_mut() {
            t.send_gso();
        }
    }

    /// One read from the tunnel socket (with GRO, up to ~44 datagrams of 64 KiB at once),
    /// then each datagram opened in a batch slot, decided and emitted, [`BUDGET`] at a time.
    /// Returns [`BUDGET`] when something was read (there may be more) and 0 on EAGAIN.
    pub(super) fn drain_tunnel(&mut self) -> usize {
        let Some(t) = self.tun.as_mut() else { return 0 };
        let mut meta = [quinn_udp::RecvMeta::default()];
        let got = {
            let mut iov = [io::IoSliceMut::new(&mut t.rx)];
            loop {
                match t.udp.recv((&t.sock).into(), &mut iov, &mut meta) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
        };
        if !matches!(got, Ok(1..)) {
            return 0;
        }
        let (total, stride, from) = (meta[0].len, meta[0].stride.max(1), meta[0].addr);
        let now = self.start.elapsed();
        let mut ingress = [PortId(0); BUDGET];
        let mut offset = 0;
        while offset < total {
            let mut n = 0;
            while offset < total && n < BUDGET {
                let Some(t) = self.tun.as_mut() else { return 0 };
                let len = stride.min(total - offset);
                self.bufs[n][..len].copy_from_slice(&t.rx[offset..offset + len]);
                offset += len;
                let tunnel::RecvResult::Frame { peer, net, frame } = t.core.recv(now, from, &mut self.bufs[n][..len]) else {
                    continue;
                };
                match t.ports.get(&(peer, net)) {
                    // Names announced by the peer: for the control plane, never switched.
                    Some(_) if crate::control::announce::is_announcement(&self.bufs[n][frame.clone()]) => {
                        if let (Some(tx), Some(info)) = (&self.announce_tx, t.core.peer(peer)) {
                            let _ = tx.try_send((info.public_key, net, self.bufs[n][frame].to_vec()));
                        }
                    }
                    Some(&port) => {
                        ingress[n] = port;
                        self.starts[n] = frame.start;
                        self.lens[n] = frame.end;
                        n += 1;
                    }
                    // A network this host does not share with that peer.
                    None => {}
                }
            }
            for (i, &port) in ingress.iter().enumerate().take(n) {
                let frame = &self.bufs[i][self.starts[i]..self.lens[i]];
                self.verdicts[i] = self.switch.handle_frame(now, port, frame, false);
            }
            for (i, &port) in ingress.iter().enumerate().take(n) {
                self.emit(port, i, 0);
            }
        }
        self.flush_tunnel_batch();
        BUDGET
    }

    /// Sends whatever the core has queued: handshakes, keepalives, frames that waited.
    fn flush_tunnel(&mut self) {
        let now = self.now();
        let Some(t) = self.tun.as_mut() else { return };
        while let Some((n, to)) = t.core.poll_transmit(now, &mut t.out) {
            t.queue(n, to);
        }
        t.send_gso();
    }

    /// Runs the core's timers when due; returns how long until the next one.
    pub(super) fn tunnel_timers(&mut self) -> Option<Duration> {
        let now = self.now();
        let t = self.tun.as_mut()?;
        let deadline = t.core.poll_timeout()?;
        if deadline <= now {
            t.core.handle_timeout(now);
            self.flush_tunnel();
            let t = self.tun.as_ref()?;
            return t.core.poll_timeout().map(|d| d.saturating_sub(now));
        }
        Some(deadline - now)
    }
}

impl TunnelIo {
    /// Adds the sealed datagram `out[..len]` to the GSO batch, sending the batch first when
    /// this one cannot join it.
    fn queue(&mut self, len: usize, to: SocketAddr) {
        let g = &self.gso;
        let joins = g.to == Some(to)
            && len <= g.segment
            && g.count < self.udp.max_gso_segments()
            && g.buf.len() + len <= 65000
            // Only the last segment may be shorter: a short one closes the batch.
            && g.buf.len() == g.segment * g.count;
        if !joins {
            self.send_gso();
            self.gso.to = Some(to);
            self.gso.segment = len;
        }
        self.gso.buf.extend_from_slice(&self.out[..len]);
        self.gso.count += 1;
    }

    /// Sends the batched datagrams: one `sendmsg` with `UDP_SEGMENT`, or one by one where the
    /// kernel refuses GSO.
    fn send_gso(&mut self) {
        let Some(to) = self.gso.to.take() else { return };
        let g = std::mem::take(&mut self.gso);
        let segment = (g.count > 1).then_some(g.segment);
        let transmit = quinn_udp::Transmit { destination: to, ecn: None, contents: &g.buf, segment_size: segment, src_ip: None };
        if self.udp.try_send((&self.sock).into(), &transmit).is_err() && segment.is_some() {
            for chunk in g.buf.chunks(g.segment) {
                let _ = self.sock.send_to(chunk, to);
            }
        }
        let mut buf = g.buf;
        buf.clear();
        self.gso = Gso { buf, ..Gso::default() };
    }
}
