//! Two (or more) tunnels on a virtual clock over a simulated network.

mod util;

use std::time::Duration;

use tunnel::{
    Config, DropReason, HandshakeRate, PeerError, RecvResult, SendResult, Tunnel, FRAME_OFFSET, KEEPALIVE_LEN, OVERHEAD, REPLAY_WINDOW,
};
use util::*;

const A: usize = 0;
const B: usize = 1;
const NET: u32 = 0x0a0b_0c0d;

/// Sends one frame A → B, runs until the handshake and the frame went through.
fn establish(sim: &mut Sim, b_at_a: tunnel::PeerId) {
    assert_eq!(sim.send(A, b_at_a, NET, &frame(u64::MAX, 60)), SendResult::Queued);
    sim.run_for(ms(100));
    assert_eq!(sim.nodes[B].frames.len(), 1, "handshake and first frame");
    sim.nodes[B].frames.clear();
}

/// From now on, every `step` one 64-byte frame (sequence number i = 0..n) each way, A → B and
/// B → A; each send must seal a datagram (the session is up, or a rekey keeps it going).
fn exchange(sim: &mut Sim, b_at_a: tunnel::PeerId, a_at_b: tunnel::PeerId, n: u64, step: Duration) {
    let start = sim.now;
    for i in 0..n {
        sim.run_until(start + step * u32::try_from(i).unwrap());
        for (node, peer) in [(A, b_at_a), (B, a_at_b)] {
            let r = sim.send(node, peer, NET, &frame(i, 64));
            assert!(matches!(r, SendResult::Datagram { .. }), "node {node}, frame {i}: {r:?}");
        }
    }
}

#[test]
fn handshake_then_data_both_ways() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    assert_eq!(sim.send(A, b_at_a, NET, &frame(0, 100)), SendResult::Queued);
    // The initiation is on the wire; nothing else yet.
    assert_eq!(sim.wire.len(), 1);
    assert_eq!(sim.wire[0].kind(), 1);
    assert_eq!(sim.wire[0].bytes.len(), 148);
    sim.run_for(ms(50));
    // initiation, response (92), the queued frame.
    let kinds: Vec<(u8, usize)> = sim.wire.iter().map(|d| (d.kind(), d.bytes.len())).collect();
    assert_eq!(kinds, [(1, 148), (2, 92), (4, 100 + OVERHEAD)]);
    assert_eq!(sim.nodes[B].frames, [(a_at_b, NET, frame(0, 100))]);

    // B's session is confirmed by that frame: B sends directly.
    let r = sim.send(B, a_at_b, 7, &frame(1, 1400));
    assert!(matches!(r, SendResult::Datagram { len, .. } if len == 1400 + OVERHEAD), "{r:?}");
    for i in 2..50 {
        assert!(matches!(sim.send(A, b_at_a, NET, &frame(i, 64)), SendResult::Datagram { .. }));
    }
    sim.run_for(ms(50));
    assert_eq!(sim.nodes[A].frames, [(b_at_a, 7, frame(1, 1400))]);
    assert_exactly_once(&sim.seqs(B)[1..].iter().map(|s| s - 2).collect::<Vec<_>>(), 48);

    let a_info = sim.nodes[A].tunnel.peer(b_at_a).unwrap();
    let b_info = sim.nodes[B].tunnel.peer(a_at_b).unwrap();
    assert_eq!(a_info.handshakes, 1);
    assert_eq!(b_info.handshakes, 1);
    assert!(a_info.last_handshake.is_some() && b_info.last_handshake.is_some());
    assert_eq!(a_info.tx_packets, 49);
    assert_eq!(b_info.rx_packets, 49);
    assert_eq!(a_info.tx_bytes, b_info.rx_bytes);
    assert_eq!(a_info.drops.total() + b_info.drops.total(), 0);
    assert_eq!(sim.nodes[A].tunnel.drops().total() + sim.nodes[B].tunnel.drops().total(), 0);
    assert_eq!(a_info.public_key, sim.nodes[B].tunnel.public_key());
    assert_eq!(a_info.endpoint, Some(sim.nodes[B].addr));
}

