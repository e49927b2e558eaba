//! Seal and open of one data packet at 64, 512, 1420 and 8192 bytes of frame:
//! - `aead/*`: the bare [`Aead`] backend (what a faster backend would replace);
//! - `tunnel/*`: the whole data path, `Tunnel::send` (peer lookup, header, copy, seal) and
//!   `Tunnel::recv` (index lookup, replay window, open in place).
//!
//! Throughput is reported per frame byte; Gbit/s = bytes/s × 8 / 10^9.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tunnel::{counter_nonce, Aead, Config, PeerId, RecvResult, RingChaCha, RustCryptoChaCha, SendResult, Tunnel, OVERHEAD};

const SIZES: [usize; 4] = [64, 512, 1420, 8192];
const NET: u32 = 42;

fn aead(c: &mut Criterion) {
    aead_backend::<RustCryptoChaCha>(c, "aead");
    aead_backend::<RingChaCha>(c, "aead-ring");
}

fn aead_backend<A: Aead>(c: &mut Criterion, group: &str) {
    let mut g = c.benchmark_group(group);
    let key = [7u8; 32];
    let cipher = A::new(&key);
    let aad = [4u8; 16];
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                black_box(cipher.seal_in_place(&counter_nonce(counter), &aad, &mut buf).unwrap())
            })
        });
        let mut sealed = vec![0u8; size];
        let tag = cipher.seal_in_place(&counter_nonce(1), &aad, &mut sealed).unwrap();
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| cipher.open_in_place(&counter_nonce(1), &aad, buf, &tag).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Two tunnels with a session between them (A sends, B receives).
fn pair() -> (Tunnel, PeerId, Tunnel, SocketAddr) {
    let a_addr: SocketAddr = "10.0.0.1:51820".parse().unwrap();
    let b_addr: SocketAddr = "10.0.0.2:51820".parse().unwrap();
    let unix = Duration::from_secs(1_800_000_000);
    let mut a = Tunnel::new(Config::new([1; 32], unix), [1; 32]).unwrap();
    let mut b = Tunnel::new(Config::new([2; 32], unix), [2; 32]).unwrap();
    let b_at_a = a.add_peer(b.public_key(), Some(b_addr)).unwrap();
    b.add_peer(a.public_key(), Some(a_addr)).unwrap();
    let now = Duration::from_secs(1);
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    assert_eq!(a.send(now, b_at_a, NET, &[0; 64], &mut buf), SendResult::Queued);
    // initiation → B → response → A → queued frame → B (confirms B's session).
    let (n, _) = a.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(b.recv(now, a_addr, &mut buf[..n]), RecvResult::Handled);
    let (n, _) = b.poll_transmit(now, &mut out).unwrap();
    assert_eq!(a.recv(now, b_addr, &mut out[..n]), RecvResult::Handled);
    let (n, _) = a.poll_transmit(now, &mut buf).unwrap();
    assert!(matches!(b.recv(now, a_addr, &mut buf[..n]), RecvResult::Frame { .. }));
    (a, b_at_a, b, a_addr)
}

fn tunnel(c: &mut Criterion) {
    let mut g = c.benchmark_group("tunnel");
    let now = Duration::from_secs(2);
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let frame = vec![0x5au8; size];
        let mut out = vec![0u8; size + OVERHEAD];

        let (mut a, b_at_a, _, _) = pair();
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |bench, _| {
            bench.iter(|| {
                let r = a.send(now, b_at_a, NET, black_box(&frame), &mut out);
                debug_assert!(matches!(r, SendResult::Datagram { .. }));
                black_box(r)
            })
        });

        let (mut a, b_at_a, mut b, a_addr) = pair();
        g.bench_with_input(BenchmarkId::new("open", size), &size, |bench, _| {
            bench.iter_batched_ref(
                || {
                    let mut d = vec![0u8; size + OVERHEAD];
                    let r = a.send(now, b_at_a, NET, &frame, &mut d);
                    assert!(matches!(r, SendResult::Datagram { .. }));
                    d
                },
                |d| {
                    let r = b.recv(now, a_addr, d);
                    debug_assert!(matches!(r, RecvResult::Frame { .. }));
                    r
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, aead, tunnel);
criterion_main!(benches);
