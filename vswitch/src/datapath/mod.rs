//! The datapath: one thread that owns the switch core and every port's fd.
//!
//! Each wakeup drains every ready TAP with a budget of [`BUDGET`] frames into buffers owned by
//! the thread (not by the ports), asks the core for a verdict on the whole batch, then writes
//! each frame to its egress ports. Nothing is allocated and no lock is taken per frame. The
//! control plane never touches this state directly: it sends closures ([`Job`]) that run on this
//! thread between batches and answer through a oneshot channel.

pub mod capture;
pub mod dns_tcp;
pub mod egress;
pub mod impaired;
pub mod overlay;
pub mod realtime;
pub mod segment;
pub mod trace;
pub mod worker;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::gateway::{Gateway, Outcome, UdpQuery};
use crate::switch::{DropReason, PortConfig, Switch, SwitchConfig, Verdict};
use crate::types::{Mac, NetworkId, PortId};

/// Frames read from one port per wakeup before the next port gets its turn.
pub const BUDGET: usize = 64;
/// Most bytes one read of a TAP takes before the thread turns to its other ports: 4 TSO
/// super-frames, so a bulk flow's batch keeps another port's frame (a ping, a request) waiting
/// tens of microseconds, not the milliseconds 64 super-frames take to copy.
pub const BYTE_BUDGET: usize = 256 * 1024;
/// The virtio-net header length used on TAPs opened with `IFF_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 12;
/// TTL of the gateway's DNS answers, in seconds: short, since endpoints come and go.
pub const DNS_TTL: u32 = 5;
/// Room for the largest frame a TAP may hand over: a 64 KiB GSO super-frame plus headers.
pub const BUF_LEN: usize = VNET_HDR_LEN + 14 + 4 + 65535;
const WAKER: Token = Token(usize::MAX);
/// The timer that releases impaired frames on time (made with the first impairment).
const IMP_TIMER: Token = Token(usize::MAX - 2);
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Most batches of workers' frames decided before reading a TAP some of whose frames they
/// handed over (their queue holds at most 4 batches).
const IN_FLIGHT_ROUNDS: usize = 4;
/// Most rounds of pickups after one batch (see worker.rs).
const PICKUP_ROUNDS: usize = 4;

/// Work for the datapath thread, run between batches.
pub type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// What a port is attached to.
#[derive(Debug)]
pub enum PortIo {
    /// A container TAP; `vnet_hdr_len` is 0 or [`VNET_HDR_LEN`]. `owner` is the worker that
    /// reads it (0: this thread); any thread may write it. `stats` are what workers counted.
    Tap { file: Arc<File>, vnet_hdr_len: usize, owner: usize, stats: Arc<worker::PortStats> },
    /// The network's own address (ARP, ICMP echo).
    Gateway(Gateway),
    /// A peer host, for one network (`tag` travels sealed with each frame).
    Tunnel { peer: tunnel::PeerId, tag: u32 },
    /// One network of an interface port (a packet socket on an interface of the daemon's
    /// namespace, `sys::packet`): its frames leave with the 802.1Q TCI `tag` when set,
    /// untagged otherwise. Every network of the interface shares `file`; `main` is the port
    /// whose token epoll reports and whose entry in `Engine::ifaces` says which tag is whose.
    Iface { file: Arc<File>, tag: Option<u16>, main: PortId },
}

/// The networks an interface port carries: (VLAN id or `None` for untagged frames, port).
#[derive(Debug, Clone)]
pub struct IfaceMember {
    pub vlan: Option<u16>,
    pub port: PortId,
    pub network: NetworkId,
    pub mtu: u32,
    /// DHCP servers may answer from here (an uplink: the LAN's own server is behind it).
    pub trusted: bool,
}

/// A DHCP client's message from an interface port, for the control plane to lease from IPAM.
#[derive(Debug, Clone)]
pub struct DhcpRequest {
    pub gw_port: PortId,
    pub port: PortId,
    pub query: crate::dhcp::Query,
}

/// What a container port sees of DNS: the networks whose names it may resolve (its own first)
/// and whether its network forwards nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsView {
    pub network: String,
    pub visible: Vec<String>,
    pub internal: bool,
    pub mtu: u32,
}

/// DNS counters, shared by the datapath (answers) and the forwarder.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub queries: std::sync::atomic::AtomicU64,
    pub answers: std::sync::atomic::AtomicU64,
    pub forwarded: std::sync::atomic::AtomicU64,
    pub forward_answers: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
    /// How long forwarded queries took upstream (answered or not), observed by the forwarder.
    pub forward_latency: LatencyHistogram,
}

impl DnsCounters {
    pub fn add(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Upper bounds, in seconds, of [`LatencyHistogram`]'s buckets (the last one is +Inf).
pub const LATENCY_BOUNDS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A fixed-bucket latency histogram of atomics (one relaxed add per observation).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// (sum in seconds, count, buckets as (upper bound, observations in that bucket alone),
    /// +Inf last: the text encoder makes them cumulative).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            out.push((LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        (self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, total, out)
    }
}

/// A name announcement from a tunnel peer: its public key, the network's tag, the frame.
pub type Announcement = ([u8; 32], u32, Vec<u8>);

/// A query the responder does not own, on its way to an upstream.
#[derive(Debug)]
pub struct ForwardRequest {
    pub port: PortId,
    pub gw_port: PortId,
    pub gw: Gateway,
    pub client: ReplyTo,
    pub network: String,
    pub query: Vec<u8>,
}

/// Where the answer to a forwarded query goes.
#[derive(Debug)]
pub enum ReplyTo {
    Udp(UdpQuery),
    Tcp(dns_tcp::ConnId),
}

/// An upstream's answer (or `None`: every upstream failed) for a [`ForwardRequest`].
#[derive(Debug)]
pub struct DnsReply {
    pub upstream: Option<Vec<u8>>,
    pub req: ForwardRequest,
}

/// The datapath's DNS state: the records snapshot and each port's view, swapped whole by the
/// control plane (a single owner: no lock).
#[derive(Debug)]
struct Dns {
    responder: dns::Responder,
    views: Vec<Option<std::sync::Arc<DnsView>>>,
    forward: Option<tokio::sync::mpsc::Sender<ForwardRequest>>,
    counters: std::sync::Arc<DnsCounters>,
    rng: u64,
    /// DNS over TCP, per gateway port, made on first use.
    tcp: HashMap<PortId, dns_tcp::TcpDns>,
    /// (prefix length, MTU) of each gateway port's network.
    gw_nets: HashMap<PortId, (u8, u32)>,
}

impl Dns {
    /// Queues `req` for the forwarder; gives it back when it cannot be (no forwarder yet, or
    /// its queue is full), for the caller to answer SERVFAIL.
    fn forward(&self, req: ForwardRequest) -> Result<(), Box<ForwardRequest>> {
        use tokio::sync::mpsc::error::TrySendError;
        let Some(tx) = &self.forward else { return Err(Box::new(req)) };
        tx.try_send(req).map_err(|(TrySendError::Full(r) | TrySendError::Closed(r))| Box::new(r))
    }

    /// xorshift64: orders several addresses of one name; not for anything secret.
    fn next_rand(&mut self) -> u64 {
        let r = &mut self.rng;
        *r ^= *r << 13;
        *r ^= *r >> 7;
        *r ^= *r << 17;
        *r
    }
}

/// The control plane's handle on the datapath thread.
#[derive(Debug)]
pub struct Datapath {
    jobs: crossbeam_channel::Sender<Job>,
    /// Packet captures: the control plane adds and removes sessions here.
    pub capture: Arc<capture::Hub>,
    waker: std::sync::Arc<Waker>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The datapath threads, for their scheduling policy ([`realtime`]).
    pub threads: Arc<realtime::Threads>,
}

impl Datapath {
    /// Starts the datapath thread.
    ///
    /// # Errors
    /// When epoll or the waker cannot be created.
    /// `workers`: threads that read container TAPs, this one included (at least 1); `nice`:
    /// their scheduling priority (see [`set_nice`]).
    pub fn spawn(cfg: SwitchConfig, dns_counters: std::sync::Arc<DnsCounters>, workers: usize, nice: i32) -> io::Result<Datapath> {
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (jobs, rx) = crossbeam_channel::unbounded();
        let capture = Arc::new(capture::Hub::default());
        let mut engine = Engine::new(poll, rx, cfg, dns_counters, capture.clone());
        engine.waker = Some(waker.clone());
        engine.epoll = Some(Arc::new(engine.poll.registry().try_clone()?));
        let (to_engine, from_workers) = crossbeam_channel::bounded(4 * BUDGET);
        let threads = engine.threads.clone();
        let shared = worker::Shared {
            to_engine,
            engine_waker: waker.clone(),
            generation: engine.generation.clone(),
            capture: capture.clone(),
            threads: threads.clone(),
        };
        for id in 1..workers.max(1) {
            engine.workers.push(worker::WorkerHandle::spawn(id, shared.clone(), nice)?);
        }
        engine.from_workers = from_workers;
        let thread = std::thread::Builder::new().name("datapath".into()).spawn(move || {
            if let Err(e) = set_nice(nice) {
                tracing::info!(nice, error = %e, "the datapath threads keep the default priority (lowering nice needs CAP_SYS_NICE)");
            }
            engine.threads.register(crate::sys::current_tid());
            // A bug here must not leave a daemon that answers the API but switches nothing:
            // exit, and let the supervisor restart it (the kernel removes our TAPs).
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run())).is_err() {
                tracing::error!("datapath thread panicked; vswitchd exits");
                std::process::exit(70);
            }
        })?;
        Ok(Datapath { jobs, capture, waker, thread: std::sync::Mutex::new(Some(thread)), threads })
    }

    /// Runs `f` on the datapath thread and returns its result.
    ///
    /// # Errors
    /// [`io::ErrorKind::BrokenPipe`] when the datapath thread has stopped.
    pub async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Engine) -> R + Send + 'static) -> io::Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move |e: &mut Engine| {
            let _ = tx.send(f(e));
        }))?;
        rx.await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "datapath stopped"))
    }

    /// Runs `f` on the datapath thread and waits for it, from a thread outside any runtime.
    ///
    /// # Errors
    /// [`io::ErrorKind::BrokenPipe`] when the datapath thread has stopped.
    pub fn call_blocking<R: Send + 'static>(&self, f: impl FnOnce(&mut Engine) -> R + Send + 'static) -> io::Result<R> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(Box::new(move |e: &mut Engine| {
            let _ = tx.send(f(e));
        }))?;
        rx.recv().map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "datapath stopped"))
    }

    /// Runs `f` on the datapath thread without waiting for it.
    ///
    /// # Errors
    /// [`io::ErrorKind::BrokenPipe`] when the datapath thread has stopped.
    pub fn submit_fn(&self, f: impl FnOnce(&mut Engine) + Send + 'static) -> io::Result<()> {
        self.submit(Box::new(f))
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        self.jobs.send(job).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "datapath stopped"))?;
        self.waker.wake()
    }

    /// Waits for the thread to end after [`Engine::stop`]; by then every port fd is closed
    /// (which removes non-persistent TAPs).
    pub fn join(&self) {
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        let _ = self.submit(Box::new(|e: &mut Engine| e.stop()));
        self.join();
    }
}

