//! Arbitrary impairments and arbitrary traffic through the link impairment core: never a panic;
//! a refused configuration names a field; a frame is never due before it came; no more than
//! the queue bound is ever held; every frame held comes out. The bytes also go to the API's
//! JSON parser for `POST /v1/ports/impair`.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vswitch::impair::{Decision, Distribution, Impairment, Link, Loss};

fn u32_at(d: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<vswitch::api::ImpairRequest>(data);
    if data.len() < 32 {
        return;
    }
    let pct = |i: usize| f64::from(data[i]) * 0.5; // 0..127.5: some out of range on purpose
    let loss = match data[0] % 3 {
        0 => None,
        1 => Some(Loss::Random { percent: pct(1) }),
        _ => Some(Loss::GilbertElliott { p_percent: pct(1), r_percent: pct(2), bad_loss_percent: pct(3), good_loss_percent: pct(4) }),
    };
    let imp = Impairment {
        delay_us: u64::from(u32_at(data, 5)) * 32,
        jitter_us: u64::from(u32_at(data, 9)) * 32,
        distribution: if data[13] & 1 == 0 { Distribution::Uniform } else { Distribution::Normal },
        loss,
        rate_bps: (data[13] & 2 != 0).then(|| u64::from(u32_at(data, 14)) * 8),
        queue: (data[13] & 4 != 0).then(|| u32::from(data[18]) * 4),
        reorder_percent: pct(19),
        duplicate_percent: pct(20),
        seed: Some(u64::from(u32_at(data, 21))),
    };
    let cfg = match imp.check(0) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.0.is_empty());
            return;
        }
    };
    let bound = imp.queue.unwrap_or(vswitch::impair::DEFAULT_QUEUE) as u64;
    let mut link: Link<Duration> = Link::new(cfg);
    let (mut now, mut held, mut out) = (Duration::ZERO, 0u64, 0u64);
    for chunk in data[25..].chunks(3) {
        now += Duration::from_micros(u64::from(chunk[0]) * 97);
        while let Some(came) = link.pop_due(now) {
            assert!(came <= now);
            out += 1;
        }
        let len = usize::from(*chunk.get(1).unwrap_or(&0)) * 256 + 60;
        if let Decision::Hold { at, twice } = link.decide(now, len) {
            assert!(at >= now);
            link.hold(at, now);
            held += 1;
            if twice {
                link.hold(at, now);
                held += 1;
            }
        }
        assert!(link.counters().queued <= bound);
    }
    while link.pop_any().is_some() {
        out += 1;
    }
    assert_eq!(held, out);
});
