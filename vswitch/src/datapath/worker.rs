//! Worker threads: the datapath on more than one core.
//!
//! The engine (the datapath thread, worker 0) stays the only owner of the switch core, the
//! gateway, DNS, egress and the tunnel. Each extra worker owns the *read side* of some container
//! TAPs (a TAP is dealt to the least loaded worker when it is attached), so every frame of a
//! flow, in one direction, is read by one thread and never reordered by the switch.
//!
//! A worker forwards a frame on its own only when the engine has already decided the same
//! (ingress port, source MAC, destination MAC) to a TAP with the same header layout: a
//! [`Grant`]. Anything else (a first frame, a flood, the gateway, egress, the tunnel, a frame
//! too long for the port) is handed to the engine with its buffer ([`Deferred`]; the engine
//! swaps in a buffer of its own, so nothing is copied), and the engine decides it exactly as if
//! it had read it. Grants are only valid for the MAC table's generation they were made at
//! ([`crate::fdb::Fdb::generation`]): when an entry moves or goes, every worker drops them all.
//! Workers tell the engine once a second which sources they forwarded, so learned entries age
//! as traffic says, not as the engine happens to see it.
//!
//! Round trips: a thread that has just written frames to a TAP whose reader is asleep in epoll
//! reads that TAP itself right away ("pickup"), so a reply generated in the container while the
//! frame was written is not left waiting for another core to wake up. One thread at a time reads
//! a TAP ([`PortStats::try_read`]), and while frames of a TAP wait in the engine's queue every
//! later frame of it goes through the queue too ([`PortStats::handed`]): frames of a TAP leave the
//! switch in the order they were read, whoever reads them.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::os::fd::AsRawFd;

use super::{read_frame, split_vnet, write_frame, BUDGET, BUF_LEN, BYTE_BUDGET};
use crate::switch::{fits, DropReason, PortCounters, ETH_HLEN};
use crate::types::{Mac, PortId};

const WAKER: Token = Token(usize::MAX);
/// How often a worker reports the sources it forwarded (and how long it sleeps when idle).
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Frames a worker may have handed over and not yet got a buffer back for.
const IN_FLIGHT: usize = 2 * BUDGET;
/// How long a worker leaves a TAP unread after the engine's storm control dropped a frame of
/// it: what the container sends meanwhile waits in (or overflows) the TAP's own queue, at the
/// container's cost, instead of costing the datapath a read and a hand-over per frame.
pub const STORM_PAUSE: Duration = Duration::from_millis(10);
/// Most grants a worker keeps; past that it forgets them all and asks again.
const MAX_GRANTS: usize = 16 * 1024;

