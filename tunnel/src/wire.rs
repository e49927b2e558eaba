//! Message layouts (WireGuard's, little endian). Every message starts with a type byte and
//! three reserved zero bytes.
//!
//! ```text
//! initiation (148)  type=1 | 0 0 0 | sender u32 | ephemeral 32 | static 32+16 | timestamp 12+16 | mac1 16 | mac2 16
//! response    (92)  type=2 | 0 0 0 | sender u32 | receiver u32 | ephemeral 32 | empty 0+16 | mac1 16 | mac2 16
//! cookie      (64)  type=3 | 0 0 0 | receiver u32 | nonce 24 | cookie 16+16
//! data    (32 + n)  type=4 | 0 0 0 | receiver u32 | counter u64 || sealed(plaintext) | tag 16
//!                   plaintext = empty (keepalive) | network id u32 | Ethernet frame
//! ```
//!
//! The 16-byte data header is the AEAD's associated data; the nonce is the counter.

use std::ops::Range;

pub(crate) const MSG_INITIATION: u8 = 1;
pub(crate) const MSG_RESPONSE: u8 = 2;
pub(crate) const MSG_COOKIE: u8 = 3;
pub(crate) const MSG_DATA: u8 = 4;

/// Type byte and the three reserved bytes.
pub(crate) const PREFIX_LEN: usize = 4;

pub(crate) const INIT_LEN: usize = 148;
pub(crate) mod init {
    use super::Range;
    pub(crate) const SENDER: Range<usize> = 4..8;
    pub(crate) const EPHEMERAL: Range<usize> = 8..40;
    pub(crate) const STATIC: Range<usize> = 40..72;
    pub(crate) const STATIC_TAG: Range<usize> = 72..88;
    pub(crate) const TIMESTAMP: Range<usize> = 88..100;
    pub(crate) const TIMESTAMP_TAG: Range<usize> = 100..116;
    pub(crate) const MAC1: Range<usize> = 116..132;
    pub(crate) const MAC2: Range<usize> = 132..148;
}

pub(crate) const RESP_LEN: usize = 92;
pub(crate) mod resp {
    use super::Range;
    pub(crate) const SENDER: Range<usize> = 4..8;
    pub(crate) const RECEIVER: Range<usize> = 8..12;
    pub(crate) const EPHEMERAL: Range<usize> = 12..44;
    pub(crate) const EMPTY_TAG: Range<usize> = 44..60;
    pub(crate) const MAC1: Range<usize> = 60..76;
    pub(crate) const MAC2: Range<usize> = 76..92;
}

pub(crate) const COOKIE_LEN: usize = 64;
pub(crate) mod cookie {
    use super::Range;
    pub(crate) const RECEIVER: Range<usize> = 4..8;
    pub(crate) const NONCE: Range<usize> = 8..32;
    pub(crate) const COOKIE: Range<usize> = 32..48;
    pub(crate) const TAG: Range<usize> = 48..64;
}

/// Data header: type, reserved, receiver index, counter.
pub const HEADER_LEN: usize = 16;
pub(crate) mod data {
    use super::Range;
    pub(crate) const RECEIVER: Range<usize> = 4..8;
    pub(crate) const COUNTER: Range<usize> = 8..16;
}
/// The network id at the start of a data packet's plaintext.
pub const NET_LEN: usize = 4;
/// Where the Ethernet frame starts in a data datagram (after the header and the network id):
/// the headroom [`crate::Tunnel::send_in_place`] expects.
pub const FRAME_OFFSET: usize = HEADER_LEN + NET_LEN;
/// Bytes a data datagram adds to the Ethernet frame it carries: the 16-byte header, the 4-byte
/// network id and the 16-byte tag, 36 in all. The UDP and IP headers of the underlay come on
/// top (8 + 20 for IPv4, 8 + 40 for IPv6), so a container MTU over a 1500-byte underlay is
/// `1500 - 28 - 36 - 14` (Ethernet header of the inner frame) = 1422 over IPv4.
pub const OVERHEAD: usize = HEADER_LEN + NET_LEN + crate::aead::TAG_LEN;
/// A keepalive: a data packet with an empty plaintext.
pub const KEEPALIVE_LEN: usize = HEADER_LEN + crate::aead::TAG_LEN;
/// The largest non-data datagram the tunnel emits (a handshake initiation): a buffer passed to
/// [`crate::Tunnel::poll_transmit`] needs at least this, and `frame + OVERHEAD` for queued frames.
pub const MAX_HANDSHAKE_LEN: usize = INIT_LEN;

pub(crate) fn u32_at(buf: &[u8], r: Range<usize>) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(r)?.try_into().ok()?))
}

pub(crate) fn u64_at(buf: &[u8], r: Range<usize>) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(r)?.try_into().ok()?))
}

pub(crate) fn array_at<const N: usize>(buf: &[u8], r: Range<usize>) -> Option<[u8; N]> {
    buf.get(r)?.try_into().ok()
}
