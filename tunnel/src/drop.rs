//! Why a datagram or a frame was dropped, and counters per reason.

use std::fmt;

/// Why the tunnel dropped a received datagram or a frame it was asked to send. Every drop has
/// exactly one reason and is counted once: on the peer it belongs to when the packet could be
/// tied to a peer ([`crate::PeerInfo::drops`]), else on the tunnel ([`crate::Tunnel::drops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than the fixed part of its message type (or than 4 bytes).
    TooShort,
    /// A handshake message longer than its fixed size.
    BadLength,
    /// The type byte is not one we know, or the three reserved bytes are not zero.
    UnknownType,
    /// A handshake message whose `mac1` is wrong: it was not made for our public key.
    BadMac,
    /// Handshake messages from this source address (IPv6: its /64) exceed the per-source rate.
    RateLimited,
    /// Handshakes arrive faster than the global rate and this one had no valid `mac2`: a cookie
    /// reply went back instead (WireGuard's DoS defence), the sender retries with the cookie.
    CookieRequired,
    /// A handshake from a static key that is not a peer, or a send to a removed [`crate::PeerId`].
    UnknownPeer,
    /// A Diffie-Hellman result of all zeros (a low-order point): refused.
    WeakKey,
    /// A handshake initiation whose timestamp is not newer than the last one from that peer: a
    /// replayed initiation.
    StaleTimestamp,
    /// The receiver index matches no session (or, for a response or cookie, no handshake in
    /// progress): a packet for a session that ended, or garbage.
    UnknownIndex,
    /// The AEAD tag does not match: forged, corrupted or sealed under another key.
    AuthFailed,
    /// The counter was already received on this session.
    Replay,
    /// The counter is behind the replay window ([`crate::REPLAY_WINDOW`] packets).
    TooOld,
    /// The session this packet belongs to is past `reject_after_time` or its message limit.
    StaleSession,
    /// Authenticated, but the plaintext is 1 to 3 bytes: neither a keepalive nor a network id.
    Malformed,
    /// Send: the peer has no endpoint yet (it becomes known from the peer's first packet).
    NoEndpoint,
    /// Send: the output buffer cannot hold the frame plus [`crate::OVERHEAD`].
    BufferTooSmall,
    /// Send: no session yet and the peer's queue of frames waiting for the handshake is full.
    QueueFull,
    /// A queued frame was dropped because the handshake did not complete within
    /// `rekey_attempt_time`.
    HandshakeTimeout,
}

impl DropReason {
    /// Every reason, in the order of [`DropCounts`].
    pub const ALL: [DropReason; 19] = [
        DropReason::TooShort,
        DropReason::BadLength,
        DropReason::UnknownType,
        DropReason::BadMac,
        DropReason::RateLimited,
        DropReason::CookieRequired,
        DropReason::UnknownPeer,
        DropReason::WeakKey,
        DropReason::StaleTimestamp,
        DropReason::UnknownIndex,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::TooOld,
        DropReason::StaleSession,
        DropReason::Malformed,
        DropReason::NoEndpoint,
        DropReason::BufferTooSmall,
        DropReason::QueueFull,
        DropReason::HandshakeTimeout,
    ];

    /// A stable snake_case name, for counters and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadLength => "bad_length",
            DropReason::UnknownType => "unknown_type",
            DropReason::BadMac => "bad_mac",
            DropReason::RateLimited => "rate_limited",
            DropReason::CookieRequired => "cookie_required",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::WeakKey => "weak_key",
            DropReason::StaleTimestamp => "stale_timestamp",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::TooOld => "too_old",
            DropReason::StaleSession => "stale_session",
            DropReason::Malformed => "malformed",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::QueueFull => "queue_full",
            DropReason::HandshakeTimeout => "handshake_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A counter per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// How many drops had this reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The reasons with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).filter(|&(_, n)| n > 0)
    }

    pub(crate) fn add(&mut self, reason: DropReason) {
        let c = &mut self.0[reason.index()];
        *c = c.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_names_are_unique() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn counts() {
        let mut c = DropCounts::default();
        c.add(DropReason::Replay);
        c.add(DropReason::Replay);
        c.add(DropReason::TooOld);
        assert_eq!(c.get(DropReason::Replay), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.iter().collect::<Vec<_>>(), [(DropReason::Replay, 2), (DropReason::TooOld, 1)]);
    }
}
