//! [`Tunnel`]: all peers of one host, the calling protocol, and the glue between handshake,
//! sessions, queues and timers.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rustc_hash::FxHashMap;
use x25519_dalek::StaticSecret;
use zeroize::Zeroize;

use crate::aead::{Aead, RustCryptoChaCha};
use crate::config::{Config, ConfigError};
use crate::crypto::{increment_be, tai64n, MAC_LEN};
use crate::drop::{DropCounts, DropReason};
use crate::handshake::{self, Identity};
use crate::peer::{Handshake, Peer};
use crate::ratelimit::RateLimiter;
use crate::session::{Session, REJECT_AFTER_MESSAGES};
use crate::wire::{
    array_at, cookie, data, init, resp, u32_at, u64_at, COOKIE_LEN, FRAME_OFFSET, HEADER_LEN, INIT_LEN, KEEPALIVE_LEN, MAX_HANDSHAKE_LEN,
    MSG_COOKIE, MSG_DATA, MSG_INITIATION, MSG_RESPONSE, NET_LEN, OVERHEAD, PREFIX_LEN, RESP_LEN,
};

/// Handshake messages and keepalives waiting for [`Tunnel::poll_transmit`]; beyond this, new
/// ones are not queued (a caller that never polls cannot make the tunnel grow).
const MAX_PENDING: usize = 1024;
/// Frame buffers kept for reuse by the per-peer queues.
const MAX_SPARE: usize = 256;
/// The cookie secret is replaced this often (WireGuard: 2 minutes).
const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// A peer of a [`Tunnel`]. Stays unique: the id of a removed peer is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    slot: u32,
    generation: u32,
}

/// What [`Tunnel::send`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendResult {
    /// `out[..len]` is a sealed datagram: send it to `to`.
    Datagram { len: usize, to: SocketAddr },
    /// No session yet (a handshake is under way): the frame was copied into the peer's queue
    /// and comes out of [`Tunnel::poll_transmit`] once the session is up.
    Queued,
    /// Not sent, and counted.
    Dropped(DropReason),
}

/// What [`Tunnel::recv`] made of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvResult {
    /// An Ethernet frame of network `net` from `peer`, decrypted in place: `buf[frame]`.
    Frame { peer: PeerId, net: u32, frame: Range<usize> },
    /// A handshake message or keepalive, consumed. Replies (if any) wait in
    /// [`Tunnel::poll_transmit`].
    Handled,
    /// Refused, and counted.
    Dropped(DropReason),
}

/// A snapshot of one peer, for the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: PeerId,
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// When the newest session was established (the caller's clock), if ever.
    pub last_handshake: Option<Duration>,
    /// Completed handshakes.
    pub handshakes: u64,
    /// Sessions held (at most 3).
    pub sessions: usize,
    /// Frames waiting for a handshake.
    pub queued: usize,
    /// Data datagrams (keepalives included) received and authenticated, and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Data datagrams sealed for this peer, and their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops that could be tied to this peer, per reason.
    pub drops: DropCounts,
}

/// Why [`Tunnel::add_peer`] refused a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("that is this host's own public key")]
    OwnKey,
    #[error("a peer with this public key exists already ({0:?}); remove it first or set its endpoint")]
    Duplicate(PeerId),
    #[error("the public key is a low-order point: no shared secret can be derived from it")]
    WeakKey,
}

/// The timers of [`Config`], without the key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) rekey_after_time: Duration,
    pub(crate) reject_after_time: Duration,
    pub(crate) rekey_after_packets: u64,
    pub(crate) rekey_timeout: Duration,
    pub(crate) rekey_attempt_time: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) queue_len: usize,
    unix_time_at_start: Duration,
}

enum Pending {
    Handshake { to: SocketAddr, len: usize, bytes: [u8; MAX_HANDSHAKE_LEN] },
    Keepalive(PeerId),
    Flush(PeerId),
}

struct Slot<A> {
    generation: u32,
    peer: Option<Box<Peer<A>>>,
}

/// Every peer of one host: the I/O-free tunnel core.
///
/// # Calling protocol
///
/// The core owns no socket, reads no clock and draws no entropy of its own. The caller (the
/// datapath thread) owns one UDP socket and a monotonic clock, and:
///
/// 1. hands every datagram that arrives to [`Tunnel::recv`] with the current time; a data
///    packet comes back as a frame decrypted in place inside the caller's buffer;
/// 2. hands every frame to send to [`Tunnel::send`] (or [`Tunnel::send_in_place`] when the
///    frame already sits at [`FRAME_OFFSET`] in a buffer with room for [`OVERHEAD`]), which
///    seals it into the caller's buffer and says where to send it;
/// 3. after any of these calls, drains [`Tunnel::poll_transmit`] until it returns `None`:
///    handshake messages, cookie replies, keepalives and frames that waited for a handshake;
/// 4. sleeps no later than [`Tunnel::poll_timeout`] and then calls [`Tunnel::handle_timeout`]
///    (then drains `poll_transmit` again).
///
/// Nothing on the data path allocates: a send or a receive on an established session looks
/// up a peer, seals or opens in place and returns.
pub struct Tunnel<A = RustCryptoChaCha> {
    t: Timing,
    me: Identity,
    rng: ChaCha20Rng,
    slots: Vec<Slot<A>>,
    free: Vec<u32>,
    by_key: FxHashMap<[u8; 32], u32>,
    /// Our receiver indices (sessions and handshakes in flight) to peer slots.
    by_index: FxHashMap<u32, u32>,
    pending: VecDeque<Pending>,
    limiter: RateLimiter,
    cookie_secret: [u8; 32],
    cookie_secret_born: Option<Duration>,
    /// The newest timestamp we put in an initiation.
    last_timestamp: [u8; 12],
    drops: DropCounts,
    spare: Vec<Vec<u8>>,
}