/// A TAP port's counters kept outside the core, by whichever thread forwarded the frame. The
/// API adds them to the core's ([`PortStats::add_to`]).
#[derive(Debug, Default)]
pub struct PortStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_errors: AtomicU64,
    overload: AtomicU64,
    /// Set by the engine when storm control dropped a frame from this port; the worker that
    /// reads it takes it and pauses the port for [`STORM_PAUSE`].
    pub storm: AtomicBool,
    /// The port is paused by storm control: nobody picks it up meanwhile.
    pub paused: AtomicBool,
    /// Held by the one thread reading the TAP now (its owner, or a thread picking it up).
    reading: AtomicBool,
    /// The owner found the TAP taken by a picker and sleeps on: the picker wakes it when done.
    missed: AtomicBool,
    /// Wakes the owner's epoll.
    pub owner_waker: Option<Arc<Waker>>,
    /// The owner's epoll and the TAP's token there: a picker switches the TAP off in it while
    /// it holds the read side, so the owner does not wake up for the frames the picker reads.
    pub owner_epoll: Option<(Arc<mio::Registry>, usize)>,
    /// Frames of this TAP handed to the engine and not decided yet.
    pub handed: AtomicU32,
    /// Until when (ms on [`mono_ms`]'s clock) nobody picks the TAP up: a read of it brought
    /// a bulk flow's batch ([`PortStats::note_read`]).
    bulk_until: AtomicU64,
    /// Whether the thread that owns the TAP's read side sleeps in epoll now.
    pub owner_idle: Arc<AtomicBool>,
    /// The thread that owns the read side (0: the engine).
    pub owner: usize,
    /// Longest frame the port takes (see [`crate::switch::fits`]).
    pub max_frame: usize,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl PortStats {
    /// The shared state of a TAP read by thread `owner`, whose idle flag is `owner_idle` and
    /// whose epoll has the TAP under token `owner_epoll.1`.
    pub fn new(
        owner: usize,
        owner_idle: Arc<AtomicBool>,
        owner_waker: Option<Arc<Waker>>,
        owner_epoll: Option<(Arc<mio::Registry>, usize)>,
        max_frame: usize,
    ) -> PortStats {
        PortStats { owner, owner_idle, owner_waker, owner_epoll, max_frame, ..PortStats::default() }
    }

    /// Takes the TAP's read side; `false` when another thread holds it.
    pub fn try_read(&self) -> bool {
        self.reading.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// The owner's take: when a picker holds the TAP, the owner does not wait for it (on two
    /// cores a spinning owner takes the CPU the containers need); it notes the miss and the
    /// picker wakes it on [`PortStats::end_pickup`] (the SeqCst pairs make sure one of the two
    /// sees the other).
    pub fn owner_try_read(&self) -> bool {
        if self.try_read() {
            return true;
        }
        self.missed.store(true, Ordering::SeqCst);
        if self.try_read() {
            self.missed.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Whether a thread holds the read side now.
    pub fn taken(&self) -> bool {
        self.reading.load(Ordering::SeqCst)
    }

    /// The owner lets go of the read side.
    pub fn end_read(&self) {
        self.reading.store(false, Ordering::SeqCst);
    }

    /// Takes the read side of `file` (this TAP) for a pickup, when [`PortStats::wants_pickup`],
    /// and switches the TAP off in the owner's epoll until [`PortStats::end_pickup`]: the reply
    /// the picker reads then costs the owner no wakeup (two per round trip otherwise: the
    /// frame's, and the picker's when the owner found the TAP taken).
    pub fn try_pickup(&self, file: &File) -> bool {
        if !(self.wants_pickup() && self.try_read()) {
            return false;
        }
        self.watch(file, false);
        true
    }

    fn watch(&self, file: &File, on: bool) {
        if let Some((epoll, token)) = &self.owner_epoll {
            // Fails only when the owner has dropped the port meanwhile.
            let _ = crate::sys::epoll_watch_readable(&**epoll, file, *token, on);
        }
    }

    /// A picker lets go of the read side of `file` (this TAP) and switches it back on in the
    /// owner's epoll, which reports it at once if frames wait; it wakes the owner if the owner
    /// missed the TAP meanwhile.
    pub fn end_pickup(&self, file: &File) {
        self.reading.store(false, Ordering::SeqCst);
        self.watch(file, true);
        if self.missed.swap(false, Ordering::SeqCst) {
            if let Some(w) = &self.owner_waker {
                let _ = w.wake();
            }
        }
    }

    /// Whether a thread that wrote to this TAP should read it now: its owner sleeps, storm
    /// control leaves it alone, nothing of it waits in the engine's queue, and it has not
    /// brought a bulk batch lately.
    pub fn wants_pickup(&self) -> bool {
        self.owner_idle.load(Ordering::Relaxed)
            && !self.paused.load(Ordering::Relaxed)
            && !self.storm.load(Ordering::Relaxed)
            && self.handed.load(Ordering::Acquire) == 0
            && self.bulk_until.load(Ordering::Relaxed) <= mono_ms()
    }

    /// Notes a read of `bytes` from this TAP. A bulk one keeps pickers off it for [`BULK_HOLD`]:
    /// a bulk flow's sender has its batches read by its own thread, which sleeps little
    /// anyway, instead of by whichever thread wrote it an ACK (two threads then took turns
    /// sleeping and waking ~10 000 times a second each, and one stream lost a fifth of its
    /// throughput against one worker). Pickups stay for round trips' small replies.
    pub fn note_read(&self, bytes: usize) {
        if bytes >= BULK_BYTES {
            self.bulk_until.store(mono_ms() + BULK_HOLD.as_millis() as u64, Ordering::Relaxed);
        }
    }

    pub fn add_to(&self, c: &mut PortCounters) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        c.rx_packets += get(&self.rx_packets);
        c.rx_bytes += get(&self.rx_bytes);
        c.tx_packets += get(&self.tx_packets);
        c.tx_bytes += get(&self.tx_bytes);
        c.drops[DropReason::TxError.index()] += get(&self.tx_errors);
        c.drops[DropReason::Overload.index()] += get(&self.overload);
    }
}

/// One worker's totals.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Frames it forwarded on its own.
    pub forwarded: AtomicU64,
    /// Frames it handed to the engine.
    pub handed_over: AtomicU64,
    /// Frames it dropped because the engine had not caught up (no spare buffer, queue full).
    pub overload: AtomicU64,
    /// Frames it read from TAPs other threads own, right after writing to them.
    pub picked_up: AtomicU64,
    /// Times it slept in epoll and woke up to events.
    pub wakeups: AtomicU64,
}

/// A TAP as any thread may write to it.
#[derive(Debug, Clone)]
pub struct TapOut {
    pub file: Arc<File>,
    pub hdr: usize,
    pub stats: Arc<PortStats>,
}

/// "Frames from `port` with these MACs go to `to`", decided by the engine at `generation`.
#[derive(Debug)]
pub struct Grant {
    pub port: PortId,
    pub src: Mac,
    pub dst: Mac,
    pub to: PortId,
    pub out: TapOut,
    pub generation: u64,
}

/// A frame a worker read and the engine decides: `buf[..len]`, virtio header (`hdr` bytes) first.
#[derive(Debug)]
pub struct Deferred {
    pub worker: usize,
    pub port: PortId,
    pub hdr: usize,
    pub buf: Box<[u8]>,
    pub len: usize,
    /// The TAP's shared state: the engine counts the frame out of [`PortStats::handed`] once
    /// it has sent it on.
    pub stats: Arc<PortStats>,
}

/// What workers send the engine.
#[derive(Debug)]
pub enum ToEngine {
    Frame(Deferred),
    /// Sources forwarded by a worker since its last report: (ingress port, source MAC).
    Refresh(Vec<(PortId, Mac)>),
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The engine's handle on one worker thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub struct WorkerHandle {
    jobs: crossbeam_channel::Sender<Job>,
    grants: crossbeam_channel::Sender<Grant>,
    bufs: crossbeam_channel::Sender<Box<[u8]>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<WorkerStats>,
    /// Set while the worker sleeps in epoll.
    pub idle: Arc<AtomicBool>,
    /// The worker's epoll, for pickers to switch its TAPs off in ([`PortStats::try_pickup`]).
    pub epoll: Option<Arc<mio::Registry>>,
}

/// What a worker shares with the engine.
#[derive(Debug, Clone)]
pub struct Shared {
    pub to_engine: crossbeam_channel::Sender<ToEngine>,
    pub engine_waker: Arc<Waker>,
    /// The MAC table's generation, as the engine last published it.
    pub generation: Arc<AtomicU64>,
    /// Packet captures.
    pub capture: Arc<super::capture::Hub>,
    /// Every datapath thread's id, for the real-time policy (realtime.rs).
    pub threads: Arc<super::realtime::Threads>,
}

impl WorkerHandle {
    /// Starts worker `id` (1 and up; 0 is the engine) at nice value `nice`
    /// ([`super::set_nice`]; the engine reports a refusal).
    ///
    /// # Errors
    /// When epoll, the waker or the thread cannot be made.
    pub fn spawn(id: usize, shared: Shared, nice: i32) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let epoll = Some(Arc::new(poll.registry().try_clone()?));
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (grants, grants_rx) = crossbeam_channel::unbounded();
        let (bufs, bufs_rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(WorkerStats::default());
        let idle = Arc::new(AtomicBool::new(false));
        let mut w = Worker {
            id,
            poll,
            jobs: jobs_rx,
            grants: grants_rx,
            returned: bufs_rx,
            running: true,
            ports: Vec::new(),
            backlog: VecDeque::new(),
            in_backlog: Vec::new(),
            bufs: Vec::with_capacity(BUDGET),
            spare: Vec::with_capacity(IN_FLIGHT),
            in_flight: 0,
            cache: HashMap::new(),
            seen_generation: shared.generation.load(Ordering::Acquire),
            cap: super::capture::View::new(shared.capture.clone()),
            shared,
            stats: stats.clone(),
            wake_engine: false,
            paused: Vec::new(),
            idle: idle.clone(),
            missed: Vec::new(),
            touched: Vec::new(),
        };
        let thread = std::thread::Builder::new().name(format!("datapath-{id}")).spawn(move || {
            let _ = super::set_nice(nice);
            w.shared.threads.register(crate::sys::current_tid());
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run())).is_err() {
                tracing::error!(worker = id, "datapath worker panicked; vswitchd exits");
                std::process::exit(70);
            }
        })?;
        Ok(WorkerHandle { jobs, grants, bufs, waker, thread: Some(thread), stats, idle, epoll })
    }

    /// Wakes the worker's epoll.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Runs `f` on the worker and waits for it. The worker never waits for the engine, so the
    /// engine may call this.
    fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Worker) -> R + Send + 'static) -> io::Result<R> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move |w| {
            let _ = tx.send(f(w));
        });
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "datapath worker stopped");
        self.jobs.send(job).map_err(|_| gone())?;
        self.waker.wake()?;
        rx.recv().map_err(|_| gone())
    }

    /// Starts reading `port`'s TAP on this worker.
    ///
    /// # Errors
    /// When epoll refuses the fd.
    pub fn add_port(&self, port: PortId, tap: TapOut) -> io::Result<()> {
        self.call(move |w| w.add_port(port, tap))?
    }

    /// Stops reading `port` (if this worker did) and forgets every grant from or to it; when
    /// this returns the worker holds no reference to the port's TAP.
    pub fn forget_port(&self, port: PortId) {
        let _ = self.call(move |w| w.forget_port(port));
    }

    /// Forgets every grant from or to `port` (it was impaired: its frames now all go to the
    /// engine); when this returns the worker forwards none of them on its own.
    pub fn revoke(&self, port: PortId) {
        let _ = self.call(move |w| {
            w.take_grants();
            w.cache.retain(|&(from, _, _), c| from != port && c.to != port);
        });
    }

    /// Queues a grant; it takes effect at the worker's next wakeup.
    pub fn grant(&self, g: Grant) {
        let _ = self.grants.send(g);
    }

    /// Returns a buffer for the worker's next hand-over.
    pub fn give_back(&self, buf: Box<[u8]>) {
        let _ = self.bufs.send(buf);
    }

    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.jobs.send(Box::new(|w: &mut Worker| w.running = false));
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct OwnPort {
    tap: TapOut,
}

