//! vswitchd: the vswitch daemon. Runs in the foreground; SIGINT or SIGTERM stops it cleanly,
//! removing every TAP it made and its control socket. Without privileges it runs rootless:
//! it re-executes itself as a helper in a user namespace (`__netns-helper`, see
//! `vswitch::sys::userns`) that wires the containers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;
use vswitch::control::front::cluster::{parse_cluster_url, Cluster, ClusterConfig};
use vswitch::control::front::http as server;
use vswitch::control::model::parse_upstream;
use vswitch::control::{Control, Options};
use vswitch::datapath::DnsCounters;
use vswitch::datapath::{realtime, Datapath};
use vswitch::fdb::FdbConfig;
use vswitch::switch::{StormConfig, SwitchConfig};
use vswitch::sys::log::LogFormat;
use vswitch::sys::{NetnsRef, NetnsWorker, RootlessOptions};

/// Userspace virtual switch for containers.
#[derive(Debug, Parser)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Control socket (HTTP/1.1 + JSON). Default: /run/vswitch/vswitchd.sock as root,
    /// $XDG_RUNTIME_DIR/vswitch/vswitchd.sock rootless.
    #[arg(long, env = "VSWITCH_SOCKET")]
    socket: Option<PathBuf>,
    /// State directory. Default: /var/lib/vswitch as root, $XDG_DATA_HOME/vswitch (or
    /// ~/.local/share/vswitch) rootless.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Run without privileges (the default when the effective uid is not 0): a helper process
    /// in a user namespace of its own wires the containers, whose network namespaces must
    /// belong to that user namespace (`vswitchctl version` names it).
    #[arg(long)]
    rootless: bool,
    /// Rootless: join this user namespace (e.g. /proc/PID/ns/user of a runtime's pause
    /// process) instead of making one. Implies --rootless.
    #[arg(long, value_name = "PATH")]
    userns: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace or off; or tracing filter directives whose
    /// levels are those, e.g. "vswitch=debug,info".
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    log_level: String,
    /// Log lines as plain text, or as JSON lines (one object per event) for a log collector.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Largest number of MAC table entries over all networks.
    #[arg(long, default_value_t = 8192)]
    fdb_max_entries: usize,
    /// Largest number of learned MACs per port.
    #[arg(long, default_value_t = 1024)]
    fdb_per_port_max: usize,
    /// Seconds after which an unrefreshed learned MAC is forgotten.
    #[arg(long, default_value_t = 300)]
    fdb_aging_secs: u64,
    /// Storm control: frames per second each port may send that are flooded (broadcast,
    /// multicast, unknown unicast) or come from MACs it may not learn (over
    /// --fdb-per-port-max); a burst of one second's worth; beyond, dropped and counted as
    /// `storm`. 0 turns it off.
    #[arg(long, value_name = "PPS", default_value_t = StormConfig::DEFAULT_RATE)]
    flood_rate: u32,
    /// Open TAPs without IFF_VNET_HDR and offloads (one MTU-sized frame per syscall).
    #[arg(long)]
    no_offloads: bool,
    /// Datapath threads that read container TAPs (each TAP is read by one of them, so each
    /// flow stays on one thread). Default: half the CPUs, at least 1 and at most 4. The
    /// containers' own processes and the kernel's work for them need the other half: on 2 CPUs
    /// a second thread moved no more and made round trips under load wait longer
    /// (benches/RESULTS.md).
    #[arg(long, env = "VSWITCH_WORKERS", value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_WORKERS))]
    workers: Option<usize>,
    /// Scheduling priority (nice, -20 to 19) of the datapath threads. Below 0 (e.g. -10) a
    /// thread with frames to move gets a core ahead of the containers' processes, as the
    /// kernel's bridge does in softirq: under load a round trip waits less behind a bulk
    /// flow's processes, but with two or more workers on a small box one stream moves ~13 %
    /// less (benches/RESULTS.md). Lowering it needs CAP_SYS_NICE. 0 (default) leaves the
    /// threads as they are.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    datapath_nice: i32,
    /// When the datapath threads run as real-time threads (SCHED_FIFO, lowest priority), so
    /// that a frame is moved as soon as it arrives, as the kernel's bridge does in softirq:
    /// `auto` while the CPUs are busy (a round trip then no longer waits behind the containers'
    /// bulk flows for a time slice; while they idle a real-time thread answers slower, see
    /// benches/RESULTS.md), `always`, or `never`. Needs CAP_SYS_NICE; without it the threads
    /// keep the normal policy.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = clap::value_parser!(realtime::Mode))]
    datapath_realtime: realtime::Mode,
    /// Where the gateways forward DNS names they do not own: IP or IP:PORT, repeatable, tried
    /// in order; `none` forwards nothing. Default: the nameservers of /etc/resolv.conf, asked
    /// from the daemon's namespace (so 127.0.0.53 works). Networks can override it.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    dns_upstreams: Vec<String>,
    /// How long to wait for one upstream before trying the next, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    dns_timeout_ms: u64,
    /// Keep the containers' TAPs on a planned stop (SIGINT/SIGTERM), like Docker's
    /// live-restore; the next start picks them up. Without it a planned stop removes them and
    /// the next start makes them again.
    #[arg(long)]
    live_restore: bool,
    /// Where subnets of networks created without `--subnet` come from, like Docker's option:
    /// `base=CIDR,size=PREFIXLEN`, repeatable, tried in order. Default: base=10.89.0.0/16,size=24.
    #[arg(long = "default-address-pool", value_name = "base=CIDR,size=N")]
    address_pools: Vec<String>,
    /// Run the encrypted tunnel to other hosts on this UDP address (e.g. 0.0.0.0:51820). The
    /// host's key is made at the first start in STATE_DIR/tunnel.key (0600).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// MTU of the network the tunnel runs over; overlay networks default to what fits in it.
    #[arg(long, default_value_t = 1500)]
    underlay_mtu: u32,
    /// Egress NAT: containers of non-internal networks reach the host and beyond through the
    /// daemon's own sockets, and ports can be published. Default: on when rootless, off as root.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    egress: Option<bool>,
    /// Egress flows (TCP, UDP, ICMP) one container may hold at once; more are refused.
    #[arg(long, default_value_t = 512)]
    egress_max_flows: usize,
    /// Seconds after which an idle egress UDP or ICMP flow is closed.
    #[arg(long, default_value_t = 60)]
    egress_udp_idle_secs: u64,
    /// Also serve Prometheus metrics (`GET /metrics`, nothing else) over TCP on this address
    /// (e.g. 127.0.0.1:9469). They are always on the control socket.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve Docker's plugin protocol (libnetwork remote network driver and IPAM driver) on
    /// this socket; dockerd finds `/run/docker/plugins/NAME.sock` as driver `NAME`. Run
    /// vswitchd in dockerd's network namespace: dockerd moves the TAPs from there.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = vswitch::control::front::docker::DEFAULT_SOCKET)]
    docker_plugin: Option<PathBuf>,
    /// Cluster mode: keep overlay networks, address blocks, hosts and names in etcd
    /// (`etcd://HOST:PORT[,HOST:PORT...]`, `etcds://` for TLS). Needs --listen.
    #[arg(long, value_name = "etcd://HOST:PORT[,...]")]
    cluster: Option<String>,
    /// Key prefix of this cluster in etcd.
    #[arg(long, default_value = "/vswitch")]
    cluster_prefix: String,
    /// This host's name in the cluster. Default: the machine's host name.
    #[arg(long)]
    host_name: Option<String>,
    /// Seconds a host stays in the cluster after it stops renewing its lease (a dead host's
    /// peers and names go after this long).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    cluster_lease_secs: u64,
    /// TLS to etcd: the CA certificate (PEM) that signed the members' certificates.
    #[arg(long, value_name = "FILE")]
    cluster_ca: Option<PathBuf>,
    /// TLS to etcd: this host's client certificate and key (PEM).
    #[arg(long, value_name = "FILE")]
    cluster_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<PathBuf>,
}

