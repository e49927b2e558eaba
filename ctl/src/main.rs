//! `vswitchctl`: the admin CLI of vswitch. Talks HTTP/1.1 + JSON to vswitchd over its Unix
//! socket (routes and types: `vswitch::api`).
//!
//! Exit status: 0 ok, 1 the daemon answered with an error (or with something unexpected),
//! 2 usage error, 3 the daemon cannot be reached, 4 permission denied on the socket.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use vswitch::api::{
    AttachRequest, ClusterHost, ClusterStatus, Distribution, DnsRecord, DnsStats, DnsUpstreams, DnsUpstreamsSet, EgressStats, Endpoint,
    EndpointUpdate, FdbAdd, FdbEntry, FdbFlush, FdbStats, Flushed, GcReport, ImpairRequest, Impairment, InterfacePort, LiveFrame, Loss,
    Network, NetworkCreate, NetworkDetail, Peer, PeerAdd, PortAdd, PortInfo, Proto, Pruned, Publication, PublishRule, Trace, TraceRequest,
    TunnelKey, Version, WorkerInfo, PREFIX,
};

use ctl::cli::{
    AttachArgs, CaptureArgs, Cli, ClusterCmd, CniCmd, Command, CreateArgs, DnsCmd, EndpointCmd, FdbCmd, IpamCmd, KeyCmd, NetworkCmd,
    PeerCmd, PortCmd, TraceArgs,
};
use ctl::client::{decode, enc, Call, Reply, SocketSource, SYSTEM_SOCKET};
use ctl::error::Failure;
use ctl::{cli, client, error, output};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and --version exit 0, usage errors 2.
        Err(e) => e.exit(),
    };
    let (socket, source) = client::resolve_socket(cli.socket);
    match run(&cli.command, cli.json, &socket) {
        Ok(out) => {
            write_stdout(&out);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if let (true, Failure::Api { json, .. }) = (cli.json, &failure) {
                write_stdout(&format!("{json}\n"));
            }
            let failure = with_hint(failure, source);
            // Nothing sensible is left to do if stderr is gone.
            let _ = writeln!(io::stderr().lock(), "vswitchctl: {failure}");
            failure.exit_code()
        }
    }
}

