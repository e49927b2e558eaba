//! tunnel: the I/O-free encrypted tunnel core between vswitch hosts.
//!
//! Each host has a static X25519 key pair; its peers are known by public key and (once known)
//! a UDP endpoint. [`Tunnel`] holds every peer of one host. It takes datagrams, frames and the
//! time as arguments and gives back sealed datagrams, decrypted frames, datagrams to send and
//! deadlines. It owns no socket, reads no clock, draws no entropy of its own (the caller seeds
//! its CSPRNG) and never panics on input bytes; every refused datagram or frame has a typed
//! [`DropReason`] and is counted. See [`Tunnel`] for the calling protocol.
//!
//! # Handshake: WireGuard's construction, not `snow`
//!
//! The key exchange is WireGuard's Noise_IKpsk2 (x25519-dalek, BLAKE2s, HMAC-BLAKE2s HKDF,
//! ChaCha20-Poly1305), byte for byte the whitepaper's messages, with our own Noise prologue so
//! that it is never mistaken for WireGuard. Chosen over `snow`'s Noise IK because:
//! - WireGuard's messages carry what a tunnel over UDP needs besides Noise: sender/receiver
//!   indices (sessions are found in O(1) without trying keys), `mac1` (a cheap BLAKE2s check
//!   that drops messages not made for our public key before any Diffie-Hellman), `mac2` and
//!   cookie replies (a DoS defence under load), and a TAI64N timestamp that makes replayed
//!   initiations useless. With `snow` each of these would be a layer of our own around it.
//! - Fixed-size messages built in stack buffers, no allocation, no `Result` plumbing for
//!   buffer sizes; the whole construction is ~300 lines we can test against an independent
//!   implementation (`tests/kat/handshake.py`, a known-answer test).
//! - The timers (rekey after 120 s or 2^60 messages, reject after 180 s, retry every 5 s for
//!   90 s, keepalive after 10 s) come from a protocol with years of deployment.
//!
//! The pre-shared key of IKpsk2 is zero (no per-peer PSK yet). Crate versions are the
//! chacha20poly1305 0.10 / x25519-dalek 2 / blake2 0.10 line, the long-deployed one, which
//! shares rand_core 0.6 with the workspace's rand 0.8; their 0.11 / 3.0 successors are a new
//! API generation (rand_core 0.10), to move to together with rand.
//!
//! # Data packets
//!
//! `type=4 | 0 0 0 | receiver index u32 | counter u64` (16 bytes, the AEAD's associated data),
//! then ChaCha20-Poly1305 over `network id u32 | Ethernet frame` with the counter as nonce,
//! then the 16-byte tag: [`OVERHEAD`] = 16 + 4 + 16 = 36 bytes. An empty plaintext is a
//! keepalive. Sealing and opening happen in place in the caller's buffer; the AEAD sits behind
//! the [`Aead`] trait ([`RustCryptoChaCha`] by default) so that other backends can be measured
//! with the same tests and bench.
//!
//! # Sessions and rekeying
//!
//! The initiator of a session starts a new handshake when it sends on a session older than
//! `rekey_after_time` (or, on receive, older than `reject_after_time - 15 s`); either side
//! does when it has sealed `rekey_after_packets` on it. Until the new session is up, the old
//! one keeps sending. A peer keeps up to three sessions, sends on the newest *confirmed* one
//! (ours as initiator once the response arrives; the peer's once a data packet arrived on it)
//! and receives on all, so nothing in flight is lost across a rekey, even when both sides
//! initiate at once. Sessions die at `reject_after_time`. Each has a replay window of
//! [`REPLAY_WINDOW`] (8192) counters: a bitmap ring; duplicates are [`DropReason::Replay`],
//! counters behind it [`DropReason::TooOld`]. Frames sent with no session are queued per peer
//! (bounded) and flushed through [`Tunnel::poll_transmit`] once the handshake completes.
//!
//! # Roaming and restarts
//!
//! A peer's endpoint changes only after an authenticated packet from the new address: a data
//! packet that opened and passed the replay window, or a handshake message that verified (an
//! initiation also needs a timestamp newer than the last). A peer that restarts (same key,
//! state lost) initiates with a newer timestamp and is accepted at once; if only we send, our
//! "sent data, heard nothing for keepalive_timeout + rekey_timeout" timer starts a handshake.
//!
//! # Rate limiting
//!
//! Handshake messages with a valid `mac1` pass two GCRA token buckets: per source address
//! (IPv6: per /64; 20/s, burst 5) and overall (1000/s, burst 100). Over the per-source rate:
//! [`DropReason::RateLimited`]. Over the global rate the tunnel is "under load" and does what
//! WireGuard does: a message without a valid `mac2` gets a cookie reply (XChaCha20-Poly1305
//! sealed, bound to the source address and a secret that changes every two minutes) and is
//! dropped as [`DropReason::CookieRequired`]; the initiator's next attempt carries `mac2` made
//! with the cookie, which proves it owns its address, and passes on the per-source bucket alone.
//! Spoofed floods therefore cost one BLAKE2s and one small reply each, never a Diffie-Hellman.
#![forbid(unsafe_code)]

mod aead;
mod config;
mod crypto;
mod drop;
mod handshake;
mod host;
mod peer;
mod ratelimit;
mod replay;
mod session;
mod wire;

pub use aead::{counter_nonce, Aead, AeadError, RingChaCha, RustCryptoChaCha, KEY_LEN, NONCE_LEN, TAG_LEN};
pub use config::{Config, ConfigError};
pub use drop::{DropCounts, DropReason};
pub use host::{PeerError, PeerId, PeerInfo, RecvResult, SendResult, Tunnel};
pub use ratelimit::HandshakeRate;
pub use replay::REPLAY_WINDOW;
pub use session::REJECT_AFTER_MESSAGES;
pub use wire::{FRAME_OFFSET, HEADER_LEN, KEEPALIVE_LEN, MAX_HANDSHAKE_LEN, NET_LEN, OVERHEAD};

/// The public key of a private key (for `vswitchctl key generate`/`key show`).
pub fn public_key(private_key: &[u8; 32]) -> [u8; 32] {
    crypto::public_of(&x25519_dalek::StaticSecret::from(*private_key))
}