#[derive(Debug)]
struct Cached {
    to: PortId,
    out: TapOut,
    used: bool,
}

/// A worker thread's state.
#[derive(Debug)]
pub struct Worker {
    id: usize,
    poll: Poll,
    jobs: crossbeam_channel::Receiver<Job>,
    grants: crossbeam_channel::Receiver<Grant>,
    returned: crossbeam_channel::Receiver<Box<[u8]>>,
    running: bool,
    /// The TAPs this worker reads, by port id.
    ports: Vec<Option<OwnPort>>,
    backlog: VecDeque<PortId>,
    in_backlog: Vec<bool>,
    /// Read buffers, made as a drain first goes that deep (an idle worker holds none: each
    /// is 64 KiB, and the idle daemon must stay small), then kept.
    bufs: Vec<Box<[u8]>>,
    /// Buffers to swap in for the ones handed to the engine, made the same way.
    spare: Vec<Box<[u8]>>,
    /// Buffers handed to the engine and not yet given back; at most [`IN_FLIGHT`].
    in_flight: usize,
    /// Grants by (ingress port, source MAC, destination MAC).
    cache: HashMap<(PortId, Mac, Mac), Cached>,
    seen_generation: u64,
    shared: Shared,
    stats: Arc<WorkerStats>,
    /// Frames were handed over in this drain: wake the engine once at its end.
    wake_engine: bool,
    cap: super::capture::View,
    /// Ports left unread for storm control, until when.
    paused: Vec<(PortId, Instant)>,
    /// Set while this thread sleeps in epoll.
    idle: Arc<AtomicBool>,
    /// Own TAPs a picker held when this thread came to read them: read again once let go.
    missed: Vec<PortId>,
    /// TAPs of other threads written to in this drain: candidates for a pickup, and whether
    /// this thread took their read side before writing (see [`touch`]).
    touched: Vec<(PortId, TapOut, bool)>,
}

