mod util;
use std::time::Duration;
use tunnel::SendResult;
use util::*;

#[test]
fn explore_volume() {
    let mut bad = 0;
    for seed in 0..40u64 {
        for &(jit, lim, lat) in &[(0u64, 50u64, 5u64), (1, 100, 5), (2, 37, 1), (5, 100, 5), (10, 64, 3), (3, 20, 10)] {
            let mut a = config(1);
            let mut b = config(2);
            a.rekey_after_packets = lim;
            b.rekey_after_packets = lim;
            let (mut sim, b_at_a, a_at_b) = Sim::pair_with(a, b);
            sim.reseed(seed);
            sim.link.jitter = ms(jit);
            sim.link.latency = ms(lat);
            assert_eq!(sim.send(0, b_at_a, 1, &frame(u64::MAX, 60)), SendResult::Queued);
            sim.run_for(ms(100));
            sim.nodes[1].frames.clear();
            let start = sim.now;
            let n = 1500u64;
            for i in 0..n {
                sim.run_until(start + Duration::from_micros(i * 1500));
                let ra = sim.send(0, b_at_a, 1, &frame(i, 64));
                let rb = sim.send(1, a_at_b, 1, &frame(i, 64));
                if !matches!(ra, SendResult::Datagram{..}) || !matches!(rb, SendResult::Datagram{..}) { eprintln!("seed {seed} {jit} {lim}: send {i} {ra:?} {rb:?}"); }
            }
            sim.run_for(ms(200));
            let (ga, gb) = (sim.seqs(0).len(), sim.seqs(1).len());
            if ga != n as usize || gb != n as usize {
                bad += 1;
                eprintln!("seed {seed} jit {jit} lim {lim} lat {lat}: A got {ga} B got {gb}; drops A {:?} B {:?}", sim.nodes[0].tunnel.drops(), sim.nodes[1].tunnel.drops());
            }
        }
    }
    assert_eq!(bad, 0);
}

#[test]
fn explore_time_one_way() {
    let mut bad = 0;
    for seed in 0..6u64 {
        for &(dir, jit) in &[(0usize, 0u64), (1, 0), (0, 4), (1, 4), (2, 3)] {
            let (mut sim, b_at_a, a_at_b) = Sim::pair();
            sim.reseed(seed);
            sim.link.jitter = ms(jit);
            // B initiates in half the cases.
            if seed % 2 == 0 {
                assert_eq!(sim.send(0, b_at_a, 1, &frame(u64::MAX, 60)), SendResult::Queued);
            } else {
                assert_eq!(sim.send(1, a_at_b, 1, &frame(u64::MAX, 60)), SendResult::Queued);
            }
            sim.run_for(ms(100));
            sim.nodes[0].frames.clear();
            sim.nodes[1].frames.clear();
            let start = sim.now;
            let n = 30_000u64; // 600 s at 20 ms
            let mut queued = 0;
            for i in 0..n {
                sim.run_until(start + Duration::from_millis(i * 20));
                if dir != 1 {
                    if !matches!(sim.send(0, b_at_a, 1, &frame(i, 64)), SendResult::Datagram{..}) { queued += 1; }
                }
                if dir != 0 {
                    if !matches!(sim.send(1, a_at_b, 1, &frame(i, 64)), SendResult::Datagram{..}) { queued += 1; }
                }
            }
            sim.run_for(ms(200));
            let (ga, gb) = (sim.seqs(0).len(), sim.seqs(1).len());
            let ea = if dir != 0 { n as usize } else { 0 };
            let eb = if dir != 1 { n as usize } else { 0 };
            let ia = sim.nodes[0].tunnel.peer(b_at_a).unwrap();
            if ga != ea || gb != eb || queued > 0 {
                bad += 1;
                eprintln!("seed {seed} dir {dir} jit {jit}: A got {ga}/{ea} B got {gb}/{eb} queued {queued}; drops A {:?} B {:?} hs {}", sim.nodes[0].tunnel.drops(), sim.nodes[1].tunnel.drops(), ia.handshakes);
            } else {
                eprintln!("ok seed {seed} dir {dir}: handshakes {}", ia.handshakes);
            }
        }
    }
    assert_eq!(bad, 0);
}

#[test]
fn explore_lossy_long() {
    for seed in 0..6u64 {
        let (mut sim, b_at_a, a_at_b) = Sim::pair();
        sim.reseed(seed);
        sim.link = Link { latency: ms(5), jitter: ms(20), loss: 0.25, duplicate: 0.1 };
        let n = 30_000u64;
        for i in 0..n {
            sim.run_until(Duration::from_millis(i * 20));
            sim.send(0, b_at_a, 1, &frame(i, 64));
            if i % 3 == 0 { sim.send(1, a_at_b, 1, &frame(i, 64)); }
        }
        sim.run_for(secs(1));
        let mut got = sim.seqs(1);
        got.sort_unstable();
        let gaps = got.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        let ia = sim.nodes[0].tunnel.peer(b_at_a).unwrap();
        eprintln!("seed {seed}: B got {} of {n}, first {}, max gap {} frames; hs {}; A peer drops {:?}; B peer drops {:?} B drops {:?}", got.len(), got[0], gaps, ia.handshakes, ia.drops, sim.nodes[1].tunnel.peer(a_at_b).unwrap().drops, sim.nodes[1].tunnel.drops());
    }
}