impl<A> fmt::Debug for Tunnel<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("public_key", &self.me.public)
            .field("peers", &self.by_key.len())
            .field("pending", &self.pending.len())
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

impl<A> Drop for Tunnel<A> {
    fn drop(&mut self) {
        self.cookie_secret.zeroize();
    }
}

impl Tunnel<RustCryptoChaCha> {
    /// A tunnel with the RustCrypto ChaCha20-Poly1305 backend.
    ///
    /// `rng_seed` seeds the ChaCha20 CSPRNG that makes ephemeral keys, indices, cookie secrets
    /// and jitter: it must come from the operating system's CSPRNG on every start (a repeated
    /// seed repeats ephemeral keys).
    ///
    /// # Errors
    /// [`ConfigError`] for timers or limits the tunnel cannot work with.
    pub fn new(cfg: Config, rng_seed: [u8; 32]) -> Result<Self, ConfigError> {
        Self::with_aead(cfg, rng_seed)
    }
}

impl<A: Aead> Tunnel<A> {
    /// As [`Tunnel::new`], with another AEAD backend for the data packets.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn with_aead(mut cfg: Config, rng_seed: [u8; 32]) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let me = Identity::new(cfg.private_key);
        cfg.private_key.zeroize();
        Ok(Tunnel {
            t: Timing {
                rekey_after_time: cfg.rekey_after_time,
                reject_after_time: cfg.reject_after_time,
                rekey_after_packets: cfg.rekey_after_packets,
                rekey_timeout: cfg.rekey_timeout,
                rekey_attempt_time: cfg.rekey_attempt_time,
                keepalive_timeout: cfg.keepalive_timeout,
                keepalive: cfg.keepalive,
                queue_len: cfg.queue_len,
                unix_time_at_start: cfg.unix_time_at_start,
            },
            me,
            rng: ChaCha20Rng::from_seed(rng_seed),
            slots: Vec::new(),
            free: Vec::new(),
            by_key: FxHashMap::default(),
            by_index: FxHashMap::default(),
            pending: VecDeque::new(),
            limiter: RateLimiter::new(&cfg.handshake_rate),
            cookie_secret: [0; 32],
            cookie_secret_born: None,
            last_timestamp: [0; 12],
            drops: DropCounts::default(),
            spare: Vec::new(),
        })
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.me.public
    }

    /// Adds a peer. Without an endpoint it can still reach us (its first authenticated packet
    /// tells us where it is), but frames for it are dropped ([`DropReason::NoEndpoint`]) until
    /// then.
    ///
    /// # Errors
    /// [`PeerError`]: our own key, a key already added, or a low-order point.
    pub fn add_peer(&mut self, public_key: [u8; 32], endpoint: Option<SocketAddr>) -> Result<PeerId, PeerError> {
        if public_key == self.me.public {
            return Err(PeerError::OwnKey);
        }
        if let Some(&slot) = self.by_key.get(&public_key) {
            return Err(PeerError::Duplicate(self.id_at(slot as usize)));
        }
        let keys = self.me.peer_keys(public_key).ok_or(PeerError::WeakKey)?;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Slot { generation: 0, peer: None });
                s
            }
        };
        let entry = &mut self.slots[slot as usize];
        let id = PeerId { slot, generation: entry.generation };
        entry.peer = Some(Box::new(Peer::new(id, keys, endpoint)));
        self.by_key.insert(public_key, slot);
        Ok(id)
    }

    /// Removes a peer: its sessions, handshake and queued frames are gone at once. False if it
    /// was not there.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        let entry = &mut self.slots[slot];
        let Some(peer) = entry.peer.take() else {
            return false;
        };
        entry.generation = entry.generation.wrapping_add(1);
        for index in peer.indices() {
            self.by_index.remove(&index);
        }
        self.by_key.remove(&peer.keys.public);
        self.free.push(id.slot);
        true
    }

    /// Sets (or forgets) where a peer is. Frames waiting for a handshake are dropped when the
    /// endpoint is forgotten. False if the peer is not there.
    pub fn set_endpoint(&mut self, id: PeerId, endpoint: Option<SocketAddr>) -> bool {
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        let Some(p) = self.slots[slot].peer.as_deref_mut() else {
            return false;
        };
        p.endpoint = endpoint;
        if endpoint.is_none() {
            drop_queue(p, &mut self.spare, DropReason::NoEndpoint);
        }
        true
    }

    /// The peer with this public key.
    pub fn peer_by_key(&self, public_key: &[u8; 32]) -> Option<PeerId> {
        self.by_key.get(public_key).map(|&s| self.id_at(s as usize))
    }

    /// A snapshot of one peer.
    pub fn peer(&self, id: PeerId) -> Option<PeerInfo> {
        let slot = self.slot_of(id)?;
        self.slots[slot].peer.as_deref().map(info)
    }

    /// Snapshots of every peer.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        self.slots.iter().filter_map(|s| s.peer.as_deref().map(info))
    }

    /// Drops that could not be tied to a peer (unknown index or key, bad mac1, rate limits,
    /// garbage), per reason.
    pub fn drops(&self) -> DropCounts {
        self.drops
    }

    /// Seals one Ethernet frame of network `net` for `peer` into `out`, which must hold
    /// `frame.len() + OVERHEAD` bytes.
    ///
    /// Returns the datagram to send, or [`SendResult::Queued`] when a handshake must come
    /// first (it starts now; its initiation waits in [`Tunnel::poll_transmit`]), or why the
    /// frame was dropped.
    pub fn send(&mut self, now: Duration, peer: PeerId, net: u32, frame: &[u8], out: &mut [u8]) -> SendResult {
        if out.len() < frame.len().saturating_add(OVERHEAD) {
            return self.drop_send(peer, DropReason::BufferTooSmall);
        }
        out[FRAME_OFFSET..FRAME_OFFSET + frame.len()].copy_from_slice(frame);
        self.send_in_place(now, peer, net, out, frame.len())
    }

    /// As [`Tunnel::send`], for a frame the caller already placed at
    /// `buf[FRAME_OFFSET..FRAME_OFFSET + frame_len]`, with room for the tag after it: no copy.
    pub fn send_in_place(&mut self, now: Duration, peer: PeerId, net: u32, buf: &mut [u8], frame_len: usize) -> SendResult {
        let Some(slot) = self.slot_of(peer) else {
            return self.drop_send(peer, DropReason::UnknownPeer);
        };
        if frame_len.checked_add(OVERHEAD).is_none_or(|total| total > buf.len()) {
            return self.drop_send(peer, DropReason::BufferTooSmall);
        }
        let t = self.t;
        let Some(p) = self.slots[slot].peer.as_deref_mut() else {
            return self.drop_send(peer, DropReason::UnknownPeer);
        };
        let Some(to) = p.endpoint else {
            return self.drop_send(peer, DropReason::NoEndpoint);
        };
        if p.queue.is_empty() {
            if let Some(s) = p.send_session(now, t.reject_after_time) {
                buf[HEADER_LEN..FRAME_OFFSET].copy_from_slice(&net.to_le_bytes());
                return match s.seal(buf, NET_LEN + frame_len) {
                    Some(len) => {
                        self.after_send(now, slot, len, true);
                        SendResult::Datagram { len, to }
                    }
                    None => self.drop_send(peer, DropReason::BufferTooSmall),
                };
            }
        }
        if p.queue.len() >= t.queue_len {
            return self.drop_send(peer, DropReason::QueueFull);
        }
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(&buf[FRAME_OFFSET..FRAME_OFFSET + frame_len]);
        p.queue.push_back((net, v));
        if p.can_send(now, t.reject_after_time) {
            // Earlier frames still wait for poll_transmit: keep the order.
            schedule_flush(p, &mut self.pending);
        } else {
            self.want_handshake(now, slot);
        }
        SendResult::Queued
    }

    /// Takes one datagram that arrived from `from`. Data is authenticated and decrypted in
    /// place: the frame is `buf[frame]`. Never panics, whatever the bytes.
    pub fn recv(&mut self, now: Duration, from: SocketAddr, buf: &mut [u8]) -> RecvResult {
        let Some(prefix) = buf.get(..PREFIX_LEN) else {
            return self.drop_global(DropReason::TooShort);
        };
        if prefix[1..] != [0, 0, 0] {
            return self.drop_global(DropReason::UnknownType);
        }
        match prefix[0] {
            MSG_DATA => self.recv_data(now, from, buf),
            MSG_INITIATION => self.recv_initiation(now, from, buf),
            MSG_RESPONSE => self.recv_response(now, from, buf),
            MSG_COOKIE => self.recv_cookie(now, buf),
            _ => self.drop_global(DropReason::UnknownType),
        }
    }

    /// The next datagram the tunnel wants sent, written into `out`: handshake messages,
    /// cookie replies, keepalives, and frames that waited for a session. Call until `None`
    /// after every [`Tunnel::recv`], [`Tunnel::send`] and [`Tunnel::handle_timeout`].
    ///
    /// `out` should be as large as the buffers passed to `send` (and at least
    /// [`MAX_HANDSHAKE_LEN`]); what does not fit is dropped ([`DropReason::BufferTooSmall`]).
    pub fn poll_transmit(&mut self, now: Duration, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        loop {
            match self.pending.front()? {
                Pending::Handshake { to, len, bytes } => {
                    let (to, len) = (*to, *len);
                    let sent = match out.get_mut(..len) {
                        Some(dst) => {
                            dst.copy_from_slice(&bytes[..len]);
                            true
                        }
                        None => false,
                    };
                    self.pending.pop_front();
                    if sent {
                        return Some((len, to));
                    }
                    self.drops.add(DropReason::BufferTooSmall);
                }
                Pending::Keepalive(id) => {
                    let id = *id;
                    self.pending.pop_front();
                    if let Some(r) = self.emit_keepalive(now, id, out) {
                        return Some(r);
                    }
                }
                Pending::Flush(id) => {
                    let id = *id;
                    let (r, more) = self.emit_queued(now, id, out);
                    if !more {
                        self.pending.pop_front();
                        if let Some(p) = self.slot_of(id).and_then(|s| self.slots[s].peer.as_deref_mut()) {
                            p.flush_queued = false;
                        }
                    }
                    if r.is_some() {
                        return r;
                    }
                }
            }
        }
    }

    /// When [`Tunnel::handle_timeout`] next has work: handshake retries, session expiry,
    /// keepalives, the rate limiter's sweep. `None` when there is nothing to wait for.
    /// Costs a pass over the peers.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.slots.iter().filter_map(|s| s.peer.as_deref()?.deadline(&self.t)).chain(self.limiter.deadline()).min()
    }

    /// Runs every timer due at `now` (a pass over the peers). Then drain
    /// [`Tunnel::poll_transmit`]. Calling it early or late is harmless: timers look at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].peer.is_some() {
                self.peer_timers(now, slot);
            }
        }
        self.limiter.handle_timeout(now);
    }

    // ---- receive paths ----

    fn recv_data(&mut self, now: Duration, from: SocketAddr, buf: &mut [u8]) -> RecvResult {
        if buf.len() < KEEPALIVE_LEN {
            return self.drop_global(DropReason::TooShort);
        }
        let (Some(index), Some(counter)) = (u32_at(buf, data::RECEIVER), u64_at(buf, data::COUNTER)) else {
            return self.drop_global(DropReason::TooShort);
        };
        let Some(&slot) = self.by_index.get(&index) else {
            return self.drop_global(DropReason::UnknownIndex);
        };
        let slot = slot as usize;
        let t = self.t;
        let Some(p) = self.slots.get_mut(slot).and_then(|s| s.peer.as_deref_mut()) else {
            return self.drop_global(DropReason::UnknownIndex);
        };
        let Some(i) = p.session_index(index) else {
            // The index of our initiation in flight: data cannot come on it yet.
            p.drops.add(DropReason::UnknownIndex);
            return RecvResult::Dropped(DropReason::UnknownIndex);
        };
        let Some(ps) = p.sessions[i].as_mut() else {
            p.drops.add(DropReason::UnknownIndex);
            return RecvResult::Dropped(DropReason::UnknownIndex);
        };
        let s = &mut ps.session;
        if !s.alive(now, t.reject_after_time) || counter >= REJECT_AFTER_MESSAGES {
            p.drops.add(DropReason::StaleSession);
            return RecvResult::Dropped(DropReason::StaleSession);
        }
        if let Err(r) = s.open(buf, counter) {
            p.drops.add(r);
            return RecvResult::Dropped(r);
        }
        // Authentic and fresh.
        let (initiator, created) = (s.initiator, s.created);
        p.stats.rx_packets += 1;
        p.stats.rx_bytes += buf.len() as u64;
        p.note_authenticated(from);
        p.mark_received(i);
        if p.confirm(i) {
            p.last_handshake = Some(now);
            p.stats.handshakes += 1;
            if !p.queue.is_empty() {
                schedule_flush(p, &mut self.pending);
            }
        }
        let id = p.id;
        let plaintext = buf.len() - HEADER_LEN - crate::aead::TAG_LEN;
        let result = match plaintext {
            0 => RecvResult::Handled,
            1..=3 => {
                p.drops.add(DropReason::Malformed);
                RecvResult::Dropped(DropReason::Malformed)
            }
            _ => {
                p.keepalive_armed.get_or_insert(now);
                let net = u32_at(buf, HEADER_LEN..FRAME_OFFSET).unwrap_or(0);
                RecvResult::Frame { peer: id, net, frame: FRAME_OFFSET..buf.len() - crate::aead::TAG_LEN }
            }
        };
        // WireGuard: the initiator also rekeys on receive, late enough that a session never
        // runs into reject_after_time while traffic flows only towards us.
        let late = t.reject_after_time.saturating_sub(t.keepalive_timeout).saturating_sub(t.rekey_timeout);
        if initiator && now.saturating_sub(created) >= late {
            self.want_handshake(now, slot);
        }
        result
    }

    fn recv_initiation(&mut self, now: Duration, from: SocketAddr, buf: &[u8]) -> RecvResult {
        let msg: &[u8; INIT_LEN] = match self.handshake_msg(buf, init::MAC1) {
            Ok(m) => m,
            Err(r) => return self.drop_global(r),
        };
        let sender = u32_at(msg, init::SENDER).unwrap_or(0);
        if let Err(r) = self.admit(now, from, msg, init::MAC1, init::MAC2, sender) {
            return self.drop_global(r);
        }
        let by_key = &self.by_key;
        let slots = &self.slots;
        let consumed = handshake::consume_initiation(&self.me, msg, |pk| {
            let slot = *by_key.get(pk)? as usize;
            slots.get(slot)?.peer.as_deref().map(|p| &p.keys)
        });
        let got = match consumed {
            Ok(got) => got,
            Err(r) => return self.drop_global(r),
        };
        let Some(&slot) = self.by_key.get(&got.peer_public) else {
            return self.drop_global(DropReason::UnknownPeer);
        };
        let slot = slot as usize;
        let index = self.new_index();
        let ephemeral = self.new_ephemeral();
        let Tunnel { slots, by_index, pending, .. } = self;
        let Some(p) = slots.get_mut(slot).and_then(|s| s.peer.as_deref_mut()) else {
            return self.drop_global(DropReason::UnknownPeer);
        };
        if got.timestamp <= p.last_timestamp {
            p.drops.add(DropReason::StaleTimestamp);
            return RecvResult::Dropped(DropReason::StaleTimestamp);
        }
        let mut bytes = [0u8; MAX_HANDSHAKE_LEN];
        let Some(out) = bytes.first_chunk_mut::<RESP_LEN>() else {
            return RecvResult::Dropped(DropReason::BufferTooSmall);
        };
        let cookie = p.fresh_cookie(now);
        let (keys, mac1) = match handshake::response(&got, &p.keys, ephemeral, index, cookie.as_ref(), out) {
            Ok(k) => k,
            Err(r) => {
                p.drops.add(r);
                return RecvResult::Dropped(r);
            }
        };
        p.last_timestamp = got.timestamp;
        p.note_authenticated(from);
        let session = Session::new(index, got.sender, &keys, now, false);
        for old in p.insert(session, false).into_iter().flatten() {
            by_index.remove(&old);
        }
        by_index.insert(index, slot as u32);
        p.last_mac1 = Some(mac1);
        p.note_sent(now);
        push(pending, Pending::Handshake { to: from, len: RESP_LEN, bytes });
        RecvResult::Handled
    }

    fn recv_response(&mut self, now: Duration, from: SocketAddr, buf: &[u8]) -> RecvResult {
        let msg: &[u8; RESP_LEN] = match self.handshake_msg(buf, resp::MAC1) {
            Ok(m) => m,
            Err(r) => return self.drop_global(r),
        };
        let index = u32_at(msg, resp::RECEIVER).unwrap_or(0);
        let Some(slot) = self.handshake_slot(index) else {
            return self.drop_global(DropReason::UnknownIndex);
        };
        let sender = u32_at(msg, resp::SENDER).unwrap_or(0);
        if let Err(r) = self.admit(now, from, msg, resp::MAC1, resp::MAC2, sender) {
            return self.drop_global(r);
        }
        let Tunnel { slots, by_index, pending, me, .. } = self;
        let Some(p) = slots.get_mut(slot).and_then(|s| s.peer.as_deref_mut()) else {
            return RecvResult::Dropped(DropReason::UnknownIndex);
        };
        let Some(hs) = p.handshake.as_ref() else {
            return RecvResult::Dropped(DropReason::UnknownIndex);
        };
        let keys = match handshake::consume_response(me, &hs.state, msg) {
            Ok(k) => k,
            Err(r) => {
                p.drops.add(r);
                return RecvResult::Dropped(r);
            }
        };
        // The handshake's index lives on as the session's.
        p.handshake = None;
        p.handshake_started = None;
        let session = Session::new(index, sender, &keys, now, true);
        for old in p.insert(session, true).into_iter().flatten() {
            by_index.remove(&old);
        }
        p.last_handshake = Some(now);
        p.stats.handshakes += 1;
        p.note_authenticated(from);
        if p.queue.is_empty() {
            // Confirms the session to the responder, which waits for a packet on it.
            schedule_keepalive(p, pending);
        } else {
            schedule_flush(p, pending);
        }
        RecvResult::Handled
    }

    fn recv_cookie(&mut self, now: Duration, buf: &[u8]) -> RecvResult {
        let msg: &[u8; COOKIE_LEN] = match exact(buf) {
            Ok(m) => m,
            Err(r) => return self.drop_global(r),
        };
        let index = u32_at(msg, cookie::RECEIVER).unwrap_or(0);
        // A cookie answers our initiation or our response (then the index is a session's).
        let Some(&slot) = self.by_index.get(&index) else {
            return self.drop_global(DropReason::UnknownIndex);
        };
        let Some(p) = self.slots.get_mut(slot as usize).and_then(|s| s.peer.as_deref_mut()) else {
            return self.drop_global(DropReason::UnknownIndex);
        };
        let Some(mac1) = p.last_mac1 else {
            p.drops.add(DropReason::UnknownIndex);
            return RecvResult::Dropped(DropReason::UnknownIndex);
        };
        match handshake::open_cookie(&p.keys, msg, &mac1) {
            Ok(c) => {
                p.cookie = Some((c, now));
                RecvResult::Handled
            }
            Err(r) => {
                p.drops.add(r);
                RecvResult::Dropped(r)
            }
        }
    }

    /// Rate limiting of a handshake message whose mac1 is valid. Under load, a message
    /// without a valid mac2 gets a cookie reply instead.
    fn admit(
        &mut self,
        now: Duration,
        from: SocketAddr,
        msg: &[u8],
        mac1: Range<usize>,
        mac2: Range<usize>,
        sender: u32,
    ) -> Result<(), DropReason> {
        if !self.limiter.under_load(now) {
            if !self.limiter.take_source(now, from.ip()) {
                return Err(DropReason::RateLimited);
            }
            self.limiter.take_global(now);
            return Ok(());
        }
        self.refresh_cookie_secret(now);
        if handshake::mac2_ok(&self.cookie_secret, from, msg, mac2) {
            return if self.limiter.take_source(now, from.ip()) { Ok(()) } else { Err(DropReason::RateLimited) };
        }
        let their_mac1: [u8; MAC_LEN] = array_at(msg, mac1).unwrap_or([0; MAC_LEN]);
        let mut nonce = [0u8; 24];
        self.rng.fill_bytes(&mut nonce);
        let mut bytes = [0u8; MAX_HANDSHAKE_LEN];
        if let Some(out) = bytes.first_chunk_mut::<COOKIE_LEN>() {
            let secret = &self.cookie_secret;
            if handshake::cookie_reply(&self.me, secret, from, sender, &their_mac1, nonce, out) {
                push(&mut self.pending, Pending::Handshake { to: from, len: COOKIE_LEN, bytes });
            }
        }
        Err(DropReason::CookieRequired)
    }

    fn refresh_cookie_secret(&mut self, now: Duration) {
        let stale = self.cookie_secret_born.is_none_or(|b| now.saturating_sub(b) >= COOKIE_SECRET_LIFETIME);
        if stale {
            self.rng.fill_bytes(&mut self.cookie_secret);
            self.cookie_secret_born = Some(now);
        }
    }

    // ---- sending helpers ----

    /// Bookkeeping after sealing a datagram for the peer in `slot`, and the rekey triggers of
    /// the send path: too many packets on the session, or (initiator only) too old.
    fn after_send(&mut self, now: Duration, slot: usize, len: usize, is_data: bool) {
        let t = self.t;
        let Some(p) = self.slots[slot].peer.as_deref_mut() else {
            return;
        };
        p.stats.tx_packets += 1;
        p.stats.tx_bytes += len as u64;
        p.note_sent(now);
        if is_data {
            p.awaiting_reply.get_or_insert(now);
        }
        let rekey = p.send_session(now, t.reject_after_time).is_some_and(|s| {
            s.send_counter >= t.rekey_after_packets || (s.initiator && now.saturating_sub(s.created) >= t.rekey_after_time)
        });
        if rekey {
            self.want_handshake(now, slot);
        }
    }

    /// Starts a handshake unless one is in flight or the peer has just started one.
    fn want_handshake(&mut self, now: Duration, slot: usize) {
        let rekey_timeout = self.t.rekey_timeout;
        let Some(p) = self.slots[slot].peer.as_deref() else {
            return;
        };
        if p.handshake.is_some() || p.fresh_unconfirmed(now, rekey_timeout) {
            return;
        }
        self.send_initiation(now, slot);
    }

    /// Builds a (new or repeated) initiation and queues it. False if the peer has no
    /// endpoint (or the pending queue is full).
    fn send_initiation(&mut self, now: Duration, slot: usize) -> bool {
        let timestamp = self.next_timestamp(now);
        let index = self.new_index();
        let ephemeral = self.new_ephemeral();
        let jitter = Duration::from_millis(u64::from(self.rng.next_u32() % 334));
        let Tunnel { slots, by_index, pending, me, t, .. } = self;
        let Some(p) = slots[slot].peer.as_deref_mut() else {
            return false;
        };
        let Some(to) = p.endpoint else { return false };
        if pending.len() >= MAX_PENDING {
            return false;
        }
        if let Some(old) = p.handshake.take() {
            by_index.remove(&old.state.sender);
        }
        let mut bytes = [0u8; MAX_HANDSHAKE_LEN];
        let Some(msg) = bytes.first_chunk_mut::<INIT_LEN>() else {
            return false;
        };
        let cookie = p.fresh_cookie(now);
        let Some(state) = handshake::initiation(me, &p.keys, ephemeral, index, timestamp, cookie.as_ref(), msg) else {
            return false;
        };
        by_index.insert(index, slot as u32);
        p.last_mac1 = Some(state.mac1);
        p.handshake = Some(Handshake { state, sent_at: now, retry_after: t.rekey_timeout.saturating_add(jitter) });
        p.handshake_started.get_or_insert(now);
        p.note_sent(now);
        push(pending, Pending::Handshake { to, len: INIT_LEN, bytes });
        true
    }

    fn emit_keepalive(&mut self, now: Duration, id: PeerId, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let slot = self.slot_of(id)?;
        let reject = self.t.reject_after_time;
        let p = self.slots[slot].peer.as_deref_mut()?;
        p.keepalive_queued = false;
        let to = p.endpoint?;
        let len = p.send_session(now, reject)?.seal(out, 0)?;
        self.after_send(now, slot, len, false);
        Some((len, to))
    }

    /// Seals the next queued frame of `id`; the bool says whether more remain to flush.
    fn emit_queued(&mut self, now: Duration, id: PeerId, out: &mut [u8]) -> (Option<(usize, SocketAddr)>, bool) {
        let Some(slot) = self.slot_of(id) else {
            return (None, false);
        };
        let reject = self.t.reject_after_time;
        let Tunnel { slots, spare, .. } = self;
        let Some(p) = slots[slot].peer.as_deref_mut() else {
            return (None, false);
        };
        let Some(to) = p.endpoint else {
            return (None, false);
        };
        loop {
            if !p.can_send(now, reject) {
                // Frames stay queued; the handshake that makes a session flushes them.
                return (None, false);
            }
            let Some((net, frame)) = p.queue.pop_front() else {
                return (None, false);
            };
            let fits = frame.len().checked_add(OVERHEAD).is_some_and(|n| n <= out.len());
            if !fits {
                p.drops.add(DropReason::BufferTooSmall);
                recycle(spare, frame);
                continue;
            }
            out[HEADER_LEN..FRAME_OFFSET].copy_from_slice(&net.to_le_bytes());
            out[FRAME_OFFSET..FRAME_OFFSET + frame.len()].copy_from_slice(&frame);
            let sealed = p.send_session(now, reject).and_then(|s| s.seal(out, NET_LEN + frame.len()));
            recycle(spare, frame);
            let more = !p.queue.is_empty();
            match sealed {
                Some(len) => {
                    self.after_send(now, slot, len, true);
                    return (Some((len, to)), more);
                }
                None => p.drops.add(DropReason::BufferTooSmall),
            }
        }
    }

    // ---- timers ----

    fn peer_timers(&mut self, now: Duration, slot: usize) {
        let t = self.t;
        let Tunnel { slots, by_index, .. } = self;
        let Some(p) = slots[slot].peer.as_deref_mut() else {
            return;
        };
        for old in p.expire(now, t.reject_after_time).into_iter().flatten() {
            by_index.remove(&old);
        }

        // Our initiation went unanswered: repeat it, or give up.
        let due = p.handshake.as_ref().is_some_and(|h| now >= h.sent_at.saturating_add(h.retry_after));
        if due {
            let give_up = p.handshake_started.is_some_and(|s| now.saturating_sub(s) >= t.rekey_attempt_time);
            if give_up {
                self.abandon_handshake(slot, DropReason::HandshakeTimeout);
            } else if !self.send_initiation(now, slot) {
                self.abandon_handshake(slot, DropReason::NoEndpoint);
            }
        }

        // We sent data and heard nothing back: the peer may have restarted.
        let Some(p) = self.peer_mut(slot) else { return };
        let quiet_for = t.keepalive_timeout.saturating_add(t.rekey_timeout);
        if p.awaiting_reply.is_some_and(|a| now >= a.saturating_add(quiet_for)) {
            p.awaiting_reply = None;
            if p.handshake.is_none() {
                self.send_initiation(now, slot);
            }
        }

        // We received data and sent nothing back: a keepalive tells the peer we are alive.
        let Tunnel { slots, pending, .. } = self;
        let Some(p) = slots[slot].peer.as_deref_mut() else {
            return;
        };
        if p.keepalive_armed.is_some_and(|a| now >= a.saturating_add(t.keepalive_timeout)) {
            p.keepalive_armed = None;
            if p.can_send(now, t.reject_after_time) {
                schedule_keepalive(p, pending);
            }
        }

        // Persistent keepalive (with no session, a handshake does the job).
        let mut initiate = false;
        if let (Some(k), Some(_)) = (t.keepalive, p.endpoint) {
            if now >= p.last_sent.unwrap_or(Duration::ZERO).saturating_add(k) {
                p.last_sent = Some(now);
                if p.can_send(now, t.reject_after_time) {
                    schedule_keepalive(p, pending);
                } else {
                    initiate = p.handshake.is_none();
                }
            }
        }
        if initiate {
            self.send_initiation(now, slot);
        }

        // Frames wait, and nothing is going to carry them.
        let Some(p) = self.peer_mut(slot) else { return };
        if p.stalled_until(&t).is_some_and(|at| now >= at) && !self.send_initiation(now, slot) {
            let Tunnel { slots, spare, .. } = self;
            if let Some(p) = slots[slot].peer.as_deref_mut() {
                drop_queue(p, spare, DropReason::NoEndpoint);
            }
        }
    }

    fn abandon_handshake(&mut self, slot: usize, why: DropReason) {
        let Tunnel { slots, by_index, spare, .. } = self;
        let Some(p) = slots[slot].peer.as_deref_mut() else {
            return;
        };
        if let Some(h) = p.handshake.take() {
            by_index.remove(&h.state.sender);
        }
        p.handshake_started = None;
        drop_queue(p, spare, why);
    }

    // ---- small helpers ----

    fn peer_mut(&mut self, slot: usize) -> Option<&mut Peer<A>> {
        self.slots.get_mut(slot)?.peer.as_deref_mut()
    }

    fn slot_of(&self, id: PeerId) -> Option<usize> {
        let s = self.slots.get(id.slot as usize)?;
        (s.generation == id.generation && s.peer.is_some()).then_some(id.slot as usize)
    }

    fn id_at(&self, slot: usize) -> PeerId {
        PeerId { slot: slot as u32, generation: self.slots[slot].generation }
    }

    /// The slot of the peer whose initiation in flight has our index `index`.
    fn handshake_slot(&self, index: u32) -> Option<usize> {
        let slot = *self.by_index.get(&index)? as usize;
        let p = self.slots.get(slot)?.peer.as_deref()?;
        (p.handshake.as_ref()?.state.sender == index).then_some(slot)
    }

    fn new_index(&mut self) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    fn new_ephemeral(&mut self) -> StaticSecret {
        let mut b = [0u8; 32];
        self.rng.fill_bytes(&mut b);
        let s = StaticSecret::from(b);
        b.zeroize();
        s
    }

    /// The timestamp of our next initiation: the wall clock, but always above the last one.
    fn next_timestamp(&mut self, now: Duration) -> [u8; 12] {
        let ts = tai64n(self.t.unix_time_at_start.saturating_add(now));
        if ts > self.last_timestamp {
            self.last_timestamp = ts;
        } else {
            increment_be(&mut self.last_timestamp);
        }
        self.last_timestamp
    }

    /// A handshake message of exactly `N` bytes whose mac1 (at `mac1`) is for our key.
    fn handshake_msg<'a, const N: usize>(&self, buf: &'a [u8], mac1: std::ops::Range<usize>) -> Result<&'a [u8; N], DropReason> {
        let msg: &[u8; N] = exact(buf)?;
        if !self.me.mac1_ok(msg, mac1) {
            return Err(DropReason::BadMac);
        }
        Ok(msg)
    }

    fn drop_global(&mut self, r: DropReason) -> RecvResult {
        self.drops.add(r);
        RecvResult::Dropped(r)
    }

    fn drop_send(&mut self, peer: PeerId, r: DropReason) -> SendResult {
        match self.slot_of(peer).and_then(|s| self.slots[s].peer.as_deref_mut()) {
            Some(p) => p.drops.add(r),
            None => self.drops.add(r),
        }
        SendResult::Dropped(r)
    }
}