/// Most `--workers`.
const MAX_WORKERS: u64 = 64;

/// `--workers` when not given: half of `cpus`, at least 1, at most 4.
fn default_workers(cpus: usize) -> usize {
    (cpus / 2).clamp(1, 4)
}

/// The levels `--log-level` takes.
const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// `--log-level`: a level, or comma-separated tracing directives (`[TARGET[SPAN]=]LEVEL`) whose
/// every level is one of [`LOG_LEVELS`]. A bare word is a level, never a target: tracing would
/// take `warning` for a target and log nothing.
/// Samples /proc/stat every [`realtime::Governor::TICK`] and switches the datapath threads
/// between SCHED_FIFO and the normal policy as the governor decides (datapath/realtime.rs). It
/// stops, leaving them normal, when the kernel refuses (no CAP_SYS_NICE).
fn spawn_realtime_governor(mode: realtime::Mode, threads: Arc<realtime::Threads>) {
    if mode == realtime::Mode::Never {
        return;
    }
    let governor = move || {
        let mut gov = realtime::Governor::new(mode);
        // The policy the threads should have, and how many of them (in registration order)
        // have it: a thread that registers late gets it at the next sample.
        let (mut on, mut applied) = (false, 0);
        loop {
            std::thread::sleep(realtime::Governor::TICK);
            let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
            let Some(times) = realtime::CpuTimes::parse(&stat) else {
                tracing::warn!("cannot read the CPU times of /proc/stat; the datapath threads keep the normal policy");
                return;
            };
            if let Some(want) = gov.observe(times) {
                (on, applied) = (want, 0);
            }
            let tids = threads.tids();
            if applied >= tids.len() {
                continue;
            }
            let priority = on.then_some(realtime::PRIORITY);
            // A thread that is gone (ESRCH) is not a refusal.
            let refused = tids[applied..]
                .iter()
                .map(|&t| vswitch::sys::set_thread_realtime(t, priority))
                .find_map(|r| r.err().filter(|e| e.raw_os_error() != Some(libc::ESRCH)));
            if let Some(e) = refused {
                for &t in &tids {
                    let _ = vswitch::sys::set_thread_realtime(t, None);
                }
                threads.set_on(false);
                tracing::info!(error = %e, "the datapath threads keep the normal policy (SCHED_FIFO needs CAP_SYS_NICE)");
                return;
            }
            applied = tids.len();
            threads.set_on(on);
            tracing::debug!(realtime = on, threads = applied, "datapath threads' scheduling policy");
        }
    };
    if let Err(e) = std::thread::Builder::new().name("rt-governor".into()).spawn(governor) {
        tracing::warn!(error = %e, "cannot start the real-time governor; the datapath threads keep the normal policy");
    }
}

