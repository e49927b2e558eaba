//! What the tunnel keeps per peer: keys, endpoint, up to three sessions, the handshake in
//! progress, the frames waiting for it, timer marks and counters.
//!
//! Sessions: a peer holds at most [`MAX_SESSIONS`]. A session we initiated is usable for
//! sending as soon as the response arrives; one we answered is "unconfirmed" until the first
//! data packet arrives on it (the initiator's proof that it has the keys). We always send on
//! the newest confirmed session and receive on any of them, so packets sealed under an older
//! session that are still in flight during a rekey are not lost, and two handshakes that cross
//! (both sides initiate at once) leave both sessions receivable instead of evicting each other.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::MAC_LEN;
use crate::drop::DropCounts;
use crate::handshake::{InitiatorState, PeerKeys};
use crate::host::{PeerId, Timing};
use crate::session::{Session, REJECT_AFTER_MESSAGES};

/// Sessions kept per peer (WireGuard's previous, current and next).
pub(crate) const MAX_SESSIONS: usize = 3;

/// Our initiation in flight.
pub(crate) struct Handshake {
    pub(crate) state: InitiatorState,
    pub(crate) sent_at: Duration,
    /// `rekey_timeout` plus a random jitter of up to a third of a second.
    pub(crate) retry_after: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
    pub(crate) handshakes: u64,
}

pub(crate) struct Peer<A> {
    pub(crate) id: PeerId,
    pub(crate) keys: PeerKeys,
    pub(crate) endpoint: Option<SocketAddr>,
    /// Sessions, in no particular order; `seq` orders them by age.
    pub(crate) sessions: [Option<PeerSession<A>>; MAX_SESSIONS],
    /// Index into `sessions` of the newest confirmed session.
    pub(crate) send: Option<usize>,
    next_seq: u64,
    recv_seq: u64,
    pub(crate) handshake: Option<Handshake>,
    /// When the current series of handshake attempts began (for `rekey_attempt_time`).
    pub(crate) handshake_started: Option<Duration>,
    /// The newest initiation timestamp accepted from this peer.
    pub(crate) last_timestamp: [u8; 12],
    /// A cookie the peer handed us, and when.
    pub(crate) cookie: Option<([u8; MAC_LEN], Duration)>,
    /// `mac1` of the last handshake message we sent it (a cookie reply is bound to it).
    pub(crate) last_mac1: Option<[u8; MAC_LEN]>,
    /// Frames waiting for a session: (network id, frame).
    pub(crate) queue: VecDeque<(u32, Vec<u8>)>,
    pub(crate) flush_queued: bool,
    pub(crate) keepalive_queued: bool,
    /// Last time anything (data, keepalive, handshake) was sent to it.
    pub(crate) last_sent: Option<Duration>,
    /// First data packet sent since the last authenticated packet received: if nothing comes
    /// back within keepalive_timeout + rekey_timeout, a new handshake starts.
    pub(crate) awaiting_reply: Option<Duration>,
    /// First data packet received since we last sent anything: if we send nothing within
    /// keepalive_timeout, a keepalive goes out.
    pub(crate) keepalive_armed: Option<Duration>,
    pub(crate) last_handshake: Option<Duration>,
    pub(crate) stats: Stats,
    pub(crate) drops: DropCounts,
}

pub(crate) struct PeerSession<A> {
    pub(crate) session: Session<A>,
    pub(crate) confirmed: bool,
    /// Creation order.
    seq: u64,
    /// Order of the last packet received on it (0: none yet).
    last_recv: u64,
}

impl<A> Peer<A> {
    pub(crate) fn new(id: PeerId, keys: PeerKeys, endpoint: Option<SocketAddr>) -> Self {
        Peer {
            id,
            keys,
            endpoint,
            sessions: [None, None, None],
            send: None,
            next_seq: 0,
            recv_seq: 0,
            handshake: None,
            handshake_started: None,
            last_timestamp: [0; 12],
            cookie: None,
            last_mac1: None,
            queue: VecDeque::new(),
            flush_queued: false,
            keepalive_queued: false,
            last_sent: None,
            awaiting_reply: None,
            keepalive_armed: None,
            last_handshake: None,
            stats: Stats::default(),
            drops: DropCounts::default(),
        }
    }

