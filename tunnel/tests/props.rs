//! Property tests: whatever bytes reach recv(), nothing panics, nothing forged or corrupted
//! comes out as a frame, and the tunnel keeps working for the genuine traffic afterwards.

mod util;

use proptest::prelude::*;
use tunnel::{RecvResult, SendResult};
use util::*;

const A: usize = 0;
const B: usize = 1;

/// An established pair and a few datagrams A sent to B that B has not seen yet: the next
/// data packet, a keepalive-sized one (as raw material), and A's handshake messages.
struct Setup {
    sim: Sim,
    data: Datagram,
    later: Datagram,
    handshakes: Vec<Datagram>,
}

fn setup() -> Setup {
    let (mut sim, b_at_a, _) = Sim::pair();
    assert_eq!(sim.send(A, b_at_a, 1, &frame(0, 64)), SendResult::Queued);
    sim.run_for(ms(50));
    sim.hook = Some(Box::new(|_: &Datagram| Verdict::Hold));
    sim.send(A, b_at_a, 1, &frame(1, 300));
    sim.send(A, b_at_a, 1, &frame(2, 64));
    sim.hook = None;
    let later = sim.held.pop().unwrap();
    let data = sim.held.pop().unwrap();
    let handshakes = sim.wire.iter().filter(|d| d.kind() != 4).cloned().collect();
    Setup { sim, data, later, handshakes }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..32).prop_map(Mutation::Extend),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let n = bytes.len();
            bytes[i % n] ^= b;
        }
        Mutation::Set(i, b) if !bytes.is_empty() => {
            let n = bytes.len();
            bytes[i % n] = *b;
        }
        Mutation::Truncate(n) => bytes.truncate(n % (bytes.len() + 1)),
        Mutation::Extend(more) => bytes.extend_from_slice(more),
        _ => {}
    }
}

fn check_frame_range(r: &RecvResult, len: usize) {
    if let RecvResult::Frame { frame, .. } = r {
        assert!(frame.start <= frame.end && frame.end <= len);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random datagrams, some starting with a valid type byte and zero reserved bytes.
    #[test]
    fn random_bytes_never_panic_nor_decrypt(
        datagrams in proptest::collection::vec(
            (0u8..6, prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..1600),
                proptest::collection::vec(any::<u8>(), 148),
                proptest::collection::vec(any::<u8>(), 92),
                proptest::collection::vec(any::<u8>(), 64),
            ]), 1..20),
        port in any::<u16>(),
    ) {
        let mut s = setup();
        let b_pub = s.sim.nodes[B].tunnel.public_key();
        let from = std::net::SocketAddr::from(([192, 0, 2, 1], port));
        for (kind, mut bytes) in datagrams {
            if kind > 0 && bytes.len() >= 4 {
                bytes[0] = kind;
                bytes[1..4].fill(0);
                // Past mac1, into the Diffie-Hellman and AEAD checks.
                fix_mac1(&mut bytes, &b_pub);
            }
            let now = s.sim.now;
            let len = bytes.len();
            let r = s.sim.nodes[B].tunnel.recv(now, from, &mut bytes);
            let frame = matches!(r, RecvResult::Frame { .. });
            prop_assert!(!frame, "{:?}", r);
            check_frame_range(&r, len);
            let mut out = vec![0u8; BUF];
            while s.sim.nodes[B].tunnel.poll_transmit(now, &mut out).is_some() {}
        }
        // The genuine packet still goes through, from its real address.
        let ok = matches!(s.sim.deliver_now(s.data.clone()), Some(RecvResult::Frame { .. }));
        prop_assert!(ok);
    }

    /// Mutated copies of genuine datagrams: a changed data packet never comes out as a frame;
    /// handshake messages may be refused or (a changed mac2 outside of load) accepted, never
    /// a panic. The genuine data packet is still accepted afterwards.
    #[test]
    fn mutated_datagrams_are_refused(
        which in 0usize..8,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut s = setup();
        let mut pool = vec![s.data.clone(), s.later.clone()];
        pool.extend(s.handshakes.iter().cloned());
        let i = which % pool.len();
        let original = pool[i].clone();
        let mut d = original.clone();
        for m in &mutations {
            apply(&mut d.bytes, m);
        }
        let len = d.bytes.len();
        let changed = d.bytes != original.bytes;
        let r = s.sim.deliver_now(d).unwrap();
        check_frame_range(&r, len);
        if original.kind() == 4 && changed {
            prop_assert!(matches!(r, RecvResult::Dropped(_)), "{:?}", r);
        }
        // The genuine data packets still go through (unless one was just delivered as is).
        if i != 0 || changed {
            let ok = matches!(s.sim.deliver_now(s.data.clone()), Some(RecvResult::Frame { .. }));
            prop_assert!(ok);
        }
        if i != 1 || changed {
            let ok = matches!(s.sim.deliver_now(s.later.clone()), Some(RecvResult::Frame { .. }));
            prop_assert!(ok);
        }
        let mut got = s.sim.seqs(B);
        got.sort_unstable();
        prop_assert_eq!(got, vec![0, 1, 2]);
    }
}