#[test]
fn send_in_place_matches_send_and_overhead() {
    let (mut sim, b_at_a, _) = Sim::pair();
    establish(&mut sim, b_at_a);
    let f = frame(9, 1436);
    let mut buf = vec![0u8; 1436 + OVERHEAD];
    buf[FRAME_OFFSET..FRAME_OFFSET + f.len()].copy_from_slice(&f);
    let now = sim.now;
    let r = sim.nodes[A].tunnel.send_in_place(now, b_at_a, NET, &mut buf, f.len());
    let SendResult::Datagram { len, to } = r else { panic!("{r:?}") };
    assert_eq!(len, 1472, "a 1436-byte frame fills a 1500-byte IPv4 underlay exactly");
    let from = sim.nodes[A].addr;
    sim.inject(Datagram { from, to, bytes: buf[..len].to_vec() });
    sim.run_for(ms(10));
    assert_eq!(sim.nodes[B].frames[0].2, f);

    // One byte short of room is refused, and counted on the peer.
    let mut small = vec![0u8; 1436 + OVERHEAD - 1];
    let r = sim.nodes[A].tunnel.send_in_place(now, b_at_a, NET, &mut small, 1436);
    assert_eq!(r, SendResult::Dropped(DropReason::BufferTooSmall));
    let r = sim.nodes[A].tunnel.send(now, b_at_a, NET, &f, &mut small);
    assert_eq!(r, SendResult::Dropped(DropReason::BufferTooSmall));
    let info = sim.nodes[A].tunnel.peer(b_at_a).unwrap();
    assert_eq!(info.drops.get(DropReason::BufferTooSmall), 2);
}

/// Steady traffic both ways (50 frames/s each) for 400 s: the sessions are renewed at least three times
/// (rekey_after_time 120 s) and every frame arrives exactly once.
#[test]
fn rekey_by_time_under_steady_traffic_loses_nothing() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    sim.link.jitter = ms(3); // reorders A's and B's packets relative to each other
    establish(&mut sim, b_at_a);
    let n = 20_000u64;
    exchange(&mut sim, b_at_a, a_at_b, n, ms(20));
    sim.run_for(ms(100));
    assert_exactly_once(&sim.seqs(B), n);
    assert_exactly_once(&sim.seqs(A), n);
    let a = sim.nodes[A].tunnel.peer(b_at_a).unwrap();
    let b = sim.nodes[B].tunnel.peer(a_at_b).unwrap();
    assert!(a.handshakes >= 4, "{a:?}");
    assert!(b.handshakes >= 4, "{b:?}");
    assert_eq!(a.drops.total() + b.drops.total(), 0, "{a:?} {b:?}");
    assert!(sim.nodes[A].drops.is_empty() && sim.nodes[B].drops.is_empty());
}

/// A small packet limit: a new session every 100 packets, nothing lost, both sides sending
/// (so both trigger rekeys, often at the same moment).
#[test]
fn rekey_by_volume_loses_nothing() {
    let mut a = config(1);
    let mut b = config(2);
    a.rekey_after_packets = 100;
    b.rekey_after_packets = 100;
    let (mut sim, b_at_a, a_at_b) = Sim::pair_with(a, b);
    sim.link.jitter = ms(2);
    establish(&mut sim, b_at_a);
    let n = 3000u64;
    exchange(&mut sim, b_at_a, a_at_b, n, ms(2));
    sim.run_for(ms(100));
    let a = sim.nodes[A].tunnel.peer(b_at_a).unwrap();
    let b = sim.nodes[B].tunnel.peer(a_at_b).unwrap();
    assert_exactly_once(&sim.seqs(B), n);
    assert_exactly_once(&sim.seqs(A), n);
    // Each side seals 3 000 packets, 100 per session: about 30 rekeys between them.
    assert!(a.handshakes + b.handshakes >= 40, "{} {}", a.handshakes, b.handshakes);
    assert_eq!(a.drops.total() + b.drops.total(), 0, "{a:?} {b:?}");
}

/// Volume rekeys over many network seeds, latencies, jitters and limits: both sides hit
/// the limit at nearly the same time, so handshakes cross all the time; nothing is lost.
#[test]
fn crossing_rekeys_over_many_seeds_lose_nothing() {
    for seed in 0..8u64 {
        for &(latency, jitter, limit) in &[(5u64, 0u64, 50u64), (1, 2, 37), (3, 10, 64)] {
            let mut a = config(1);
            let mut b = config(2);
            a.rekey_after_packets = limit;
            b.rekey_after_packets = limit;
            let (mut sim, b_at_a, a_at_b) = Sim::pair_with(a, b);
            sim.reseed(seed);
            sim.link.latency = ms(latency);
            sim.link.jitter = ms(jitter);
            establish(&mut sim, b_at_a);
            let n = 500u64;
            exchange(&mut sim, b_at_a, a_at_b, n, Duration::from_micros(1500));
            sim.run_for(ms(200));
            assert_exactly_once(&sim.seqs(A), n);
            assert_exactly_once(&sim.seqs(B), n);
        }
    }
}

