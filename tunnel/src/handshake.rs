//! The key exchange: WireGuard's Noise_IKpsk2 (whitepaper section 5.4) with the pre-shared key
//! left at zero, plus its `mac1`/`mac2` and cookie replies. Pure functions over fixed-size
//! messages: no state beyond what the caller passes in, no randomness drawn here (ephemeral
//! keys, indices, nonces and timestamps come as arguments), which is what makes the
//! known-answer test below possible.
//!
//! The only departure from WireGuard is the Noise prologue (`IDENTIFIER`): ours names vswitch,
//! so a handshake can never be confused with a WireGuard one even if a key were reused.

use std::net::SocketAddr;

use x25519_dalek::StaticSecret;
use zeroize::Zeroize;

use crate::aead::{Aead, RustCryptoChaCha, TAG_LEN};
use crate::crypto::{addr_bytes, ct_eq, dh, hash, kdf1, kdf2, kdf3, mac, public_of, MAC_LEN};
use crate::drop::DropReason;
use crate::wire::{array_at, cookie, init, resp, u32_at, COOKIE_LEN, INIT_LEN, MSG_COOKIE, MSG_INITIATION, MSG_RESPONSE, RESP_LEN};

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"vswitch tunnel v1 (Ethernet frames, network id)";
const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";
/// The pre-shared key of IKpsk2: unused, so zero (as in WireGuard without a PresharedKey).
const PSK: [u8; 32] = [0; 32];
const ZERO_NONCE: [u8; 12] = [0; 12];

/// Our static key pair and everything derived from it alone.
pub(crate) struct Identity {
    secret: StaticSecret,
    pub(crate) public: [u8; 32],
    /// HASH(CONSTRUCTION): the initial chaining key.
    ck0: [u8; 32],
    /// HASH(ck0 || IDENTIFIER).
    h0: [u8; 32],
    /// HASH(h0 || our public): the initial hash of initiations sent to us.
    h_responder: [u8; 32],
    /// Key of the `mac1` on messages sent to us.
    mac1_key: [u8; 32],
    /// Key that seals the cookies we hand out.
    cookie_key: [u8; 32],
}

impl Identity {
    pub(crate) fn new(private_key: [u8; 32]) -> Identity {
        let secret = StaticSecret::from(private_key);
        let public = public_of(&secret);
        let ck0 = hash(&[CONSTRUCTION]);
        let h0 = hash(&[&ck0, IDENTIFIER]);
        Identity {
            secret,
            public,
            ck0,
            h0,
            h_responder: hash(&[&h0, &public]),
            mac1_key: hash(&[LABEL_MAC1, &public]),
            cookie_key: hash(&[LABEL_COOKIE, &public]),
        }
    }

    /// Precomputes what talking to `public` needs; `None` if `public` is a low-order point.
    pub(crate) fn peer_keys(&self, public: [u8; 32]) -> Option<PeerKeys> {
        Some(PeerKeys {
            public,
            static_static: dh(&self.secret, &public)?,
            h_initiator: hash(&[&self.h0, &public]),
            mac1_key: hash(&[LABEL_MAC1, &public]),
            cookie_key: hash(&[LABEL_COOKIE, &public]),
        })
    }

    /// Whether `msg[..mac1 end]` carries the `mac1` of a message meant for us.
    pub(crate) fn mac1_ok(&self, msg: &[u8], mac1: std::ops::Range<usize>) -> bool {
        let (Some(body), Some(got)) = (msg.get(..mac1.start), msg.get(mac1)) else {
            return false;
        };
        ct_eq(&mac(&self.mac1_key, &[body]), got)
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.cookie_key.zeroize();
    }
}

/// Per peer: its public key and the values derived from it.
pub(crate) struct PeerKeys {
    pub(crate) public: [u8; 32],
    /// DH(our static, its static).
    static_static: [u8; 32],
    /// HASH(h0 || its public): the initial hash of initiations we send it.
    h_initiator: [u8; 32],
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
}

impl Drop for PeerKeys {
    fn drop(&mut self) {
        self.static_static.zeroize();
    }
}

