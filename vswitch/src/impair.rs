//! Link impairments: delay with jitter, loss (random or Gilbert-Elliott bursts), a rate limit
//! with a bounded queue, reordering and duplication, for one port and one direction.
//!
//! I/O-free like the other cores: time comes in as an argument (the datapath's clock, a virtual
//! one in tests) and nothing here reads a clock, a socket or the OS's randomness. A [`Link`]
//! decides each frame ([`Link::decide`]: drop it, or hold it until some time, once or twice)
//! and holds what the caller gives it until it is due ([`Link::hold`], [`Link::pop_due`],
//! [`Link::next_due`]). Randomness comes from a ChaCha8 generator seeded by the configuration,
//! and every frame draws the same amount from it whatever its fate, so with one seed the same
//! sequence of frames meets the same fate, frame for frame, run after run.
//!
//! Order of the stages (as in netem): loss, then the queue bound, then the rate limit (a token
//! bucket: frames leave at the rate, bursts up to [`BURST`] of it), then the delay and its
//! jitter. A frame never overtakes the one before it through jitter (a real link keeps order);
//! only `reorder` sends a frame ahead, skipping the delay (and needs a delay to overtake).

use std::collections::BinaryHeap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Most frames held per port and direction unless the configuration says otherwise (netem's
/// default limit).
pub const DEFAULT_QUEUE: u32 = 1000;
/// The largest queue bound accepted.
pub const MAX_QUEUE: u32 = 100_000;
/// The longest delay or jitter accepted.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// The token bucket holds this much of the rate (5 ms worth), and at least one 64 KiB
/// super-frame, so a rate is kept over any window longer than that.
pub const BURST: Duration = Duration::from_millis(5);
const MIN_BURST_BYTES: f64 = 65_536.0;

/// How jitter is spread around the delay.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Evenly within delay ± jitter.
    #[default]
    Uniform,
    /// Normal, with the jitter as its standard deviation (cut at ± 4 of them, never below 0).
    Normal,
}

/// Which frames are lost.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Each frame independently, with this probability (percent).
    Random { percent: f64 },
    /// Gilbert-Elliott: a good and a bad state; `p_percent` is the chance to go from good to
    /// bad at each frame, `r_percent` from bad back to good; in the bad state a frame is lost
    /// with `bad_loss_percent` (default 100), in the good one with `good_loss_percent`
    /// (default 0). Mean loss p/(p+r) with the defaults, in bursts of mean length 100/r.
    GilbertElliott {
        p_percent: f64,
        r_percent: f64,
        #[serde(default = "hundred")]
        bad_loss_percent: f64,
        #[serde(default)]
        good_loss_percent: f64,
    },
}

fn hundred() -> f64 {
    100.0
}

impl Loss {
    /// Gilbert's model with a mean loss rate and a mean burst length (in frames, at least 1):
    /// what `--loss P% --loss-burst N` means.
    pub fn bursty(percent: f64, mean_burst: f64) -> Loss {
        let r = 100.0 / mean_burst.max(1.0);
        let l = (percent / 100.0).clamp(0.0, 0.999_999);
        // Steady state of the bad state is p/(p+r) = l.
        let p = r * l / (1.0 - l);
        Loss::GilbertElliott { p_percent: p, r_percent: r, bad_loss_percent: 100.0, good_loss_percent: 0.0 }
    }
}

/// One direction's impairments, as the API carries them. Everything left out is off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Impairment {
    /// Added to every frame, in microseconds.
    #[serde(default)]
    pub delay_us: u64,
    /// Spread of the delay, in microseconds.
    #[serde(default)]
    pub jitter_us: u64,
    #[serde(default)]
    pub distribution: Distribution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    /// Bits per second the frames leave at (Ethernet frame bytes, no preamble or gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    /// Most frames held at once (waiting for the rate or the delay); past it frames are
    /// dropped. Default [`DEFAULT_QUEUE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// Percent of frames sent ahead, without the delay.
    #[serde(default)]
    pub reorder_percent: f64,
    /// Percent of frames sent twice.
    #[serde(default)]
    pub duplicate_percent: f64,
    /// Seed of the generator; the daemon picks one (and shows it) when it is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Why an [`Impairment`] was refused: a message for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn percent(name: &str, v: f64) -> Result<f64, Invalid> {
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(Invalid(format!("{name} must be a percentage from 0 to 100, not {v}")));
    }
    Ok(v / 100.0)
}

