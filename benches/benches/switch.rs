//! Throughput of the switch core: `Switch::handle_frame` on learned unicast traffic, and
//! `Fdb::lookup` hits in tables of 1 000 and 100 000 entries.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vswitch::fdb::{Fdb, FdbConfig, Learn};
use vswitch::switch::{PortConfig, Switch, SwitchConfig, Verdict};
use vswitch::{Mac, NetworkId, PortId};

const BATCH: usize = 64;
const PORTS: u32 = 16;
const HOSTS: u64 = 256;
const NET: NetworkId = NetworkId(1);
const NOW: Duration = Duration::from_secs(10);

/// A distinct unicast MAC per `i` (multiplying by an odd constant permutes the u32s).
fn mac(i: u64) -> Mac {
    Mac::local_from(u64::from((i as u32).wrapping_mul(0x9e37_79b1)))
}

fn frame(dst: Mac, src: Mac, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, 0x5a);
    f
}

fn handle_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle_frame");
    g.throughput(Throughput::Elements(BATCH as u64));
    for len in [64usize, 1514] {
        let mut sw = Switch::new(SwitchConfig::default());
        sw.add_network(NET).unwrap();
        for p in 0..PORTS {
            sw.add_port(PortId(p), PortConfig { network: NET, max_frame: 1518 }).unwrap();
        }
        let port_of = |h: u64| PortId((h % u64::from(PORTS)) as u32);
        // Learn every host on its port.
        for h in 0..HOSTS {
            sw.handle_frame(NOW, port_of(h), &frame(Mac::BROADCAST, mac(h), 64), false);
        }
        assert_eq!(sw.fdb().len(), HOSTS as usize);

        let mut rng = StdRng::seed_from_u64(1);
        let frames: Vec<(PortId, Vec<u8>)> = (0..BATCH)
            .map(|_| {
                let src = rng.gen_range(0..HOSTS);
                let dst = loop {
                    let d = rng.gen_range(0..HOSTS);
                    if port_of(d) != port_of(src) {
                        break d;
                    }
                };
                (port_of(src), frame(mac(dst), mac(src), len))
            })
            .collect();
        for (port, f) in &frames {
            assert!(matches!(sw.handle_frame(NOW, *port, f, false), Verdict::Forward(_)));
        }

        let name = if len == 64 { "64B" } else { "1514B" };
        g.bench_function(BenchmarkId::new("unicast_learned", name), |b| {
            b.iter(|| {
                for (port, f) in &frames {
                    black_box(sw.handle_frame(NOW, *port, black_box(f), false));
                }
            })
        });
    }
    g.finish();
}

fn fdb_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_lookup");
    g.throughput(Throughput::Elements(BATCH as u64));
    for entries in [1_000u64, 100_000] {
        let n = entries as usize;
        let mut fdb = Fdb::new(FdbConfig { max_entries: n, per_port_max: n, aging: Duration::from_secs(300) });
        let key = |i: u64| (NetworkId((i % 4) as u32), mac(i));
        for i in 0..entries {
            let (net, m) = key(i);
            assert_eq!(fdb.learn(NOW, net, m, PortId((i % 64) as u32)), Learn::Learned);
        }
        let mut rng = StdRng::seed_from_u64(2);
        // Many batches of random keys, so the large table is not served from a warm subset.
        let keys: Vec<(NetworkId, Mac)> = (0..BATCH * 256).map(|_| key(rng.gen_range(0..entries))).collect();
        assert!(keys.iter().all(|&(net, m)| fdb.lookup(NOW, net, m).is_some()));
        let mut batches = keys.chunks_exact(BATCH).cycle();

        g.bench_function(BenchmarkId::new("hit", entries), |b| {
            b.iter(|| {
                let batch = batches.next().unwrap_or_default();
                for &(net, m) in batch {
                    black_box(fdb.lookup(NOW, net, m));
                }
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = handle_frame, fdb_lookup }
criterion_main!(benches);