    /// The session to seal with, if it may still send at `now`.
    pub(crate) fn send_session(&mut self, now: Duration, reject_after_time: Duration) -> Option<&mut Session<A>> {
        let i = self.send?;
        let s = &mut self.sessions[i].as_mut()?.session;
        s.can_send(now, reject_after_time).then_some(s)
    }

    pub(crate) fn can_send(&self, now: Duration, reject_after_time: Duration) -> bool {
        self.send.and_then(|i| self.sessions[i].as_ref()).is_some_and(|s| s.session.can_send(now, reject_after_time))
    }

    /// Where the session with our index `local` sits.
    pub(crate) fn session_index(&self, local: u32) -> Option<usize> {
        self.sessions.iter().position(|s| s.as_ref().is_some_and(|s| s.session.local == local))
    }

    /// Adds a session; returns the local indices of sessions pushed out (an unconfirmed one
    /// that a new responder session replaces, else the oldest when all slots are taken).
    pub(crate) fn insert(&mut self, session: Session<A>, confirmed: bool) -> [Option<u32>; 2] {
        let mut retired = [None, None];
        if !confirmed {
            // At most one unconfirmed session: a newer initiation supersedes an older one.
            if let Some(i) = self.sessions.iter().position(|s| s.as_ref().is_some_and(|s| !s.confirmed)) {
                retired[0] = self.sessions[i].take().map(|s| s.session.local);
            }
        }
        let slot = match self.sessions.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                let victim = self.victim(confirmed);
                retired[1] = self.sessions[victim].take().map(|s| s.session.local);
                victim
            }
        };
        let seq = self.next_seq;
        self.sessions[slot] = Some(PeerSession { session, confirmed, seq, last_recv: 0 });
        self.next_seq += 1;
        self.pick_send();
        retired
    }

    /// Marks the session at `i` confirmed; true if it was not.
    pub(crate) fn confirm(&mut self, i: usize) -> bool {
        let Some(s) = self.sessions[i].as_mut() else {
            return false;
        };
        if s.confirmed {
            return false;
        }
        s.confirmed = true;
        self.pick_send();
        true
    }

    /// Removes sessions at or past `reject_after_time`; returns their local indices.
    pub(crate) fn expire(&mut self, now: Duration, reject_after_time: Duration) -> [Option<u32>; MAX_SESSIONS] {
        let mut out = [None; MAX_SESSIONS];
        for (slot, o) in self.sessions.iter_mut().zip(out.iter_mut()) {
            if slot.as_ref().is_some_and(|s| !s.session.alive(now, reject_after_time)) {
                *o = slot.take().map(|s| s.session.local);
            }
        }
        self.pick_send();
        out
    }

    /// All local indices in use (sessions and the handshake).
    pub(crate) fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.sessions.iter().flatten().map(|s| s.session.local).chain(self.handshake.as_ref().map(|h| h.state.sender))
    }

    /// The newest unconfirmed session, if younger than `rekey_timeout`: the peer just
    /// initiated, so starting our own handshake would only cross it.
    pub(crate) fn fresh_unconfirmed(&self, now: Duration, rekey_timeout: Duration) -> bool {
        self.sessions.iter().flatten().any(|s| !s.confirmed && now.saturating_sub(s.session.created) < rekey_timeout)
    }

    /// The cookie to put in `mac2`, if the peer gave us one recently enough.
    pub(crate) fn fresh_cookie(&self, now: Duration) -> Option<[u8; MAC_LEN]> {
        const COOKIE_LIFETIME: Duration = Duration::from_secs(120 - 5);
        self.cookie.filter(|(_, at)| now.saturating_sub(*at) < COOKIE_LIFETIME).map(|(c, _)| c)
    }

    pub(crate) fn note_sent(&mut self, now: Duration) {
        self.last_sent = Some(now);
        self.keepalive_armed = None;
    }

    /// An authenticated packet arrived from `from`: the peer is alive, and that is where it
    /// is now (roaming is only ever learned here).
    pub(crate) fn note_authenticated(&mut self, from: SocketAddr) {
        self.awaiting_reply = None;
        self.endpoint = Some(from);
    }

    /// The earliest time [`crate::Tunnel::handle_timeout`] has something to do for this peer.
    /// Every action taken there moves its own deadline past `now`, so a caller that sleeps
    /// until this deadline never spins.
    pub(crate) fn deadline(&self, t: &Timing) -> Option<Duration> {
        let mut d: Option<Duration> = None;
        let mut at = |x: Duration| d = Some(d.map_or(x, |d| d.min(x)));
        for s in self.sessions.iter().flatten() {
            at(s.session.created.saturating_add(t.reject_after_time));
        }
        if let Some(h) = &self.handshake {
            at(h.sent_at.saturating_add(h.retry_after));
        }
        if let Some(a) = self.awaiting_reply {
            at(a.saturating_add(t.keepalive_timeout).saturating_add(t.rekey_timeout));
        }
        if let Some(a) = self.keepalive_armed {
            at(a.saturating_add(t.keepalive_timeout));
        }
        if let (Some(k), Some(_)) = (t.keepalive, self.endpoint) {
            at(self.last_sent.unwrap_or(Duration::ZERO).saturating_add(k));
        }
        if let Some(s) = self.stalled_until(t) {
            at(s);
        }
        d
    }

    /// Frames are queued, no handshake is in flight and no session can carry them (expiry of
    /// a session by age is a deadline of its own): when to start a handshake for them. Right
    /// away, unless the peer just initiated (then give its handshake `rekey_timeout`).
    pub(crate) fn stalled_until(&self, t: &Timing) -> Option<Duration> {
        let sendable = self.send.and_then(|i| self.sessions[i].as_ref()).is_some_and(|s| s.session.send_counter < REJECT_AFTER_MESSAGES);
        if self.queue.is_empty() || self.handshake.is_some() || sendable {
            return None;
        }
        let wait = self.sessions.iter().flatten().filter(|s| !s.confirmed).map(|s| s.session.created.saturating_add(t.rekey_timeout)).max();
        Some(wait.unwrap_or(Duration::ZERO))
    }

    /// Records that an authentic packet arrived on the session at `i`.
    pub(crate) fn mark_received(&mut self, i: usize) {
        self.recv_seq += 1;
        if let Some(s) = self.sessions[i].as_mut() {
            s.last_recv = self.recv_seq;
        }
    }

    /// The session to push out when all slots are taken and a new one comes in. Kept: the
    /// one we will send on (the new one if it is confirmed, else the current one), the one
    /// the peer last sent on (it may still be sending on it: packets in flight, crossing
    /// handshakes) and the unconfirmed one (the peer sends on it once our response arrives).
    /// That leaves at least one of three (there is at most one unconfirmed session); of
    /// those, the one the peer sent on least recently goes (then the oldest): a session only
    /// we sent on (our previous initiation, once we moved to a newer one) is dead weight,
    /// while the peer's previous session may still have packets in flight.
    fn victim(&self, new_is_confirmed: bool) -> usize {
        let last_received = (0..MAX_SESSIONS)
            .filter_map(|i| {
                let s = self.sessions[i].as_ref()?;
                (s.last_recv > 0).then_some((s.last_recv, i))
            })
            .max()
            .map(|(_, i)| i);
        let keep = |i: usize, s: &PeerSession<A>| !s.confirmed || Some(i) == last_received || (!new_is_confirmed && Some(i) == self.send);
        let oldest = |only_evictable: bool| {
            (0..MAX_SESSIONS)
                .filter_map(|i| {
                    let s = self.sessions[i].as_ref()?;
                    (!only_evictable || !keep(i, s)).then_some(((s.last_recv, s.seq), i))
                })
                .min()
                .map(|(_, i)| i)
        };
        oldest(true).or_else(|| oldest(false)).unwrap_or(0)
    }

    fn pick_send(&mut self) {
        self.send =
            (0..MAX_SESSIONS).filter_map(|i| self.sessions[i].as_ref().filter(|s| s.confirmed).map(|s| (s.seq, i))).max().map(|(_, i)| i);
    }
}