/// Writes everything or gives up quietly: `vswitchctl port ls | head -1` is not an error.
fn write_stdout(s: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

/// Runs one command; the text to print on success.
fn run(command: &Command, json: bool, socket: &Path) -> Result<String, Failure> {
    if let (Command::Version, false) = (command, json) {
        // The client's version is worth printing even when the daemon is down.
        write_stdout(&output::version_client(env!("CARGO_PKG_VERSION")));
    }
    match command {
        Command::Up { file } => return ctl::topology::up(socket, file),
        Command::Down { file } => return ctl::topology::down(socket, file),
        _ => {}
    }
    if let Command::Capture(args) = command {
        return capture(args, socket);
    }
    if let Command::Trace(TraceArgs { live: Some(port), count, .. }) = command {
        return live_trace(port, *count, json, socket);
    }
    let call = plan(command)?;
    let reply = client::call(socket, &call)?;
    if !reply.status.is_success() {
        return Err(Failure::from_error_reply(reply.status, &reply.body));
    }
    if let Command::Cni(CniCmd::Conflist { network }) = command {
        // The same text with or without --json: it is JSON.
        let socket = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
        let list = ctl::cni::conflist(network, &socket);
        return serde_json::to_string_pretty(&list).map(|s| s + "\n").map_err(|e| Failure::Local(e.to_string()));
    }
    if json {
        // The same order as the table, and the client's version next to the daemon's.
        let adjusted = match command {
            Command::Port(PortCmd::Ls) => output::ports_json_by_id(&reply.body),
            Command::Version => output::version_json_with_client(&reply.body, env!("CARGO_PKG_VERSION")),
            _ => None,
        };
        return match adjusted {
            Some(body) => json_out(&Reply { status: reply.status, body: body.into() }),
            None => json_out(&reply),
        };
    }
    human_out(command, &reply)
}

/// The request a command makes.
fn plan(command: &Command) -> Result<Call, Failure> {
    Ok(match command {
        Command::Version => Call::get(format!("{PREFIX}/version")),
        Command::Network(NetworkCmd::Create(args)) => Call::post(format!("{PREFIX}/networks"), &network_create(args)),
        Command::Network(NetworkCmd::Ls) => Call::get(format!("{PREFIX}/networks")),
        Command::Network(NetworkCmd::Prune) => Call::post(format!("{PREFIX}/networks/prune"), &serde_json::json!({})),
        Command::Ipam(IpamCmd::Gc) => Call::post(format!("{PREFIX}/ipam/gc"), &serde_json::json!({})),
        Command::Key(KeyCmd::Show) => Call::get(format!("{PREFIX}/tunnel/key")),
        Command::Key(KeyCmd::Generate) => Call::post(format!("{PREFIX}/tunnel/key"), &serde_json::json!({})),
        Command::Peer(PeerCmd::Ls) => Call::get(format!("{PREFIX}/tunnel/peers")),
        Command::Cluster(ClusterCmd::Status) => Call::get(format!("{PREFIX}/cluster")),
        Command::Cluster(ClusterCmd::Hosts) => Call::get(format!("{PREFIX}/cluster/hosts")),
        Command::Peer(PeerCmd::Add { public_key, endpoint, networks }) => Call::post(
            format!("{PREFIX}/tunnel/peers"),
            &PeerAdd { public_key: public_key.clone(), endpoint: endpoint.map(|e| e.to_string()), networks: networks.clone() },
        ),
        Command::Peer(PeerCmd::Rm { public_key }) => {
            Call::delete(format!("{PREFIX}/tunnel/peers/{}", enc(&public_key.replace('+', "-").replace('/', "_"))))
        }
        Command::Network(NetworkCmd::Inspect { name }) => Call::get(format!("{PREFIX}/networks/{}", enc(name))),
        Command::Network(NetworkCmd::Rm { name, force }) => {
            let query = if *force { "?force=true" } else { "" };
            Call::delete(format!("{PREFIX}/networks/{}{query}", enc(name)))
        }
        Command::Attach(args) => Call::post(format!("{PREFIX}/networks/{}/endpoints", enc(&args.network)), &attach_request(args)?),
        Command::Detach { network, name } => Call::delete(endpoint_path(network, name)),
        Command::Fdb(FdbCmd::Show { network }) => match network {
            Some(n) => Call::get(format!("{PREFIX}/fdb?network={}", enc(n))),
            None => Call::get(format!("{PREFIX}/fdb")),
        },
        Command::Fdb(FdbCmd::Flush { network, port }) => {
            Call::post(format!("{PREFIX}/fdb/flush"), &FdbFlush { network: network.clone(), port: port.clone() })
        }
        Command::Fdb(FdbCmd::Add { network, mac, port }) => {
            Call::post(format!("{PREFIX}/fdb"), &FdbAdd { network: network.clone(), mac: *mac, port: port.clone() })
        }
        Command::Fdb(FdbCmd::Del { network, mac }) => Call::delete(format!("{PREFIX}/fdb/{}/{}", enc(network), enc(&mac.to_string()))),
        Command::Fdb(FdbCmd::Stats) => Call::get(format!("{PREFIX}/fdb/stats")),
        Command::Port(PortCmd::Ls) => Call::get(format!("{PREFIX}/ports")),
        Command::Port(PortCmd::Impair(args)) => Call::post(format!("{PREFIX}/ports/impair"), &impair_request(args)?),
        Command::Port(PortCmd::Add { network, interface, vlan, trunk }) => Call::post(
            format!("{PREFIX}/ports"),
            &PortAdd { network: network.clone(), interface: interface.clone(), vlan: *vlan, trunk: trunk.clone() },
        ),
        Command::Port(PortCmd::Rm { interface }) => Call::delete(format!("{PREFIX}/ports/{}", enc(interface))),
        Command::Endpoint(EndpointCmd::Rename { network, name, new_name }) => {
            Call::patch(endpoint_path(network, name), &EndpointUpdate { name: Some(new_name.clone()), ..Default::default() })
        }
        Command::Endpoint(EndpointCmd::Alias { network, name, aliases }) => {
            Call::patch(endpoint_path(network, name), &EndpointUpdate { aliases: Some(aliases.clone()), ..Default::default() })
        }
        Command::Endpoint(EndpointCmd::Srv { network, name, services }) => {
            Call::patch(endpoint_path(network, name), &EndpointUpdate { srv: Some(services.clone()), ..Default::default() })
        }
        Command::Dns(DnsCmd::Records { network }) => match network {
            Some(n) => Call::get(format!("{PREFIX}/dns/records?network={}", enc(n))),
            None => Call::get(format!("{PREFIX}/dns/records")),
        },
        Command::Dns(DnsCmd::Upstreams { network, addrs, default }) => {
            let path = format!("{PREFIX}/networks/{}/dns", enc(network));
            // An empty list puts the daemon's defaults back.
            if *default || !addrs.is_empty() {
                Call::put(path, &DnsUpstreamsSet { upstreams: addrs.clone() })
            } else {
                Call::get(path)
            }
        }
        Command::Dns(DnsCmd::Stats) => Call::get(format!("{PREFIX}/dns/stats")),
        Command::Cni(CniCmd::Conflist { network }) => Call::get(format!("{PREFIX}/networks/{}", enc(network))),
        Command::Publish { network, name, host, container } => {
            let (host_addr, host_port, host_port_end) = cli::parse_host_ports(host).map_err(Failure::Usage)?;
            let (container_port, udp) = cli::parse_proto_port(container).map_err(Failure::Usage)?;
            let rule =
                PublishRule { proto: if udp { Proto::Udp } else { Proto::Tcp }, host_addr, host_port, host_port_end, container_port };
            Call::post(format!("{}/publish", endpoint_path(network, name)), &rule)
        }
        Command::Unpublish { host } => {
            let (spec, udp) = match host.rsplit_once('/') {
                Some((h, "udp")) => (h, true),
                Some((h, "tcp")) => (h, false),
                Some(_) => return Err(Failure::Usage(format!("{host:?}: expected [ADDR:]PORT[/tcp|/udp]"))),
                None => (host.as_str(), false),
            };
            let (addr, port, _) = cli::parse_host_ports(spec).map_err(Failure::Usage)?;
            Call::delete(format!("{PREFIX}/publish/{}/{addr}/{port}", if udp { "udp" } else { "tcp" }))
        }
        Command::Published => Call::get(format!("{PREFIX}/publish")),
        Command::Egress => Call::get(format!("{PREFIX}/egress")),
        Command::Workers => Call::get(format!("{PREFIX}/workers")),
        Command::Capture(_) => return Err(Failure::Local("capture streams: see capture()".into())),
        Command::Up { .. } | Command::Down { .. } => return Err(Failure::Local("up and down: see topology.rs".into())),
        Command::Trace(t) => Call::post(
            format!("{PREFIX}/trace"),
            &TraceRequest {
                network: t.network.clone().unwrap_or_default(),
                in_port: t.in_port.clone().unwrap_or_default(),
                src_mac: t.src_mac,
                dst_mac: t.dst_mac,
                src_ip: t.src_ip,
                dst_ip: t.dst_ip,
                proto: t.proto.clone(),
                src_port: t.src_port,
                dst_port: t.dst_port,
                dns_name: t.dns_name.clone(),
            },
        ),
    })
}

/// `port impair`: what the flags ask for; nothing but the target is a usage error.
fn impair_request(a: &cli::ImpairArgs) -> Result<ImpairRequest, Failure> {
    let impairment = if a.clear {
        None
    } else {
        let loss = match (a.loss, a.loss_burst) {
            (Some(p), Some(b)) => Some(Loss::bursty(p, b)),
            (Some(p), None) => Some(Loss::Random { percent: p }),
            _ => None,
        };
        let imp = Impairment {
            delay_us: a.delay.map_or(0, |d| d.as_micros() as u64),
            jitter_us: a.jitter.map_or(0, |d| d.as_micros() as u64),
            distribution: if a.distribution.as_deref() == Some("normal") { Distribution::Normal } else { Distribution::Uniform },
            loss,
            rate_bps: a.rate,
            queue: a.queue,
            reorder_percent: a.reorder.unwrap_or(0.0),
            duplicate_percent: a.duplicate.unwrap_or(0.0),
            seed: a.seed,
        };
        if imp == (Impairment { seed: a.seed, ..Impairment::default() }) {
            return Err(Failure::Usage(
                "say what to impair (--delay, --jitter, --loss, --rate, --reorder, --duplicate) or --clear".to_string(),
            ));
        }
        Some(imp)
    };
    Ok(ImpairRequest { target: a.target.clone(), ingress: a.ingress, egress: a.egress, impairment })
}

fn endpoint_path(network: &str, name: &str) -> String {
    format!("{PREFIX}/networks/{}/endpoints/{}", enc(network), enc(name))
}

fn network_create(args: &CreateArgs) -> NetworkCreate {
    NetworkCreate {
        name: args.name.clone(),
        subnet: args.subnet.clone(),
        gateway: args.gateway.map(|g| g.to_string()),
        subnet6: args.subnet6.clone(),
        gateway6: args.gateway6.map(|g| g.to_string()),
        ipv6: args.ipv6,
        overlay: args.overlay,
        host_loopback: args.host_loopback.clone(),
        ip_range: args.ip_range.clone(),
        aux_addresses: args.aux_addresses.iter().map(ToString::to_string).collect(),
        mtu: args.mtu,
        internal: args.internal,
        labels: args.labels.iter().cloned().collect(),
        vlan: args.vlan,
        uplink: args.uplink.clone(),
    }
}

fn attach_request(args: &AttachArgs) -> Result<AttachRequest, Failure> {
    let netns = match &args.netns {
        Some(p) => Some(netns_path(p)?),
        None => None,
    };
    Ok(AttachRequest {
        name: args.name.clone(),
        netns,
        pid: args.pid,
        ifname: args.ifname.clone(),
        ip: args.ip.map(|ip| ip.to_string()),
        ip6: args.ip6.map(|ip| ip.to_string()),
        mac: args.mac,
        aliases: args.aliases.clone(),
        srv: args.srv.clone(),
        owner: None,
    })
}

/// Where `ip netns add NAME` puts the namespace NAME.
const NAMED_NETNS_DIR: &str = "/run/netns";

/// `--netns`: a bare name (no `/`) is a namespace of `ip netns add`, `/run/netns/NAME`; anything
/// else is a path, and since the daemon resolves paths in its own working directory, a relative
/// one (`./c1`, `dir/c1`) is made absolute here. The API itself takes paths.
fn netns_path(arg: &str) -> Result<String, Failure> {
    let path = Path::new(arg);
    if path.is_absolute() {
        return Ok(arg.to_string());
    }
    if arg.is_empty() {
        return Err(Failure::Usage("--netns needs a namespace name or a path".to_string()));
    }
    let chosen: PathBuf = if !arg.contains('/') && arg != "." && arg != ".." {
        Path::new(NAMED_NETNS_DIR).join(arg)
    } else {
        std::path::absolute(path).map_err(|e| Failure::Usage(format!("cannot make --netns {arg} absolute: {}", client::io_reason(&e))))?
    };
    chosen.into_os_string().into_string().map_err(|p| Failure::Usage(format!("--netns {p:?} is not UTF-8")))
}

/// `--json`: the daemon's answer as it is, pretty; nothing for an empty (204) answer.
fn json_out(reply: &Reply) -> Result<String, Failure> {
    if reply.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    output::pretty_json(&reply.body)
        .map(|s| s + "\n")
        .ok_or_else(|| Failure::BadAnswer { status: reply.status, detail: error::snippet(&reply.body) })
}

/// `capture`: streams the daemon's pcapng to a file or stdout; a summary on stderr at the end.
fn capture(args: &CaptureArgs, socket: &Path) -> Result<String, Failure> {
    let mut path = format!("{PREFIX}/capture?target={}", enc(&args.target));
    if let Some(c) = args.count {
        path.push_str(&format!("&count={c}"));
    }
    if let Some(s) = args.snaplen {
        path.push_str(&format!("&snaplen={s}"));
    }
    if let Some(f) = &args.filter {
        path.push_str(&format!("&filter={}", enc(f)));
    }
    let to_stdout = args.write.as_os_str() == "-";
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout().lock())
    } else {
        let f = std::fs::File::create(&args.write)
            .map_err(|e| Failure::Local(format!("cannot create {}: {}", args.write.display(), client::io_reason(&e))))?;
        Box::new(f)
    };
    let mut summary = client::PcapngSummary::default();
    client::stream(socket, &Call::get(path), &mut |chunk: &[u8]| {
        summary.feed(chunk);
        out.write_all(chunk).and_then(|()| out.flush())
    })?;
    let where_to = if to_stdout { "stdout".to_string() } else { args.write.display().to_string() };
    let mut line = format!("{} frames captured to {where_to}", summary.packets);
    if let Some(dropped) = summary.dropped {
        line.push_str(&format!(", {dropped} dropped by the switch (the capture could not keep up)"));
    }
    let _ = writeln!(io::stderr().lock(), "{line}");
    Ok(String::new())
}

