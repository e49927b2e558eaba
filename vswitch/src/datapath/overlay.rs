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

use super::{max_frame, segment, Engine, PortIo, BUDGET, VNET_HDR_LEN};
use crate::switch::PortConfig;
use crate::switch::{DropReason, Verdict};
use crate::types::{NetworkId, PortId};

/// The epoll token of the tunnel socket.
pub(super) const TOKEN: Token = Token(usize::MAX - 1); // usize::MAX - 2: the impairment timer (mod.rs)
/// Receive and send buffer of the tunnel socket: several MB, so a burst waits instead of
/// being dropped by the kernel.
const SOCKET_BUFFER: usize = 8 << 20;
/// A sealed datagram of the largest frame we carry, with room to spare.
const OUT_LEN: usize = 65535 + tunnel::OVERHEAD + 64;
/// Most bytes one GSO `sendmsg` carries (the UDP length field bounds the whole batch).
const GSO_MAX_BYTES: usize = 65000;
/// The GSO batch buffer: a full batch plus the datagram being sealed after it.
const GSO_BUF_LEN: usize = GSO_MAX_BYTES + OUT_LEN;
/// Room for one GRO read: up to 64 KiB of datagrams.
const RX_LEN: usize = 65536;
/// GRO reads per `recvmmsg`.
const RX_READS: usize = 2;

/// The `gso_max_size` for an overlay TAP of this MTU: TSO super-frames whose segments, sealed,
/// fill one UDP GSO send (at most [`GSO_MAX_BYTES`] and 64 datagrams), so that one TAP read
/// leaves in one `sendmsg`, arrives in one GRO read and is written to the other container in
/// one go. The kernel takes its TCP header room (`MAX_TCP_HEADER` + 1, 321 bytes on x86-64)
/// off this size before dividing by the MSS, which is at least MTU − 72 (IPv6, timestamps).
pub fn tso_max_size(mtu: u32) -> u32 {
    let datagram = mtu as usize + 14 + tunnel::OVERHEAD;
    let segments = (GSO_MAX_BYTES / datagram).clamp(1, 64);
    let size = segments * (mtu as usize).saturating_sub(72).max(1) + 321;
    size.min(65536) as u32
}

/// The tunnel core, its socket and the ports of its peers.
pub(super) struct TunnelIo {
    /// Sealing with ring's ChaCha20-Poly1305 (2.2x RustCrypto's on 1420-byte frames here).
    core: tunnel::Tunnel<tunnel::RingChaCha>,
    sock: UdpSocket,
    /// quinn-udp's view of the socket: GSO on send, GRO and recvmmsg on receive, each probed
    /// and turned off where the kernel refuses.
    udp: quinn_udp::UdpSocketState,
    ports: HashMap<(tunnel::PeerId, u32), PortId>,
    out: Box<[u8]>,
    /// Sealed datagrams waiting to go out in one `sendmsg` (UDP GSO).
    gso: Gso,
    /// Where [`RX_READS`] GRO'd reads land before they are split into datagrams.
    rx: Box<[u8]>,
}

