//! A deterministic simulation for the tunnel (after quinn-proto's `tests/util.rs`): tunnels
//! on a virtual clock, joined by an in-memory network that can delay, drop, duplicate and
//! reorder datagrams, with hooks to capture, hold and inject datagrams.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tunnel::{Config, DropReason, PeerId, RecvResult, SendResult, Tunnel, OVERHEAD};

/// UNIX time of the simulated boot, for handshake timestamps.
pub const BOOT: Duration = Duration::from_secs(1_800_000_000);
pub const BUF: usize = 9216;

pub fn key(b: u8) -> [u8; 32] {
    [b; 32]
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A frame whose first 8 bytes are a sequence number, so deliveries can be checked.
pub fn frame(seq: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0xab; len.max(8)];
    f[..8].copy_from_slice(&seq.to_be_bytes());
    f
}

pub fn seq_of(frame: &[u8]) -> u64 {
    u64::from_be_bytes(frame[..8].try_into().unwrap())
}

pub fn config(private: u8) -> Config {
    Config::new(key(private), BOOT)
}

/// One simulated host.
pub struct Node {
    pub tunnel: Tunnel,
    pub addr: SocketAddr,
    /// Frames received: (peer, network, frame).
    pub frames: Vec<(PeerId, u32, Vec<u8>)>,
    /// Every `recv` result that was a drop.
    pub drops: Vec<DropReason>,
    /// Every `send` result that was not a datagram.
    pub send_results: Vec<SendResult>,
}

#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Datagram {
    pub fn kind(&self) -> u8 {
        self.bytes[0]
    }
}

/// What the network does to each datagram.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub latency: Duration,
    /// Extra delay drawn uniformly from 0..jitter: reorders datagrams.
    pub jitter: Duration,
    /// Probabilities in 0..=1.
    pub loss: f64,
    pub duplicate: f64,
}

impl Default for Link {
    fn default() -> Self {
        Link { latency: ms(5), jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0 }
    }
}

/// What a capture hook wants done with a datagram about to enter the network.
pub enum Verdict {
    Pass,
    /// Keep it out of the network (the test holds a copy).
    Hold,
}

type Hook = Box<dyn FnMut(&Datagram) -> Verdict>;

pub struct Sim {
    pub now: Duration,
    pub nodes: Vec<Node>,
    pub link: Link,
    in_flight: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    flights: Vec<Option<Datagram>>,
    seq: u64,
    rng: ChaCha8Rng,
    /// Every datagram that entered the network, in order.
    pub wire: Vec<Datagram>,
    /// Datagrams a hook held back.
    pub held: Vec<Datagram>,
    /// Datagrams delivered to an address no node has.
    pub lost: Vec<Datagram>,
    pub hook: Option<Hook>,
    buf: Vec<u8>,
}

impl Sim {
    /// Two nodes, A (private key 1, 10.0.0.1) and B (private key 2, 10.0.0.2), each a peer of
    /// the other with the other's endpoint known.
    pub fn pair() -> (Sim, PeerId, PeerId) {
        Sim::pair_with(config(1), config(2))
    }

    pub fn pair_with(a: Config, b: Config) -> (Sim, PeerId, PeerId) {
        let mut sim = Sim::new();
        let a = sim.add_node(a, addr("10.0.0.1:51820"), 11);
        let b = sim.add_node(b, addr("10.0.0.2:51820"), 22);
        let b_at_a = sim.connect(a, b, true);
        let a_at_b = sim.connect(b, a, true);
        (sim, b_at_a, a_at_b)
    }

    pub fn new() -> Sim {
        Sim {
            now: Duration::ZERO,
            nodes: Vec::new(),
            link: Link::default(),
            in_flight: BinaryHeap::new(),
            flights: Vec::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(7),
            wire: Vec::new(),
            held: Vec::new(),
            lost: Vec::new(),
            hook: None,
            buf: vec![0u8; BUF],
        }
    }