/// Transport keys of one session.
pub(crate) struct SessionKeys {
    pub(crate) send: [u8; 32],
    pub(crate) recv: [u8; 32],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

/// What the initiator keeps between sending an initiation and receiving the response.
pub(crate) struct InitiatorState {
    pub(crate) sender: u32,
    ephemeral: StaticSecret,
    ck: [u8; 32],
    h: [u8; 32],
    pub(crate) mac1: [u8; MAC_LEN],
}

impl Drop for InitiatorState {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

/// A verified initiation, as the responder sees it.
pub(crate) struct Initiation {
    pub(crate) sender: u32,
    pub(crate) peer_public: [u8; 32],
    pub(crate) timestamp: [u8; 12],
    ephemeral: [u8; 32],
    ck: [u8; 32],
    h: [u8; 32],
}

impl Drop for Initiation {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

fn seal(key: &[u8; 32], ad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
    RustCryptoChaCha::new(key).seal_in_place(&ZERO_NONCE, ad, buf).ok()
}

fn open(key: &[u8; 32], ad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
    RustCryptoChaCha::new(key).open_in_place(&ZERO_NONCE, ad, buf, tag).is_ok()
}

/// Writes `mac1` (and `mac2` when we hold a cookie from the receiver) at the end of `msg`.
fn finish_macs(
    msg: &mut [u8],
    mac1_at: std::ops::Range<usize>,
    mac2_at: std::ops::Range<usize>,
    mac1_key: &[u8; 32],
    cookie: Option<&[u8; MAC_LEN]>,
) -> [u8; MAC_LEN] {
    let m1 = mac(mac1_key, &[&msg[..mac1_at.start]]);
    msg[mac1_at].copy_from_slice(&m1);
    let m2 = cookie.map_or([0; MAC_LEN], |c| mac(c, &[&msg[..mac2_at.start]]));
    msg[mac2_at].copy_from_slice(&m2);
    m1
}

/// Builds an initiation to `peer` into `out`. `None` only if a DH result is zero, which a peer
/// key accepted by [`Identity::peer_keys`] and a clamped ephemeral key cannot produce.
pub(crate) fn initiation(
    me: &Identity,
    peer: &PeerKeys,
    ephemeral: StaticSecret,
    sender: u32,
    timestamp: [u8; 12],
    cookie: Option<&[u8; MAC_LEN]>,
    out: &mut [u8; INIT_LEN],
) -> Option<InitiatorState> {
    out.fill(0);
    out[0] = MSG_INITIATION;
    out[init::SENDER].copy_from_slice(&sender.to_le_bytes());
    let e_pub = public_of(&ephemeral);
    out[init::EPHEMERAL].copy_from_slice(&e_pub);
    let ck = kdf1(&me.ck0, &e_pub);
    let h = hash(&[&peer.h_initiator, &e_pub]);

    let (ck, mut k) = kdf2(&ck, &dh(&ephemeral, &peer.public)?);
    out[init::STATIC].copy_from_slice(&me.public);
    let tag = seal(&k, &h, &mut out[init::STATIC])?;
    out[init::STATIC_TAG].copy_from_slice(&tag);
    let h = hash(&[&h, &out[init::STATIC.start..init::STATIC_TAG.end]]);

    let (ck, k2) = kdf2(&ck, &peer.static_static);
    k.zeroize();
    k = k2;
    out[init::TIMESTAMP].copy_from_slice(&timestamp);
    let tag = seal(&k, &h, &mut out[init::TIMESTAMP])?;
    k.zeroize();
    out[init::TIMESTAMP_TAG].copy_from_slice(&tag);
    let h = hash(&[&h, &out[init::TIMESTAMP.start..init::TIMESTAMP_TAG.end]]);

    let mac1 = finish_macs(out, init::MAC1, init::MAC2, &peer.mac1_key, cookie);
    Some(InitiatorState { sender, ephemeral, ck, h, mac1 })
}

/// Verifies an initiation sent to us (its `mac1` was checked by the caller) and finds out who
/// sent it: `static_of` maps a static public key to the precomputed [`PeerKeys`] of a peer.
///
/// # Errors
/// [`DropReason::WeakKey`] (low-order ephemeral), [`DropReason::AuthFailed`] (not sealed for
/// our key), [`DropReason::UnknownPeer`] (a static key that is not a peer).
pub(crate) fn consume_initiation<'p>(
    me: &Identity,
    msg: &[u8; INIT_LEN],
    static_of: impl FnOnce(&[u8; 32]) -> Option<&'p PeerKeys>,
) -> Result<Initiation, DropReason> {
    let sender = u32_at(msg, init::SENDER).ok_or(DropReason::TooShort)?;
    let e_i: [u8; 32] = array_at(msg, init::EPHEMERAL).ok_or(DropReason::TooShort)?;
    let ck = kdf1(&me.ck0, &e_i);
    let h = hash(&[&me.h_responder, &e_i]);

    let shared = dh(&me.secret, &e_i).ok_or(DropReason::WeakKey)?;
    let (ck, mut k) = kdf2(&ck, &shared);
    let mut peer_public: [u8; 32] = array_at(msg, init::STATIC).ok_or(DropReason::TooShort)?;
    let tag: [u8; TAG_LEN] = array_at(msg, init::STATIC_TAG).ok_or(DropReason::TooShort)?;
    let opened = open(&k, &h, &mut peer_public, &tag);
    k.zeroize();
    if !opened {
        return Err(DropReason::AuthFailed);
    }
    let h = hash(&[&h, &msg[init::STATIC.start..init::STATIC_TAG.end]]);

    let peer = static_of(&peer_public).ok_or(DropReason::UnknownPeer)?;
    let (ck, mut k) = kdf2(&ck, &peer.static_static);
    let mut timestamp: [u8; 12] = array_at(msg, init::TIMESTAMP).ok_or(DropReason::TooShort)?;
    let tag: [u8; TAG_LEN] = array_at(msg, init::TIMESTAMP_TAG).ok_or(DropReason::TooShort)?;
    let opened = open(&k, &h, &mut timestamp, &tag);
    k.zeroize();
    if !opened {
        return Err(DropReason::AuthFailed);
    }
    let h = hash(&[&h, &msg[init::TIMESTAMP.start..init::TIMESTAMP_TAG.end]]);
    Ok(Initiation { sender, peer_public, timestamp, ephemeral: e_i, ck, h })
}

/// Builds the response to a verified initiation into `out`; returns the responder's transport
/// keys and the response's `mac1`.
///
/// # Errors
/// [`DropReason::WeakKey`] when the initiator's ephemeral key is a low-order point.
pub(crate) fn response(
    init: &Initiation,
    peer: &PeerKeys,
    ephemeral: StaticSecret,
    sender: u32,
    cookie: Option<&[u8; MAC_LEN]>,
    out: &mut [u8; RESP_LEN],
) -> Result<(SessionKeys, [u8; MAC_LEN]), DropReason> {
    out.fill(0);
    out[0] = MSG_RESPONSE;
    out[resp::SENDER].copy_from_slice(&sender.to_le_bytes());
    out[resp::RECEIVER].copy_from_slice(&init.sender.to_le_bytes());
    let e_pub = public_of(&ephemeral);
    out[resp::EPHEMERAL].copy_from_slice(&e_pub);
    let ck = kdf1(&init.ck, &e_pub);
    let h = hash(&[&init.h, &e_pub]);
    let ck = kdf1(&ck, &dh(&ephemeral, &init.ephemeral).ok_or(DropReason::WeakKey)?);
    let ck = kdf1(&ck, &dh(&ephemeral, &peer.public).ok_or(DropReason::WeakKey)?);
    let (ck, tau, mut k) = kdf3(&ck, &PSK);
    let h = hash(&[&h, &tau]);
    let tag = seal(&k, &h, &mut []).ok_or(DropReason::AuthFailed)?;
    k.zeroize();
    out[resp::EMPTY_TAG].copy_from_slice(&tag);
    let (recv, send) = kdf2(&ck, &[]);
    let mac1 = finish_macs(out, resp::MAC1, resp::MAC2, &peer.mac1_key, cookie);
    Ok((SessionKeys { send, recv }, mac1))
}

/// Verifies the response to our initiation `state` (its `mac1` was checked by the caller) and
/// returns the initiator's transport keys.
///
/// # Errors
/// [`DropReason::WeakKey`] (low-order ephemeral), [`DropReason::AuthFailed`] (not from the
/// peer we sent the initiation to).
pub(crate) fn consume_response(me: &Identity, state: &InitiatorState, msg: &[u8; RESP_LEN]) -> Result<SessionKeys, DropReason> {
    let e_r: [u8; 32] = array_at(msg, resp::EPHEMERAL).ok_or(DropReason::TooShort)?;
    let ck = kdf1(&state.ck, &e_r);
    let h = hash(&[&state.h, &e_r]);
    let ck = kdf1(&ck, &dh(&state.ephemeral, &e_r).ok_or(DropReason::WeakKey)?);
    let ck = kdf1(&ck, &dh(&me.secret, &e_r).ok_or(DropReason::WeakKey)?);
    let (ck, tau, mut k) = kdf3(&ck, &PSK);
    let h = hash(&[&h, &tau]);
    let tag: [u8; TAG_LEN] = array_at(msg, resp::EMPTY_TAG).ok_or(DropReason::TooShort)?;
    let opened = open(&k, &h, &mut [], &tag);
    k.zeroize();
    if !opened {
        return Err(DropReason::AuthFailed);
    }
    let (send, recv) = kdf2(&ck, &[]);
    Ok(SessionKeys { send, recv })
}

/// The cookie of a source address under the current secret: MAC(secret, ip || port).
pub(crate) fn cookie_for(secret: &[u8; 32], from: SocketAddr) -> [u8; MAC_LEN] {
    let (b, n) = addr_bytes(from);
    mac(secret, &[&b[..n]])
}

/// Whether `msg` carries a `mac2` made with the cookie of `from`.
pub(crate) fn mac2_ok(secret: &[u8; 32], from: SocketAddr, msg: &[u8], mac2: std::ops::Range<usize>) -> bool {
    let (Some(body), Some(got)) = (msg.get(..mac2.start), msg.get(mac2)) else {
        return false;
    };
    ct_eq(&mac(&cookie_for(secret, from), &[body]), got)
}

/// Builds a cookie reply to a handshake message with sender index `receiver` and `mac1`,
/// received from `from`.
pub(crate) fn cookie_reply(
    me: &Identity,
    secret: &[u8; 32],
    from: SocketAddr,
    receiver: u32,
    mac1: &[u8; MAC_LEN],
    nonce: [u8; 24],
    out: &mut [u8; COOKIE_LEN],
) -> bool {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305};