fn parse_log_level(s: &str) -> Result<String, String> {
    let valid = || format!("valid levels: {}; or directives such as vswitch=debug,info", LOG_LEVELS.join(", "));
    let mut any = false;
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!("{level:?} is not a log level ({})", valid()));
        }
        any = true;
    }
    if !any {
        return Err(format!("no log level given ({})", valid()));
    }
    EnvFilter::try_new(s).map_err(|e| format!("{e} ({})", valid()))?;
    Ok(s.to_string())
}

/// Log directive added to every filter: nothing from hickory-proto (see `main`).
const QUIET_DNS_LIBRARY: &str = "hickory_proto=off";
/// Log directives added to every filter for the cluster's etcd client (see `main`).
const QUIET_GRPC: [&str; 4] = ["h2=warn", "tower=warn", "tonic=warn", "hyper_util=warn"];

fn main() -> ExitCode {
    // vswitchd re-executed as its own rootless netns helper: before anything else, while the
    // process is single-threaded (it joins a user namespace).
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == vswitch::sys::HELPER_ARG) {
        return vswitch::sys::helper_main(&argv[2..]);
    }
    let args = Args::parse();
    // Checked by clap (parse_log_level), so this cannot fail.
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // The DNS library logs what it dislikes in a container's query (a malformed EDNS option: a
    // 4 kB warning each), at the container's rate: off unless --log-level names it.
    let filter = match (args.log_level.contains("hickory"), QUIET_DNS_LIBRARY.parse()) {
        (false, Ok(quiet)) => filter.add_directive(quiet),
        _ => filter,
    };
    // The etcd client's HTTP/2 and gRPC layers log every frame at debug: only their warnings,
    // unless --log-level names them.
    let filter = QUIET_GRPC.iter().fold(filter, |f, d| match (args.log_level.contains(d.split('=').next().unwrap_or(d)), d.parse()) {
        (false, Ok(quiet)) => f.add_directive(quiet),
        _ => f,
    });
    // Colours only for a person at a terminal: a log file or journal gets plain text.
    vswitch::sys::log::init(filter, args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, not also through the log.
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let root = is_root();
    let rootless = args.rootless || args.userns.is_some() || !root;
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None if rootless => rootless_runtime_dir()?.join("vswitchd.sock"),
        None => PathBuf::from("/run/vswitch/vswitchd.sock"),
    };
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None if rootless => rootless_data_dir()?,
        None => PathBuf::from("/var/lib/vswitch"),
    };
    // Cluster options are checked before anything starts.
    let cluster_cfg = args.cluster.as_deref().map(|url| cluster_config(&args, url)).transpose()?;
    // A second daemon on the socket of a running one is refused before anything starts (the
    // bind checks it again, for a race).
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(format!(
            "another vswitchd is already listening on {}: stop it first, or give this one a socket (--socket) and a \
             state directory (--state-dir) of its own",
            socket.display()
        ));
    }
    // 0700 from the start: the state file names every container (state.rs keeps it so).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&state_dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;
    // One daemon per state directory, held until the process exits; taken before anything in
    // the directory is read or written.
    let _state_lock = vswitch::sys::lock_state_dir(&state_dir).map_err(|e| e.to_string())?;
    // Read before anything starts: a bad state file stops the daemon and is never overwritten.
    let snapshot = vswitch::state::load(&state_dir).map_err(|e| e.to_string())?;

    // The netns worker first, from the main thread before any other thread exists: the
    // rootless helper is killed when the thread that started it exits, and the main thread
    // lives as long as the daemon.
    let netns = if rootless {
        let opts = RootlessOptions {
            userns: args.userns.clone(),
            // After a restart the containers wired before belong to the user namespace of the
            // earlier helper: join it again (through a namespace that still exists).
            userns_of_netns: snapshot.as_ref().and_then(first_live_netns),
            exe: None,
            log_level: Some(args.log_level.clone()),
            log_format: args.log_format,
        };
        tracing::info!(userns = ?opts.userns, rejoin = ?opts.userns_of_netns, "rootless mode");
        NetnsWorker::spawn_rootless(opts).map_err(|e| format!("rootless: cannot start the netns helper: {e}"))?
    } else {
        NetnsWorker::spawn().map_err(|e| format!("cannot start the netns thread: {e}"))?
    };
    let userns_pid = netns.userns_pid();
    let netns = Arc::new(netns);

    let cfg = SwitchConfig {
        fdb: FdbConfig {
            max_entries: args.fdb_max_entries.max(1),
            per_port_max: args.fdb_per_port_max.max(1),
            aging: Duration::from_secs(args.fdb_aging_secs.max(1)),
        },
        storm: StormConfig::per_second(args.flood_rate),
    };
    match vswitch::sys::raise_open_files_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit; about 1 000 containers may be the most"),
    }
    let upstreams = default_upstreams(&args.dns_upstreams)?;
    let dns_counters = Arc::new(DnsCounters::default());
    let workers = args.workers.unwrap_or_else(|| default_workers(std::thread::available_parallelism().map_or(1, |n| n.get())));
    let dp = Arc::new(
        Datapath::spawn(cfg, dns_counters.clone(), workers, args.datapath_nice).map_err(|e| format!("cannot start the datapath: {e}"))?,
    );
    spawn_realtime_governor(args.datapath_realtime, dp.threads.clone());
    let pools = address_pools(&args.address_pools)?;
    let opts = Options {
        offloads: !args.no_offloads,
        state_dir: state_dir.clone(),
        live_restore: args.live_restore,
        pools,
        underlay_mtu: args.underlay_mtu,
        tunnel_listen: args.listen,
        egress: args.egress.unwrap_or(rootless),
        egress_limits: vswitch::datapath::egress::Limits {
            max_flows: args.egress_max_flows.max(1),
            idle: Duration::from_secs(args.egress_udp_idle_secs.max(1)),
        },
    };
    let mut public_key = None;
    if let Some(listen) = args.listen {
        let key = vswitch::control::load_or_make_key(&state_dir)?;
        public_key = Some(vswitch::control::b64(&tunnel::public_key(&key)));
        let sock = std::net::UdpSocket::bind(listen).map_err(|e| format!("cannot listen on {listen} for the tunnel: {e}"))?;
        let seed = vswitch::control::random_bytes::<32>();
        let enabled = dp.call_blocking(move |e| e.enable_tunnel(key, sock, seed)).map_err(|e| e.to_string())?;
        enabled.map_err(|e| format!("cannot start the tunnel: {e}"))?;
        tracing::info!(%listen, public_key = %vswitch::control::b64(&tunnel::public_key(&key)), "tunnel up");
    }
    let dns_timeout = Duration::from_millis(args.dns_timeout_ms.max(1));
    let cluster = match (cluster_cfg, args.listen, public_key) {
        (Some((cfg, tls)), Some(listen), Some(key)) => Some(Arc::new(Cluster::new(cfg, tls, key, listen)?)),
        _ => None,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        tracing::info!(upstreams = ?upstreams, "DNS forwarding");
        let control = Arc::new(Control::new(dp, netns, opts, dns_counters, upstreams, dns_timeout));
        vswitch::control::ops::dhcp::start(control.clone());
        control.start_background();
        if let Some(c) = &cluster {
            control.set_cluster(c.clone());
        }
        if let Some(snap) = snapshot {
            let (networks, endpoints) = (snap.networks.len(), snap.networks.iter().map(|n| n.endpoints.len()).sum::<usize>());
            let dropped = control.restore(snap).await.map_err(|e| format!("cannot restore the saved state: {e}"))?;
            for line in &dropped {
                tracing::warn!("{line}");
            }
            tracing::info!(networks, endpoints, dropped = dropped.len(), "state restored");
        }
        if let Some(c) = cluster {
            // After the restore: the saved networks, peers and names serve until etcd answers.
            tokio::spawn(c.run(control.clone()));
        }
        let listener = server::bind(&socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        if let Some(addr) = args.metrics_listen {
            let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
            tracing::info!(%addr, "metrics on TCP");
            tokio::spawn(vswitch::control::front::metrics::serve(tcp, control.clone()));
        }
        if let Some(path) = &args.docker_plugin {
            if rootless {
                return Err("--docker-plugin needs a root vswitchd (dockerd runs as root)".to_string());
            }
            let listener = server::bind(path).map_err(|e| format!("cannot listen on {} for Docker: {e}", path.display()))?;
            tracing::info!(socket = %path.display(), "Docker network and IPAM driver");
            tokio::spawn(vswitch::control::front::docker::serve(listener, control.clone()));
        }
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tracing::info!(socket = %socket.display(), state_dir = %state_dir.display(), offloads = !args.no_offloads, workers, rootless, userns_pid, "vswitchd ready");
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        server::serve(listener, socket, control.clone(), stop).await;
        if let Some(path) = &args.docker_plugin {
            let _ = std::fs::remove_file(path);
        }
        control.shutdown().await;
        tracing::info!("stopped; every TAP removed");
        Ok(())
    })
}