/// The datapath thread's state. Only [`Job`]s reach it from outside.
#[derive(Debug)]
pub struct Engine {
    poll: Poll,
    jobs: crossbeam_channel::Receiver<Job>,
    running: bool,
    start: Instant,
    switch: Switch,
    ports: Vec<Option<PortIo>>,
    /// Ports whose last drain stopped at the budget, so still readable (epoll is edge-triggered).
    backlog: VecDeque<PortId>,
    in_backlog: Vec<bool>,
    /// TAPs this thread reads that storm control paused, until when (as on workers).
    storm_paused: Vec<(PortId, Duration)>,
    bufs: Vec<Box<[u8]>>,
    /// Batch slot `i` holds its frame (after a vnet header of the batch's size, if any) in
    /// `bufs[i][starts[i]..lens[i]]`: 0 for TAP reads, past the tunnel header for datagrams.
    starts: [usize; BUDGET],
    lens: [usize; BUDGET],
    /// Payload of slot `i` when it is merged into a super-frame (receive coalescing).
    payloads: [std::ops::Range<usize>; BUDGET],
    verdicts: [Verdict; BUDGET],
    /// Reusable copy of a network's port list while flooding.
    flood: Vec<PortId>,
    /// The same for a gateway reply, which is sent while `flood` may be in use.
    gw_out: Vec<PortId>,
    /// Where the gateway writes replies, header room in front.
    reply: Box<[u8]>,
    /// Where a super-frame's segments are written one at a time for a TAP without offloads.
    seg_buf: Box<[u8]>,
    dns: Dns,
    /// The encrypted tunnel to other hosts, when `--listen` is given.
    tun: Option<overlay::TunnelIo>,
    /// The tunnel socket stopped at the budget last time: read it again.
    tun_backlog: bool,
    /// Where name announcements from peers go (the control plane).
    announce_tx: Option<tokio::sync::mpsc::Sender<Announcement>>,
    /// Containers' flows beyond their networks, and published ports.
    egress: egress::Egress,
    /// Reused list of egress packets being written.
    egress_out: Vec<egress::Out>,
    /// Reused list of egress readiness events: (token, readable).
    egress_events: Vec<(Token, bool)>,
    /// Threads 1.. that read container TAPs (see worker.rs); this thread is worker 0.
    workers: Vec<worker::WorkerHandle>,
    /// Frames workers handed over, and their reports.
    from_workers: crossbeam_channel::Receiver<worker::ToEngine>,
    /// The MAC table's generation as workers see it (published after every batch).
    generation: Arc<AtomicU64>,
    /// Ingress port and header length of each batch slot.
    slot_port: [(PortId, usize); BUDGET],
    /// The worker that read each batch slot (0: this thread).
    slot_reader: [usize; BUDGET],
    /// The TAPs of the slots workers handed over, counted out of their queue once sent.
    slot_handed: Vec<Arc<worker::PortStats>>,
    /// Set while this thread sleeps in epoll (TAPs it owns are picked up by the others then).
    idle: Arc<std::sync::atomic::AtomicBool>,
    /// Wakes this thread's epoll (given to pickers of its TAPs).
    waker: Option<Arc<Waker>>,
    /// This thread's epoll, for pickers to switch its TAPs off in ([`worker::PortStats::try_pickup`]).
    epoll: Option<Arc<mio::Registry>>,
    /// Own TAPs a worker held when this thread came to read them: read again once let go.
    missed: Vec<PortId>,
    /// Other threads' TAPs written to since the last pickup, and whether this thread took
    /// their read side before writing (see worker.rs).
    touched: Vec<(PortId, bool)>,
    /// Frames this thread read from other threads' TAPs right after writing to them.
    picked_up: u64,
    /// Times this thread slept in epoll and woke up to events.
    wakeups: u64,
    /// Every datapath thread, for the real-time policy.
    threads: Arc<realtime::Threads>,
    /// Frames this thread decided for other workers.
    decided_for_workers: u64,
    /// The TAP port being removed: no grant may name it.
    removing: Option<PortId>,
    /// Packet captures, as this thread last saw them.
    cap: capture::View,
    /// Link impairments of some ports (see impaired.rs), and the frames they held.
    imp: impaired::Impairs,
    /// Reused list of impaired frames whose time came.
    imp_out: Vec<impaired::Released>,
    /// The batch being decided holds released ingress frames: they are not held again.
    releasing: bool,
    /// Wakes the loop when the next impaired frame is due, to the nanosecond (epoll's timeout
    /// has milliseconds).
    imp_timer: Option<crate::sys::timer::Timer>,
    /// The 802.1Q priority (PCP, 3 bits) of the tag each batch slot came with from an
    /// interface port, kept for the tag it leaves with on another one.
    slot_pcp: [u8; BUDGET],
    /// Interface ports by their main port: (VLAN id or untagged, port, trusted for DHCP
    /// replies) of each network.
    ifaces: HashMap<PortId, Vec<(Option<u16>, PortId, bool)>>,
    /// Where DHCP clients' messages go (the control plane).
    dhcp_tx: Option<tokio::sync::mpsc::Sender<DhcpRequest>>,
}

impl Engine {
    fn new(
        poll: Poll,
        jobs: crossbeam_channel::Receiver<Job>,
        cfg: SwitchConfig,
        counters: std::sync::Arc<DnsCounters>,
        capture: Arc<capture::Hub>,
    ) -> Engine {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        Engine {
            poll,
            jobs,
            running: true,
            start: Instant::now(),
            switch: Switch::new(cfg),
            ports: Vec::new(),
            backlog: VecDeque::new(),
            in_backlog: Vec::new(),
            storm_paused: Vec::new(),
            bufs: (0..BUDGET).map(|_| vec![0u8; BUF_LEN].into_boxed_slice()).collect(),
            starts: [0; BUDGET],
            lens: [0; BUDGET],
            payloads: std::array::from_fn(|_| 0..0),
            verdicts: [Verdict::Drop(DropReason::NoRoute); BUDGET],
            flood: Vec::with_capacity(64),
            gw_out: Vec::with_capacity(64),
            reply: vec![0u8; BUF_LEN].into_boxed_slice(),
            seg_buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            dns: Dns {
                responder: dns::Responder::new(std::sync::Arc::new(dns::Records::new(DNS_TTL))),
                views: Vec::new(),
                forward: None,
                counters,
                rng: seed | 1,
                tcp: HashMap::new(),
                gw_nets: HashMap::new(),
            },
            tun: None,
            tun_backlog: false,
            announce_tx: None,
            egress: egress::Egress::new(egress::Limits::default(), seed ^ 0x5eed),
            egress_out: Vec::new(),
            egress_events: Vec::new(),
            workers: Vec::new(),
            from_workers: crossbeam_channel::never(),
            generation: Arc::new(AtomicU64::new(0)),
            slot_port: [(PortId(0), 0); BUDGET],
            slot_reader: [0; BUDGET],
            slot_handed: Vec::with_capacity(BUDGET),
            idle: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            waker: None,
            epoll: None,
            missed: Vec::new(),
            touched: Vec::new(),
            picked_up: 0,
            wakeups: 0,
            threads: Arc::default(),
            decided_for_workers: 0,
            removing: None,
            cap: capture::View::new(capture),
            imp: impaired::Impairs::default(),
            imp_out: Vec::new(),
            releasing: false,
            imp_timer: None,
            slot_pcp: [0; BUDGET],
            ifaces: HashMap::new(),
            dhcp_tx: None,
        }
    }

    /// Time since the datapath started: the clock every core decision is made with.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Installs a new DNS records snapshot and every port's view of it. Sockets and queries in
    /// flight are untouched: forwarded answers still find their port.
    pub fn set_dns(&mut self, records: std::sync::Arc<dns::Records>, views: Vec<(PortId, DnsView)>) {
        self.dns.responder.swap(records);
        self.dns.views.clear();
        for (port, view) in views {
            let i = port.0 as usize;
            if self.dns.views.len() <= i {
                self.dns.views.resize(i + 1, None);
            }
            self.dns.views[i] = Some(std::sync::Arc::new(view));
        }
    }

    /// Where DHCP clients' messages are sent.
    pub fn set_dhcp(&mut self, tx: tokio::sync::mpsc::Sender<DhcpRequest>) {
        self.dhcp_tx = Some(tx);
    }

    /// Hands a DHCP client's message to the control plane; dropped when its queue is full.
    fn ask_dhcp(&mut self, req: DhcpRequest) {
        let port = req.port;
        if self.dhcp_tx.as_ref().is_none_or(|tx| tx.try_send(req).is_err()) {
            self.count_drop(port, DropReason::Overload);
        }
    }