/// Packets held back and delivered in reverse: all accepted once (they are within the
/// window); delivered again: all replays.
#[test]
fn reordering_within_the_window_is_accepted_exactly_once() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    establish(&mut sim, b_at_a);
    sim.hook = Some(Box::new(|d: &Datagram| if d.kind() == 4 && d.bytes.len() > KEEPALIVE_LEN { Verdict::Hold } else { Verdict::Pass }));
    for i in 0..1000 {
        sim.send(A, b_at_a, NET, &frame(i, 64));
    }
    sim.hook = None;
    let held = std::mem::take(&mut sim.held);
    assert_eq!(held.len(), 1000);
    for d in held.iter().rev() {
        assert!(matches!(sim.deliver_now(d.clone()), Some(RecvResult::Frame { .. })));
    }
    let mut expect: Vec<u64> = (0..1000).collect();
    expect.reverse();
    assert_eq!(sim.seqs(B), expect);
    for d in &held {
        assert_eq!(sim.deliver_now(d.clone()), Some(RecvResult::Dropped(DropReason::Replay)));
    }
    let info = sim.nodes[B].tunnel.peer(a_at_b).unwrap();
    assert_eq!(info.drops.get(DropReason::Replay), 1000);
}

/// A datagram held back while REPLAY_WINDOW newer ones pass is too old; one that is just
/// inside the window still arrives.
#[test]
fn replay_and_too_old_are_rejected_and_counted() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    establish(&mut sim, b_at_a);
    let mut held = Vec::new();
    let mut out = vec![0u8; BUF];
    let from = sim.nodes[A].addr;
    let to = sim.nodes[B].addr;
    let now = sim.now;
    let mut seal = |sim: &mut Sim, i: u64| {
        let SendResult::Datagram { len, .. } = sim.nodes[A].tunnel.send(now, b_at_a, NET, &frame(i, 32), &mut out) else { panic!() };
        Datagram { from, to, bytes: out[..len].to_vec() }
    };
    // Counters 1 and 2 (0 was the first frame) are held.
    held.push(seal(&mut sim, 1));
    held.push(seal(&mut sim, 2));
    for i in 3..REPLAY_WINDOW + 2 {
        let d = seal(&mut sim, i);
        assert!(matches!(sim.deliver_now(d), Some(RecvResult::Frame { .. })));
    }
    // Highest counter is now REPLAY_WINDOW + 1: counter 2 is the window's lowest, 1 is out.
    assert_eq!(sim.deliver_now(held[0].clone()), Some(RecvResult::Dropped(DropReason::TooOld)));
    assert!(matches!(sim.deliver_now(held[1].clone()), Some(RecvResult::Frame { .. })));
    assert_eq!(sim.deliver_now(held[1].clone()), Some(RecvResult::Dropped(DropReason::Replay)));
    let info = sim.nodes[B].tunnel.peer(a_at_b).unwrap();
    assert_eq!(info.drops.get(DropReason::TooOld), 1);
    assert_eq!(info.drops.get(DropReason::Replay), 1);
}

/// 10 % loss, 10 % duplication and jitter of 30 ms at 1 000 packets per second (reordering
/// by up to ~30 packets): no frame is delivered twice, duplicates are counted as replays,
/// the handshake survives the losses.
#[test]
fn lossy_duplicating_reordering_network() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    establish(&mut sim, b_at_a);
    sim.link = Link { latency: ms(5), jitter: ms(30), loss: 0.1, duplicate: 0.1 };
    let n = 5000u64;
    let start = sim.now;
    for i in 0..n {
        sim.run_until(start + Duration::from_millis(i));
        sim.send(A, b_at_a, NET, &frame(i, 80));
        sim.send(B, a_at_b, NET, &frame(i, 80));
    }
    sim.run_for(secs(30));
    for node in [A, B] {
        let got = sim.seqs(node);
        let mut distinct = got.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), got.len(), "node {node} got a frame twice");
        assert!(got.len() as u64 > n * 8 / 10, "node {node}: {} of {n}", got.len());
        assert!(sim.count_drops(node, DropReason::Replay) > 100);
    }
}