    out.fill(0);
    out[0] = MSG_COOKIE;
    out[cookie::RECEIVER].copy_from_slice(&receiver.to_le_bytes());
    out[cookie::NONCE].copy_from_slice(&nonce);
    out[cookie::COOKIE].copy_from_slice(&cookie_for(secret, from));
    let cipher = XChaCha20Poly1305::new((&me.cookie_key).into());
    match cipher.encrypt_in_place_detached((&nonce).into(), mac1, &mut out[cookie::COOKIE]) {
        Ok(tag) => {
            out[cookie::TAG].copy_from_slice(&tag);
            true
        }
        Err(_) => false,
    }
}

/// Opens a cookie reply from `peer` answering our message whose `mac1` was `our_mac1`.
///
/// # Errors
/// [`DropReason::AuthFailed`].
pub(crate) fn open_cookie(peer: &PeerKeys, msg: &[u8; COOKIE_LEN], our_mac1: &[u8; MAC_LEN]) -> Result<[u8; MAC_LEN], DropReason> {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305};

    let nonce: [u8; 24] = array_at(msg, cookie::NONCE).ok_or(DropReason::TooShort)?;
    let mut c: [u8; MAC_LEN] = array_at(msg, cookie::COOKIE).ok_or(DropReason::TooShort)?;
    let tag = msg.get(cookie::TAG).ok_or(DropReason::TooShort)?;
    let cipher = XChaCha20Poly1305::new((&peer.cookie_key).into());
    cipher.decrypt_in_place_detached((&nonce).into(), our_mac1, &mut c, Tag::from_slice(tag)).map_err(|_| DropReason::AuthFailed)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    /// A full handshake with fixed keys against bytes computed by an independent Python
    /// implementation of the same construction (hashlib's BLAKE2s and HMAC, the `cryptography`
    /// package's X25519 and ChaCha20-Poly1305): see `tests/kat/handshake.py`.
    #[test]
    fn known_answer() {
        let alice = Identity::new(key(1));
        let bob = Identity::new(key(2));
        let bob_at_alice = alice.peer_keys(bob.public).unwrap();
        let alice_at_bob = bob.peer_keys(alice.public).unwrap();
        let ts = crate::crypto::tai64n(std::time::Duration::new(1_700_000_000, 123_456_789));

        let mut m1 = [0u8; INIT_LEN];
        let st = initiation(&alice, &bob_at_alice, StaticSecret::from(key(3)), 0x1122_3344, ts, None, &mut m1).unwrap();
        assert!(bob.mac1_ok(&m1, init::MAC1));
        let got = consume_initiation(&bob, &m1, |pk| (pk == &alice_at_bob.public).then_some(&alice_at_bob)).unwrap();
        assert_eq!(got.sender, 0x1122_3344);
        assert_eq!(got.peer_public, alice.public);
        assert_eq!(got.timestamp, ts);

        let mut m2 = [0u8; RESP_LEN];
        let (bob_keys, _) = response(&got, &alice_at_bob, StaticSecret::from(key(4)), 0x5566_7788, None, &mut m2).unwrap();
        assert!(alice.mac1_ok(&m2, resp::MAC1));
        let alice_keys = consume_response(&alice, &st, &m2).unwrap();
        assert_eq!(alice_keys.send, bob_keys.recv);
        assert_eq!(alice_keys.recv, bob_keys.send);

        let expected = include_str!("../tests/kat/handshake.txt");
        let mut lines = expected.lines().filter(|l| !l.starts_with('#'));
        let mut next = || lines.next().unwrap().split_once(' ').unwrap().1.to_string();
        assert_eq!(hex(&m1), next(), "initiation");
        assert_eq!(hex(&m2), next(), "response");
        assert_eq!(hex(&alice_keys.send), next(), "initiator send key");
        assert_eq!(hex(&alice_keys.recv), next(), "initiator receive key");
    }