impl Worker {
    fn add_port(&mut self, port: PortId, tap: TapOut) -> io::Result<()> {
        let raw = tap.file.as_raw_fd();
        self.poll.registry().register(&mut SourceFd(&raw), Token(port.0 as usize), Interest::READABLE)?;
        let i = port.0 as usize;
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            self.in_backlog.resize(i + 1, false);
        }
        self.ports[i] = Some(OwnPort { tap });
        // Frames may already be queued: edge-triggered epoll will not tell us about them.
        self.mark_ready(port);
        Ok(())
    }

    fn forget_port(&mut self, port: PortId) {
        // Grants still in the channel may name the port: take them in first.
        self.take_grants();
        self.cache.retain(|&(from, _, _), c| from != port && c.to != port);
        if let Some(p) = self.ports.get_mut(port.0 as usize).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&p.tap.file.as_raw_fd()));
        }
        if let Some(b) = self.in_backlog.get_mut(port.0 as usize) {
            *b = false;
        }
        self.backlog.retain(|&p| p != port);
        self.paused.retain(|&(p, _)| p != port);
        self.touched.retain(|(p, _, _)| *p != port);
        self.missed.retain(|&p| p != port);
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_refresh = Instant::now() + REFRESH_EVERY;
        while self.running {
            let wake_at = self.paused.iter().map(|&(_, t)| t).fold(next_refresh, Instant::min);
            let timeout = if self.backlog.is_empty() { wake_at.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
            let sleeps = !timeout.is_zero();
            if sleeps {
                self.idle.store(true, Ordering::Relaxed);
            }
            let polled = self.poll.poll(&mut events, Some(timeout));
            if sleeps {
                self.idle.store(false, Ordering::Relaxed);
                if !events.is_empty() {
                    bump(&self.stats.wakeups, 1);
                }
            }
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    // Its TAPs would go unread: better no daemon than a silent black hole.
                    tracing::error!(worker = self.id, error = %e, "epoll failed in a datapath worker; vswitchd exits");
                    std::process::exit(70);
                }
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.mark_ready(PortId(ev.token().0 as u32));
                }
            }
            while let Ok(job) = self.jobs.try_recv() {
                job(self);
            }
            for buf in self.returned.try_iter() {
                self.spare.push(buf);
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            self.take_grants();
            self.cap.refresh();
            self.resume_paused();
            self.retry_missed();
            for _ in 0..self.backlog.len() {
                let Some(port) = self.backlog.pop_front() else { break };
                self.in_backlog[port.0 as usize] = false;
                if self.drain(port) {
                    self.mark_ready(port);
                }
            }
            self.pickup();
            if Instant::now() >= next_refresh {
                self.refresh();
                next_refresh = Instant::now() + REFRESH_EVERY;
            }
        }
    }

    fn mark_ready(&mut self, port: PortId) {
        let i = port.0 as usize;
        if i < self.in_backlog.len() && !self.in_backlog[i] && self.ports[i].is_some() {
            self.in_backlog[i] = true;
            self.backlog.push_back(port);
        }
    }

    /// Drops every grant if the MAC table moved since they were made.
    fn check_generation(&mut self) -> u64 {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.seen_generation {
            self.seen_generation = g;
            self.cache.clear();
        }
        g
    }

    fn take_grants(&mut self) {
        let g = self.check_generation();
        while let Ok(grant) = self.grants.try_recv() {
            // A grant from before the table moved may be wrong now; the next frame asks again.
            // (Grants may name TAPs other threads own, read here on pickup; none is made for
            // a port being removed, and forget_port takes in those already sent.)
            if grant.generation != g {
                continue;
            }
            if self.cache.len() >= MAX_GRANTS {
                self.cache.clear();
            }
            self.cache.insert((grant.port, grant.src, grant.dst), Cached { to: grant.to, out: grant.out, used: false });
        }
    }

    /// Tells the engine which sources this worker forwarded since the last time.
    fn refresh(&mut self) {
        let mut seen = std::collections::HashSet::new();
        for (&(port, src, _), c) in self.cache.iter_mut() {
            if std::mem::take(&mut c.used) {
                seen.insert((port, src));
            }
        }
        let seen: Vec<(PortId, Mac)> = seen.into_iter().collect();
        if !seen.is_empty() && self.shared.to_engine.try_send(ToEngine::Refresh(seen)).is_ok() {
            let _ = self.shared.engine_waker.wake();
        }
    }

    /// Marks ready the own TAPs a picker held and has let go of.
    fn retry_missed(&mut self) {
        let mut k = 0;
        while k < self.missed.len() {
            let port = self.missed[k];
            match self.ports.get(port.0 as usize) {
                Some(Some(p)) if p.tap.stats.taken() => k += 1,
                _ => {
                    self.missed.swap_remove(k);
                    self.mark_ready(port);
                }
            }
        }
    }

    /// Marks ready the ports whose storm pause is over (frames that came meanwhile raised no
    /// new edge, or raised one that was ignored).
    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut k = 0;
        while k < self.paused.len() {
            if self.paused[k].1 <= now {
                let (port, _) = self.paused.swap_remove(k);
                if let Some(Some(p)) = self.ports.get(port.0 as usize) {
                    p.tap.stats.paused.store(false, Ordering::Relaxed);
                }
                self.mark_ready(port);
            } else {
                k += 1;
            }
        }
    }

    /// Whether `port` is left unread now: the engine flagged a storm on it (then the pause
    /// starts), or its pause has not ended.
    fn storm_paused(&mut self, port: PortId, stats: &PortStats) -> bool {
        if self.paused.iter().any(|&(q, _)| q == port) {
            return true;
        }
        if stats.storm.swap(false, Ordering::Relaxed) {
            stats.paused.store(true, Ordering::Relaxed);
            self.paused.push((port, Instant::now() + STORM_PAUSE));
            return true;
        }
        false
    }

    /// Reads a batch from `port` ([`Worker::read_batch`]). Returns whether it is still readable
    /// (stopped at a budget, or another thread reads it now: then it is tried again).
    fn drain(&mut self, port: PortId) -> bool {
        let Some(Some(p)) = self.ports.get(port.0 as usize) else { return false };
        if !self.paused.is_empty() || p.tap.stats.storm.load(Ordering::Relaxed) {
            let stats = p.tap.stats.clone();
            if self.storm_paused(port, &stats) {
                return false;
            }
        }
        let Some(Some(p)) = self.ports.get(port.0 as usize) else { return false };
        let tap = p.tap.clone();
        if !tap.stats.owner_try_read() {
            // A picker reads it now and wakes this thread when done.
            self.missed.push(port);
            return false;
        }
        let (_, more) = self.read_batch(port, &tap);
        tap.stats.end_read();
        self.pickup();
        more
    }

    /// Reads the TAPs of sleeping threads this thread has just written to (see the module
    /// docs), and lets go of every read side it took.
    fn pickup(&mut self) {
        for _ in 0..PICKUP_ROUNDS {
            if self.touched.is_empty() {
                return;
            }
            let mut touched = std::mem::take(&mut self.touched);
            for (port, tap, held) in &touched {
                if *held || tap.stats.try_pickup(&tap.file) {
                    let (n, _) = self.read_batch(*port, tap);
                    tap.stats.end_pickup(&tap.file);
                    bump(&self.stats.picked_up, n as u64);
                }
            }
            // Reading them may have written to (and taken) others: the next round.
            touched.clear();
            touched.append(&mut self.touched);
            self.touched = touched;
        }
        for (_, tap, held) in self.touched.drain(..) {
            if held {
                tap.stats.end_pickup(&tap.file);
            }
        }
    }

    /// Reads up to [`BUDGET`] frames or [`BYTE_BUDGET`] bytes from `tap` (whose read side this
    /// thread holds), forwards the granted ones and hands the rest to the engine. Returns how
    /// many frames it read and whether it stopped at a budget (so the TAP is still readable).
    fn read_batch(&mut self, port: PortId, tap: &TapOut) -> (usize, bool) {
        let (mut n, mut bytes) = (0, 0);
        while n < BUDGET && bytes < BYTE_BUDGET {
            if n == self.bufs.len() {
                self.bufs.push(new_buf());
            }
            let Some(len) = read_frame(&tap.file, &mut self.bufs[n], port) else { break };
            if !self.forward(port, tap, n, len) {
                self.hand_over(port, tap, n, len);
            }
            n += 1;
            bytes += len;
        }

        if std::mem::take(&mut self.wake_engine) {
            let _ = self.shared.engine_waker.wake();
        }
        if n > 0 {
            self.check_generation();
        }
        tap.stats.note_read(bytes);
        (n, n == BUDGET || bytes >= BYTE_BUDGET)
    }

    /// Forwards `bufs[i][..len]`, read from `tap`, if a grant covers it.
    fn forward(&mut self, port: PortId, tap: &TapOut, i: usize, len: usize) -> bool {
        let hdr = tap.hdr;
        let buf = &self.bufs[i][..len];
        let (gso, frame) = split_vnet(buf, hdr);
        // What the core would refuse, it decides (and counts) itself.
        // ARP and neighbour discovery are checked against the port's addresses by the core.
        if frame.len() < ETH_HLEN || !fits(frame.len(), tap.stats.max_frame, gso) || crate::switch::needs_guard(frame) {
            return false;
        }
        // Earlier frames of this TAP wait in the engine's queue: this one queues behind them.
        if tap.stats.handed.load(Ordering::Acquire) > 0 {
            return false;
        }
        let Some(c) = self.cache.get_mut(&(port, Mac::from_slice(frame, 6), Mac::from_slice(frame, 0))) else { return false };
        if c.out.hdr != hdr {
            return false;
        }
        c.used = true;
        let bytes = frame.len() as u64;
        bump(&tap.stats.rx_packets, 1);
        bump(&tap.stats.rx_bytes, bytes);
        if self.cap.on {
            self.cap.offer_decided(port, super::capture::Dir::In, buf, hdr, Some(crate::switch::Verdict::Forward(c.to)));
            self.cap.offer(c.to, super::capture::Dir::Out, buf, hdr);
        }
        // Before writing: a reply the container makes at once is then read here.
        if frame.len() <= PICKUP_FRAME {
            touch(&mut self.touched, c.to, &c.out, self.id);
        }
        if write_frame(&c.out.file, buf) {
            bump(&c.out.stats.tx_packets, 1);
            bump(&c.out.stats.tx_bytes, bytes);
        } else {
            bump(&c.out.stats.tx_errors, 1);
        }
        bump(&self.stats.forwarded, 1);
        true
    }

    /// Hands `bufs[i][..len]`, read from `tap`, to the engine, swapping a spare buffer into
    /// its slot.
    fn hand_over(&mut self, port: PortId, tap: &TapOut, i: usize, len: usize) {
        let overload = |w: &Worker| {
            bump(&w.stats.overload, 1);
            bump(&tap.stats.overload, 1);
        };
        if self.in_flight >= IN_FLIGHT {
            return overload(self);
        }
        let spare = self.spare.pop().unwrap_or_else(new_buf);
        let buf = std::mem::replace(&mut self.bufs[i], spare);
        let d = Deferred { worker: self.id, port, hdr: tap.hdr, buf, len, stats: tap.stats.clone() };
        tap.stats.handed.fetch_add(1, Ordering::AcqRel);
        match self.shared.to_engine.try_send(ToEngine::Frame(d)) {
            Ok(()) => {
                bump(&self.stats.handed_over, 1);
                self.in_flight += 1;
                self.wake_engine = true;
            }
            Err(e) => {
                tap.stats.handed.fetch_sub(1, Ordering::AcqRel);
                if let ToEngine::Frame(d) = e.into_inner() {
                    self.spare.push(d.buf);
                }
                overload(self);
            }
        }
    }
}

