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

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::os::fd::AsRawFd;

use super::{read_frame, split_vnet, write_frame, BUDGET, BUF_LEN};
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
    pub storm: std::sync::atomic::AtomicBool,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl PortStats {
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
}

impl WorkerHandle {
    /// Starts worker `id` (1 and up; 0 is the engine).
    ///
    /// # Errors
    /// When epoll, the waker or the thread cannot be made.
    pub fn spawn(id: usize, shared: Shared) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (grants, grants_rx) = crossbeam_channel::unbounded();
        let (bufs, bufs_rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(WorkerStats::default());
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
        };
        let thread = std::thread::Builder::new().name(format!("datapath-{id}")).spawn(move || {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run())).is_err() {
                tracing::error!(worker = id, "datapath worker panicked; vswitchd exits");
                std::process::exit(70);
            }
        })?;
        Ok(WorkerHandle { jobs, grants, bufs, waker, thread: Some(thread), stats })
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
    pub fn add_port(&self, port: PortId, tap: TapOut, max_frame: usize) -> io::Result<()> {
        self.call(move |w| w.add_port(port, tap, max_frame))?
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
    max_frame: usize,
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
}

impl Worker {
    fn add_port(&mut self, port: PortId, tap: TapOut, max_frame: usize) -> io::Result<()> {
        let raw = tap.file.as_raw_fd();
        self.poll.registry().register(&mut SourceFd(&raw), Token(port.0 as usize), Interest::READABLE)?;
        let i = port.0 as usize;
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            self.in_backlog.resize(i + 1, false);
        }
        self.ports[i] = Some(OwnPort { tap, max_frame });
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
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_refresh = Instant::now() + REFRESH_EVERY;
        while self.running {
            let wake_at = self.paused.iter().map(|&(_, t)| t).fold(next_refresh, Instant::min);
            let timeout = if self.backlog.is_empty() { wake_at.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
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
            for _ in 0..self.backlog.len() {
                let Some(port) = self.backlog.pop_front() else { break };
                self.in_backlog[port.0 as usize] = false;
                if self.drain(port) == BUDGET {
                    self.mark_ready(port);
                }
            }
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
            let live = self.ports.get(grant.port.0 as usize).is_some_and(Option::is_some);
            if grant.generation != g || !live {
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
            self.paused.push((port, Instant::now() + STORM_PAUSE));
            return true;
        }
        false
    }

    /// Reads up to [`BUDGET`] frames from `port`, forwards the granted ones and hands the rest
    /// to the engine. Returns how many frames were read.
    fn drain(&mut self, port: PortId) -> usize {
        let Some(Some(p)) = self.ports.get(port.0 as usize) else { return 0 };
        if !self.paused.is_empty() || p.tap.stats.storm.load(Ordering::Relaxed) {
            let stats = p.tap.stats.clone();
            if self.storm_paused(port, &stats) {
                return 0;
            }
        }
        let Some(Some(p)) = self.ports.get(port.0 as usize) else { return 0 };
        let file = p.tap.file.clone();
        let hdr = p.tap.hdr;
        let mut n = 0;
        while n < BUDGET {
            if n == self.bufs.len() {
                self.bufs.push(new_buf());
            }
            let Some(len) = read_frame(&file, &mut self.bufs[n], port) else { break };
            if !self.forward(port, n, len, hdr) {
                self.hand_over(port, n, len, hdr);
            }
            n += 1;
        }
        if std::mem::take(&mut self.wake_engine) {
            let _ = self.shared.engine_waker.wake();
        }
        if n > 0 {
            self.check_generation();
        }
        n
    }

    /// Forwards `bufs[i][..len]` if a grant covers it.
    fn forward(&mut self, port: PortId, i: usize, len: usize, hdr: usize) -> bool {
        let Some(Some(p)) = self.ports.get(port.0 as usize) else { return false };
        let buf = &self.bufs[i][..len];
        let (gso, frame) = split_vnet(buf, hdr);
        // What the core would refuse, it decides (and counts) itself.
        // ARP and neighbour discovery are checked against the port's addresses by the core.
        if frame.len() < ETH_HLEN || !fits(frame.len(), p.max_frame, gso) || crate::switch::needs_guard(frame) {
            return false;
        }
        let Some(c) = self.cache.get_mut(&(port, Mac::from_slice(frame, 6), Mac::from_slice(frame, 0))) else { return false };
        if c.out.hdr != hdr {
            return false;
        }
        c.used = true;
        let bytes = frame.len() as u64;
        bump(&p.tap.stats.rx_packets, 1);
        bump(&p.tap.stats.rx_bytes, bytes);
        if self.cap.on {
            self.cap.offer_decided(port, super::capture::Dir::In, buf, hdr, Some(crate::switch::Verdict::Forward(c.to)));
            self.cap.offer(c.to, super::capture::Dir::Out, buf, hdr);
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

    /// Hands `bufs[i][..len]` to the engine, swapping a spare buffer into its slot.
    fn hand_over(&mut self, port: PortId, i: usize, len: usize, hdr: usize) {
        let overload = |w: &Worker| {
            bump(&w.stats.overload, 1);
            if let Some(Some(p)) = w.ports.get(port.0 as usize) {
                bump(&p.tap.stats.overload, 1);
            }
        };
        if self.in_flight >= IN_FLIGHT {
            return overload(self);
        }
        let spare = self.spare.pop().unwrap_or_else(new_buf);
        let buf = std::mem::replace(&mut self.bufs[i], spare);
        let d = Deferred { worker: self.id, port, hdr, buf, len };
        match self.shared.to_engine.try_send(ToEngine::Frame(d)) {
            Ok(()) => {
                bump(&self.stats.handed_over, 1);
                self.in_flight += 1;
                self.wake_engine = true;
            }
            Err(e) => {
                if let ToEngine::Frame(d) = e.into_inner() {
                    self.spare.push(d.buf);
                }
                overload(self);
            }
        }
    }
}

fn new_buf() -> Box<[u8]> {
    vec![0u8; BUF_LEN].into_boxed_slice()
}