/// What `--cluster` and its options describe (and whether it is TLS).
fn cluster_config(args: &Args, url: &str) -> Result<(ClusterConfig, bool), String> {
    let (endpoints, tls) = parse_cluster_url(url)?;
    let Some(listen) = args.listen else {
        return Err("--cluster needs --listen ADDR:PORT: hosts of a cluster reach each other through the tunnel".into());
    };
    if listen.ip().is_unspecified() {
        return Err(format!(
            "--cluster: --listen {listen} does not say where other hosts reach this one: listen on this host's underlay address"
        ));
    }
    let host = match &args.host_name {
        Some(h) => h.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
    };
    let cfg = ClusterConfig {
        endpoints,
        prefix: args.cluster_prefix.clone(),
        host,
        lease_ttl: Duration::from_secs(args.cluster_lease_secs),
        ca: args.cluster_ca.clone(),
        cert: args.cluster_cert.clone(),
        key: args.cluster_key.clone(),
    };
    cfg.check()?;
    Ok((cfg, tls))
}

/// `--default-address-pool` values (`base=CIDR,size=N`), or the default pool.
fn address_pools(given: &[String]) -> Result<ipam::SubnetPools, String> {
    if given.is_empty() {
        return ipam::SubnetPools::new(vec![ipam::SubnetPools::DEFAULT_V4]).map_err(|e| e.to_string());
    }
    let mut pools = Vec::new();
    for g in given {
        let bad = || format!("--default-address-pool {g:?}: expected base=CIDR,size=N");
        let (mut base, mut size) = (None, None);
        for kv in g.split(',') {
            match kv.split_once('=') {
                Some(("base", v)) => base = Some(v.parse::<ipnet::IpNet>().map_err(|_| bad())?),
                Some(("size", v)) => size = Some(v.parse::<u8>().map_err(|_| bad())?),
                _ => return Err(bad()),
            }
        }
        let (Some(base), Some(size)) = (base, size) else { return Err(bad()) };
        pools.push(ipam::AddressPool::new(base, size).map_err(|e| format!("--default-address-pool {g:?}: {e}"))?);
    }
    ipam::SubnetPools::new(pools).map_err(|e| e.to_string())
}