#[test]
fn forged_truncated_flipped_or_wrong_key_datagrams_are_refused() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    establish(&mut sim, b_at_a);
    sim.hook = Some(Box::new(|_: &Datagram| Verdict::Hold));
    sim.send(A, b_at_a, NET, &frame(1, 200));
    sim.hook = None;
    let good = sim.held.pop().unwrap();

    // Every single-bit flip of every byte.
    for i in 0..good.bytes.len() {
        for bit in 0..8 {
            let mut d = good.clone();
            d.bytes[i] ^= 1 << bit;
            let r = sim.deliver_now(d).unwrap();
            assert!(matches!(r, RecvResult::Dropped(_)), "byte {i} bit {bit}: {r:?}");
        }
    }
    // Every truncation.
    for len in 0..good.bytes.len() {
        let mut d = good.clone();
        d.bytes.truncate(len);
        assert!(matches!(sim.deliver_now(d).unwrap(), RecvResult::Dropped(_)), "len {len}");
    }
    assert!(sim.nodes[B].frames.is_empty());
    let info = sim.nodes[B].tunnel.peer(a_at_b).unwrap();
    assert!(info.drops.get(DropReason::AuthFailed) > 1000, "{info:?}");
    let global = sim.nodes[B].tunnel.drops();
    assert!(global.get(DropReason::UnknownIndex) > 0);
    assert!(global.get(DropReason::UnknownType) > 0);
    assert!(global.get(DropReason::TooShort) > 0);

    // Sealed under another key: a third host C with its own session to B sends a packet
    // whose receiver index is A's session at B.
    let c = sim.add_node(config(3), addr("10.0.0.3:51820"), 33);
    let b_at_c = sim.connect(c, B, true);
    sim.connect(B, c, true);
    sim.send(c, b_at_c, NET, &frame(5, 64));
    sim.run_for(ms(100));
    assert_eq!(sim.nodes[B].frames.len(), 1);
    sim.hook = Some(Box::new(|_: &Datagram| Verdict::Hold));
    sim.send(c, b_at_c, NET, &frame(6, 200));
    sim.hook = None;
    let mut forged = sim.held.pop().unwrap();
    forged.bytes[4..8].copy_from_slice(&good.bytes[4..8]);
    forged.from = sim.nodes[A].addr;
    assert_eq!(sim.deliver_now(forged), Some(RecvResult::Dropped(DropReason::AuthFailed)));

    // After all that, the genuine datagram still goes through.
    assert!(matches!(sim.deliver_now(good), Some(RecvResult::Frame { .. })));
}

/// B restarts with the same key and loses its sessions. If B speaks first, A accepts B's new
/// initiation at once (its timestamp is newer).
#[test]
fn peer_restart_recovers_when_it_speaks_first() {
    let (mut sim, b_at_a, _) = Sim::pair();
    establish(&mut sim, b_at_a);
    sim.run_for(secs(30));
    let mut cfg = config(2);
    cfg.unix_time_at_start = BOOT + sim.now;
    sim.restart(B, cfg, 99);
    let a_at_b = sim.connect(B, A, true);
    let t0 = sim.now;
    assert_eq!(sim.send(B, a_at_b, NET, &frame(1, 64)), SendResult::Queued);
    sim.run_for(ms(100));
    assert_eq!(sim.seqs(A), [1]);
    // A's next frame goes over the new session (A sends on the newest confirmed one).
    sim.run_until(t0 + ms(200));
    assert!(matches!(sim.send(A, b_at_a, NET, &frame(2, 64)), SendResult::Datagram { .. }));
    sim.run_for(ms(100));
    assert_eq!(sim.seqs(B), [2]);
}

