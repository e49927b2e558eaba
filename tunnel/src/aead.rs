//! The AEAD behind every data packet, as a small trait so that another backend (ring, an
//! AVX2/AVX-512 build, a batch API) can be measured against the RustCrypto one with the same
//! tests (RFC 8439 vectors) and the same bench (`benches/seal_open.rs`).

use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag};

/// Length of an AEAD key.
pub const KEY_LEN: usize = 32;
/// Length of an AEAD nonce (RFC 8439: 96 bits).
pub const NONCE_LEN: usize = 12;
/// Length of the authentication tag appended to every sealed message.
pub const TAG_LEN: usize = 16;

/// Sealing failed (the only cause is a message longer than the cipher allows, 256 GiB for
/// ChaCha20-Poly1305) or opening failed (wrong key, nonce, associated data, ciphertext or tag:
/// an AEAD does not say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("AEAD seal or open failed")]
pub struct AeadError;

/// An AEAD with 256-bit keys, 96-bit nonces and 128-bit tags (the shape of
/// ChaCha20-Poly1305, RFC 8439), working in place on caller-owned bytes.
///
/// Implementations must not allocate: the data path calls these once per packet.
pub trait Aead {
    /// Expands `key` into whatever the cipher keeps per key.
    fn new(key: &[u8; KEY_LEN]) -> Self
    where
        Self: Sized;

    /// Encrypts `buf` in place and returns the tag over `aad` and the ciphertext.
    ///
    /// # Errors
    /// [`AeadError`] if `buf` is longer than the cipher can seal under one nonce.
    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError>;

    /// Checks `tag` against `aad` and the ciphertext in `buf`, then decrypts `buf` in place.
    ///
    /// # Errors
    /// [`AeadError`] if the tag does not match; `buf` then holds no plaintext (RustCrypto
    /// leaves the ciphertext, ring zeroes it) and the caller drops the packet.
    fn open_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError>;
}

/// The nonce of the packet with this counter: 32 zero bits, then the counter in little endian
/// (WireGuard's layout).
pub fn counter_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// ChaCha20-Poly1305 from the RustCrypto `chacha20poly1305` crate (portable code with runtime
/// SSE2/AVX2 detection). The key is wiped when this is dropped.
#[derive(Clone)]
pub struct RustCryptoChaCha(chacha20poly1305::ChaCha20Poly1305);

impl fmt::Debug for RustCryptoChaCha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RustCryptoChaCha(<key>)")
    }
}

impl Aead for RustCryptoChaCha {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        RustCryptoChaCha(chacha20poly1305::ChaCha20Poly1305::new(key.into()))
    }

    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        self.0.encrypt_in_place_detached(nonce.into(), aad, buf).map(Into::into).map_err(|_| AeadError)
    }

    fn open_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        self.0.decrypt_in_place_detached(nonce.into(), aad, buf, Tag::from_slice(tag)).map_err(|_| AeadError)
    }
}

/// ChaCha20-Poly1305 from `ring` (BoringSSL's assembly: AVX2 ChaCha20 and a vectorized
/// Poly1305, picked at run time). Same cipher, same bytes on the wire as [`RustCryptoChaCha`];
/// measured faster on tunnel-sized packets (`cargo bench -p tunnel --bench seal_open`, see
/// benches/RESULTS.md), so it is what vswitchd uses. ring wipes nothing on drop; the key
/// schedule of ChaCha20 is the key itself.
pub struct RingChaCha(ring::aead::LessSafeKey);

impl fmt::Debug for RingChaCha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingChaCha(<key>)")
    }
}

