//! One session: the transport keys a handshake produced, the send counter and the replay
//! window. Seals and opens data packets in place.

use std::time::Duration;

use crate::aead::{counter_nonce, Aead, TAG_LEN};
use crate::drop::DropReason;
use crate::handshake::SessionKeys;
use crate::replay::ReplayWindow;
use crate::wire::{data, HEADER_LEN, MSG_DATA};

/// No session sends or accepts a counter at or past this (WireGuard's `REJECT_AFTER_MESSAGES`,
/// 2^64 - 2^13 - 1): the nonce can never repeat or wrap.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

pub(crate) struct Session<A> {
    /// Our index: the receiver index of packets sealed for us.
    pub(crate) local: u32,
    /// The peer's index, written into packets we send.
    pub(crate) remote: u32,
    sender: A,
    receiver: A,
    pub(crate) send_counter: u64,
    replay: ReplayWindow,
    pub(crate) created: Duration,
    /// Whether we sent the initiation (only the initiator rekeys by time).
    pub(crate) initiator: bool,
}

impl<A> std::fmt::Debug for Session<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("send_counter", &self.send_counter)
            .field("created", &self.created)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

impl<A: Aead> Session<A> {
    pub(crate) fn new(local: u32, remote: u32, keys: &SessionKeys, created: Duration, initiator: bool) -> Self {
        Session {
            local,
            remote,
            sender: A::new(&keys.send),
            receiver: A::new(&keys.recv),
            send_counter: 0,
            replay: ReplayWindow::default(),
            created,
            initiator,
        }
    }
}

impl<A> Session<A> {
    /// Whether this session is younger than `reject_after_time`.
    pub(crate) fn alive(&self, now: Duration, reject_after_time: Duration) -> bool {
        now.saturating_sub(self.created) < reject_after_time
    }

    /// Whether packets may still be sealed with it.
    pub(crate) fn can_send(&self, now: Duration, reject_after_time: Duration) -> bool {
        self.alive(now, reject_after_time) && self.send_counter < REJECT_AFTER_MESSAGES
    }
}

impl<A: Aead> Session<A> {
    /// Seals `buf[HEADER_LEN..HEADER_LEN + plaintext_len]` in place: writes the header before
    /// it and the tag after it. Returns the datagram length, or `None` if `buf` is too short
    /// (or the plaintext is beyond the cipher's limit).
    pub(crate) fn seal(&mut self, buf: &mut [u8], plaintext_len: usize) -> Option<usize> {
        let total = HEADER_LEN.checked_add(plaintext_len)?.checked_add(TAG_LEN)?;
        let buf = buf.get_mut(..total)?;
        let counter = self.send_counter;
        let (header, rest) = buf.split_at_mut(HEADER_LEN);
        header[0] = MSG_DATA;
        header[1..4].fill(0);
        header[data::RECEIVER].copy_from_slice(&self.remote.to_le_bytes());
        header[data::COUNTER].copy_from_slice(&counter.to_le_bytes());
        let (plaintext, tag) = rest.split_at_mut(plaintext_len);
        let t = self.sender.seal_in_place(&counter_nonce(counter), header, plaintext).ok()?;
        tag.copy_from_slice(&t);
        self.send_counter += 1;
        Some(total)
    }

    /// Authenticates and decrypts the data datagram `buf` (at least header + tag long, header
    /// parsed by the caller into `counter`) in place, then records the counter.
    ///
    /// # Errors
    /// [`DropReason::Replay`], [`DropReason::TooOld`] (checked before decrypting),
    /// [`DropReason::AuthFailed`], [`DropReason::TooShort`].
    pub(crate) fn open(&mut self, buf: &mut [u8], counter: u64) -> Result<(), DropReason> {
        self.replay.check(counter)?;
        let body_len = buf.len().checked_sub(HEADER_LEN + TAG_LEN).ok_or(DropReason::TooShort)?;
        let (header, rest) = buf.split_at_mut(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at_mut(body_len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| DropReason::TooShort)?;
        self.receiver.open_in_place(&counter_nonce(counter), header, ciphertext, tag).map_err(|_| DropReason::AuthFailed)?;
        self.replay.accept(counter)
    }
}
