//! Configuration of a [`crate::Tunnel`].

use std::fmt;
use std::time::Duration;

use crate::ratelimit::HandshakeRate;
use crate::session::REJECT_AFTER_MESSAGES;

/// Keys, timers and limits of one host's tunnel. [`Config::new`] gives WireGuard's timers.
#[derive(Clone)]
pub struct Config {
    /// Our static X25519 private key (any 32 bytes; clamped as X25519 does).
    pub private_key: [u8; 32],
    /// The UNIX time at which `now` was zero. Used only to timestamp handshake initiations,
    /// which must grow across restarts (a peer rejects an initiation not newer than the last
    /// one it accepted from us: that is what stops replayed initiations). The daemon passes
    /// `SystemTime::now()` since `UNIX_EPOCH` when it starts its monotonic clock.
    pub unix_time_at_start: Duration,
    /// The initiator of a session starts a new handshake when it sends on a session this old
    /// (WireGuard: 120 s).
    pub rekey_after_time: Duration,
    /// A session this old is neither used nor accepted (WireGuard: 180 s).
    pub reject_after_time: Duration,
    /// Either side starts a new handshake after sealing this many packets on one session
    /// (WireGuard: 2^60; small values are for tests). The hard limit, at which a session stops
    /// sending, is [`REJECT_AFTER_MESSAGES`].
    pub rekey_after_packets: u64,
    /// An unanswered initiation is sent again after this (plus up to 333 ms of jitter)
    /// (WireGuard: 5 s).
    pub rekey_timeout: Duration,
    /// Attempts stop after this, and the frames waiting for the handshake are dropped
    /// ([`crate::DropReason::HandshakeTimeout`]) (WireGuard: 90 s).
    pub rekey_attempt_time: Duration,
    /// After receiving data, a keepalive goes back if we sent nothing for this long; after
    /// sending data, a new handshake starts if nothing came back for this plus `rekey_timeout`
    /// (WireGuard: 10 s).
    pub keepalive_timeout: Duration,
    /// Persistent keepalive: send something at least this often, to keep NAT mappings open.
    pub keepalive: Option<Duration>,
    /// Frames held per peer while its handshake runs.
    pub queue_len: usize,
    /// Handshake rate limits.
    pub handshake_rate: HandshakeRate,
}

impl Config {
    /// WireGuard's timers, no persistent keepalive, 64 queued frames per peer, default rates.
    pub fn new(private_key: [u8; 32], unix_time_at_start: Duration) -> Config {
        Config {
            private_key,
            unix_time_at_start,
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_after_packets: 1 << 60,
            rekey_timeout: Duration::from_secs(5),
            rekey_attempt_time: Duration::from_secs(90),
            keepalive_timeout: Duration::from_secs(10),
            keepalive: None,
            queue_len: 64,
            handshake_rate: HandshakeRate::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.reject_after_time <= self.rekey_after_time {
            return Err(ConfigError::RejectBeforeRekey);
        }
        if self.rekey_timeout.is_zero() || self.keepalive_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if self.keepalive.is_some_and(|k| k.is_zero()) {
            return Err(ConfigError::ZeroKeepalive);
        }
        if self.rekey_after_packets == 0 || self.rekey_after_packets >= REJECT_AFTER_MESSAGES {
            return Err(ConfigError::RekeyAfterPackets);
        }
        let r = &self.handshake_rate;
        if r.per_source == 0 || r.per_source_burst == 0 || r.global == 0 || r.global_burst == 0 {
            return Err(ConfigError::ZeroRate);
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("private_key", &"<redacted>")
            .field("unix_time_at_start", &self.unix_time_at_start)
            .field("rekey_after_time", &self.rekey_after_time)
            .field("reject_after_time", &self.reject_after_time)
            .field("rekey_after_packets", &self.rekey_after_packets)
            .field("rekey_timeout", &self.rekey_timeout)
            .field("rekey_attempt_time", &self.rekey_attempt_time)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("keepalive", &self.keepalive)
            .field("queue_len", &self.queue_len)
            .field("handshake_rate", &self.handshake_rate)
            .finish()
    }
}

/// A [`Config`] the tunnel cannot run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reject_after_time must be longer than rekey_after_time, or sessions stop before they are renewed")]
    RejectBeforeRekey,
    #[error("rekey_timeout and keepalive_timeout must be positive")]
    ZeroTimeout,
    #[error("a persistent keepalive interval must be positive; use None to turn it off")]
    ZeroKeepalive,
    #[error("rekey_after_packets must be at least 1 and below 2^64 - 2^13 - 1")]
    RekeyAfterPackets,
    #[error("handshake rates and bursts must be at least 1 per second")]
    ZeroRate,
}