/// B restarts and only A sends: B cannot know who the packets are for (unknown index), so A
/// notices the silence (keepalive_timeout + rekey_timeout = 15 s) and starts a handshake.
/// B did not even know A's endpoint.
#[test]
fn peer_restart_recovers_when_only_the_other_side_sends() {
    let (mut sim, b_at_a, _) = Sim::pair();
    establish(&mut sim, b_at_a);
    let mut cfg = config(2);
    cfg.unix_time_at_start = BOOT + sim.now + secs(1);
    sim.restart(B, cfg, 98);
    sim.connect(B, A, false);
    let start = sim.now;
    for i in 0..3000u64 {
        sim.run_until(start + Duration::from_millis(i * 10));
        sim.send(A, b_at_a, NET, &frame(i, 64));
    }
    sim.run_for(ms(100));
    let got = sim.seqs(B);
    assert!(!got.is_empty(), "never recovered");
    let first = got[0];
    // Lost: what A sent before it gave up on the old session, about 15 s of frames.
    assert!(first <= 1700, "recovered only at frame {first}");
    assert_exactly_once(&got.iter().map(|s| s - first).collect::<Vec<_>>(), 3000 - first);
    assert!(sim.nodes[B].tunnel.drops().get(DropReason::UnknownIndex) >= 1000);
}

#[test]
fn unknown_public_key_is_refused() {
    let (mut sim, _, _) = Sim::pair();
    let c = sim.add_node(config(3), addr("10.0.0.3:51820"), 33);
    // C knows A, A does not know C.
    let a_at_c = sim.connect(c, A, true);
    assert_eq!(sim.send(c, a_at_c, NET, &frame(1, 64)), SendResult::Queued);
    sim.run_for(ms(100));
    assert_eq!(sim.nodes[A].tunnel.drops().get(DropReason::UnknownPeer), 1);
    // No answer went back.
    assert!(sim.wire.iter().all(|d| d.from != sim.nodes[A].addr));
    assert!(sim.nodes[A].frames.is_empty());
}

/// A's idea of where B is changes only after an authenticated packet from B's new address:
/// garbage, forgeries and replays from elsewhere change nothing.
#[test]
fn roaming_only_after_an_authenticated_packet() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    establish(&mut sim, b_at_a);
    let b_old = sim.nodes[B].addr;
    let evil = addr("192.0.2.66:6666");

    // Two datagrams from B, captured.
    sim.hook = Some(Box::new(|_: &Datagram| Verdict::Hold));
    sim.send(B, a_at_b, NET, &frame(1, 64));
    sim.send(B, a_at_b, NET, &frame(2, 64));
    sim.hook = None;
    let fresh = sim.held.pop().unwrap();
    let captured = sim.held.pop().unwrap();
    // The first, delivered, then replayed from the attacker's address.
    assert!(matches!(sim.deliver_now(captured.clone()), Some(RecvResult::Frame { .. })));
    let mut replayed = captured.clone();
    replayed.from = evil;
    assert_eq!(sim.deliver_now(replayed), Some(RecvResult::Dropped(DropReason::Replay)));
    // The second, with a flipped bit, from the attacker's address.
    let mut forged = fresh.clone();
    forged.from = evil;
    forged.bytes[20] ^= 1;
    assert_eq!(sim.deliver_now(forged), Some(RecvResult::Dropped(DropReason::AuthFailed)));
    // Unmodified but from the attacker's address: authentic, so it counts as B roaming
    // there... which is why this one is delivered from B's real address.
    assert!(matches!(sim.deliver_now(fresh), Some(RecvResult::Frame { .. })));
    sim.nodes[A].frames.clear();
    // A replayed handshake initiation (old timestamp) from the attacker's address.
    let init = sim.wire.iter().find(|d| d.kind() == 1).unwrap().clone();
    let mut replayed_init = init.clone();
    replayed_init.from = evil;
    replayed_init.to = sim.nodes[B].addr;
    assert_eq!(sim.deliver_now(replayed_init), Some(RecvResult::Dropped(DropReason::StaleTimestamp)));
    assert_eq!(sim.nodes[A].tunnel.peer(b_at_a).unwrap().endpoint, Some(b_old));
    assert_eq!(sim.nodes[B].tunnel.peer(a_at_b).unwrap().endpoint, Some(sim.nodes[A].addr));

    // B really moves: its next packet comes from the new address.
    let b_new = addr("10.9.9.9:40000");
    sim.nodes[B].addr = b_new;
    sim.send(B, a_at_b, NET, &frame(2, 64));
    sim.run_for(ms(20));
    assert_eq!(sim.nodes[A].tunnel.peer(b_at_a).unwrap().endpoint, Some(b_new));
    let r = sim.send(A, b_at_a, NET, &frame(3, 64));
    assert_eq!(r, SendResult::Datagram { len: 64 + OVERHEAD, to: b_new });
    sim.run_for(ms(20));
    assert_eq!(sim.seqs(B), [3]);
    assert_eq!(sim.seqs(A), [2]);
}