/// An [`Impairment`] checked, in the units the link works in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    delay: Duration,
    jitter: Duration,
    distribution: Distribution,
    loss: LossModel,
    /// Bytes per second.
    rate: Option<f64>,
    queue: usize,
    reorder: f64,
    duplicate: f64,
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LossModel {
    None,
    Random(f64),
    Ge { p: f64, r: f64, bad: f64, good: f64 },
}

impl Impairment {
    /// Checks every field; `seed` stands in when the impairment names none.
    ///
    /// # Errors
    /// [`Invalid`] naming the first field out of range: a percentage outside 0–100, a delay or
    /// jitter above 60 s, a rate below 8 kbit/s, a queue of 0 or above [`MAX_QUEUE`], a
    /// reorder without a delay, a Gilbert-Elliott transition of 0.
    pub fn check(&self, seed: u64) -> Result<Config, Invalid> {
        let delay = Duration::from_micros(self.delay_us);
        let jitter = Duration::from_micros(self.jitter_us);
        if delay > MAX_DELAY || jitter > MAX_DELAY {
            return Err(Invalid(format!("delay and jitter must be at most {} s", MAX_DELAY.as_secs())));
        }
        let loss = match self.loss {
            None => LossModel::None,
            Some(Loss::Random { percent: p }) => LossModel::Random(percent("loss", p)?),
            Some(Loss::GilbertElliott { p_percent, r_percent, bad_loss_percent, good_loss_percent }) => {
                let p = percent("the good-to-bad transition (p)", p_percent)?;
                let r = percent("the bad-to-good transition (r)", r_percent)?;
                if r == 0.0 {
                    return Err(Invalid("the bad-to-good transition (r) must be above 0: a burst would never end".into()));
                }
                let bad = percent("the loss in the bad state", bad_loss_percent)?;
                let good = percent("the loss in the good state", good_loss_percent)?;
                LossModel::Ge { p, r, bad, good }
            }
        };
        let rate = match self.rate_bps {
            None => None,
            Some(b) if b < 8_000 => return Err(Invalid(format!("a rate of {b} bit/s is below the least accepted, 8 kbit/s"))),
            Some(b) => Some(b as f64 / 8.0),
        };
        let queue = self.queue.unwrap_or(DEFAULT_QUEUE);
        if queue == 0 || queue > MAX_QUEUE {
            return Err(Invalid(format!("the queue must hold 1 to {MAX_QUEUE} frames, not {queue}")));
        }
        let reorder = percent("reorder", self.reorder_percent)?;
        if reorder > 0.0 && delay.is_zero() {
            return Err(Invalid("reordering sends some frames ahead of delayed ones: give a delay too".into()));
        }
        let duplicate = percent("duplicate", self.duplicate_percent)?;
        Ok(Config {
            delay,
            jitter,
            distribution: self.distribution,
            loss,
            rate,
            queue: queue as usize,
            reorder,
            duplicate,
            seed: self.seed.unwrap_or(seed),
        })
    }
}

impl Config {
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// Why a frame was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The loss model took it.
    Loss,
    /// The queue held its bound already.
    QueueFull,
}

/// What becomes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop(Dropped),
    /// Hold it until `at` ([`Link::hold`]); with `twice`, hold a copy until the same time too.
    Hold {
        at: Duration,
        twice: bool,
    },
}

/// What a link did, since it was configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames offered.
    pub frames: u64,
    /// Frames held past the time they came (by the delay or the rate).
    pub delayed: u64,
    pub dropped_loss: u64,
    pub dropped_queue_full: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Frames held now.
    pub queued: u64,
}