/// `trace --live PORT`: one line per frame that comes in, with the switch's verdict.
fn live_trace(port: &str, count: Option<u64>, json: bool, socket: &Path) -> Result<String, Failure> {
    let mut path = format!("{PREFIX}/trace/live?target={}", enc(port));
    if let Some(c) = count {
        path.push_str(&format!("&count={c}"));
    }
    let mut pending = Vec::new();
    let mut out = io::stdout().lock();
    client::stream(socket, &Call::get(path), &mut |chunk: &[u8]| {
        pending.extend_from_slice(chunk);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if json {
                out.write_all(&line)?;
            } else if let Ok(f) = serde_json::from_slice::<LiveFrame>(&line) {
                writeln!(out, "{}", output::live_frame(&f))?;
            }
        }
        out.flush()
    })?;
    Ok(String::new())
}

fn human_out(command: &Command, reply: &Reply) -> Result<String, Failure> {
    Ok(match command {
        Command::Version => output::version_daemon(&decode::<Version>(reply)?),
        Command::Network(NetworkCmd::Create(_)) => output::network_created(&decode::<Network>(reply)?),
        Command::Network(NetworkCmd::Ls) => output::network_list(&decode::<Vec<Network>>(reply)?),
        Command::Network(NetworkCmd::Prune) => output::lines("removed network", &decode::<Pruned>(reply)?.removed),
        Command::Ipam(IpamCmd::Gc) => output::lines("released", &decode::<GcReport>(reply)?.released),
        Command::Key(_) => output::tunnel_key(&decode::<TunnelKey>(reply)?),
        Command::Peer(PeerCmd::Ls) => output::peers(&decode::<Vec<Peer>>(reply)?),
        Command::Cluster(ClusterCmd::Status) => output::cluster_status(&decode::<ClusterStatus>(reply)?),
        Command::Cluster(ClusterCmd::Hosts) => output::cluster_hosts(&decode::<Vec<ClusterHost>>(reply)?),
        Command::Peer(PeerCmd::Add { .. }) => {
            let p = decode::<Peer>(reply)?;
            format!("added peer {} for {}\n", p.public_key, p.networks.join(", "))
        }
        Command::Peer(PeerCmd::Rm { public_key }) => format!("removed peer {public_key}\n"),
        Command::Network(NetworkCmd::Inspect { .. }) => output::network_detail(&decode::<NetworkDetail>(reply)?),
        Command::Network(NetworkCmd::Rm { name, .. }) => output::network_removed(name),
        Command::Attach(_) => output::attached(&decode::<Endpoint>(reply)?),
        Command::Detach { network, name } => output::detached(network, name),
        Command::Fdb(FdbCmd::Show { .. }) => output::fdb_entries(&decode::<Vec<FdbEntry>>(reply)?),
        Command::Fdb(FdbCmd::Flush { network, port }) => output::flushed(&decode::<Flushed>(reply)?, network.as_deref(), port.as_deref()),
        Command::Fdb(FdbCmd::Add { .. }) => output::fdb_added(&decode::<FdbEntry>(reply)?),
        Command::Fdb(FdbCmd::Del { network, mac }) => output::fdb_deleted(network, mac),
        Command::Fdb(FdbCmd::Stats) => output::fdb_stats(&decode::<FdbStats>(reply)?),
        Command::Port(PortCmd::Ls) => output::ports(&decode::<Vec<PortInfo>>(reply)?),
        Command::Port(PortCmd::Impair(_)) => output::port_impairments(&decode::<PortInfo>(reply)?),
        Command::Port(PortCmd::Add { .. }) => output::interface_port(&decode::<InterfacePort>(reply)?),
        Command::Port(PortCmd::Rm { interface }) => format!("removed interface port {interface}\n"),
        Command::Endpoint(EndpointCmd::Rename { name, .. }) => output::endpoint_renamed(name, &decode::<Endpoint>(reply)?),
        Command::Endpoint(EndpointCmd::Alias { .. }) => output::aliases_set(&decode::<Endpoint>(reply)?),
        Command::Endpoint(EndpointCmd::Srv { .. }) => output::srv_set(&decode::<Endpoint>(reply)?),
        Command::Dns(DnsCmd::Records { .. }) => output::dns_records(&decode::<Vec<DnsRecord>>(reply)?),
        Command::Dns(DnsCmd::Upstreams { .. }) => output::dns_upstreams(&decode::<DnsUpstreams>(reply)?),
        Command::Dns(DnsCmd::Stats) => output::dns_stats(&decode::<DnsStats>(reply)?),
        Command::Cni(_) => String::new(),
        Command::Publish { .. } => output::published(&[decode::<Publication>(reply)?]),
        Command::Unpublish { host } => format!("unpublished {host}\n"),
        Command::Published => output::published(&decode::<Vec<Publication>>(reply)?),
        Command::Egress => output::egress(&decode::<EgressStats>(reply)?),
        Command::Workers => output::workers(&decode::<Vec<WorkerInfo>>(reply)?),
        Command::Capture(_) | Command::Up { .. } | Command::Down { .. } => String::new(),
        Command::Trace(_) => output::trace(&decode::<Trace>(reply)?),
    })
}