/// One source flooding initiations is cut to its per-source rate; many sources push the
/// tunnel under load, where it answers with cookies, and a real peer still gets through.
#[test]
fn handshake_flood_is_rate_limited() {
    // A lower global rate than the default keeps the test's Diffie-Hellman work small.
    let mut cfg = config(1);
    cfg.handshake_rate = HandshakeRate { global: 100, global_burst: 10, ..Default::default() };
    let (mut sim, _, _) = Sim::pair_with(cfg, config(2));
    // The attacker knows A's public key, so its initiations pass mac1 (and cost a DH each,
    // if they got that far). They come from C, a key A does not know.
    let c = sim.add_node(config(3), addr("192.0.2.3:1000"), 33);
    let a_at_c = sim.connect(c, A, true);
    sim.hook = Some(Box::new(|_: &Datagram| Verdict::Hold));
    let a_key = sim.nodes[A].tunnel.public_key();
    for i in 0..200u64 {
        sim.now += Duration::from_micros(10);
        let old = sim.nodes[c].tunnel.peer_by_key(&a_key).unwrap_or(a_at_c);
        sim.nodes[c].tunnel.remove_peer(old);
        let id = sim.connect(c, A, true);
        sim.send(c, id, NET, &frame(i, 10));
    }
    sim.hook = None;
    let flood: Vec<Datagram> = std::mem::take(&mut sim.held);
    assert_eq!(flood.len(), 200);
    assert!(flood.iter().all(|d| d.kind() == 1));

    // From one address: a burst of 5 gets through to the DH (and fails: unknown peer).
    for d in &flood {
        sim.deliver_now(d.clone());
    }
    let drops = sim.nodes[A].tunnel.drops();
    assert_eq!(drops.get(DropReason::UnknownPeer), 5);
    assert_eq!(drops.get(DropReason::RateLimited), 195);

    // From 10 000 addresses within a tenth of a second: over the global rate (burst 10 +
    // 100/s), so the tunnel asks for cookies.
    let before = sim.wire.len();
    for (i, d) in flood.iter().cycle().take(10_000).enumerate() {
        sim.now += Duration::from_micros(10);
        let mut d = d.clone();
        d.from = std::net::SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 1000));
        sim.deliver_now(d);
    }
    let drops = sim.nodes[A].tunnel.drops();
    let cookies = drops.get(DropReason::CookieRequired);
    assert!(cookies > 9000, "{drops:?}");
    assert!(drops.get(DropReason::UnknownPeer) < 40, "{drops:?}");
    let replies = sim.wire[before..].iter().filter(|d| d.kind() == 3).count() as u64;
    assert_eq!(replies, cookies);
    assert!(sim.wire[before..].iter().all(|d| d.bytes.len() == 64), "no amplification");

    // B's handshake during a sustained flood: first attempt gets a cookie, the retry (5 s
    // later, with mac2) is answered. Keep A under load while time passes.
    assert_eq!(sim.send(B, sim_peer(&sim, B, A), NET, &frame(1, 64)), SendResult::Queued);
    let start = sim.now;
    let mut k = 0usize;
    while sim.nodes[A].frames.is_empty() && sim.now < start + secs(20) {
        for _ in 0..2 {
            let mut d = flood[k % flood.len()].clone();
            d.from = std::net::SocketAddr::from(([198, 19, (k >> 8) as u8, k as u8], 1000));
            k += 1;
            sim.deliver_now(d);
        }
        let next = sim.now + ms(1);
        sim.run_until(next);
    }
    assert_eq!(sim.nodes[A].frames.len(), 1, "B never got through the flood");
    let b_drops = sim.nodes[B].tunnel.peer(sim_peer(&sim, B, A)).unwrap();
    assert_eq!(b_drops.handshakes, 1);
    assert!(sim.nodes[A].tunnel.drops().get(DropReason::CookieRequired) > cookies);
}

fn sim_peer(sim: &Sim, node: usize, other: usize) -> tunnel::PeerId {
    let pk = sim.nodes[other].tunnel.public_key();
    sim.nodes[node].tunnel.peer_by_key(&pk).unwrap()
}