    #[test]
    fn wrong_responder_or_unknown_initiator() {
        let alice = Identity::new(key(1));
        let bob = Identity::new(key(2));
        let carol = Identity::new(key(5));
        let bob_at_alice = alice.peer_keys(bob.public).unwrap();
        let alice_at_bob = bob.peer_keys(alice.public).unwrap();
        let mut m1 = [0u8; INIT_LEN];
        initiation(&alice, &bob_at_alice, StaticSecret::from(key(3)), 1, [0; 12], None, &mut m1).unwrap();
        // Carol is not the responder: mac1 fails, and so would the AEAD.
        assert!(!carol.mac1_ok(&m1, init::MAC1));
        assert_eq!(consume_initiation(&carol, &m1, |_| Some(&alice_at_bob)).err(), Some(DropReason::AuthFailed));
        // Bob does not know Alice.
        assert_eq!(consume_initiation(&bob, &m1, |_| None).err(), Some(DropReason::UnknownPeer));
        // Any flipped bit of the sealed parts fails.
        for i in init::STATIC.start..init::TIMESTAMP_TAG.end {
            let mut m = m1;
            m[i] ^= 0x10;
            assert!(consume_initiation(&bob, &m, |_| Some(&alice_at_bob)).is_err(), "byte {i}");
        }
    }