/// Longest frame after which the writer picks up the reply: requests of round trips (a ping, a
/// SYN, a DNS query, a small call) fit; a bulk flow's super-frames do not, and their ACKs are
/// left to the TAP's owner, whose thread is awake anyway (picking them up cost a switch-off and
/// a switch-on of the TAP per batch).
pub(super) const PICKUP_FRAME: usize = 2048;

/// A read of at least this much from one TAP marks it bulk ([`PortStats::note_read`]): one
/// super-frame and more.
const BULK_BYTES: usize = 32 * 1024;
/// How long a bulk TAP is left to its owner.
const BULK_HOLD: Duration = Duration::from_millis(20);

/// Milliseconds since the first call: a clock all datapath threads share.
fn mono_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Most rounds of pickups after one drain (a pickup's frames may go to yet another sleeping
/// thread's TAP).
const PICKUP_ROUNDS: usize = 4;

/// Notes that thread `me` is about to write to `tap` (port `port`): when another thread reads
/// it and sleeps, `me` takes its read side now, before the write, so that the reply the
/// container makes while the frame is written is read by `me` right after, not by the owner
/// once its core has woken up (the owner, woken by the same frame, finds the TAP taken and
/// tries again).
pub(super) fn touch(touched: &mut Vec<(PortId, TapOut, bool)>, port: PortId, tap: &TapOut, me: usize) {
    if tap.stats.owner == me || touched.iter().any(|(p, _, _)| *p == port) {
        return;
    }
    let held = tap.stats.try_pickup(&tap.file);
    touched.push((port, tap.clone(), held));
}

fn new_buf() -> Box<[u8]> {
    vec![0u8; BUF_LEN].into_boxed_slice()
}