#[test]
fn queue_bound_and_handshake_timeout() {
    let mut cfg = config(1);
    cfg.queue_len = 4;
    let (mut sim, b_at_a, _) = Sim::pair_with(cfg, config(2));
    // B is gone: nothing reaches it.
    sim.nodes[B].addr = addr("10.0.0.99:1");
    for i in 0..4 {
        assert_eq!(sim.send(A, b_at_a, NET, &frame(i, 64)), SendResult::Queued);
    }
    assert_eq!(sim.send(A, b_at_a, NET, &frame(4, 64)), SendResult::Dropped(DropReason::QueueFull));
    assert_eq!(sim.nodes[A].tunnel.peer(b_at_a).unwrap().queued, 4);
    sim.run_for(secs(100));
    let inits = sim.wire.iter().filter(|d| d.kind() == 1).count();
    // One every 5 s (+ jitter) for 90 s.
    assert!((15..=20).contains(&inits), "{inits} initiations");
    let info = sim.nodes[A].tunnel.peer(b_at_a).unwrap();
    assert_eq!(info.queued, 0);
    assert_eq!(info.drops.get(DropReason::HandshakeTimeout), 4);
    assert_eq!(info.drops.get(DropReason::QueueFull), 1);
    // Nothing left to wait for.
    assert_eq!(sim.nodes[A].tunnel.poll_timeout(), None);
}

#[test]
fn keepalives_passive_and_persistent() {
    let mut cfg = config(1);
    cfg.keepalive = Some(secs(25));
    let (mut sim, b_at_a, a_at_b) = Sim::pair_with(cfg, config(2));
    establish(&mut sim, b_at_a);
    let before = sim.nodes[B].tunnel.peer(a_at_b).unwrap().rx_packets;
    // A sends a keepalive every 25 s on an idle link (the sessions are renewed meanwhile,
    // since keepalives from the initiator count as sends).
    sim.run_for(secs(100));
    let keepalives = sim.wire.iter().filter(|d| d.from == sim.nodes[A].addr && d.kind() == 4 && d.bytes.len() == KEEPALIVE_LEN).count();
    assert!(keepalives >= 4, "{keepalives}");
    assert!(sim.nodes[B].tunnel.peer(a_at_b).unwrap().rx_packets >= before + 4);

    // Passive: B received data and had nothing to say: 10 s later it sends a keepalive.
    let n_before = sim.wire.iter().filter(|d| d.from == sim.nodes[B].addr).count();
    sim.send(A, b_at_a, NET, &frame(1, 64));
    sim.run_for(secs(11));
    let from_b: Vec<_> = sim.wire.iter().filter(|d| d.from == sim.nodes[B].addr).skip(n_before).collect();
    assert!(from_b.iter().any(|d| d.kind() == 4 && d.bytes.len() == KEEPALIVE_LEN));
}

#[test]
fn idle_tunnel_sleeps() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    assert_eq!(sim.nodes[A].tunnel.poll_timeout(), None);
    establish(&mut sim, b_at_a);
    // Sessions expire after 180 s; then nothing is left to do.
    sim.run_for(secs(200));
    assert_eq!(sim.nodes[A].tunnel.poll_timeout(), None);
    assert_eq!(sim.nodes[B].tunnel.poll_timeout(), None);
    assert_eq!(sim.nodes[A].tunnel.peer(b_at_a).unwrap().sessions, 0);
    // And the next frame starts over with a handshake.
    assert_eq!(sim.send(B, a_at_b, NET, &frame(1, 64)), SendResult::Queued);
    sim.run_for(ms(100));
    assert_eq!(sim.seqs(A), [1]);
}

