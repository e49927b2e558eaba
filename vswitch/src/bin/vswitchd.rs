//! vswitchd: the vswitch daemon. Runs in the foreground; SIGINT or SIGTERM stops it cleanly,
//! removing every TAP it made and its control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;
use vswitch::control::dns::{parse_upstream, DnsCounters};
use vswitch::control::{server, Control, Options};
use vswitch::datapath::Datapath;
use vswitch::fdb::FdbConfig;
use vswitch::switch::SwitchConfig;
use vswitch::sys::NetnsWorker;

/// Userspace virtual switch for containers.
#[derive(Debug, Parser)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Control socket (HTTP/1.1 + JSON). Default: /run/vswitch/vswitchd.sock as root,
    /// $XDG_RUNTIME_DIR/vswitch/vswitchd.sock otherwise.
    #[arg(long, env = "VSWITCH_SOCKET")]
    socket: Option<PathBuf>,
    /// State directory. Default: /var/lib/vswitch as root, $XDG_DATA_HOME/vswitch otherwise.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log level or a tracing filter (error, warn, info, debug, trace, or e.g. "vswitch=debug").
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Largest number of MAC table entries over all networks.
    #[arg(long, default_value_t = 8192)]
    fdb_max_entries: usize,
    /// Largest number of learned MACs per port.
    #[arg(long, default_value_t = 1024)]
    fdb_per_port_max: usize,
    /// Seconds after which an unrefreshed learned MAC is forgotten.
    #[arg(long, default_value_t = 300)]
    fdb_aging_secs: u64,
    /// Open TAPs without IFF_VNET_HDR and offloads (one MTU-sized frame per syscall).
    #[arg(long)]
    no_offloads: bool,
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!("vswitchd: bad --log-level {:?}: {e}; using info", args.log_level);
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let root = is_root();
    let socket = args.socket.clone().unwrap_or_else(|| default_dir(root, "XDG_RUNTIME_DIR", "/run").join("vswitchd.sock"));
    let state_dir = args.state_dir.clone().unwrap_or_else(|| default_dir(root, "XDG_DATA_HOME", "/var/lib"));
    std::fs::create_dir_all(&state_dir).map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;
    // Read before anything starts: a bad state file stops the daemon and is never overwritten.
    let snapshot = vswitch::state::load(&state_dir).map_err(|e| e.to_string())?;

    let cfg = SwitchConfig {
        fdb: FdbConfig {
            max_entries: args.fdb_max_entries.max(1),
            per_port_max: args.fdb_per_port_max.max(1),
            aging: Duration::from_secs(args.fdb_aging_secs.max(1)),
        },
    };
    match vswitch::sys::raise_open_files_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit; about 1 000 containers may be the most"),
    }
    let upstreams = default_upstreams(&args.dns_upstreams)?;
    let dns_counters = Arc::new(DnsCounters::default());
    let dp = Arc::new(Datapath::spawn(cfg, dns_counters.clone()).map_err(|e| format!("cannot start the datapath: {e}"))?);
    let netns = Arc::new(NetnsWorker::spawn().map_err(|e| format!("cannot start the netns thread: {e}"))?);
    let pools = address_pools(&args.address_pools)?;
    let opts = Options {
        offloads: !args.no_offloads,
        state_dir: state_dir.clone(),
        live_restore: args.live_restore,
        pools,
        underlay_mtu: args.underlay_mtu,
        tunnel_listen: args.listen,
    };
    if let Some(listen) = args.listen {
        let key = vswitch::control::load_or_make_key(&state_dir)?;
        let sock = std::net::UdpSocket::bind(listen).map_err(|e| format!("cannot listen on {listen} for the tunnel: {e}"))?;
        let seed = vswitch::control::random_bytes::<32>();
        let enabled = dp.call_blocking(move |e| e.enable_tunnel(key, sock, seed)).map_err(|e| e.to_string())?;
        enabled.map_err(|e| format!("cannot start the tunnel: {e}"))?;
        tracing::info!(%listen, public_key = %vswitch::control::b64(&tunnel::public_key(&key)), "tunnel up");
    }
    let dns_timeout = Duration::from_millis(args.dns_timeout_ms.max(1));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        tracing::info!(upstreams = ?upstreams, "DNS forwarding");
        let control = Arc::new(Control::new(dp, netns, opts, dns_counters, upstreams, dns_timeout));
        control.start_background();
        if let Some(snap) = snapshot {
            let (networks, endpoints) = (snap.networks.len(), snap.networks.iter().map(|n| n.endpoints.len()).sum::<usize>());
            let dropped = control.restore(snap).await.map_err(|e| format!("cannot restore the saved state: {e}"))?;
            for line in &dropped {
                tracing::warn!("{line}");
            }
            tracing::info!(networks, endpoints, dropped = dropped.len(), "state restored");
        }
        let listener = server::bind(&socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tracing::info!(socket = %socket.display(), state_dir = %state_dir.display(), offloads = !args.no_offloads, "vswitchd ready");
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        server::serve(listener, socket, control.clone(), stop).await;
        control.shutdown().await;
        tracing::info!("stopped; every TAP removed");
        Ok(())
    })
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

fn default_dir(root: bool, xdg: &str, system: &str) -> PathBuf {
    match std::env::var_os(xdg) {
        Some(d) if !root => PathBuf::from(d).join("vswitch"),
        _ => PathBuf::from(system).join("vswitch"),
    }
}