    /// Sends the control plane's DHCP answer to `q` from the gateway on `gw_port`.
    pub fn send_dhcp_reply(&mut self, gw_port: PortId, q: &crate::dhcp::Query, answer: crate::dhcp::Answer, lease: &crate::dhcp::Lease) {
        let Some(Some(PortIo::Gateway(gw))) = self.ports.get(gw_port.0 as usize) else { return };
        let gw = *gw;
        let at = VNET_HDR_LEN + crate::gateway::UDP_PAYLOAD_OFFSET;
        let Some(n) = crate::dhcp::reply(q, answer, lease, &mut self.reply[at..]) else { return };
        // RFC 2131 4.1: to a renewing client's address; else broadcast (the client has none).
        let renewing = !q.ciaddr.is_unspecified() && answer != crate::dhcp::Answer::Nak;
        let dst_ip = if renewing { q.ciaddr } else { std::net::Ipv4Addr::BROADCAST };
        let dst_mac = if q.broadcast && !renewing { Mac([0xff; 6]) } else { q.mac };
        if let Some(len) = gw.finish_dhcp_reply(dst_mac, dst_ip, n, &mut self.reply[VNET_HDR_LEN..]) {
            self.send_gateway_reply(gw_port, len);
        }
    }

    /// Where queries the responder does not own are sent.
    pub fn set_dns_forwarder(&mut self, tx: tokio::sync::mpsc::Sender<ForwardRequest>) {
        self.dns.forward = Some(tx);
    }

    /// Sends an upstream's answer (or SERVFAIL) back to the container that asked.
    pub fn send_dns_reply(&mut self, reply: DnsReply) {
        let req = reply.req;
        let client = match &req.client {
            ReplyTo::Udp(q) => q.clone(),
            ReplyTo::Tcp(conn) => {
                let answer = reply.upstream.or_else(|| {
                    let mut b = vec![0u8; 512];
                    dns::servfail(&req.query, &mut b).map(|n| {
                        b.truncate(n);
                        b
                    })
                });
                if let (Some(tcp), Some(a)) = (self.dns.tcp.get_mut(&req.gw_port), answer) {
                    tcp.reply(*conn, &a);
                }
                self.poll_tcp_dns(req.gw_port);
                return;
            }
        };
        let room = &mut self.reply[VNET_HDR_LEN + client.reply_offset()..];
        let n = match reply.upstream {
            Some(answer) if answer.len() <= room.len() => {
                room[..answer.len()].copy_from_slice(&answer);
                Some(answer.len())
            }
            _ => dns::servfail(&req.query, room),
        };
        let Some(n) = n else { return };
        if let Some(len) = req.gw.finish_udp_reply(&client, n, &mut self.reply[VNET_HDR_LEN..]) {
            self.send_gateway_reply(req.gw_port, len);
        }
    }

    /// Feeds a TCP segment for the gateway's DNS port to that network's TCP stack.
    fn feed_tcp_dns(&mut self, ingress: PortId, gw_port: PortId, gw: Gateway, client_mac: Mac, ip: &[u8]) {
        let now = self.now();
        let seed = self.dns.next_rand();
        let Some(&(prefix_len, mtu)) = self.dns.gw_nets.get(&gw_port) else { return };
        let tcp = self.dns.tcp.entry(gw_port).or_insert_with(|| dns_tcp::TcpDns::new(gw, prefix_len, mtu, now, seed));
        tcp.feed(ip, client_mac, ingress);
    }

