//! The primitives of WireGuard's Noise construction: BLAKE2s as HASH, HMAC-BLAKE2s and the
//! HKDF built on it, keyed BLAKE2s-128 as MAC, X25519 with the all-zero check, TAI64N.

use std::net::SocketAddr;
use std::time::Duration;

use blake2::digest::consts::U16;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

pub(crate) const HASH_LEN: usize = 32;
pub(crate) const MAC_LEN: usize = 16;
const BLOCK_LEN: usize = 64;

/// BLAKE2s-256 over the concatenation of `parts`.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2s (RFC 2104 with a 64-byte block) with a 32-byte key.
pub(crate) fn hmac(key: &[u8; HASH_LEN], parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut ipad = [0x36u8; BLOCK_LEN];
    let mut opad = [0x5cu8; BLOCK_LEN];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner = Blake2s256::new();
    Digest::update(&mut inner, ipad);
    for p in parts {
        Digest::update(&mut inner, p);
    }
    let mut inner: [u8; HASH_LEN] = inner.finalize().into();
    let mut outer = Blake2s256::new();
    Digest::update(&mut outer, opad);
    Digest::update(&mut outer, inner);
    ipad.zeroize();
    opad.zeroize();
    inner.zeroize();
    outer.finalize().into()
}

/// HKDF with one output: WireGuard's KDF1.
pub(crate) fn kdf1(ck: &[u8; HASH_LEN], input: &[u8]) -> [u8; HASH_LEN] {
    let mut t0 = hmac(ck, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    t0.zeroize();
    t1
}

/// HKDF with two outputs: WireGuard's KDF2.
pub(crate) fn kdf2(ck: &[u8; HASH_LEN], input: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let mut t0 = hmac(ck, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    let t2 = hmac(&t0, &[&t1, &[2]]);
    t0.zeroize();
    (t1, t2)
}

/// HKDF with three outputs: WireGuard's KDF3.
pub(crate) fn kdf3(ck: &[u8; HASH_LEN], input: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN], [u8; HASH_LEN]) {
    let mut t0 = hmac(ck, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    let t2 = hmac(&t0, &[&t1, &[2]]);
    let t3 = hmac(&t0, &[&t2, &[3]]);
    t0.zeroize();
    (t1, t2, t3)
}

/// Keyed BLAKE2s with a 16-byte output. Keys here are 16 or 32 bytes, which BLAKE2s always
/// accepts; a longer key (a bug) yields a MAC that matches nothing real.
pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    debug_assert!(key.len() <= 32);
    let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) else {
        return [0xff; MAC_LEN];
    };
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize().into_bytes().into()
}

/// X25519; `None` when the result is all zeros (the other key is a low-order point).
pub(crate) fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    shared.was_contributory().then(|| shared.to_bytes())
}

pub(crate) fn public_of(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

/// Constant-time equality of two byte strings of the same length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// TAI64N of a UNIX time: 8 bytes of seconds (2^62 + 10 + UNIX seconds), 4 of nanoseconds,
/// big endian, so that byte order is time order.
pub(crate) fn tai64n(unix: Duration) -> [u8; 12] {
    let mut t = [0u8; 12];
    let secs = 0x4000_0000_0000_000a_u64.saturating_add(unix.as_secs());
    t[..8].copy_from_slice(&secs.to_be_bytes());
    t[8..].copy_from_slice(&unix.subsec_nanos().to_be_bytes());
    t
}

/// Adds one to a big-endian integer (wrapping at all ones, which a TAI64N never reaches).
pub(crate) fn increment_be(bytes: &mut [u8]) {
    for b in bytes.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            return;
        }
    }
}

/// The bytes a cookie is bound to: the source IP address and port.
pub(crate) fn addr_bytes(addr: SocketAddr) -> ([u8; 18], usize) {
    let mut b = [0u8; 18];
    let n = match addr {
        SocketAddr::V4(a) => {
            b[..4].copy_from_slice(&a.ip().octets());
            4
        }
        SocketAddr::V6(a) => {
            b[..16].copy_from_slice(&a.ip().octets());
            16
        }
    };
    b[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    (b, n + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn blake2s_abc() {
        // RFC 7693 appendix B.
        assert_eq!(hex(&hash(&[b"a", b"bc"])), "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");
    }

    #[test]
    fn hmac_and_mac_match_python() {
        // hmac.new(bytes(range(32)), b"vswitch", hashlib.blake2s).hexdigest()
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(hex(&hmac(&key, &[b"vs", b"witch"])), "5a2f14c8fe19a447a1059b225257e36fbdc7c93d492d318e515e9387d0b78f3c");
        // hashlib.blake2s(b"vswitch", key=bytes(range(16)), digest_size=16).hexdigest()
        assert_eq!(hex(&mac(&key[..16], &[b"vswitch"])), "026dd0518e4c6a44af0c89b85eeb7c6a");
    }

    #[test]
    fn tai64n_orders_like_time() {
        let a = tai64n(Duration::new(1_700_000_000, 999_999_999));
        let b = tai64n(Duration::new(1_700_000_001, 0));
        assert!(a < b);
        let mut c = a;
        increment_be(&mut c);
        assert!(a < c);
        assert_eq!(&a[..8], &c[..8]);
        let mut top = [0xffu8, 0xff];
        increment_be(&mut top);
        assert_eq!(top, [0, 0]);
    }

    #[test]
    fn low_order_point_is_refused() {
        let s = StaticSecret::from([9u8; 32]);
        assert!(dh(&s, &[0u8; 32]).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(dh(&s, &one).is_none());
        assert!(dh(&s, &public_of(&StaticSecret::from([3u8; 32]))).is_some());
    }

    #[test]
    fn addr_bytes_layout() {
        let (b, n) = addr_bytes("10.0.0.1:51820".parse().unwrap());
        assert_eq!(&b[..n], &[10, 0, 0, 1, 0xca, 0x6c]);
        let (_, n) = addr_bytes("[fd00::1]:1".parse().unwrap());
        assert_eq!(n, 18);
    }
}