/// `--dns-upstream` values, or the host's resolv.conf when none is given.
fn default_upstreams(given: &[String]) -> Result<Vec<std::net::SocketAddr>, String> {
    if given.iter().any(|g| g == "none") {
        return Ok(Vec::new());
    }
    if !given.is_empty() {
        return given.iter().map(|g| parse_upstream(g)).collect();
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    Ok(dns::parse_resolv_conf(&text).into_iter().map(|ip| std::net::SocketAddr::new(ip, 53)).collect())
}

fn is_root() -> bool {
    // The effective uid decides the defaults; /proc/self/status avoids an unsafe geteuid here.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// `$XDG_RUNTIME_DIR/vswitch`: a rootless daemon has no /run of its own.
fn rootless_runtime_dir() -> Result<PathBuf, String> {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Ok(PathBuf::from(d).join("vswitch")),
        _ => Err("rootless: XDG_RUNTIME_DIR is not set (or not an absolute path), so there is no default for the \
                  control socket: give --socket PATH (or set XDG_RUNTIME_DIR, e.g. a login session's /run/user/UID)"
            .to_string()),
    }
}

/// `$XDG_DATA_HOME/vswitch`, else `~/.local/share/vswitch`.
fn rootless_data_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(d).join("vswitch"));
    }
    match std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/vswitch")),
        None => Err("rootless: neither XDG_DATA_HOME nor HOME is set: give --state-dir DIR".to_string()),
    }
}

/// The first saved endpoint whose network namespace is still the one it was attached in.
fn first_live_netns(snap: &vswitch::state::Snapshot) -> Option<PathBuf> {
    snap.networks.iter().flat_map(|n| &n.endpoints).find_map(|e| {
        let path = PathBuf::from(&e.endpoint.netns);
        let id = vswitch::sys::netns::netns_id(&NetnsRef::Path(path.clone())).ok();
        (e.netns_id.is_some() && id == e.netns_id).then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::default_workers;

    #[test]
    fn default_workers_are_half_the_cpus_from_one_to_four() {
        let got: Vec<usize> = [1, 2, 3, 4, 6, 8, 9, 64].into_iter().map(default_workers).collect();
        assert_eq!(got, [1, 1, 1, 2, 3, 4, 4, 4]);
    }
}