#[test]
fn peer_management() {
    let mut t = Tunnel::new(config(1), [0; 32]).unwrap();
    let own = t.public_key();
    assert_eq!(own, tunnel::public_key(&key(1)));
    assert_eq!(t.add_peer(own, None), Err(PeerError::OwnKey));
    assert_eq!(t.add_peer([0; 32], None), Err(PeerError::WeakKey));
    let pk2 = tunnel::public_key(&key(2));
    let p2 = t.add_peer(pk2, None).unwrap();
    assert_eq!(t.add_peer(pk2, None), Err(PeerError::Duplicate(p2)));
    assert_eq!(t.peer_by_key(&pk2), Some(p2));
    let mut out = [0u8; 256];
    // No endpoint yet.
    assert_eq!(t.send(Duration::ZERO, p2, 1, &[0; 60], &mut out), SendResult::Dropped(DropReason::NoEndpoint));
    assert!(t.set_endpoint(p2, Some(addr("10.0.0.2:1"))));
    assert_eq!(t.send(Duration::ZERO, p2, 1, &[0; 60], &mut out), SendResult::Queued);
    assert!(t.remove_peer(p2));
    assert!(!t.remove_peer(p2));
    assert_eq!(t.send(Duration::ZERO, p2, 1, &[0; 60], &mut out), SendResult::Dropped(DropReason::UnknownPeer));
    assert_eq!(t.drops().get(DropReason::UnknownPeer), 1);
    // The pending initiation of the removed peer still goes out (harmless); then nothing.
    while t.poll_transmit(Duration::ZERO, &mut out).is_some() {}
    // A re-added key gets a new id; the old one stays dead.
    let p2b = t.add_peer(pk2, None).unwrap();
    assert_ne!(p2, p2b);
    assert!(t.peer(p2).is_none());
    assert_eq!(t.peers().count(), 1);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn config_is_checked() {
    let mut c = config(1);
    c.reject_after_time = c.rekey_after_time;
    assert_eq!(Tunnel::new(c, [0; 32]).err(), Some(tunnel::ConfigError::RejectBeforeRekey));
    let mut c = config(1);
    c.keepalive = Some(Duration::ZERO);
    assert!(Tunnel::new(c, [0; 32]).is_err());
    let mut c = config(1);
    c.rekey_after_packets = 0;
    assert!(Tunnel::new(c, [0; 32]).is_err());
    let mut c = config(1);
    c.handshake_rate = HandshakeRate { global: 0, ..Default::default() };
    assert!(Tunnel::new(c, [0; 32]).is_err());
    let c: Config = config(1);
    assert!(!format!("{c:?}").contains("[1, 1"), "the private key is not printed");
}

/// A packet for a session past reject_after_time is refused as stale when it arrives before
/// the timer removed the session (after that, the index is simply unknown).
#[test]
fn stale_session_is_refused() {
    let (mut sim, b_at_a, a_at_b) = Sim::pair();
    establish(&mut sim, b_at_a);
    sim.hook = Some(Box::new(|_: &Datagram| Verdict::Hold));
    sim.send(A, b_at_a, NET, &frame(1, 64));
    sim.hook = None;
    let d = sim.held.pop().unwrap();
    let late = sim.now + secs(180);
    let mut bytes = d.bytes.clone();
    let r = sim.nodes[B].tunnel.recv(late, d.from, &mut bytes);
    assert_eq!(r, RecvResult::Dropped(DropReason::StaleSession));
    sim.nodes[B].tunnel.handle_timeout(late);
    let mut bytes = d.bytes.clone();
    let r = sim.nodes[B].tunnel.recv(late, d.from, &mut bytes);
    assert_eq!(r, RecvResult::Dropped(DropReason::UnknownIndex));
    let info = sim.nodes[B].tunnel.peer(a_at_b).unwrap();
    assert_eq!(info.drops.get(DropReason::StaleSession), 1);
}

/// An attacker who knows B's public key can make a valid mac1; an initiation whose
/// ephemeral key is a low-order point is refused before anything else is derived from it.
#[test]
fn low_order_ephemeral_is_refused() {
    let (mut sim, b_at_a, _) = Sim::pair();
    sim.hook = Some(Box::new(|_: &Datagram| Verdict::Hold));
    sim.send(A, b_at_a, NET, &frame(1, 64));
    sim.hook = None;
    let mut init = sim.held.pop().unwrap();
    init.bytes[8..40].fill(0);
    assert_eq!(sim.deliver_now(init.clone()), Some(RecvResult::Dropped(DropReason::BadMac)), "mac1 covers the ephemeral key");
    let b_pub = sim.nodes[B].tunnel.public_key();
    fix_mac1(&mut init.bytes, &b_pub);
    assert_eq!(sim.deliver_now(init), Some(RecvResult::Dropped(DropReason::WeakKey)));
    assert_eq!(sim.nodes[B].tunnel.drops().get(DropReason::WeakKey), 1);
}