impl Aead for RingChaCha {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        // Only a key of the wrong length is refused, and KEY_LEN is ChaCha20's.
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key"));
        RingChaCha(ring::aead::LessSafeKey::new(unbound))
    }

    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = self.0.seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), buf).map_err(|_| AeadError)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        self.0
            .open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), ring::aead::Tag::from(*tag), buf, 0..)
            .map(|_| ())
            .map_err(|_| AeadError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Key, nonce, associated data, plaintext, ciphertext, tag.
    type Vector = ([u8; 32], [u8; 12], Vec<u8>, Vec<u8>, Vec<u8>, [u8; 16]);

    /// RFC 8439 section 2.8.2: the "sunscreen" AEAD example.
    fn rfc8439_2_8_2() -> Vector {
        let key: [u8; 32] = unhex(
            "80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
             90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f",
        )
        .try_into()
        .unwrap();
        let nonce: [u8; 12] = unhex("07 00 00 00 40 41 42 43 44 45 46 47").try_into().unwrap();
        let aad = unhex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one \
tip for the future, sunscreen would be it."
            .to_vec();
        let ciphertext = unhex(
            "d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2
             a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6
             3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b
             1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36
             92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58
             fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc
             3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b
             61 16",
        );
        let tag: [u8; 16] = unhex("1a e1 0b 59 4f 09 e2 6a 7e 90 2e cb d0 60 06 91").try_into().unwrap();
        (key, nonce, aad, plaintext, ciphertext, tag)
    }

    fn seal_open_vector<A: Aead>() {
        let (key, nonce, aad, plaintext, ciphertext, tag) = rfc8439_2_8_2();
        let aead = A::new(&key);
        let mut buf = plaintext.clone();
        let got = aead.seal_in_place(&nonce, &aad, &mut buf).unwrap();
        assert_eq!(buf, ciphertext);
        assert_eq!(got, tag);
        aead.open_in_place(&nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plaintext);
    }

    fn rejects_tampering<A: Aead>() {
        let (key, nonce, aad, _, ciphertext, tag) = rfc8439_2_8_2();
        let aead = A::new(&key);
        // A flipped bit in the ciphertext, the tag, the aad or the nonce, or another key.
        let mut ct = ciphertext.clone();
        ct[17] ^= 0x04;
        assert_eq!(aead.open_in_place(&nonce, &aad, &mut ct, &tag), Err(AeadError));
        let untouched = ct[17] == ciphertext[17] ^ 0x04 && ct[..17] == ciphertext[..17];
        assert!(untouched || ct.iter().all(|&b| b == 0), "no plaintext on failure");
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        assert!(aead.open_in_place(&nonce, &aad, &mut ciphertext.clone(), &bad_tag).is_err());
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 0x80;
        assert!(aead.open_in_place(&nonce, &bad_aad, &mut ciphertext.clone(), &tag).is_err());
        let mut bad_nonce = nonce;
        bad_nonce[0] ^= 1;
        assert!(aead.open_in_place(&bad_nonce, &aad, &mut ciphertext.clone(), &tag).is_err());
        let mut other_key = key;
        other_key[31] ^= 1;
        let other = A::new(&other_key);
        assert!(other.open_in_place(&nonce, &aad, &mut ciphertext.clone(), &tag).is_err());
    }

    #[test]
    fn rfc8439_2_8_2_rustcrypto() {
        seal_open_vector::<RustCryptoChaCha>();
        rejects_tampering::<RustCryptoChaCha>();
    }

    #[test]
    fn rfc8439_2_8_2_ring() {
        seal_open_vector::<RingChaCha>();
        rejects_tampering::<RingChaCha>();
    }

    #[test]
    fn ring_and_rustcrypto_agree() {
        let (a, b) = (RingChaCha::new(&[9; 32]), RustCryptoChaCha::new(&[9; 32]));
        for len in [0usize, 1, 63, 64, 65, 1420, 8192] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let (mut x, mut y) = (plain.clone(), plain.clone());
            let tx = a.seal_in_place(&counter_nonce(len as u64), b"aad", &mut x).unwrap();
            let ty = b.seal_in_place(&counter_nonce(len as u64), b"aad", &mut y).unwrap();
            assert_eq!((&x, tx), (&y, ty), "same bytes at {len}");
            b.open_in_place(&counter_nonce(len as u64), b"aad", &mut x, &tx).unwrap();
            a.open_in_place(&counter_nonce(len as u64), b"aad", &mut y, &ty).unwrap();
            assert_eq!((&x, &y), (&plain, &plain));
        }
    }

    #[test]
    fn empty_message_has_a_tag() {
        let aead = RustCryptoChaCha::new(&[7; 32]);
        let mut empty = [];
        let tag = aead.seal_in_place(&counter_nonce(0), b"hdr", &mut empty).unwrap();
        aead.open_in_place(&counter_nonce(0), b"hdr", &mut empty, &tag).unwrap();
        assert!(aead.open_in_place(&counter_nonce(1), b"hdr", &mut empty, &tag).is_err());
    }

    #[test]
    fn counter_nonce_layout() {
        assert_eq!(counter_nonce(0x0102_0304_0506_0708), [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
    }
}