    /// Reseeds the network's randomness (loss, duplication, jitter).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    pub fn add_node(&mut self, cfg: Config, addr: SocketAddr, seed: u8) -> usize {
        let tunnel = Tunnel::new(cfg, [seed; 32]).unwrap();
        self.nodes.push(Node { tunnel, addr, frames: Vec::new(), drops: Vec::new(), send_results: Vec::new() });
        self.nodes.len() - 1
    }

    /// Makes `other` a peer of `node`; returns its id at `node`.
    pub fn connect(&mut self, node: usize, other: usize, with_endpoint: bool) -> PeerId {
        let pk = self.nodes[other].tunnel.public_key();
        let ep = with_endpoint.then_some(self.nodes[other].addr);
        self.nodes[node].tunnel.add_peer(pk, ep).unwrap()
    }

    /// Replaces node `i`'s tunnel (a restart: same address, fresh state).
    pub fn restart(&mut self, i: usize, cfg: Config, seed: u8) {
        self.nodes[i].tunnel = Tunnel::new(cfg, [seed; 32]).unwrap();
    }

    /// Sends a frame from node `i` to `peer`; datagrams it produces enter the network.
    pub fn send(&mut self, i: usize, peer: PeerId, net: u32, frame: &[u8]) -> SendResult {
        let mut out = std::mem::take(&mut self.buf);
        let now = self.now;
        let r = self.nodes[i].tunnel.send(now, peer, net, frame, &mut out);
        match r {
            SendResult::Datagram { len, to } => {
                assert_eq!(len, frame.len() + OVERHEAD);
                let from = self.nodes[i].addr;
                self.transmit(Datagram { from, to, bytes: out[..len].to_vec() });
            }
            other => self.nodes[i].send_results.push(other),
        }
        self.buf = out;
        self.drain(i);
        r
    }

    /// Puts a datagram into the network (subject to the link and the hook).
    pub fn transmit(&mut self, d: Datagram) {
        if let Some(hook) = self.hook.as_mut() {
            if let Verdict::Hold = hook(&d) {
                self.held.push(d);
                return;
            }
        }
        self.wire.push(d.clone());
        if self.chance(self.link.loss) {
            return;
        }
        if self.chance(self.link.duplicate) {
            self.schedule(d.clone());
        }
        self.schedule(d);
    }

    /// Delivers `d` after the link's latency, bypassing loss, duplication and the hook.
    pub fn inject(&mut self, d: Datagram) {
        self.schedule(d);
    }

    /// Hands `d` to its destination right now; returns the result.
    pub fn deliver_now(&mut self, d: Datagram) -> Option<RecvResult> {
        let i = self.nodes.iter().position(|n| n.addr == d.to)?;
        let mut bytes = d.bytes.clone();
        let now = self.now;
        let r = self.nodes[i].tunnel.recv(now, d.from, &mut bytes);
        match &r {
            RecvResult::Frame { peer, net, frame } => {
                self.nodes[i].frames.push((*peer, *net, bytes[frame.clone()].to_vec()));
            }
            RecvResult::Dropped(why) => self.nodes[i].drops.push(*why),
            RecvResult::Handled => {}
        }
        self.drain(i);
        Some(r)
    }

    fn schedule(&mut self, d: Datagram) {
        let jitter = if self.link.jitter.is_zero() {
            Duration::ZERO
        } else {
            let j = self.link.jitter.as_nanos() as u64;
            Duration::from_nanos(self.rng.next_u64() % j)
        };
        let at = self.now + self.link.latency + jitter;
        self.flights.push(Some(d));
        self.in_flight.push(Reverse((at, self.seq, self.flights.len() - 1)));
        self.seq += 1;
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Drains node `i`'s poll_transmit into the network.
    pub fn drain(&mut self, i: usize) {
        let mut out = std::mem::take(&mut self.buf);
        loop {
            let now = self.now;
            let Some((len, to)) = self.nodes[i].tunnel.poll_transmit(now, &mut out) else {
                break;
            };
            let from = self.nodes[i].addr;
            self.transmit(Datagram { from, to, bytes: out[..len].to_vec() });
        }
        self.buf = out;
    }

    /// Runs the network and the timers until `until` (inclusive).
    pub fn run_until(&mut self, until: Duration) {
        loop {
            let next_flight = self.in_flight.peek().map(|Reverse((at, _, _))| *at);
            let next_timer = self.nodes.iter().filter_map(|n| n.tunnel.poll_timeout()).min();
            let next = match (next_flight, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(x) => x,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            while let Some(Reverse((at, _, idx))) = self.in_flight.peek().copied() {
                if at > self.now {
                    break;
                }
                self.in_flight.pop();
                if let Some(d) = self.flights[idx].take() {
                    if self.deliver_now(d.clone()).is_none() {
                        self.lost.push(d);
                    }
                }
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].tunnel.poll_timeout().is_some_and(|t| t <= self.now) {
                    let now = self.now;
                    self.nodes[i].tunnel.handle_timeout(now);
                    // No busy loop: whatever was due is handled.
                    if let Some(t) = self.nodes[i].tunnel.poll_timeout() {
                        assert!(t > now, "node {i}: deadline {t:?} not after {now:?}");
                    }
                    self.drain(i);
                }
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Sequence numbers of the frames node `i` received, in arrival order.
    pub fn seqs(&self, i: usize) -> Vec<u64> {
        self.nodes[i].frames.iter().map(|(_, _, f)| seq_of(f)).collect()
    }

    pub fn count_drops(&self, i: usize, why: DropReason) -> usize {
        self.nodes[i].drops.iter().filter(|&&d| d == why).count()
    }
}

/// Rewrites the mac1 of a handshake message (initiation or response, by its length) as the
/// holder of `receiver_pub` expects it: what an attacker who knows that public key can do.
pub fn fix_mac1(bytes: &mut [u8], receiver_pub: &[u8; 32]) {
    use blake2::digest::consts::U16;
    use blake2::digest::{Digest, KeyInit, Mac};
    let at = match bytes.len() {
        148 => 116,
        92 => 60,
        _ => return,
    };
    let key: [u8; 32] = blake2::Blake2s256::new().chain_update(b"mac1----").chain_update(receiver_pub).finalize().into();
    let mut m = <blake2::Blake2sMac<U16> as KeyInit>::new_from_slice(&key).unwrap();
    Mac::update(&mut m, &bytes[..at]);
    bytes[at..at + 16].copy_from_slice(&m.finalize().into_bytes());
}

/// Asserts that `got` holds each of `0..n` exactly once.
pub fn assert_exactly_once(got: &[u64], n: u64) {
    let mut sorted = got.to_vec();
    sorted.sort_unstable();
    let expected: Vec<u64> = (0..n).collect();
    if sorted != expected {
        let mut dups = sorted.clone();
        dups.dedup();
        let missing: Vec<u64> = (0..n).filter(|s| sorted.binary_search(s).is_err()).take(20).collect();
        panic!("{} frames received, {} distinct, {} expected; first missing: {missing:?}", sorted.len(), dups.len(), n);
    }
}