    /// Runs one gateway's TCP stack: answers complete queries, sends what it has to send.
    fn poll_tcp_dns(&mut self, gw_port: PortId) {
        let Some(mut tcp) = self.dns.tcp.remove(&gw_port) else { return };
        let now = self.now();
        let Some(Some(PortIo::Gateway(gw))) = self.ports.get(gw_port.0 as usize) else { return };
        let gw = *gw;
        let dns = &mut self.dns;
        let frames = tcp.poll(now, |dns_tcp::Query::Ask { conn, port, bytes }| {
            let counters = dns.counters.clone();
            DnsCounters::add(&counters.queries);
            let view = dns.views.get(port.0 as usize).cloned().flatten()?;
            let visible: Vec<&str> = view.visible.iter().map(String::as_str).collect();
            let rand = dns.next_rand();
            let mut out = vec![0u8; dns::TCP_MAX];
            match dns.responder.respond(&visible, view.internal, bytes, rand, &mut out, dns::Limit::Tcp) {
                dns::Decision::Answer(n) | dns::Decision::Reject(n, _) => {
                    DnsCounters::add(&counters.answers);
                    out.truncate(n);
                    Some(out)
                }
                dns::Decision::Drop(_) => {
                    DnsCounters::add(&counters.dropped);
                    let n = dns::servfail(bytes, &mut out).unwrap_or(0);
                    out.truncate(n);
                    Some(out)
                }
                dns::Decision::Forward => {
                    let req = ForwardRequest {
                        port,
                        gw_port,
                        gw,
                        client: ReplyTo::Tcp(conn),
                        network: view.network.clone(),
                        query: bytes.to_vec(),
                    };
                    match dns.forward(req) {
                        Ok(()) => None,
                        Err(_) => {
                            DnsCounters::add(&counters.failures);
                            let n = dns::servfail(bytes, &mut out).unwrap_or(0);
                            out.truncate(n);
                            Some(out)
                        }
                    }
                }
            }
        });
        self.dns.tcp.insert(gw_port, tcp);
        for (_, frame) in frames {
            let Some(room) = self.reply.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + frame.len()) else { continue };
            room.copy_from_slice(&frame);
            self.send_gateway_reply(gw_port, frame.len());
        }
    }

    /// Runs every TCP stack whose timers are due; returns how long until the next one is.
    fn tcp_dns_timers(&mut self) -> Option<Duration> {
        if self.dns.tcp.is_empty() {
            return None;
        }
        let now = self.now();
        let mut due = Vec::new();
        let mut next: Option<Duration> = None;
        for (port, tcp) in self.dns.tcp.iter_mut() {
            match tcp.poll_delay(now) {
                Some(d) if d.is_zero() => due.push(*port),
                Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        for port in due {
            self.poll_tcp_dns(port);
        }
        next
    }

    /// Makes every TAP non-persistent, so closing its fd (at stop) deletes it.
    pub fn unpersist_all(&mut self) {
        self.set_all_persist(false);
    }

    /// Makes every TAP persistent (after a restore was saved).
    pub fn persist_all_taps(&mut self) {
        self.set_all_persist(true);
    }

    fn set_all_persist(&mut self, on: bool) {
        for io in self.ports.iter().flatten() {
            if let PortIo::Tap { file, .. } = io {
                let _ = crate::sys::set_persist(file, on);
            }
        }
    }

    /// Makes one TAP persistent (it outlives the daemon) or not.
    pub fn set_tap_persist(&mut self, port: PortId, on: bool) {
        if let Some(Some(PortIo::Tap { file, .. })) = self.ports.get(port.0 as usize) {
            if let Err(e) = crate::sys::set_persist(file, on) {
                tracing::warn!(port = port.0, error = %e, "TUNSETPERSIST failed");
            }
        }
    }

    /// Ends the loop after the current batch; the thread then closes every port fd.
    pub fn stop(&mut self) {
        self.running = false;
    }

    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    pub fn switch_mut(&mut self) -> &mut Switch {
        &mut self.switch
    }

    /// Adds a network and its gateway port.
    ///
    /// # Errors
    /// When the core refuses (the network or port exists).
    pub fn add_network(
        &mut self,
        net: NetworkId,
        gw_port: PortId,
        gw: Gateway,
        prefix_len: u8,
        mtu: u32,
    ) -> Result<(), crate::switch::SwitchError> {
        self.switch.add_network(net)?;
        self.switch.add_port(gw_port, PortConfig { network: net, max_frame: max_frame(mtu) })?;
        self.set_port(gw_port, Some(PortIo::Gateway(gw)));
        self.dns.gw_nets.insert(gw_port, (prefix_len, mtu));
        Ok(())
    }

    /// Removes a network whose only port left is its gateway.
    ///
    /// # Errors
    /// When the core refuses.
    pub fn remove_network(&mut self, net: NetworkId, gw_port: PortId) -> Result<(), crate::switch::SwitchError> {
        self.switch.remove_port(gw_port)?;
        self.set_port(gw_port, None);
        self.dns.tcp.remove(&gw_port);
        self.dns.gw_nets.remove(&gw_port);
        self.egress.remove_network(gw_port);
        self.switch.remove_network(net)
    }

    /// Adds a TAP port; from now on its frames are switched.
    ///
    /// # Errors
    /// When the core refuses the port or epoll cannot watch the fd.
    pub fn add_tap(&mut self, port: PortId, net: NetworkId, fd: OwnedFd, vnet_hdr_len: usize, mtu: u32) -> io::Result<()> {
        if let Err(e) = self.switch.add_port(port, PortConfig { network: net, max_frame: max_frame(mtu) }) {
            let _ = crate::sys::set_persist(&fd, false);
            return Err(io::Error::other(e));
        }
        let file = Arc::new(File::from(fd));
        let owner = self.least_loaded_worker();
        let (owner_idle, owner_waker, owner_epoll) = match owner {
            0 => (self.idle.clone(), self.waker.clone(), self.epoll.clone()),
            w => (self.workers[w - 1].idle.clone(), Some(self.workers[w - 1].waker()), self.workers[w - 1].epoll.clone()),
        };
        let owner_epoll = owner_epoll.map(|e| (e, token(port).0));
        let stats = Arc::new(worker::PortStats::new(owner, owner_idle, owner_waker, owner_epoll, max_frame(mtu)));
        let registered = match owner {
            0 => self.poll.registry().register(&mut SourceFd(&file.as_raw_fd()), token(port), Interest::READABLE),
            w => {
                let tap = worker::TapOut { file: file.clone(), hdr: vnet_hdr_len, stats: stats.clone() };
                self.workers[w - 1].add_port(port, tap)
            }
        };
        if let Err(e) = registered {
            let _ = self.switch.remove_port(port);
            let _ = crate::sys::set_persist(&*file, false);
            return Err(e);
        }
        self.set_port(port, Some(PortIo::Tap { file, vnet_hdr_len, owner, stats }));
        if owner == 0 {
            // Frames may already be queued: edge-triggered epoll will not tell us about them.
            self.mark_ready(port);
        }
        Ok(())
    }

    /// The worker reading the fewest TAPs (this thread on a tie: handing a tunnel container's
    /// frames from a worker to this thread for sealing measured slower on 2 CPUs, see
    /// benches/RESULTS.md).
    fn least_loaded_worker(&self) -> usize {
        let load = self.taps_per_worker();
        (0..load.len()).min_by_key(|&w| (load[w], w)).unwrap_or(0)
    }

    /// How many TAPs each thread reads, by worker id (0: this thread).
    fn taps_per_worker(&self) -> Vec<u64> {
        let mut load = vec![0u64; self.workers.len() + 1];
        for io in self.ports.iter().flatten() {
            if let PortIo::Tap { owner, .. } = io {
                load[*owner] += 1;
            }
        }
        load
    }

    /// Threads reading container TAPs: this one (0) and the workers, with their totals.
    pub fn worker_stats(&self) -> Vec<crate::api::WorkerInfo> {
        let ports = self.taps_per_worker();
        let mut out = vec![crate::api::WorkerInfo {
            id: 0,
            ports: ports[0],
            forwarded: 0,
            handed_over: 0,
            overload: 0,
            decided_for_others: self.decided_for_workers,
            picked_up: self.picked_up,
            wakeups: self.wakeups,
            realtime: self.threads.is_on(),
        }];
        for (k, w) in self.workers.iter().enumerate() {
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            out.push(crate::api::WorkerInfo {
                id: k + 1,
                ports: ports[k + 1],
                forwarded: get(&w.stats.forwarded),
                handed_over: get(&w.stats.handed_over),
                overload: get(&w.stats.overload),
                decided_for_others: 0,
                picked_up: get(&w.stats.picked_up),
                wakeups: get(&w.stats.wakeups),
                realtime: self.threads.is_on(),
            });
        }
        out
    }

    /// A port's counters: the core's plus what workers counted.
    pub fn port_counters(&self, port: PortId) -> Option<crate::switch::PortCounters> {
        let mut c = self.switch.counters(port)?.clone();
        if let Some(Some(PortIo::Tap { stats, .. })) = self.ports.get(port.0 as usize) {
            stats.add_to(&mut c);
        }
        Some(c)
    }

    /// The worker reading `port`'s TAP, if it is one.
    pub fn port_worker(&self, port: PortId) -> Option<usize> {
        match self.ports.get(port.0 as usize) {
            Some(Some(PortIo::Tap { owner, .. })) => Some(*owner),
            _ => None,
        }
    }

    /// Removes a TAP port and hands its fd back: closing it deletes the (non-persistent)
    /// interface, which takes the kernel tens of milliseconds, so the caller closes it on
    /// another thread.
    pub fn remove_tap(&mut self, port: PortId) -> Option<Arc<File>> {
        // Every worker stops reading the TAP and drops its grants towards it before this
        // returns; frames they handed over before that are decided while the port still
        // exists (a reused port id must never inherit them), and granted nothing new.
        self.removing = Some(port);
        for w in &self.workers {
            w.forget_port(port);
        }
        self.decide_all_handed();
        self.removing = None;
        let _ = self.switch.remove_port(port);
        self.egress.forget_port(port);
        self.imp.remove_port(port);
        self.storm_paused.retain(|&(p, _)| p != port);
        self.touched.retain(|&(p, _)| p != port);
        self.missed.retain(|&p| p != port);
        self.publish_generation();
        let i = port.0 as usize;
        let (file, owner) = match self.ports.get_mut(i).and_then(Option::take) {
            Some(PortIo::Tap { file, owner, .. }) => (file, owner),
            other => {
                if let Some(slot) = self.ports.get_mut(i) {
                    *slot = other;
                }
                return None;
            }
        };
        if owner == 0 {
            let _ = self.poll.registry().deregister(&mut SourceFd(&file.as_raw_fd()));
        }
        let _ = crate::sys::set_persist(&*file, false);
        Some(file)
    }

    /// Decides every frame workers had handed over when called (not those handed meanwhile).
    fn decide_all_handed(&mut self) {
        let mut queued = self.from_workers.len();
        while queued > 0 {
            let n = self.decide_for_workers();
            if n == 0 {
                break;
            }
            queued = queued.saturating_sub(n);
        }
    }

    /// Tells workers the MAC table's generation, which drops their grants if it moved.
    fn publish_generation(&self) {
        self.generation.store(self.switch.fdb().generation(), Ordering::Release);
    }

    fn set_port(&mut self, port: PortId, io: Option<PortIo>) {
        let i = port.0 as usize;
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            self.in_backlog.resize(i + 1, false);
        }
        self.ports[i] = io;
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = self.now() + SWEEP_EVERY;
        let mut busy_next = false;
        while self.running {
            let tcp_next = self.tcp_dns_timers();
            let tun_next = self.tunnel_timers();
            let now = self.now();
            let egress_next = self.egress.poll_delay(now);
            if egress_next.is_some_and(|d| d.is_zero()) {
                self.flush_egress();
            }
            let pause_next = self.storm_paused.iter().map(|&(_, t)| t.saturating_sub(now)).min();
            let imp_next = if self.imp.any() { self.arm_imp_timer(now) } else { None };
            let idle = [tcp_next, tun_next, egress_next.filter(|d| !d.is_zero()), pause_next, imp_next]
                .into_iter()
                .flatten()
                .fold(SWEEP_EVERY, Duration::min);
            let busy = !self.backlog.is_empty() || self.tun_backlog || std::mem::take(&mut busy_next);
            let timeout = if busy { Some(Duration::ZERO) } else { Some(idle) };
            self.idle.store(!busy, Ordering::Relaxed);
            let polled = self.poll.poll(&mut events, timeout);
            self.idle.store(false, Ordering::Relaxed);
            if !busy && !events.is_empty() {
                self.wakeups += 1;
            }
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "epoll failed; datapath stops");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER || ev.token() == IMP_TIMER {
                    continue;
                }
                if ev.token() == overlay::TOKEN {
                    self.tun_backlog = true;
                    continue;
                }
                if ev.token().0 >= egress::TOKEN_BASE {
                    self.egress_events.push((ev.token(), ev.is_readable() || ev.is_read_closed() || ev.is_error()));
                    continue;
                }
                self.mark_ready(PortId(ev.token().0 as u32));
            }
            self.run_jobs();
            self.cap.refresh();
            self.publish_generation();
            if self.imp.any() {
                self.release_impaired();
            }
            if self.decide_for_workers() == BUDGET {
                busy_next = true;
            }
            self.pickup();
            if !self.egress_events.is_empty() {
                let now = self.now();
                let mut evs = std::mem::take(&mut self.egress_events);
                for (token, readable) in evs.drain(..) {
                    self.egress.event(self.poll.registry(), now, token, readable);
                }
                self.egress_events = evs;
                self.flush_egress();
            }
            if self.tun_backlog {
                self.tun_backlog = self.drain_tunnel() == BUDGET;
            }
            if !self.storm_paused.is_empty() {
                let (now, mut k) = (self.now(), 0);
                while k < self.storm_paused.len() {
                    if self.storm_paused[k].1 <= now {
                        let (port, _) = self.storm_paused.swap_remove(k);
                        if let Some(Some(PortIo::Tap { stats, .. })) = self.ports.get(port.0 as usize) {
                            stats.paused.store(false, Ordering::Relaxed);
                        }
                        self.mark_ready(port);
                    } else {
                        k += 1;
                    }
                }
            }
            if !self.missed.is_empty() {
                self.retry_missed();
            }
            for _ in 0..self.backlog.len() {
                let Some(port) = self.backlog.pop_front() else { break };
                self.in_backlog[port.0 as usize] = false;
                if self.drain(port) {
                    self.mark_ready(port);
                }
            }
            if !self.touched.is_empty() {
                self.pickup();
            }
            let now = self.now();
            if now >= next_sweep {
                self.switch.fdb_mut().expire(now);
                self.egress.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
            self.publish_generation();
        }
    }

    /// Decides up to [`BUDGET`] frames workers handed over, as if this thread had read them,
    /// grants what a worker may forward itself from now on, and applies workers' reports.
    /// Returns how many frames it took.
    fn decide_for_workers(&mut self) -> usize {
        let mut n = 0;
        // Workers that got buffers back, one bit each (there are at most 63).
        let mut woken = 0u64;
        while n < BUDGET {
            let Ok(msg) = self.from_workers.try_recv() else { break };
            let mut d = match msg {
                worker::ToEngine::Frame(d) => d,
                worker::ToEngine::Refresh(seen) => {
                    self.refresh_sources(&seen);
                    continue;
                }
            };
            // The buffers are the same size: keep the worker's, give it ours.
            std::mem::swap(&mut self.bufs[n], &mut d.buf);
            if let Some(w) = self.workers.get(d.worker.wrapping_sub(1)) {
                w.give_back(d.buf);
                woken |= 1 << ((d.worker - 1) % 64);
            }
            self.starts[n] = 0;
            self.lens[n] = d.len;
            self.slot_port[n] = (d.port, d.hdr);
            self.slot_reader[n] = d.worker;
            self.slot_handed.push(d.stats);
            n += 1;
        }
        for (k, w) in self.workers.iter().enumerate() {
            if woken & (1 << (k % 64)) != 0 {
                w.wake();
            }
        }
        if n > 0 {
            self.decided_for_workers += n as u64;
            self.decide_batch(n, true);
        }
        // Sent on: later frames of these TAPs may go straight through again.
        for stats in self.slot_handed.drain(..) {
            stats.handed.fetch_sub(1, Ordering::AcqRel);
        }
        n
    }

    /// Decides batch slots `0..n` (ingress and header length of each in `slot_port`), writes
    /// them out, then flushes the tunnel and egress. With `grant`, the slots came from workers,
    /// and each gets what it may forward itself from now on.
    fn decide_batch(&mut self, n: usize, grant: bool) {
        let now = self.now();
        let mut last_grant = None;
        for i in 0..n {
            let (port, hdr) = self.slot_port[i];
            let (start, len) = (self.starts[i], self.lens[i]);
            if self.imp.any() && !self.releasing && self.imp.offer(port, impaired::Dir::Ingress, now, &self.bufs[i][start..len], hdr) {
                // Held (or lost) on its way in: decided when released. A drop verdict sends
                // nothing and counts nothing.
                self.verdicts[i] = Verdict::Drop(DropReason::NoRoute);
                continue;
            }
            let (gso, frame) = split_vnet(&self.bufs[i][start..len], hdr);
            self.verdicts[i] = self.switch.handle_frame(now, port, frame, gso);
            if self.cap.on {
                self.cap.offer_decided(port, capture::Dir::In, &self.bufs[i][start..len], hdr, Some(self.verdicts[i]));
            }
            if self.verdicts[i] == Verdict::Drop(DropReason::Storm) {
                // Storm control: the worker reading this TAP pauses it (worker::STORM_PAUSE).
                if let Some(Some(PortIo::Tap { stats, .. })) = self.ports.get(port.0 as usize) {
                    stats.storm.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            if grant {
                self.grant_for(now, i, &mut last_grant);
            }
        }
        for i in 0..n {
            let (port, hdr) = self.slot_port[i];
            self.emit(port, i, hdr);
        }
        if self.tun.is_some() {
            self.flush_tunnel_batch();
        }
        self.flush_egress();
    }

    /// Grants the frame in batch slot `i` to the worker that read it (its TAP's owner, or a
    /// worker that picked the TAP up), when its verdict sends it to one TAP with the same
    /// header layout and its source is learned on its ingress port. Consecutive frames of one
    /// flow get one grant (`last`).
    fn grant_for(&self, now: Duration, i: usize, last: &mut Option<(PortId, Mac, Mac)>) {
        let (port, hdr) = self.slot_port[i];
        let reader = self.slot_reader[i];
        let Verdict::Forward(to) = self.verdicts[i] else { return };
        if self.removing.is_some_and(|r| r == port || r == to) {
            return;
        }
        // Impaired ports' frames all pass through this thread.
        if self.imp.any() && (self.imp.touches(port) || self.imp.touches(to)) {
            return;
        }
        let Some(frame) = self.bufs[i].get(hdr..self.lens[i]).filter(|f| f.len() >= crate::switch::ETH_HLEN) else { return };
        let key = (port, Mac::from_slice(frame, 6), Mac::from_slice(frame, 0));
        if *last == Some(key) {
            return;
        }
        let (Some(Some(PortIo::Tap { .. })), Some(Some(PortIo::Tap { file, vnet_hdr_len, stats, .. }))) =
            (self.ports.get(port.0 as usize), self.ports.get(to.0 as usize))
        else {
            return;
        };
        let Some(w) = self.workers.get(reader.wrapping_sub(1)) else { return };
        let Some(net) = self.switch.port_network(port) else { return };
        if *vnet_hdr_len != hdr || self.switch.fdb().lookup(now, net, key.1) != Some(port) {
            return;
        }
        *last = Some(key);
        let out = worker::TapOut { file: file.clone(), hdr, stats: stats.clone() };
        w.grant(worker::Grant { port, src: key.1, dst: key.2, to, out, generation: self.switch.fdb().generation() });
    }

    /// Restarts the age of sources workers forwarded frames from, where the table still has
    /// them on that port (a source that moved meanwhile is left where it is).
    fn refresh_sources(&mut self, seen: &[(PortId, Mac)]) {
        let now = self.now();
        for &(port, mac) in seen {
            let Some(net) = self.switch.port_network(port) else { continue };
            if self.switch.fdb().lookup(now, net, mac) == Some(port) {
                self.switch.fdb_mut().learn(now, net, mac, port);
            }
        }
    }

    fn run_jobs(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            job(self);
        }
    }

    fn mark_ready(&mut self, port: PortId) {
        let i = port.0 as usize;
        if i < self.in_backlog.len() && !self.in_backlog[i] {
            self.in_backlog[i] = true;
            self.backlog.push_back(port);
        }
    }

    /// Reads a batch from `port` ([`Engine::read_tap`], or the interface port's socket).
    /// Returns whether it is still readable (stopped at a budget, or a worker reads it now:
    /// then it is tried again).
    fn drain(&mut self, port: PortId) -> bool {
        let stats = match self.ports.get(port.0 as usize) {
            Some(Some(PortIo::Tap { stats, .. })) => stats,
            Some(Some(PortIo::Iface { main, .. })) if *main == port => return self.drain_iface(port) == BUDGET,
            _ => return false,
        };
        if self.storm_paused.iter().any(|&(p, _)| p == port) {
            return false;
        }
        if stats.storm.swap(false, Ordering::Relaxed) {
            stats.paused.store(true, Ordering::Relaxed);
            let until = self.now() + worker::STORM_PAUSE;
            self.storm_paused.push((port, until));
            return false;
        }
        let stats = stats.clone();
        if !stats.owner_try_read() {
            // A worker picked it up and reads it now; it wakes this thread when done.
            self.missed.push(port);
            return false;
        }
        let (_, more) = self.read_tap(port);
        stats.end_read();
        self.pickup();
        more
    }

    /// Reads up to [`BUDGET`] frames or [`BYTE_BUDGET`] bytes from TAP `port` (whose read side
    /// this thread holds), decides them and writes them out, after the frames of it that
    /// workers handed over (so that the TAP's frames leave in the order they were read).
    /// Returns how many frames it read and whether it stopped at a budget (so the TAP is still
    /// readable: epoll is edge-triggered).
    fn read_tap(&mut self, port: PortId) -> (usize, bool) {
        for _ in 0..IN_FLIGHT_ROUNDS {
            match self.ports.get(port.0 as usize) {
                Some(Some(PortIo::Tap { stats, .. })) if stats.handed.load(Ordering::Acquire) > 0 => {}
                _ => break,
            }
            if self.decide_for_workers() == 0 {
                break;
            }
        }
        let Some(Some(PortIo::Tap { file, vnet_hdr_len, stats, .. })) = self.ports.get(port.0 as usize) else { return (0, false) };
        let hdr = *vnet_hdr_len;
        let (mut n, mut bytes) = (0, 0);
        while n < BUDGET && bytes < BYTE_BUDGET {
            let Some(len) = read_frame(file, &mut self.bufs[n], port) else { break };
            self.starts[n] = 0;
            self.lens[n] = len;
            self.slot_port[n] = (port, hdr);
            self.slot_reader[n] = 0;
            n += 1;
            bytes += len;
        }
        stats.note_read(bytes);
        self.decide_batch(n, false);
        (n, n == BUDGET || bytes >= BYTE_BUDGET)
    }

    /// Marks ready the own TAPs a worker held and has let go of.
    fn retry_missed(&mut self) {
        let mut k = 0;
        while k < self.missed.len() {
            let port = self.missed[k];
            match self.ports.get(port.0 as usize) {
                Some(Some(PortIo::Tap { stats, .. })) if stats.taken() => k += 1,
                _ => {
                    self.missed.swap_remove(k);
                    self.mark_ready(port);
                }
            }
        }
    }

    /// Reads the TAPs of sleeping workers this thread has just written to (see worker.rs),
    /// and lets go of every read side it took.
    fn pickup(&mut self) {
        for _ in 0..PICKUP_ROUNDS {
            if self.touched.is_empty() {
                return;
            }
            let mut touched = std::mem::take(&mut self.touched);
            for &(port, held) in &touched {
                let Some(Some(PortIo::Tap { stats, file, .. })) = self.ports.get(port.0 as usize) else { continue };
                let (stats, file) = (stats.clone(), file.clone());
                if held || stats.try_pickup(&file) {
                    let (n, _) = self.read_tap(port);
                    stats.end_pickup(&file);
                    self.picked_up += n as u64;
                }
            }
            // Reading them may have written to (and taken) others: the next round.
            touched.clear();
            touched.append(&mut self.touched);
            self.touched = touched;
        }
        for (port, held) in std::mem::take(&mut self.touched) {
            if let (true, Some(Some(PortIo::Tap { stats, file, .. }))) = (held, self.ports.get(port.0 as usize)) {
                stats.end_pickup(file);
            }
        }
    }

    /// Reads up to [`BUDGET`] frames from the interface port whose main port is `main`, gives
    /// each to the port of its VLAN (tag taken off), decides them, writes them out.
    fn drain_iface(&mut self, main: PortId) -> usize {
        let Some(Some(PortIo::Iface { file, .. })) = self.ports.get(main.0 as usize) else { return 0 };
        let file = file.clone();
        let Some(members) = self.ifaces.remove(&main) else { return 0 };
        let (mut n, mut reads) = (0, 0);
        while reads < BUDGET {
            let r = match crate::sys::packet::recv(&file, &mut self.bufs[n]) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(port = main.0, error = %e, "interface port read failed");
                    break;
                }
            };
            reads += 1;
            if r.truncated {
                self.count_drop(main, DropReason::TooLong);
                continue;
            }
            let (mut start, mut tci) = (0, r.vlan_tci);
            if tci.is_none() && self.bufs[n].get(VNET_HDR_LEN + 12..VNET_HDR_LEN + 14) == Some(&[0x81, 0x00]) && r.len >= VNET_HDR_LEN + 18
            {
                // A tag the kernel left in the frame: take it out here.
                let b = &mut self.bufs[n];
                tci = Some(u16::from_be_bytes([b[VNET_HDR_LEN + 14], b[VNET_HDR_LEN + 15]]));
                b.copy_within(0..VNET_HDR_LEN + 12, 4);
                start = 4;
                segment::untag_vnet_offsets(&mut b[start..start + VNET_HDR_LEN], 4);
            }
            let vlan = tci.map(|t| t & 0x0fff);
            let Some(&(_, port, trusted)) = members.iter().find(|(v, _, _)| *v == vlan) else {
                self.count_drop(main, DropReason::Vlan);
                continue;
            };
            if !trusted && is_dhcp_reply(&self.bufs[n][start + VNET_HDR_LEN..r.len]) {
                self.count_drop(port, DropReason::DhcpSnoop);
                continue;
            }
            self.starts[n] = start;
            self.lens[n] = r.len;
            self.slot_port[n] = (port, VNET_HDR_LEN);
            self.slot_pcp[n] = tci.map_or(0, |t| (t >> 13) as u8);
            self.slot_reader[n] = 0;
            n += 1;
        }
        self.ifaces.insert(main, members);
        self.decide_batch(n, false);
        reads
    }

    /// Adds an interface port: one switch port per network it carries, all on `file` (a
    /// packet socket, see `sys::packet`); epoll reports it under the first member's port.
    ///
    /// # Errors
    /// When the core refuses a port or epoll cannot watch the socket (nothing is left added).
    pub fn add_iface(&mut self, file: File, members: &[IfaceMember]) -> io::Result<()> {
        let Some(main) = members.first().map(|m| m.port) else { return Err(io::Error::other("an interface port needs a network")) };
        for (k, m) in members.iter().enumerate() {
            if let Err(e) = self.switch.add_port(m.port, PortConfig { network: m.network, max_frame: max_frame(m.mtu) }) {
                for m in &members[..k] {
                    let _ = self.switch.remove_port(m.port);
                }
                return Err(io::Error::other(e));
            }
        }
        let file = Arc::new(file);
        if let Err(e) = self.poll.registry().register(&mut SourceFd(&file.as_raw_fd()), token(main), Interest::READABLE) {
            for m in members {
                let _ = self.switch.remove_port(m.port);
            }
            return Err(e);
        }
        for m in members {
            self.set_port(m.port, Some(PortIo::Iface { file: file.clone(), tag: m.vlan, main }));
        }
        self.ifaces.insert(main, members.iter().map(|m| (m.vlan, m.port, m.trusted)).collect());
        self.mark_ready(main);
        Ok(())
    }

    /// Removes an interface port (every network it carries); the interface itself stays.
    pub fn remove_iface(&mut self, main: PortId) {
        let Some(members) = self.ifaces.remove(&main) else { return };
        // Frames workers handed over towards these ports are decided while they still exist.
        self.removing = Some(main);
        self.decide_all_handed();
        self.removing = None;
        if let Some(Some(PortIo::Iface { file, .. })) = self.ports.get(main.0 as usize) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&file.as_raw_fd()));
        }
        for (_, port, _) in members {
            let _ = self.switch.remove_port(port);
            self.egress.forget_port(port);
            self.set_port(port, None);
        }
        self.publish_generation();
    }

    /// Sends frame `i` of the batch (read from `ingress`) where its verdict says.
    fn emit(&mut self, ingress: PortId, i: usize, hdr: usize) {
        match self.verdicts[i] {
            Verdict::Drop(_) => {}
            Verdict::Forward(to) => self.send_from_batch(ingress, to, i, hdr),
            Verdict::Flood => {
                let Some(net) = self.switch.port_network(ingress) else { return };
                self.flood.clear();
                self.flood.extend(self.switch.ports_of(net).iter().copied().filter(|&p| p != ingress));
                for k in 0..self.flood.len() {
                    let to = self.flood[k];
                    self.send_from_batch(ingress, to, i, hdr);
                }
            }
        }
    }

    fn send_from_batch(&mut self, ingress: PortId, to: PortId, i: usize, hdr: usize) {
        let (start, len) = (self.starts[i], self.lens[i]);
        let from_tunnel = matches!(self.ports.get(ingress.0 as usize), Some(Some(PortIo::Tunnel { .. })));
        let from_iface = matches!(self.ports.get(ingress.0 as usize), Some(Some(PortIo::Iface { .. })));
        // Split horizon (below) sends nothing from a peer to another peer or to the gateway.
        if self.cap.on && !(from_tunnel && matches!(self.ports.get(to.0 as usize), Some(Some(PortIo::Tunnel { .. } | PortIo::Gateway(_)))))
        {
            self.cap.offer(to, capture::Dir::Out, &self.bufs[i][start..len], hdr);
        }
        if self.imp.any() && self.imp.on(to, impaired::Dir::Egress) && self.hold_egress(to, i, hdr) {
            return;
        }
        if let Some(Some(PortIo::Tap { owner, stats, file, .. })) = self.ports.get(to.0 as usize) {
            // Before writing: a reply the container makes at once is then read here (worker.rs).
            if *owner != 0 && len - start - hdr <= worker::PICKUP_FRAME && !self.touched.iter().any(|&(p, _)| p == to) {
                let held = stats.try_pickup(file);
                self.touched.push((to, held));
            }
        }
        match self.ports.get_mut(to.0 as usize) {
            Some(Some(PortIo::Tap { file, vnet_hdr_len, .. })) if *vnet_hdr_len == hdr => {
                let ok = write_frame(file, &self.bufs[i][start..len]);
                self.count_tx(to, len - start - hdr, ok);
            }
            // A plain frame (from the tunnel) to a TAP that expects a virtio header: a zeroed
            // header (no offload asked) goes in the headroom in front of it.
            Some(Some(PortIo::Tap { file, vnet_hdr_len, .. })) if hdr == 0 && start >= *vnet_hdr_len => {
                let at = start - *vnet_hdr_len;
                self.bufs[i][at..start].fill(0);
                let ok = write_frame(file, &self.bufs[i][at..len]);
                self.count_tx(to, len - start, ok);
            }
            // A frame with a virtio header to a TAP without one (`--no-offloads` next to
            // offloads): a super-frame is segmented, a partial checksum completed.
            Some(Some(PortIo::Tap { .. })) if hdr == VNET_HDR_LEN => {
                let vh = segment::VnetHdr::parse(&self.bufs[i][start..len]).unwrap_or_default();
                if vh.gso_type != segment::GSO_NONE {
                    self.tap_send_segments(ingress, to, i, start + hdr, len, &vh);
                } else if self.finish_partial_csum(ingress, i, hdr) {
                    let Some(Some(PortIo::Tap { file, .. })) = self.ports.get_mut(to.0 as usize) else { return };
                    let ok = write_frame(file, &self.bufs[i][start + hdr..len]);
                    self.count_tx(to, len - start - hdr, ok);
                }
            }
            Some(Some(PortIo::Iface { file, tag, .. })) => {
                // Priority bits stay with a frame from one tagged interface port to another.
                let pcp = if from_iface { u16::from(self.slot_pcp[i]) << 13 } else { 0 };
                let tag = tag.map(|vid| vid | pcp);
                let ok = crate::sys::packet::send(file, &self.bufs[i][start..len], hdr, tag);
                self.count_tx(to, len - start - hdr, ok);
            }
            // Split horizon: what came from one peer never goes to another.
            Some(Some(PortIo::Tunnel { .. })) if from_tunnel => {}
            Some(Some(PortIo::Tunnel { peer, tag })) => {
                let (peer, tag) = (*peer, *tag);
                if hdr > 0 {
                    // The tunnel carries ordinary frames of at most the network's MTU (see
                    // ARCHITECTURE.md): a TSO super-frame is cut into segments here.
                    let vh = segment::VnetHdr::parse(&self.bufs[i][start..len]).unwrap_or_default();
                    if vh.gso_type != segment::GSO_NONE {
                        self.tunnel_send_gso(ingress, to, (peer, tag), i, start + hdr, len, &vh);
                        return;
                    }
                    if !self.finish_partial_csum(ingress, i, hdr) {
                        return;
                    }
                }
                self.tunnel_send(to, peer, tag, i, start + hdr, len);
            }
            // Each host's gateway answers its own containers only.
            Some(Some(PortIo::Gateway(_))) if from_tunnel => {}
            Some(Some(PortIo::Gateway(gw))) => {
                let gw = *gw;
                let frame = &self.bufs[i][(start + hdr).min(len)..len];
                let csum_partial = hdr > 0 && self.bufs[i][start] & segment::F_NEEDS_CSUM != 0;
                match gw.handle(frame, &mut self.reply[VNET_HDR_LEN..], csum_partial) {
                    Outcome::Reply(n) => {
                        self.count_tx(to, frame.len(), true);
                        self.send_gateway_reply(to, n);
                    }
                    // Flooded frames for others reach the gateway too; one sent to its MAC that it
                    // neither answers nor routes is a drop.
                    Outcome::Ignored if frame.get(..6) == Some(&gw.mac.0[..]) => self.count_drop(ingress, DropReason::Unsupported),
                    Outcome::Ignored => self.count_tx(to, frame.len(), true),
                    Outcome::Malformed => self.count_drop(ingress, DropReason::NoRoute),
                    Outcome::Dns(q) => {
                        self.count_tx(to, frame.len(), true);
                        self.answer_dns(ingress, to, gw, q, i, hdr);
                    }
                    Outcome::Dhcp(q) => {
                        self.count_tx(to, frame.len(), true);
                        // DHCP is served on interface ports (containers are wired over netlink).
                        if matches!(self.ports.get(ingress.0 as usize), Some(Some(PortIo::Iface { .. }))) {
                            let base = start + hdr;
                            let payload = self.bufs[i].get(base + q.payload.start..base + q.payload.end).unwrap_or_default();
                            match crate::dhcp::parse(payload) {
                                Ok(query) => self.ask_dhcp(DhcpRequest { gw_port: to, port: ingress, query }),
                                Err(crate::dhcp::Refused::NotRequest) => {}
                                Err(_) => self.count_drop(ingress, DropReason::DhcpMalformed),
                            }
                        }
                    }
                    Outcome::Routed { .. } if !self.egress.serves(to) => self.count_drop(ingress, DropReason::NoRoute),
                    Outcome::Routed { ip } => {
                        self.count_tx(to, frame.len(), true);
                        let now = self.now();
                        let packet = &self.bufs[i][(start + hdr).min(len)..len];
                        if let Some(ip_bytes) = packet.get(ip) {
                            self.egress.feed(self.poll.registry(), now, to, ingress, ip_bytes);
                        }
                    }
                    Outcome::DnsTcp { client_mac, ip } => {
                        self.count_tx(to, frame.len(), true);
                        let packet = &self.bufs[i][(start + hdr).min(len)..len];
                        let Some(ip_bytes) = packet.get(ip) else { return };
                        let ip_bytes = ip_bytes.to_vec();
                        self.feed_tcp_dns(ingress, to, gw, client_mac, &ip_bytes);
                        self.poll_tcp_dns(to);
                    }
                }
            }
            // A TAP with another header layout is never created by this daemon.
            _ => self.count_drop(ingress, DropReason::NoRoute),
        }
    }

    /// Completes the partial checksum (virtio `NEEDS_CSUM`) of batch frame `i` in place and
    /// clears the flag, so every later destination gets a whole frame. `false` (and a drop
    /// counted on `ingress`) when the checksum offsets do not fit the frame.
    fn finish_partial_csum(&mut self, ingress: PortId, i: usize, hdr: usize) -> bool {
        let (start, len) = (self.starts[i], self.lens[i]);
        let Some(vh) = segment::VnetHdr::parse(&self.bufs[i][start..len]) else { return true };
        if hdr == 0 || vh.flags & segment::F_NEEDS_CSUM == 0 {
            return true;
        }
        let frame = &mut self.bufs[i][start + hdr..len];
        if segment::finish_csum(frame, usize::from(vh.csum_start), usize::from(vh.csum_offset)).is_err() {
            self.count_drop(ingress, DropReason::BadOffload);
            return false;
        }
        self.bufs[i][start] &= !segment::F_NEEDS_CSUM;
        true
    }

    /// Writes the TCP super-frame of batch slot `i` to a TAP without vnet header, one
    /// segment per write.
    fn tap_send_segments(&mut self, ingress: PortId, to: PortId, i: usize, frame_start: usize, len: usize, vh: &segment::VnetHdr) {
        let max_frame = self.switch.port_max_frame(to).unwrap_or(0);
        let mut seg = match segment::TcpSegmenter::new(vh, &self.bufs[i][frame_start..len]) {
            Ok(seg) if seg.max_len() <= max_frame => seg,
            Ok(_) => return self.count_drop(ingress, DropReason::TooLong),
            Err(_) => return self.count_drop(ingress, DropReason::BadOffload),
        };
        let Some(Some(PortIo::Tap { file, .. })) = self.ports.get_mut(to.0 as usize) else { return };
        let (mut packets, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        while let Some(n) = seg.next_into(&mut self.seg_buf) {
            if write_frame(file, &self.seg_buf[..n]) {
                packets += 1;
                bytes += n as u64;
            } else {
                failed += 1;
            }
        }
        if let Some(c) = self.switch.counters_mut(to) {
            c.segmented += 1;
            c.tx_packets += packets;
            c.tx_bytes += bytes;
            c.drops[DropReason::TxError.index()] += failed;
        }
    }

    /// Answers (or forwards) the DNS query at `q.payload` of batch frame `i`.
    fn answer_dns(&mut self, ingress: PortId, gw_port: PortId, gw: Gateway, q: UdpQuery, i: usize, hdr: usize) {
        let counters = self.dns.counters.clone();
        DnsCounters::add(&counters.queries);
        let Some(view) = self.dns.views.get(ingress.0 as usize).cloned().flatten() else {
            DnsCounters::add(&counters.dropped);
            return;
        };
        let base = self.starts[i] + hdr;
        let query = &self.bufs[i][base + q.payload.start..base + q.payload.end];
        let visible: Vec<&str> = view.visible.iter().map(String::as_str).collect();
        let rand = self.dns.next_rand();
        // What fits in one datagram at the network's MTU after the IP and UDP headers.
        let limit = dns::Limit::Udp((view.mtu as usize).saturating_sub(q.reply_offset() - 14));
        let out = &mut self.reply[VNET_HDR_LEN + q.reply_offset()..];
        let n = match self.dns.responder.respond(&visible, view.internal, query, rand, out, limit) {
            dns::Decision::Answer(n) | dns::Decision::Reject(n, _) => n,
            dns::Decision::Drop(_) => {
                DnsCounters::add(&counters.dropped);
                return;
            }
            dns::Decision::Forward => {
                let req = ForwardRequest {
                    port: ingress,
                    gw_port,
                    gw,
                    client: ReplyTo::Udp(q),
                    network: view.network.clone(),
                    query: query.to_vec(),
                };
                if let Err(req) = self.dns.forward(req) {
                    DnsCounters::add(&counters.failures);
                    self.send_dns_reply(DnsReply { upstream: None, req: *req });
                }
                return;
            }
        };
        DnsCounters::add(&counters.answers);
        if let Some(len) = gw.finish_udp_reply(&q, n, &mut self.reply[VNET_HDR_LEN..]) {
            self.send_gateway_reply(gw_port, len);
        }
    }

    /// Switches a reply the gateway wrote at `reply[VNET_HDR_LEN..][..n]` as if it came in on
    /// the gateway's port. It only ever goes to TAPs, so the gateway never answers itself.
    fn send_gateway_reply(&mut self, gw_port: PortId, n: usize) {
        let now = self.now();
        let frame = &self.reply[VNET_HDR_LEN..VNET_HDR_LEN + n];
        let verdict = self.switch.handle_frame(now, gw_port, frame, false);
        self.gw_out.clear();
        match verdict {
            Verdict::Forward(to) => self.gw_out.push(to),
            Verdict::Flood => {
                if let Some(net) = self.switch.port_network(gw_port) {
                    self.gw_out.extend(self.switch.ports_of(net).iter().copied().filter(|&p| p != gw_port));
                }
            }
            Verdict::Drop(_) => return,
        }
        self.reply[..VNET_HDR_LEN].fill(0);
        if self.cap.on {
            self.cap.offer_decided(gw_port, capture::Dir::In, &self.reply[VNET_HDR_LEN..VNET_HDR_LEN + n], 0, Some(verdict));
            for &to in &self.gw_out {
                self.cap.offer(to, capture::Dir::Out, &self.reply[VNET_HDR_LEN..VNET_HDR_LEN + n], 0);
            }
        }
        for k in 0..self.gw_out.len() {
            let to = self.gw_out[k];
            match self.ports.get_mut(to.0 as usize) {
                Some(Some(PortIo::Tap { file, vnet_hdr_len, .. })) => {
                    let start = VNET_HDR_LEN - *vnet_hdr_len;
                    if self.imp.any() && self.imp.offer(to, impaired::Dir::Egress, now, &self.reply[start..VNET_HDR_LEN + n], *vnet_hdr_len)
                    {
                        continue;
                    }
                    let ok = write_frame(file, &self.reply[start..VNET_HDR_LEN + n]);
                    self.count_tx(to, n, ok);
                }
                Some(Some(PortIo::Iface { file, tag, .. })) => {
                    let ok = crate::sys::packet::send(file, &self.reply[..VNET_HDR_LEN + n], VNET_HDR_LEN, *tag);
                    self.count_tx(to, n, ok);
                }
                _ => {}
            }
        }
    }

    /// Runs egress's stacks and writes what they send to the containers' TAPs.
    fn flush_egress(&mut self) {
        let now = self.now();
        self.egress.poll(now);
        let mut outs = std::mem::take(&mut self.egress_out);
        self.egress.take_out(&mut outs);
        for mut o in outs.drain(..) {
            let Some(Some(PortIo::Tap { file, vnet_hdr_len, .. })) = self.ports.get_mut(o.to.0 as usize) else { continue };
            let hdr = *vnet_hdr_len;
            let Some(len) = egress_frame(&mut o, hdr) else { continue };
            if self.cap.on {
                self.cap.offer_decided(o.gw_port, capture::Dir::In, &o.buf[VNET_HDR_LEN - hdr..], hdr, Some(Verdict::Forward(o.to)));
                self.cap.offer(o.to, capture::Dir::Out, &o.buf[VNET_HDR_LEN - hdr..], hdr);
            }
            if self.imp.any() && self.imp.offer(o.to, impaired::Dir::Egress, now, &o.buf[VNET_HDR_LEN - hdr..], hdr) {
                self.egress.recycle(o.gw_port, o.buf);
                continue;
            }
            let ok = write_frame(file, &o.buf[VNET_HDR_LEN - hdr..]);
            self.count_tx(o.to, len, ok);
            self.egress.recycle(o.gw_port, o.buf);
        }
        self.egress_out = outs;
    }

    /// Configures egress for the network whose gateway is `gw_port`.
    pub fn set_egress_network(&mut self, gw_port: PortId, cfg: egress::NetConfig) {
        let now = self.now();
        self.egress.set_network(gw_port, cfg, now);
    }

    /// Tells egress which address and MAC the container on `port` has, and the switch that
    /// ARP from `port` may claim only that address (never the gateway's; see
    /// [`crate::switch::PortGuard`]).
    pub fn egress_client(&mut self, port: PortId, gw_port: PortId, ip: std::net::Ipv4Addr, mac: Mac) {
        self.egress.add_client(port, gw_port, ip, mac);
        let gw = match self.ports.get(gw_port.0 as usize) {
            Some(Some(PortIo::Gateway(g))) => Some(*g),
            _ => None,
        };
        let guard = crate::switch::PortGuard {
            ipv4: Some(ip),
            ipv6: self.switch.port_guard(port).and_then(|g| g.ipv6),
            gateway4: gw.map(|g| g.ip),
            gateway6: gw.and_then(|g| g.ip6),
        };
        let _ = self.switch.set_port_guard(port, Some(guard));
    }

    /// The IPv6 address the container on `port` leased: neighbour discovery from it may claim
    /// only that one (and link-local ones). Until this is called, only the gateway's IPv6
    /// address is refused.
    pub fn set_port_ipv6(&mut self, port: PortId, ip6: Option<std::net::Ipv6Addr>) {
        let guard = crate::switch::PortGuard { ipv6: ip6, ..self.switch.port_guard(port).unwrap_or_default() };
        let _ = self.switch.set_port_guard(port, Some(guard));
    }

    pub fn set_egress_limits(&mut self, limits: egress::Limits) {
        self.egress.set_limits(limits);
    }

    /// Starts serving a published port; returns its id.
    ///
    /// # Errors
    /// When epoll refuses the socket.
    pub fn publish(&mut self, p: egress::Publish) -> io::Result<usize> {
        self.egress.publish(self.poll.registry(), p)
    }

    pub fn unpublish(&mut self, id: usize) {
        self.egress.unpublish(id);
    }

    pub fn egress_stats(&self) -> egress::Stats {
        self.egress.stats()
    }

    /// What packet captures copied and dropped.
    pub fn capture_totals(&self) -> capture::CaptureTotals {
        self.cap.hub().totals()
    }

    /// Gives batch frame `i` (header layout `hdr`) to `to`'s egress impairment, as it would be
    /// written to that TAP. `false` when it cannot be held as is (a super-frame to a TAP
    /// without offloads, which is segmented on the way): it is then sent unimpaired.
    fn hold_egress(&mut self, to: PortId, i: usize, hdr: usize) -> bool {
        let (start, len) = (self.starts[i], self.lens[i]);
        let Some(Some(PortIo::Tap { vnet_hdr_len, .. })) = self.ports.get(to.0 as usize) else { return false };
        let th = *vnet_hdr_len;
        let now = self.now();
        if th == hdr {
            return self.imp.offer(to, impaired::Dir::Egress, now, &self.bufs[i][start..len], th);
        }
        if hdr == 0 && start >= th {
            let at = start - th;
            self.bufs[i][at..start].fill(0);
            return self.imp.offer(to, impaired::Dir::Egress, now, &self.bufs[i][at..len], th);
        }
        false
    }

    /// Sends the impaired frames whose time came: egress ones to their TAP, ingress ones
    /// through the switch (in batches, as if just read).
    fn release_impaired(&mut self) {
        let now = self.now();
        let mut out = std::mem::take(&mut self.imp_out);
        self.imp.pop_due(now, &mut out);
        self.send_released(&mut out);
        self.imp_out = out;
    }

    fn send_released(&mut self, out: &mut Vec<impaired::Released>) {
        let mut n = 0;
        for r in out.drain(..) {
            let Some(Some(PortIo::Tap { file, vnet_hdr_len, .. })) = self.ports.get(r.port.0 as usize) else {
                self.imp.recycle(r.bytes);
                continue;
            };
            let hdr = *vnet_hdr_len;
            match r.dir {
                impaired::Dir::Egress => {
                    let ok = write_frame(file, &r.bytes);
                    self.count_tx(r.port, r.bytes.len().saturating_sub(hdr), ok);
                }
                impaired::Dir::Ingress if r.bytes.len() <= BUF_LEN => {
                    self.bufs[n][..r.bytes.len()].copy_from_slice(&r.bytes);
                    self.starts[n] = 0;
                    self.lens[n] = r.bytes.len();
                    self.slot_port[n] = (r.port, hdr);
                    n += 1;
                    if n == BUDGET {
                        self.decide_released(n);
                        n = 0;
                    }
                }
                impaired::Dir::Ingress => {}
            }
            self.imp.recycle(r.bytes);
        }
        if n > 0 {
            self.decide_released(n);
        }
    }

    /// Arms the timer for the next impaired frame; returns how long until it is due.
    fn arm_imp_timer(&mut self, now: Duration) -> Option<Duration> {
        let due = self.imp.next_due()?;
        if let Some(t) = self.imp_timer.as_mut() {
            if due > now {
                if let Err(e) = t.arm(now, due) {
                    tracing::debug!(error = %e, "timerfd_settime failed; releases follow the poll timeout");
                }
            }
        }
        Some(due.saturating_sub(now))
    }

    fn decide_released(&mut self, n: usize) {
        self.releasing = true;
        self.decide_batch(n, false);
        self.releasing = false;
    }

    /// Sets or clears `port`'s impairment in `dir` (a TAP port only). Grants from or to the
    /// port are revoked first, so from now on its frames all pass through this thread; on a
    /// clear, what was held is sent at once.
    ///
    /// # Errors
    /// When `port` is not a container TAP.
    pub fn set_impairment(
        &mut self,
        port: PortId,
        dir: impaired::Dir,
        cfg: Option<(crate::impair::Impairment, crate::impair::Config)>,
    ) -> Result<(), String> {
        if !matches!(self.ports.get(port.0 as usize), Some(Some(PortIo::Tap { .. }))) {
            return Err(format!("port {} is not a container's port", port.0));
        }
        if cfg.is_some() && self.imp_timer.is_none() {
            // Without it frames leave up to a millisecond late (epoll's timeout): not fatal.
            match crate::sys::timer::Timer::new() {
                Ok(t) => match self.poll.registry().register(&mut SourceFd(&t.raw_fd()), IMP_TIMER, Interest::READABLE) {
                    Ok(()) => self.imp_timer = Some(t),
                    Err(e) => tracing::warn!(error = %e, "cannot poll a timerfd; impaired frames leave up to 1 ms late"),
                },
                Err(e) => tracing::warn!(error = %e, "no timerfd; impaired frames leave up to 1 ms late"),
            }
        }
        let mut out = Vec::new();
        self.imp.set(port, dir, cfg, &mut out);
        if self.imp.touches(port) {
            for w in &self.workers {
                w.revoke(port);
            }
        }
        self.send_released(&mut out);
        Ok(())
    }

    /// `port`'s impairments (ingress, egress) with their counters.
    pub fn impairment(&self, port: PortId) -> (Option<impaired::Status>, Option<impaired::Status>) {
        self.imp.status(port)
    }

    fn count_tx(&mut self, port: PortId, bytes: usize, ok: bool) {
        if let Some(c) = self.switch.counters_mut(port) {
            if ok {
                c.tx_packets += 1;
                c.tx_bytes += bytes as u64;
            } else {
                c.drops[DropReason::TxError.index()] += 1;
            }
        }
    }

    fn count_drop(&mut self, port: PortId, reason: DropReason) {
        if let Some(c) = self.switch.counters_mut(port) {
            c.drops[reason.index()] += 1;
        }
    }
}

