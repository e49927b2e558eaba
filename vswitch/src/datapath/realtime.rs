//! When the datapath threads run as real-time threads (`SCHED_FIFO`).
//!
//! The kernel's bridge forwards in softirq, ahead of every process; a userspace switch is a
//! process like the containers' own. While the CPUs are idle that costs nothing (the thread is
//! woken where its waker runs). When they are busy, a frame that wakes the datapath thread
//! waits for a bulk flow's processes to use up their time slice: milliseconds at p99 on a
//! small box (benches/RESULTS.md: the bare copy loop pays the same). A `SCHED_FIFO` thread
//! runs as soon as it wakes instead. Kept on while the CPUs idle, it is slower: a real-time
//! thread is not woken on its waker's CPU but on its own, which a VM must first bring out of
//! halt. So [`Mode::Auto`] (the default) turns it on only while the CPUs are busy, from the
//! CPU time counters of `/proc/stat`, with hysteresis ([`Governor`]).
//!
//! This module is I/O-free: the daemon reads `/proc/stat` and sets the policy of the threads
//! listed in [`Threads`] (`sys::set_thread_realtime`).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// `--datapath-realtime`: when the datapath threads are `SCHED_FIFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// While the CPUs are busy (see [`Governor`]).
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never: they keep the default policy (and `--datapath-nice`).
    Never,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "always" => Ok(Mode::Always),
            "never" => Ok(Mode::Never),
            _ => Err(format!("{s:?} is not one of auto, always, never")),
        }
    }
}

/// The real-time priority the threads get: the lowest, above every normal thread and below any
/// real-time thread the host has.
pub const PRIORITY: i32 = 1;

/// The datapath threads' kernel thread ids, and whether they are real-time now.
#[derive(Debug, Default)]
pub struct Threads {
    tids: Mutex<Vec<i32>>,
    on: AtomicBool,
}

impl Threads {
    /// Adds a thread (each datapath thread adds itself when it starts).
    pub fn register(&self, tid: i32) {
        self.tids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(tid);
    }

    pub fn tids(&self) -> Vec<i32> {
        self.tids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether the threads are `SCHED_FIFO` now.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Records that the threads were switched on or off.
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }
}

/// CPU time of all CPUs together, in clock ticks: the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// user, system, irq and softirq. Not nice: processes at a nice above 0 (a build, a
    /// fuzzer) give way to a woken thread at 0 anyway, so they do not call for real-time.
    pub busy: u64,
    /// All of the line's fields (idle, iowait and steal too).
    pub total: u64,
}

impl CpuTimes {
    /// Parses the first line of `/proc/stat` (`cpu  user nice system idle iowait irq softirq
    /// steal ...`); `None` when it is not that.
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().next()?;
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields.map(str::parse).collect::<Result<_, _>>().ok()?;
        if v.len() < 7 {
            return None;
        }
        // Guest time (fields 9 and 10) is already counted in user and nice.
        let total = v.iter().take(8).sum();
        let busy = v[0] + v[2] + v[5] + v[6];
        Some(CpuTimes { busy, total })
    }
}

/// Decides, from one [`CpuTimes`] sample per [`Governor::TICK`], whether the threads should be
/// real-time: on as soon as one tick finds the CPUs [`Governor::BUSY`], off once they have
/// stayed below [`Governor::CALM`] for [`Governor::CALM_FOR`] (a bulk flow's pauses do not
/// toggle it).
#[derive(Debug)]
pub struct Governor {
    mode: Mode,
    on: bool,
    last: Option<CpuTimes>,
    calm_ticks: u32,
}

impl Governor {
    /// How often the daemon samples `/proc/stat`.
    pub const TICK: Duration = Duration::from_millis(50);
    /// Share of all CPUs' time that was busy in a tick, from which the threads go real-time.
    pub const BUSY: f64 = 0.8;
    /// Share below which a tick counts as calm.
    pub const CALM: f64 = 0.5;
    /// Calm time after which the threads go back to the normal policy.
    pub const CALM_FOR: Duration = Duration::from_millis(500);