#[derive(Debug)]
struct Held<T> {
    at: Duration,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Held<T> {
    /// Reversed: the heap's top is the earliest (then the first held).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One port's impairments in one direction, and the frames it holds (`T`: whatever the caller
/// keeps a frame in).
#[derive(Debug)]
pub struct Link<T> {
    cfg: Config,
    rng: ChaCha8Rng,
    bad: bool,
    /// When the last frame through the token bucket left, and the tokens (bytes) left then.
    bucket_at: Duration,
    tokens: f64,
    /// Release time of the last frame sent in order: no later frame leaves before it.
    last_in_order: Duration,
    held: BinaryHeap<Held<T>>,
    seq: u64,
    counters: Counters,
}

impl<T> Link<T> {
    pub fn new(cfg: Config) -> Link<T> {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let tokens = cfg.rate.map_or(0.0, burst_bytes);
        Link {
            cfg,
            rng,
            bad: false,
            bucket_at: Duration::ZERO,
            tokens,
            last_in_order: Duration::ZERO,
            held: BinaryHeap::new(),
            seq: 0,
            counters: Counters::default(),
        }
    }

    /// Puts a new configuration in place (a live change): frames held keep their times, the
    /// generator starts again from the new seed, the counters from zero.
    pub fn reconfigure(&mut self, cfg: Config) {
        self.rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        self.bad = false;
        self.tokens = cfg.rate.map_or(0.0, burst_bytes);
        self.cfg = cfg;
        self.counters = Counters { queued: self.held.len() as u64, ..Counters::default() };
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn counters(&self) -> Counters {
        Counters { queued: self.held.len() as u64, ..self.counters }
    }

    /// Decides a frame of `len` bytes that comes at `now`. On [`Decision::Hold`] the caller
    /// must [`Link::hold`] it (and its copy) with that time.
    pub fn decide(&mut self, now: Duration, len: usize) -> Decision {
        // The same draws for every frame, whatever happens to it: a seed gives the same fates
        // to the same sequence of frames.
        let u_loss: f64 = self.rng.gen();
        let u_state: f64 = self.rng.gen();
        let u_j1: f64 = self.rng.gen();
        let u_j2: f64 = self.rng.gen();
        let u_reorder: f64 = self.rng.gen();
        let u_dup: f64 = self.rng.gen();
        self.counters.frames += 1;
        let lost = match self.cfg.loss {
            LossModel::None => false,
            LossModel::Random(p) => u_loss < p,
            LossModel::Ge { p, r, bad, good } => {
                // The state moves first, then this frame meets the state's loss.
                self.bad = if self.bad { u_state >= r } else { u_state < p };
                u_loss < if self.bad { bad } else { good }
            }
        };
        if lost {
            self.counters.dropped_loss += 1;
            return Decision::Drop(Dropped::Loss);
        }
        let twice = u_dup < self.cfg.duplicate;
        if self.held.len() + 1 + usize::from(twice) > self.cfg.queue {
            self.counters.dropped_queue_full += 1;
            return Decision::Drop(Dropped::QueueFull);
        }
        let leaves = self.through_bucket(now, len);
        let reordered = u_reorder < self.cfg.reorder;
        let at = if reordered {
            self.counters.reordered += 1;
            leaves
        } else {
            let at = (leaves + self.delay_sample(u_j1, u_j2)).max(self.last_in_order);
            self.last_in_order = at;
            at
        };
        if at > now {
            self.counters.delayed += 1;
        }
        if twice {
            self.counters.duplicated += 1;
        }
        Decision::Hold { at, twice }
    }

    /// When a frame of `len` bytes coming at `now` leaves the token bucket.
    fn through_bucket(&mut self, now: Duration, len: usize) -> Duration {
        let Some(rate) = self.cfg.rate else { return now };
        let burst = burst_bytes(rate);
        // Frames leave in order: this one starts when it came or when the last one left.
        let start = now.max(self.bucket_at);
        let tokens = (self.tokens + (start - self.bucket_at).as_secs_f64() * rate).min(burst);
        let len = len as f64;
        let (leaves, left) =
            if tokens >= len { (start, tokens - len) } else { (start + Duration::from_secs_f64((len - tokens) / rate), 0.0) };
        self.bucket_at = leaves;
        self.tokens = left;
        leaves
    }

    fn delay_sample(&self, u1: f64, u2: f64) -> Duration {
        let (d, j) = (self.cfg.delay.as_secs_f64(), self.cfg.jitter.as_secs_f64());
        if j == 0.0 {
            return self.cfg.delay;
        }
        let off = match self.cfg.distribution {
            Distribution::Uniform => (2.0 * u1 - 1.0) * j,
            Distribution::Normal => {
                // Box-Muller; 1 - u1 is in (0, 1], so its logarithm is finite.
                let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                z.clamp(-4.0, 4.0) * j
            }
        };
        Duration::from_secs_f64((d + off).max(0.0))
    }

    /// Holds `item` until `at` (from [`Decision::Hold`]).
    pub fn hold(&mut self, at: Duration, item: T) {
        self.seq += 1;
        self.held.push(Held { at, seq: self.seq, item });
    }

    /// The next frame due at `now`, earliest first (frames due at the same time in the order
    /// they were held).
    pub fn pop_due(&mut self, now: Duration) -> Option<T> {
        if self.held.peek()?.at > now {
            return None;
        }
        self.held.pop().map(|h| h.item)
    }

    /// Every frame held, earliest first, due or not (the impairment is being removed).
    pub fn pop_any(&mut self) -> Option<T> {
        self.held.pop().map(|h| h.item)
    }

    /// When the next held frame is due.
    pub fn next_due(&self) -> Option<Duration> {
        self.held.peek().map(|h| h.at)
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

fn burst_bytes(rate: f64) -> f64 {
    (rate * BURST.as_secs_f64()).max(MIN_BURST_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(i: Impairment) -> Link<u64> {
        Link::new(i.check(1).unwrap())
    }

    /// Offers frames 0..n of `len` bytes, one every `gap`; returns (frame, release time) of
    /// everything released, in release order, and the drops.
    fn run(l: &mut Link<u64>, n: u64, len: usize, gap: Duration) -> (Vec<(u64, Duration)>, Vec<u64>) {
        let (mut out, mut dropped) = (Vec::new(), Vec::new());
        let mut now = Duration::ZERO;
        let step = Duration::from_micros(100);
        let end = gap * n as u32 + ms(120_000);
        let mut next = 0;
        while now <= end && (next < n || !l.is_empty()) {
            while next < n && gap * next as u32 <= now {
                match l.decide(now, len) {
                    Decision::Drop(_) => dropped.push(next),
                    Decision::Hold { at, twice } => {
                        l.hold(at, next);
                        if twice {
                            l.hold(at, next);
                        }
                    }
                }
                next += 1;
            }
            while let Some(f) = l.pop_due(now) {
                out.push((f, now));
            }
            now += step;
        }
        (out, dropped)
    }

    #[test]
    fn fixed_delay_holds_each_frame_exactly_that_long() {
        let mut l = link(Impairment { delay_us: 20_000, ..Default::default() });
        let (out, dropped) = run(&mut l, 50, 100, ms(1));
        assert!(dropped.is_empty());
        assert_eq!(out.len(), 50);
        for (k, (f, t)) in out.iter().enumerate() {
            assert_eq!(*f, k as u64, "in order");
            assert_eq!(*t, ms(1) * k as u32 + ms(20));
        }
        let c = l.counters();
        assert_eq!((c.frames, c.delayed, c.queued), (50, 50, 0));
    }

    #[test]
    fn uniform_jitter_stays_within_bounds_and_keeps_order() {
        let mut l = link(Impairment { delay_us: 20_000, jitter_us: 5_000, ..Default::default() });
        let mut prev = Duration::ZERO;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for k in 0..2000u64 {
            let now = ms(100) * k as u32; // far apart: order never binds
            let Decision::Hold { at, .. } = l.decide(now, 100) else { panic!() };
            let d = at - now;
            assert!(d >= ms(15) && d <= ms(25), "{d:?}");
            assert!(at >= prev);
            prev = at;
            spread = (spread.0.min(d), spread.1.max(d));
        }
        assert!(spread.0 < ms(16) && spread.1 > ms(24), "covers the range: {spread:?}");
    }

    #[test]
    fn normal_jitter_has_its_mean_and_deviation() {
        let mut l = link(Impairment { delay_us: 50_000, jitter_us: 5_000, distribution: Distribution::Normal, ..Default::default() });
        let n = 20_000;
        let samples: Vec<f64> = (0..n)
            .map(|k| {
                let now = ms(1000) * k as u32;
                let Decision::Hold { at, .. } = l.decide(now, 100) else { panic!() };
                (at - now).as_secs_f64() * 1e3
            })
            .collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let sd = (samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((mean - 50.0).abs() < 0.2, "mean {mean}");
        assert!((sd - 5.0).abs() < 0.2, "sd {sd}");
        assert!(samples.iter().all(|&s| (30.0..=70.0).contains(&s)));
    }

    #[test]
    fn random_loss_rate_and_repeatability() {
        let imp = Impairment { loss: Some(Loss::Random { percent: 10.0 }), seed: Some(7), ..Default::default() };
        let (_, a) = run(&mut link(imp.clone()), 20_000, 100, ms(1));
        let (_, b) = run(&mut link(imp.clone()), 20_000, 100, ms(1));
        assert_eq!(a, b, "same seed, same frames lost");
        let rate = a.len() as f64 / 20_000.0;
        assert!((rate - 0.10).abs() < 0.01, "{rate}");
        let (_, c) = run(&mut link(Impairment { seed: Some(8), ..imp }), 20_000, 100, ms(1));
        assert_ne!(a, c, "another seed, other frames");
    }

    #[test]
    fn the_same_frames_are_lost_whatever_the_timing() {
        // Fates follow the frame's index, not the clock or the queue.
        let imp = Impairment { loss: Some(Loss::Random { percent: 10.0 }), delay_us: 5_000, seed: Some(3), ..Default::default() };
        let (_, a) = run(&mut link(imp.clone()), 500, 100, ms(1));
        let (_, b) = run(&mut link(imp), 500, 100, ms(7));
        assert_eq!(a, b);
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts_at_the_mean_rate() {
        let imp = Impairment { loss: Some(Loss::bursty(10.0, 4.0)), seed: Some(11), ..Default::default() };
        let n = 100_000;
        let (_, lost) = run(&mut link(imp), n, 100, Duration::from_micros(10));
        let rate = lost.len() as f64 / n as f64;
        assert!((rate - 0.10).abs() < 0.01, "rate {rate}");
        // Mean run length of consecutive losses.
        let mut runs = 0;
        for (k, f) in lost.iter().enumerate() {
            if k == 0 || lost[k - 1] + 1 != *f {
                runs += 1;
            }
        }
        let mean = lost.len() as f64 / runs as f64;
        assert!((mean - 4.0).abs() < 0.4, "mean burst {mean}");
    }

    #[test]
    fn rate_limit_spaces_frames_at_the_rate() {
        // 8 Mbit/s = 1 MB/s: 1000-byte frames leave one per ms once the burst is spent.
        let mut l = link(Impairment { rate_bps: Some(8_000_000), queue: Some(100_000), ..Default::default() });
        let n = 10_000u64;
        let mut last = Duration::ZERO;
        for _ in 0..n {
            let Decision::Hold { at, .. } = l.decide(Duration::ZERO, 1000) else { panic!() };
            assert!(at >= last);
            last = at;
        }
        // 10 MB at 1 MB/s, less the burst (65536 bytes) that left at once.
        let want = (n as f64 * 1000.0 - 65_536.0) / 1e6;
        assert!((last.as_secs_f64() - want).abs() < 0.002, "{last:?} vs {want}");
    }

    #[test]
    fn queue_bound_drops_and_counts() {
        let mut l = link(Impairment { rate_bps: Some(80_000), queue: Some(10), ..Default::default() });
        let (out, dropped) = run(&mut l, 100, 1000, Duration::ZERO);
        assert_eq!(out.len(), 10);
        assert_eq!(dropped.len(), 90);
        assert_eq!(l.counters().dropped_queue_full, 90);
    }

    #[test]
    fn reorder_sends_some_frames_ahead() {
        let mut l = link(Impairment { delay_us: 10_000, reorder_percent: 25.0, seed: Some(5), ..Default::default() });
        let (out, _) = run(&mut l, 1000, 100, ms(1));
        let order: Vec<u64> = out.iter().map(|(f, _)| *f).collect();
        let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
        let c = l.counters();
        assert!((200..300).contains(&c.reordered), "{}", c.reordered);
        assert!(inversions > 100, "{inversions}");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "nothing lost or doubled");
    }

    #[test]
    fn duplicates_are_counted_and_held_twice() {
        let mut l = link(Impairment { duplicate_percent: 20.0, seed: Some(9), ..Default::default() });
        let (out, _) = run(&mut l, 1000, 100, ms(1));
        let c = l.counters();
        assert_eq!(out.len() as u64, 1000 + c.duplicated);
        assert!((150..250).contains(&c.duplicated), "{}", c.duplicated);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let bad = |i: Impairment| i.check(0).unwrap_err().0;
        assert!(bad(Impairment { loss: Some(Loss::Random { percent: 101.0 }), ..Default::default() }).contains("loss"));
        assert!(bad(Impairment { loss: Some(Loss::Random { percent: f64::NAN }), ..Default::default() }).contains("loss"));
        assert!(bad(Impairment { delay_us: 61_000_000, ..Default::default() }).contains("delay"));
        assert!(bad(Impairment { rate_bps: Some(100), ..Default::default() }).contains("rate"));
        assert!(bad(Impairment { queue: Some(0), ..Default::default() }).contains("queue"));
        assert!(bad(Impairment { reorder_percent: 5.0, ..Default::default() }).contains("delay"));
        assert!(bad(Impairment { duplicate_percent: -1.0, ..Default::default() }).contains("duplicate"));
        let ge = Loss::GilbertElliott { p_percent: 1.0, r_percent: 0.0, bad_loss_percent: 100.0, good_loss_percent: 0.0 };
        assert!(bad(Impairment { loss: Some(ge), ..Default::default() }).contains("(r)"));
        assert_eq!(Impairment::default().check(42).unwrap().seed(), 42);
    }

    #[test]
    fn wire_form() {
        let i: Impairment = serde_json::from_str(
            r#"{"delay_us":20000,"loss":{"model":"gilbert_elliott","p_percent":1,"r_percent":25},"rate_bps":50000000}"#,
        )
        .unwrap();
        assert_eq!(i.loss, Some(Loss::GilbertElliott { p_percent: 1.0, r_percent: 25.0, bad_loss_percent: 100.0, good_loss_percent: 0.0 }));
        assert!(serde_json::from_str::<Impairment>(r#"{"delay":"20ms"}"#).is_err());
    }

    #[test]
    fn reconfigure_keeps_held_frames_and_restarts_the_generator() {
        let imp = Impairment { loss: Some(Loss::Random { percent: 50.0 }), delay_us: 1000, seed: Some(1), ..Default::default() };
        let mut l = link(imp.clone());
        let first: Vec<bool> = (0..50).map(|_| matches!(l.decide(Duration::ZERO, 10), Decision::Drop(_))).collect();
        l.hold(ms(1), 99);
        l.reconfigure(imp.check(0).unwrap());
        let again: Vec<bool> = (0..50).map(|_| matches!(l.decide(Duration::ZERO, 10), Decision::Drop(_))).collect();
        assert_eq!(first, again);
        assert_eq!(l.counters().queued, 1);
        assert_eq!(l.pop_due(ms(1)), Some(99));
    }

    proptest! {
        /// Against a model: every frame offered is dropped once or released (twice when
        /// duplicated), never before it came nor before the delay less the jitter, at most
        /// `queue` are held at once, and in-order frames leave in order.
        #[test]
        fn link_against_model(
            delay in 0u64..20_000, jitter in 0u64..10_000, loss in 0.0f64..50.0, dup in 0.0f64..30.0,
            rate in proptest::option::of(100_000u64..100_000_000), queue in 1u32..64,
            gaps in proptest::collection::vec(0u64..3_000, 1..300), lens in proptest::collection::vec(60usize..9000, 1..300),
            seed in any::<u64>(), normal in any::<bool>(),
        ) {
            let imp = Impairment {
                delay_us: delay, jitter_us: jitter, loss: Some(Loss::Random { percent: loss }), duplicate_percent: dup,
                rate_bps: rate, queue: Some(queue), seed: Some(seed),
                distribution: if normal { Distribution::Normal } else { Distribution::Uniform },
                ..Default::default()
            };
            let mut l: Link<(usize, Duration)> = Link::new(imp.check(0).unwrap());
            let mut now = Duration::ZERO;
            let (mut released, mut dropped, mut doubled) = (vec![0u32; gaps.len()], 0usize, 0usize);
            let mut last_at = Duration::ZERO;
            for (k, g) in gaps.iter().enumerate() {
                now += Duration::from_micros(*g);
                while let Some((f, came)) = l.pop_due(now) {
                    prop_assert!(now >= came);
                    released[f] += 1;
                }
                match l.decide(now, lens[k % lens.len()]) {
                    Decision::Drop(_) => dropped += 1,
                    Decision::Hold { at, twice } => {
                        prop_assert!(at >= now);
                        prop_assert!(at + Duration::from_micros(4 * jitter) >= now + Duration::from_micros(delay));
                        prop_assert!(at >= last_at, "in order");
                        last_at = at;
                        l.hold(at, (k, now));
                        if twice { l.hold(at, (k, now)); doubled += 1; }
                    }
                }
                prop_assert!(l.counters().queued <= u64::from(queue));
            }
            while let Some((f, _)) = l.pop_any() { released[f] += 1; }
            let c = l.counters();
            prop_assert_eq!(c.frames as usize, gaps.len());
            prop_assert_eq!((c.dropped_loss + c.dropped_queue_full) as usize, dropped);
            prop_assert_eq!(c.duplicated as usize, doubled);
            prop_assert_eq!(released.iter().map(|&r| r as usize).sum::<usize>(), gaps.len() - dropped + doubled);
            prop_assert!(released.iter().all(|&r| r <= 2));
        }
    }
}
