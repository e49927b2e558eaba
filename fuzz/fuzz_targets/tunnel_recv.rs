//! Fuzz target for the tunnel core's receive path: two tunnels with an established session,
//! then a script from the input: raw datagrams to either side, genuine datagrams mutated by
//! the input (so the fuzzer reaches past the type byte, the index lookup and mac1), genuine
//! ones delivered (possibly again), frames sent, time advanced with timers run.
//!
//! recv() must never panic; a frame's range must lie inside the buffer; a datagram that differs
//! from every genuine one must never decrypt to a frame; after handle_timeout(now) the next
//! deadline must lie after now (no busy loop).
//!
//! Input: a sequence of ops, each `op byte | len byte | len bytes of argument`.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tunnel::{Config, PeerId, RecvResult, SendResult, Tunnel};

const A_ADDR: ([u8; 4], u16) = ([10, 0, 0, 1], 51820);
const B_ADDR: ([u8; 4], u16) = ([10, 0, 0, 2], 51820);

struct World {
    now: Duration,
    t: [Tunnel; 2],
    peer: [PeerId; 2],
    addr: [SocketAddr; 2],
    /// Genuine datagrams seen on the wire: (destination side, bytes).
    genuine: Vec<(usize, Vec<u8>)>,
    out: Vec<u8>,
}

impl World {
    fn new() -> World {
        let unix = Duration::from_secs(1_800_000_000);
        let mut a = Tunnel::new(Config::new([1; 32], unix), [1; 32]).expect("config");
        let mut b = Tunnel::new(Config::new([2; 32], unix), [2; 32]).expect("config");
        let addr = [SocketAddr::from(A_ADDR), SocketAddr::from(B_ADDR)];
        let b_at_a = a.add_peer(b.public_key(), Some(addr[1])).expect("peer");
        let a_at_b = b.add_peer(a.public_key(), Some(addr[0])).expect("peer");
        let mut w =
            World { now: Duration::from_secs(1), t: [a, b], peer: [b_at_a, a_at_b], addr, genuine: Vec::new(), out: vec![0u8; 2048] };
        w.send(0, 1, &[0x11; 60]);
        w.settle();
        w
    }

    /// Sends a frame from side `s`; captures what goes on the wire.
    fn send(&mut self, s: usize, net: u32, frame: &[u8]) {
        let now = self.now;
        let peer = self.peer[s];
        if let SendResult::Datagram { len, .. } = self.t[s].send(now, peer, net, frame, &mut self.out) {
            self.genuine.push((1 - s, self.out[..len].to_vec()));
        }
        self.drain(s);
    }

    fn drain(&mut self, s: usize) {
        let now = self.now;
        while let Some((len, _)) = self.t[s].poll_transmit(now, &mut self.out) {
            self.genuine.push((1 - s, self.out[..len].to_vec()));
        }
    }

    /// Delivers every genuine datagram not yet delivered, until nothing new comes.
    fn settle(&mut self) {
        let mut i = 0;
        while i < self.genuine.len() && i < 64 {
            let (to, bytes) = self.genuine[i].clone();
            self.recv(to, self.addr[1 - to], bytes);
            i += 1;
        }
    }

    fn recv(&mut self, s: usize, from: SocketAddr, mut bytes: Vec<u8>) -> RecvResult {
        let now = self.now;
        let len = bytes.len();
        let r = self.t[s].recv(now, from, &mut bytes);
        if let RecvResult::Frame { frame, .. } = &r {
            assert!(frame.start <= frame.end && frame.end <= len, "frame range outside the datagram");
        }
        self.drain(s);
        r
    }
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    let mut rest = data;
    let mut steps = 0;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (arg, next) = tail.split_at(n);
        rest = next;
        steps += 1;
        if steps > 64 {
            break;
        }
        let side = usize::from(op & 1);
        // Sources: the real peer, or an attacker's address.
        let from = if op & 2 == 0 { w.addr[1 - side] } else { SocketAddr::from(([192, 0, 2, 66], 6666)) };
        match op >> 2 {
            // Raw bytes.
            0..=15 => {
                let bytes = arg.to_vec();
                let forged = !w.genuine.iter().any(|(_, g)| *g == bytes);
                if let RecvResult::Frame { .. } = w.recv(side, from, bytes) {
                    assert!(!forged, "forged raw bytes decrypted");
                }
            }
            // A genuine datagram XORed with the argument (and truncated or extended by it).
            16..=39 if !w.genuine.is_empty() => {
                let pick = usize::from(arg.first().copied().unwrap_or(0)) % w.genuine.len();
                let (to, mut bytes) = w.genuine[pick].clone();
                for (i, x) in arg.iter().enumerate().skip(1) {
                    if let Some(b) = bytes.get_mut(i - 1) {
                        *b ^= x;
                    } else {
                        bytes.push(*x);
                    }
                }
                if op & 0x80 != 0 {
                    let keep = bytes.len().saturating_sub(usize::from(arg.len() % 17));
                    bytes.truncate(keep);
                }
                let forged = !w.genuine.iter().any(|(_, g)| *g == bytes);
                if let RecvResult::Frame { .. } = w.recv(to, from, bytes) {
                    assert!(!forged, "a mutated datagram decrypted");
                }
            }
            // A genuine datagram delivered as is (first time, or a replay).
            40..=47 if !w.genuine.is_empty() => {
                let pick = usize::from(arg.first().copied().unwrap_or(0)) % w.genuine.len();
                let (to, bytes) = w.genuine[pick].clone();
                w.recv(to, from, bytes);
            }
            // A frame from one side.
            48..=55 => {
                let net = u32::from(arg.first().copied().unwrap_or(0));
                w.send(side, net, arg);
            }
            // Time passes; timers run.
            _ => {
                let ms = u64::from_le_bytes(std::array::from_fn(|i| arg.get(i).copied().unwrap_or(0)));
                w.now += Duration::from_millis(ms % 400_000);
                for s in 0..2 {
                    let now = w.now;
                    w.t[s].handle_timeout(now);
                    if let Some(next) = w.t[s].poll_timeout() {
                        assert!(next > now, "deadline {next:?} not after {now:?}");
                    }
                    w.drain(s);
                }
            }
        }
    }
});