    pub fn new(mode: Mode) -> Governor {
        Governor { mode, on: false, last: None, calm_ticks: 0 }
    }

    /// Takes a sample; returns the policy to switch to when it changes (`true`: real-time).
    /// The threads start with the normal policy.
    pub fn observe(&mut self, now: CpuTimes) -> Option<bool> {
        let want = match self.mode {
            Mode::Never => false,
            Mode::Always => true,
            Mode::Auto => {
                let last = self.last.replace(now)?;
                if now.total <= last.total {
                    return None;
                }
                let busy = now.busy.saturating_sub(last.busy) as f64 / (now.total - last.total) as f64;
                if busy >= Self::BUSY {
                    self.calm_ticks = 0;
                    true
                } else if busy < Self::CALM {
                    self.calm_ticks = self.calm_ticks.saturating_add(1);
                    self.on && Self::TICK * self.calm_ticks < Self::CALM_FOR
                } else {
                    self.calm_ticks = 0;
                    self.on
                }
            }
        };
        if want == self.on {
            return None;
        }
        self.on = want;
        Some(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(busy: u64, total: u64) -> CpuTimes {
        CpuTimes { busy, total }
    }

    #[test]
    fn parses_the_cpu_line() {
        let stat = "cpu  176008 66644 46060 245964 1003 0 4303 3340 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(CpuTimes::parse(stat), Some(t(176008 + 46060 + 4303, 176008 + 66644 + 46060 + 245964 + 1003 + 4303 + 3340)));
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7\n"), None);
        assert_eq!(CpuTimes::parse("cpu 1 2 x 4 5 6 7\n"), None);
        assert_eq!(CpuTimes::parse("cpu 1 2 3\n"), None);
        assert_eq!(CpuTimes::parse(""), None);
    }

    #[test]
    fn auto_goes_realtime_while_busy_and_back_after_a_calm_spell() {
        let mut g = Governor::new(Mode::Auto);
        assert_eq!(g.observe(t(0, 0)), None, "one sample decides nothing");
        assert_eq!(g.observe(t(1, 10)), None, "idle: stays normal");
        assert_eq!(g.observe(t(10, 20)), Some(true), "90 % busy");
        assert_eq!(g.observe(t(10, 20)), None, "no time passed");
        assert_eq!(g.observe(t(16, 30)), None, "60 %: neither busy nor calm");
        let calm_ticks = (Governor::CALM_FOR.as_millis() / Governor::TICK.as_millis()) as u64;
        let (mut busy, mut total) = (16, 30);
        for k in 1..calm_ticks {
            (busy, total) = (busy + 1, total + 10);
            assert_eq!(g.observe(t(busy, total)), None, "calm tick {k} of {calm_ticks}");
        }
        // A busy tick starts the calm spell over.
        (busy, total) = (busy + 9, total + 10);
        assert_eq!(g.observe(t(busy, total)), None);
        for _ in 1..calm_ticks {
            (busy, total) = (busy + 1, total + 10);
            assert_eq!(g.observe(t(busy, total)), None);
        }
        (busy, total) = (busy + 1, total + 10);
        assert_eq!(g.observe(t(busy, total)), Some(false), "a whole calm spell");
        assert_eq!(g.observe(t(busy + 1, total + 10)), None);
    }

    #[test]
    fn always_and_never_ignore_the_load() {
        let mut g = Governor::new(Mode::Always);
        assert_eq!(g.observe(t(0, 10)), Some(true));
        assert_eq!(g.observe(t(0, 20)), None);
        let mut g = Governor::new(Mode::Never);
        assert_eq!(g.observe(t(0, 10)), None);
        assert_eq!(g.observe(t(10, 20)), None);
        assert_eq!("auto".parse(), Ok(Mode::Auto));
        assert!("fifo".parse::<Mode>().is_err());
    }

    #[test]
    fn threads_list_their_ids() {
        let th = Threads::default();
        th.register(7);
        th.register(9);
        th.set_on(true);
        assert_eq!((th.tids(), th.is_on()), (vec![7, 9], true));
    }
}