    #[test]
    fn cookie_round_trip_and_mac2() {
        let alice = Identity::new(key(1));
        let bob = Identity::new(key(2));
        let bob_at_alice = alice.peer_keys(bob.public).unwrap();
        let from: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let secret = key(9);
        let mut m1 = [0u8; INIT_LEN];
        let st = initiation(&alice, &bob_at_alice, StaticSecret::from(key(3)), 7, [0; 12], None, &mut m1).unwrap();
        assert!(!mac2_ok(&secret, from, &m1, init::MAC2));
        let mut reply = [0u8; COOKIE_LEN];
        assert!(cookie_reply(&bob, &secret, from, 7, &st.mac1, [5; 24], &mut reply));
        let c = open_cookie(&bob_at_alice, &reply, &st.mac1).unwrap();
        assert_eq!(c, cookie_for(&secret, from));
        // With the cookie, the next initiation carries a valid mac2 for that address only.
        let mut m1b = [0u8; INIT_LEN];
        initiation(&alice, &bob_at_alice, StaticSecret::from(key(6)), 8, [1; 12], Some(&c), &mut m1b).unwrap();
        assert!(bob.mac1_ok(&m1b, init::MAC1));
        assert!(mac2_ok(&secret, from, &m1b, init::MAC2));
        assert!(!mac2_ok(&secret, "192.0.2.7:4001".parse().unwrap(), &m1b, init::MAC2));
        // A cookie reply bound to another mac1 does not open.
        assert_eq!(open_cookie(&bob_at_alice, &reply, &[0; 16]), Err(DropReason::AuthFailed));
    }
}