/// Equal-size datagrams to one destination, sent together with one `sendmsg` and the
/// `UDP_SEGMENT` option (the last may be shorter). Frames are sealed in place at the end of
/// `buf[..len]`, so a frame is copied once, into the batch.
#[derive(Debug)]
struct Gso {
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    len: usize,
    buf: Box<[u8]>,
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
        let core = tunnel::Tunnel::with_aead(cfg, seed).map_err(|e| io::Error::other(e.to_string()))?;
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
            gso: Gso { to: None, segment: 0, count: 0, len: 0, buf: vec![0u8; GSO_BUF_LEN].into_boxed_slice() },
            rx: vec![0u8; RX_LEN * RX_READS].into_boxed_slice(),
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
        t.core = tunnel::Tunnel::with_aead(cfg, seed).map_err(|e| e.to_string())?;
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
        let ok = t.seal_with(now, peer, tag, frame.len(), |room| {
            room[..frame.len()].copy_from_slice(frame);
            Some(frame.len())
        });
        self.count_tx(to, len - frame_start, ok.unwrap_or(false));
    }

    /// Cuts the TCP super-frame of batch slot `i` (vnet header `vh`, frame at
    /// `bufs[i][frame_start..len]`) into segments, each sealed in place into the GSO batch.
    /// A super-frame that cannot be segmented, or whose segments would not fit the port, is
    /// dropped and counted on the ingress port.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tunnel_send_gso(
        &mut self,
        ingress: PortId,
        to: PortId,
        (peer, tag): (tunnel::PeerId, u32),
        i: usize,
        frame_start: usize,
        len: usize,
        vh: &super::segment::VnetHdr,
    ) {
        let now = self.now();
        let max_frame = self.switch.port_max_frame(to).unwrap_or(0);
        let frame = &self.bufs[i][frame_start..len];
        let mut seg = match super::segment::TcpSegmenter::new(vh, frame) {
            Ok(seg) if seg.max_len() <= max_frame => seg,
            Ok(_) => return self.count_drop(ingress, DropReason::TooLong),
            Err(e) => {
                tracing::trace!(port = ingress.0, error = %e, "super-frame not segmented");
                return self.count_drop(ingress, DropReason::BadOffload);
            }
        };
        let Some(t) = self.tun.as_mut() else { return };
        let (mut packets, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        let max = seg.max_len();
        loop {
            let mut n = 0;
            let sealed = t.seal_with(now, peer, tag, max, |room| {
                n = seg.next_into(room)?;
                Some(n)
            });
            match sealed {
                None => break,
                Some(true) => {
                    packets += 1;
                    bytes += n as u64;
                }
                Some(false) => failed += 1,
            }
        }
        if let Some(c) = self.switch.counters_mut(to) {
            c.segmented += 1;
            c.tx_packets += packets;
            c.tx_bytes += bytes;
            c.drops[DropReason::TxError.index()] += failed;
        }
    }

    /// Sends what the core has queued and the datagrams batched for GSO: called at the end of
    /// every batch.
    pub(super) fn flush_tunnel_batch(&mut self) {
        self.flush_tunnel();
        if let Some(t) = self.tun.as_mut() {
            t.send_gso();
        }
    }

    /// One `recvmmsg` from the tunnel socket of up to [`RX_READS`] GRO reads (each up to 64
    /// KiB: ~44 datagrams), then each datagram opened in a batch slot, decided and emitted,
    /// [`BUDGET`] at a time across the reads (so that the segments of one TCP super-frame,
    /// which the sender's 64 KiB GSO limit splits into two sends, are coalesced into one
    /// TAP write). Returns [`BUDGET`] when something was read (there may be more) and 0 on
    /// EAGAIN.
    pub(super) fn drain_tunnel(&mut self) -> usize {
        let Some(t) = self.tun.as_mut() else { return 0 };
        let mut meta = [quinn_udp::RecvMeta::default(); RX_READS];
        let got = {
            let mut chunks = t.rx.chunks_mut(RX_LEN);
            let mut iov: [io::IoSliceMut<'_>; RX_READS] = std::array::from_fn(|_| io::IoSliceMut::new(chunks.next().unwrap_or_default()));
            loop {
                match t.udp.recv((&t.sock).into(), &mut iov, &mut meta) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
        };
        let reads = match got {
            Ok(n @ 1..) => n.min(RX_READS),
            _ => return 0,
        };
        let now = self.start.elapsed();
        let mut ingress = [PortId(0); BUDGET];
        let (mut read, mut offset) = (0, 0);
        while read < reads {
            let mut n = 0;
            while n < BUDGET && read < reads {
                let (total, stride, from) = (meta[read].len.min(RX_LEN), meta[read].stride.max(1), meta[read].addr);
                if offset >= total {
                    read += 1;
                    offset = 0;
                    continue;
                }
                // A read that does not fit what is left of the batch starts the next one: the
                // datagrams of one sender's GSO send stay together for coalescing.
                if offset == 0 && n > 0 && n + total.div_ceil(stride) > BUDGET {
                    break;
                }
                let Some(t) = self.tun.as_mut() else { return 0 };
                let len = stride.min(total - offset);
                let at = read * RX_LEN + offset;
                self.bufs[n][..len].copy_from_slice(&t.rx[at..at + len]);
                offset += len;
                let tunnel::RecvResult::Frame { peer, net, frame } = t.core.recv(now, from, &mut self.bufs[n][..len]) else {
                    continue;
                };
                match t.ports.get(&(peer, net)) {
                    // Names announced by the peer: for the control plane, never switched.
                    Some(_) if crate::announce::is_announcement(&self.bufs[n][frame.clone()]) => {
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
                if self.cap.on {
                    self.cap.offer_decided(port, super::capture::Dir::In, frame, 0, Some(self.verdicts[i]));
                }
            }
            let mut i = 0;
            while i < n {
                i += self.emit_coalesced(&ingress, i, n).unwrap_or_else(|| {
                    self.emit(ingress[i], i, 0);
                    1
                });
            }
        }
        self.flush_tunnel_batch();
        BUDGET
    }

    /// Writes batch slots `i..` that are in-order TCP segments of one flow, forwarded from the
    /// same peer to the same TAP with a vnet header, as one super-frame (one `writev`: the
    /// first frame's headers and each segment's payload in place). Returns how many slots it
    /// took, or `None` (nothing written) when fewer than two would merge.
    fn emit_coalesced(&mut self, ingress: &[PortId; BUDGET], i: usize, n: usize) -> Option<usize> {
        let Verdict::Forward(to) = self.verdicts[i] else { return None };
        let Some(Some(PortIo::Tap { vnet_hdr_len: VNET_HDR_LEN, .. })) = self.ports.get(to.0 as usize) else { return None };
        // An impaired port holds each frame on its own (send_from_batch).
        if self.imp.any() && self.imp.touches(to) {
            return None;
        }
        let follows = |j: usize| j < n && self.verdicts[j] == Verdict::Forward(to) && ingress[j] == ingress[i];
        if !follows(i + 1) {
            return None;
        }
        let first = &self.bufs[i][self.starts[i]..self.lens[i]];
        let mut c = segment::Coalescer::start(first)?;
        let mut j = i + 1;
        while follows(j) {
            let frame = &self.bufs[j][self.starts[j]..self.lens[j]];
            let Some(r) = c.try_append(first, frame) else { break };
            self.payloads[j] = self.starts[j] + r.start..self.starts[j] + r.end;
            j += 1;
        }
        if j == i + 1 {
            return None;
        }
        if self.cap.on {
            for k in i..j {
                self.cap.offer(to, super::capture::Dir::Out, &self.bufs[k][self.starts[k]..self.lens[k]], 0);
            }
        }
        let start = self.starts[i];
        // The tunnel header left room in front of the frame for the virtio header.
        let at = start.checked_sub(VNET_HDR_LEN)?;
        let vh = c.finish(&mut self.bufs[i][start..self.lens[i]]);
        vh.write(&mut self.bufs[i][at..start]);
        let mut iov = [std::io::IoSlice::new(&[]); BUDGET];
        iov[0] = std::io::IoSlice::new(&self.bufs[i][at..self.lens[i]]);
        let mut total = self.lens[i] - at;
        for k in i + 1..j {
            iov[k - i] = std::io::IoSlice::new(&self.bufs[k][self.payloads[k].clone()]);
            total += self.payloads[k].len();
        }
        let Some(Some(PortIo::Tap { file, .. })) = self.ports.get_mut(to.0 as usize) else { return None };
        let ok = loop {
            match std::io::Write::write_vectored(&mut &**file, &iov[..j - i]) {
                Ok(w) => break w == total,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        self.count_tx(to, total - VNET_HDR_LEN, ok);
        if ok {
            if let Some(c) = self.switch.counters_mut(to) {
                c.coalesced += 1;
            }
        }
        Some(j - i)
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
    /// Seals a frame of network `tag` for `peer` in place at the end of the GSO batch: `fill`
    /// writes the frame (at most `max` bytes) into the room it is given and returns its length,
    /// or `None` to seal nothing. Returns `None` when `fill` wrote nothing, else whether the
    /// frame was sent or queued (`false`: dropped by the core, which counted it).
    fn seal_with(
        &mut self,
        now: Duration,
        peer: tunnel::PeerId,
        tag: u32,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<bool> {
        if self.gso.len + max + tunnel::OVERHEAD > self.gso.buf.len() {
            self.send_gso();
        }
        let base = self.gso.len;
        let end = (base + tunnel::FRAME_OFFSET + max).min(self.gso.buf.len());
        let n = fill(&mut self.gso.buf[base + tunnel::FRAME_OFFSET..end])?;
        match self.core.send_in_place(now, peer, tag, &mut self.gso.buf[base..], n) {
            tunnel::SendResult::Datagram { len, to } => {
                self.commit(len, to);
                Some(true)
            }
            tunnel::SendResult::Queued => Some(true),
            tunnel::SendResult::Dropped(_) => Some(false),
        }
    }

    /// Adds the sealed datagram `out[..len]` to the GSO batch.
    fn queue(&mut self, len: usize, to: SocketAddr) {
        if self.gso.len + len > self.gso.buf.len() {
            self.send_gso();
        }
        let base = self.gso.len;
        self.gso.buf[base..base + len].copy_from_slice(&self.out[..len]);
        self.commit(len, to);
    }

    /// Takes the datagram sealed at `buf[gso.len..][..len]` into the batch, sending the
    /// batch before it first when it cannot join (it then moves to the front).
    fn commit(&mut self, len: usize, to: SocketAddr) {
        let g = &self.gso;
        let base = g.len;
        let joins = g.count > 0
            && g.to == Some(to)
            && len <= g.segment
            && g.count < self.udp.max_gso_segments()
            && base + len <= GSO_MAX_BYTES
            // Only the last segment may be shorter: a short one closes the batch.
            && base == g.segment * g.count;
        if !joins && g.count > 0 {
            self.send_gso();
            self.gso.buf.copy_within(base..base + len, 0);
        }
        if self.gso.count == 0 {
            self.gso.to = Some(to);
            self.gso.segment = len;
        }
        self.gso.len += len;
        self.gso.count += 1;
    }

    /// Sends the batched datagrams: one `sendmsg` with `UDP_SEGMENT`, or one by one where the
    /// kernel refuses GSO.
    fn send_gso(&mut self) {
        let Some(to) = self.gso.to.take() else { return };
        let g = &mut self.gso;
        let contents = &g.buf[..g.len];
        let segment = (g.count > 1).then_some(g.segment);
        let transmit = quinn_udp::Transmit { destination: to, ecn: None, contents, segment_size: segment, src_ip: None };
        if self.udp.try_send((&self.sock).into(), &transmit).is_err() && segment.is_some() {
            for chunk in contents.chunks(g.segment) {
                let _ = self.sock.send_to(chunk, to);
            }
        }
        g.len = 0;
        g.count = 0;
        g.segment = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tso_size_fills_one_gso_send() {
        // The default overlay MTU: 44 sealed 1472-byte datagrams fit 65000 bytes.
        assert_eq!(tso_max_size(1422), 44 * 1350 + 321);
        for mtu in [576u32, 1280, 1400, 1422, 1442, 8950] {
            let datagram = mtu as usize + 14 + tunnel::OVERHEAD;
            let size = tso_max_size(mtu) as usize;
            assert!(size <= 65536);
            // The most segments the kernel makes of it, for the smallest MSS (IPv6 with
            // timestamps) and a header room of 321 bytes or less.
            let worst = (size - 225) / (mtu as usize - 72);
            assert!(worst * datagram <= GSO_MAX_BYTES && worst <= 64, "mtu {mtu}: {worst} segments");
        }
    }
}