/// A non-root user whose own socket is missing may want the system daemon.
fn with_hint(failure: Failure, source: SocketSource) -> Failure {
    match failure {
        Failure::Unreachable { socket, reason, hint: None }
            if source == SocketSource::Default && socket != Path::new(SYSTEM_SOCKET) && Path::new(SYSTEM_SOCKET).exists() =>
        {
            let hint = Some(format!("; a system vswitchd listens at {SYSTEM_SOCKET}: use --socket {SYSTEM_SOCKET}"));
            Failure::Unreachable { socket, reason, hint }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    fn plan_of(args: &[&str]) -> Call {
        let cli = Cli::try_parse_from(std::iter::once("vswitchctl").chain(args.iter().copied())).unwrap();
        plan(&cli.command).unwrap()
    }

    fn body(c: &Call) -> serde_json::Value {
        serde_json::from_slice(c.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn routes() {
        let cases: &[(&[&str], Method, &str)] = &[
            (&["version"], Method::GET, "/v1/version"),
            (&["network", "ls"], Method::GET, "/v1/networks"),
            (&["network", "inspect", "net1"], Method::GET, "/v1/networks/net1"),
            (&["network", "rm", "net1"], Method::DELETE, "/v1/networks/net1"),
            (&["network", "rm", "net1", "--force"], Method::DELETE, "/v1/networks/net1?force=true"),
            (&["detach", "net1", "c1"], Method::DELETE, "/v1/networks/net1/endpoints/c1"),
            (&["fdb", "show"], Method::GET, "/v1/fdb"),
            (&["fdb", "show", "net1"], Method::GET, "/v1/fdb?network=net1"),
            (&["fdb", "del", "net1", "02:42:AC:11:00:02"], Method::DELETE, "/v1/fdb/net1/02:42:ac:11:00:02"),
            (&["fdb", "stats"], Method::GET, "/v1/fdb/stats"),
            (&["published"], Method::GET, "/v1/publish"),
            (&["egress"], Method::GET, "/v1/egress"),
            (&["workers"], Method::GET, "/v1/workers"),
            (&["unpublish", "8080"], Method::DELETE, "/v1/publish/tcp/0.0.0.0/8080"),
            (&["unpublish", "127.0.0.1:53/udp"], Method::DELETE, "/v1/publish/udp/127.0.0.1/53"),
            (&["publish", "net1", "c1", "8000-8002", "80"], Method::POST, "/v1/networks/net1/endpoints/c1/publish"),
            (&["fdb", "flush"], Method::POST, "/v1/fdb/flush"),
            (&["fdb", "add", "net1", "02:42:ac:11:00:02", "c1"], Method::POST, "/v1/fdb"),
            (&["port", "ls"], Method::GET, "/v1/ports"),
            (&["port", "add", "n", "--interface", "veth1", "--trunk", "100,200"], Method::POST, "/v1/ports"),
            (&["port", "rm", "veth1"], Method::DELETE, "/v1/ports/veth1"),
            (&["network", "create", "n", "--subnet", "10.0.0.0/8"], Method::POST, "/v1/networks"),
            (&["attach", "net1", "--pid", "7"], Method::POST, "/v1/networks/net1/endpoints"),
            (&["endpoint", "rename", "net1", "c1", "c2"], Method::PATCH, "/v1/networks/net1/endpoints/c1"),
            (&["endpoint", "alias", "net1", "c1"], Method::PATCH, "/v1/networks/net1/endpoints/c1"),
            (&["endpoint", "alias", "net1", "c1", "web"], Method::PATCH, "/v1/networks/net1/endpoints/c1"),
            (&["dns", "records"], Method::GET, "/v1/dns/records"),
            (&["dns", "records", "net1"], Method::GET, "/v1/dns/records?network=net1"),
            (&["dns", "ls"], Method::GET, "/v1/dns/records"),
            (&["dns", "stats"], Method::GET, "/v1/dns/stats"),
            (&["dns", "upstreams", "net1"], Method::GET, "/v1/networks/net1/dns"),
            (&["dns", "upstreams", "net1", "192.0.2.53"], Method::PUT, "/v1/networks/net1/dns"),
            (&["dns", "upstreams", "net1", "--default"], Method::PUT, "/v1/networks/net1/dns"),
        ];
        for (args, method, path) in cases {
            let c = plan_of(args);
            assert_eq!((&c.method, c.path.as_str()), (method, *path), "{args:?}");
            let with_body = [Method::POST, Method::PUT, Method::PATCH].contains(method);
            assert_eq!(c.body.is_some(), with_body, "{args:?}");
        }
        assert_eq!(plan_of(&["network", "inspect", "a b"]).path, "/v1/networks/a%20b");
        assert_eq!(plan_of(&["endpoint", "rename", "n/1", "c 1", "c2"]).path, "/v1/networks/n%2F1/endpoints/c%201");
        assert_eq!(plan_of(&["dns", "upstreams", ".."]).path, "/v1/networks/%2E%2E/dns");
        assert_eq!(plan_of(&["dns", "records", "a&b"]).path, "/v1/dns/records?network=a%26b");
    }

    #[test]
    fn endpoint_and_dns_bodies() {
        assert_eq!(body(&plan_of(&["endpoint", "rename", "net1", "c1", "c2"])), serde_json::json!({"name":"c2"}));
        assert_eq!(body(&plan_of(&["endpoint", "alias", "net1", "c1", "web", "www"])), serde_json::json!({"aliases":["web","www"]}));
        // No alias given: an empty list, which clears them (no field at all would change nothing).
        assert_eq!(body(&plan_of(&["endpoint", "alias", "net1", "c1"])), serde_json::json!({"aliases":[]}));

        assert_eq!(
            body(&plan_of(&["dns", "upstreams", "net1", "192.0.2.53", "192.0.2.54:5353", "[2001:db8::53]:53"])),
            serde_json::json!({"upstreams":["192.0.2.53","192.0.2.54:5353","[2001:db8::53]:53"]})
        );
        assert_eq!(body(&plan_of(&["dns", "upstreams", "net1", "--default"])), serde_json::json!({"upstreams":[]}));

        // What we send is what the daemon accepts (it rejects unknown fields).
        for args in [&["endpoint", "rename", "n", "a", "b"][..], &["endpoint", "alias", "n", "a", "x"]] {
            let _: EndpointUpdate = serde_json::from_slice(plan_of(args).body.as_deref().unwrap()).unwrap();
        }
        let c = plan_of(&["dns", "upstreams", "n", "::1"]);
        let _: DnsUpstreamsSet = serde_json::from_slice(c.body.as_deref().unwrap()).unwrap();
    }

    #[test]
    fn request_bodies() {
        let c = plan_of(&[
            "network",
            "create",
            "net1",
            "--subnet",
            "10.89.0.0/24",
            "--gateway",
            "10.89.0.1",
            "--mtu",
            "1400",
            "--label",
            "k=v",
        ]);
        assert_eq!(
            body(&c),
            serde_json::json!({"name":"net1","subnet":"10.89.0.0/24","gateway":"10.89.0.1","mtu":1400,
                               "internal":false,"ipv6":false,"overlay":false,"labels":{"k":"v"}})
        );
        let c = plan_of(&["network", "create", "net1", "--subnet", "10.89.0.0/24", "--internal"]);
        assert_eq!(
            body(&c),
            serde_json::json!({"name":"net1","subnet":"10.89.0.0/24","internal":true,"ipv6":false,"overlay":false,"labels":{}})
        );

        let c = plan_of(&["attach", "net1", "--netns", "/run/netns/c1", "--ip", "10.89.0.7", "--alias", "web"]);
        assert_eq!(body(&c), serde_json::json!({"netns":"/run/netns/c1","ip":"10.89.0.7","aliases":["web"]}));
        let c = plan_of(&["attach", "net1", "--pid", "42", "--name", "c1", "--mac", "02:42:AC:11:00:02", "--ifname", "e1"]);
        assert_eq!(body(&c), serde_json::json!({"name":"c1","pid":42,"ifname":"e1","mac":"02:42:ac:11:00:02"}));

        assert_eq!(body(&plan_of(&["fdb", "flush"])), serde_json::json!({}));
        assert_eq!(body(&plan_of(&["fdb", "flush", "net1", "--port", "c1"])), serde_json::json!({"network":"net1","port":"c1"}));
        assert_eq!(
            body(&plan_of(&["fdb", "add", "net1", "02:42:ac:11:00:02", "c1"])),
            serde_json::json!({"network":"net1","mac":"02:42:ac:11:00:02","port":"c1"})
        );
        // What we send is what the daemon accepts (it rejects unknown fields).
        let c = plan_of(&["attach", "net1", "--pid", "42"]);
        let _: AttachRequest = serde_json::from_slice(c.body.as_deref().unwrap()).unwrap();
    }

    #[test]
    fn relative_netns_paths_become_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(netns_path("/proc/1/ns/net").unwrap(), "/proc/1/ns/net");
        assert_eq!(netns_path("dir/ns").unwrap(), cwd.join("dir/ns").to_str().unwrap());
        assert_eq!(netns_path("./ns").unwrap(), cwd.join("ns").to_str().unwrap());
        // A bare name is a namespace of `ip netns add`, whether or not a file of that name is here.
        assert_eq!(netns_path("c1").unwrap(), "/run/netns/c1");
        assert_eq!(netns_path("Cargo.toml").unwrap(), "/run/netns/Cargo.toml");
        assert!(matches!(netns_path(""), Err(Failure::Usage(_))));
    }

    #[test]
    fn json_mode_prints_the_answer_or_nothing() {
        let reply = |status: u16, body: &'static [u8]| Reply {
            status: hyper::StatusCode::from_u16(status).unwrap(),
            body: bytes::Bytes::from_static(body),
        };
        assert_eq!(json_out(&reply(204, b"")).unwrap(), "");
        assert_eq!(json_out(&reply(200, br#"{"b":1,"a":2}"#)).unwrap(), "{\n  \"b\": 1,\n  \"a\": 2\n}\n");
        assert!(matches!(json_out(&reply(200, b"nope")), Err(Failure::BadAnswer { .. })));
        // A 2xx answer that does not decode is reported, not a panic.
        let err = human_out(&Command::Port(PortCmd::Ls), &reply(200, br#"{"a":1}"#)).unwrap_err();
        assert!(err.to_string().starts_with("unexpected answer from vswitchd (200 OK): invalid type"), "{err}");
    }
}