fn info<A>(p: &Peer<A>) -> PeerInfo {
    PeerInfo {
        id: p.id,
        public_key: p.keys.public,
        endpoint: p.endpoint,
        last_handshake: p.last_handshake,
        handshakes: p.stats.handshakes,
        sessions: p.sessions.iter().flatten().count(),
        queued: p.queue.len(),
        rx_packets: p.stats.rx_packets,
        rx_bytes: p.stats.rx_bytes,
        tx_packets: p.stats.tx_packets,
        tx_bytes: p.stats.tx_bytes,
        drops: p.drops,
    }
}

/// The message as its fixed-size array, or why not.
fn exact<const N: usize>(buf: &[u8]) -> Result<&[u8; N], DropReason> {
    match buf.len().cmp(&N) {
        std::cmp::Ordering::Less => Err(DropReason::TooShort),
        std::cmp::Ordering::Greater => Err(DropReason::BadLength),
        std::cmp::Ordering::Equal => buf.try_into().map_err(|_| DropReason::BadLength),
    }
}

fn push(pending: &mut VecDeque<Pending>, item: Pending) -> bool {
    if pending.len() >= MAX_PENDING {
        return false;
    }
    pending.push_back(item);
    true
}

fn schedule_flush<A>(p: &mut Peer<A>, pending: &mut VecDeque<Pending>) {
    if !p.flush_queued && push(pending, Pending::Flush(p.id)) {
        p.flush_queued = true;
    }
}

fn schedule_keepalive<A>(p: &mut Peer<A>, pending: &mut VecDeque<Pending>) {
    if !p.keepalive_queued && push(pending, Pending::Keepalive(p.id)) {
        p.keepalive_queued = true;
    }
}

fn recycle(spare: &mut Vec<Vec<u8>>, frame: Vec<u8>) {
    if spare.len() < MAX_SPARE {
        spare.push(frame);
    }
}

fn drop_queue<A>(p: &mut Peer<A>, spare: &mut Vec<Vec<u8>>, why: DropReason) {
    while let Some((_, frame)) = p.queue.pop_front() {
        p.drops.add(why);
        recycle(spare, frame);
    }
}