/// One frame per `read`; `None` when the TAP has nothing more (or failed: logged, and the next
/// readiness event tries again).
fn read_frame(file: &File, buf: &mut [u8], port: PortId) -> Option<usize> {
    loop {
        match (&*file).read(buf) {
            Ok(len) => return Some(len),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(port = port.0, error = %e, "tap read failed");
                }
                return None;
            }
        }
    }
}

/// One frame per `write`: a TAP takes exactly one frame per call. A full queue in the container
/// (EAGAIN) or a TAP whose link is down drops the frame, like a NIC would.
fn write_frame(file: &File, frame: &[u8]) -> bool {
    loop {
        match (&*file).write(frame) {
            Ok(n) => return n == frame.len(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Fills the Ethernet header (and the virtio header, when the TAP has one) in front of an egress
/// packet. Returns the frame length without the virtio header, or `None` when the packet cannot
/// go to a TAP without one.
fn egress_frame(o: &mut egress::Out, hdr: usize) -> Option<usize> {
    let ip_len = o.buf.len().checked_sub(egress::HEADROOM)?;
    if hdr == 0 && (o.gso_size.is_some() || o.csum_partial) {
        return None;
    }
    let eth = &mut o.buf[VNET_HDR_LEN..egress::HEADROOM];
    eth[..6].copy_from_slice(&o.dst_mac.0);
    eth[6..12].copy_from_slice(&o.src_mac.0);
    eth[12..14].copy_from_slice(&[0x08, 0x00]);
    if hdr > 0 {
        // smoltcp left TCP checksums to the receiver on these TAPs (see egress.rs).
        let vh =
            if o.csum_partial { segment::offload_tcp(&mut o.buf[VNET_HDR_LEN..], o.gso_size).ok()? } else { segment::VnetHdr::default() };
        vh.write(&mut o.buf[..VNET_HDR_LEN]);
    }
    Some(14 + ip_len)
}

/// An IPv4 UDP datagram from port 67 to port 68 (a DHCP server's reply), untagged.
fn is_dhcp_reply(frame: &[u8]) -> bool {
    if frame.get(12..14) != Some(&[0x08, 0x00]) || frame.get(23) != Some(&17) {
        return false;
    }
    let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
    let udp = 14 + ihl;
    frame.get(udp..udp + 4) == Some(&[0, 67, 0, 68])
}

/// Splits a TAP read into (is a GSO super-frame, the Ethernet frame).
fn split_vnet(buf: &[u8], hdr: usize) -> (bool, &[u8]) {
    if hdr == 0 {
        return (false, buf);
    }
    match buf.get(hdr..) {
        // virtio_net_hdr.gso_type is byte 1; VIRTIO_NET_HDR_GSO_NONE is 0.
        Some(frame) => (buf[1] != 0, frame),
        None => (false, &[]),
    }
}

/// The largest frame a port of this MTU may send without GSO: MTU + Ethernet header + one VLAN tag.
pub const fn max_frame(mtu: u32) -> usize {
    mtu as usize + 14 + 4
}

/// Gives the calling datapath thread nice value `nice` (0: leave it). Below 0, a thread with
/// frames to move gets a core ahead of the containers' own processes, as the kernel's bridge
/// forwards in softirq ahead of any process: under load a round trip no longer waits for the
/// bulk flow's processes to use up their time slice. It sleeps when there is nothing to move,
/// and storm control bounds what one container makes it do.
///
/// # Errors
/// When the kernel refuses (below 0 without CAP_SYS_NICE, as rootless).
pub fn set_nice(nice: i32) -> io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    crate::sys::set_thread_nice(nice)
}

fn token(port: PortId) -> Token {
    Token(port.0 as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_split() {
        let mut b = [0u8; 30];
        assert_eq!(split_vnet(&b, 12), (false, &b[12..]));
        b[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
        assert!(split_vnet(&b, 12).0);
        assert_eq!(split_vnet(&b[..5], 12), (false, &[][..]));
        assert_eq!(split_vnet(&b, 0), (false, &b[..]));
    }
}
