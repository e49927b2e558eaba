//! The command line (clap derive) and the client-side checks that are cheap to do before
//! talking to the daemon. Every error found here is a usage error: clap prints it and exits 2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
use clap::{ArgGroup, Args, Parser, Subcommand};
use vswitch::Mac;

#[derive(Debug, Parser)]
#[command(
    name = "vswitchctl",
    version,
    about = "Administer vswitchd, the vswitch userspace virtual switch",
    after_help = "Exit status: 0 ok, 1 vswitchd answered with an error, 2 usage error, \
                  3 vswitchd not reachable, 4 permission denied on the control socket."
)]
pub struct Cli {
    /// vswitchd's control socket [env: VSWITCH_SOCKET] [default: /run/vswitch/vswitchd.sock
    /// as root, else $XDG_RUNTIME_DIR/vswitch/vswitchd.sock]
    #[arg(long, global = true, value_name = "PATH", display_order = 900)]
    pub socket: Option<PathBuf>,

    /// Print vswitchd's JSON answers instead of tables
    #[arg(long, global = true, display_order = 901)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the versions of vswitchctl and vswitchd
    Version,
    /// Build (or bring up to date) the testbed a topology file describes: networks, container
    /// namespaces with their commands, links and their impairments (root)
    Up {
        /// The topology file (TOML)
        file: PathBuf,
    },
    /// Remove everything `up` made for a topology file, also after a crash
    Down {
        /// The topology file (TOML)
        file: PathBuf,
    },
    /// Create, list, inspect and remove networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach a container's network namespace to a network
    Attach(AttachArgs),
    /// Detach an endpoint (container) from a network
    Detach {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// Endpoint name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Show and edit the MAC tables (forwarding databases)
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// Show switch ports and their counters
    #[command(subcommand)]
    Port(PortCmd),
    /// Rename an endpoint or replace its DNS aliases
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Show the gateways' DNS records and counters, and set where they forward
    #[command(subcommand)]
    Dns(DnsCmd),
    /// Address management
    #[command(subcommand)]
    Ipam(IpamCmd),
    /// Container runtimes: what their CNI configuration for vswitch looks like
    #[command(subcommand)]
    Cni(CniCmd),
    /// This host's tunnel key (the public half)
    #[command(subcommand)]
    Key(KeyCmd),
    /// Tunnel peers: other hosts that share overlay networks
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Cluster mode (vswitchd --cluster): the store, this host's lease, the hosts
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Publish host ports to an endpoint: clients reach the container, which sees their address
    Publish {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// Endpoint name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// Host side: [ADDR:]PORT[-PORT] (ADDR defaults to 0.0.0.0, all addresses)
        #[arg(value_name = "HOST")]
        host: String,
        /// Container side: PORT[/tcp|/udp], the first port of the range
        #[arg(value_name = "CONTAINERPORT")]
        container: String,
    },
    /// Stop publishing the rule that holds a host port
    Unpublish {
        /// [ADDR:]PORT[/tcp|/udp]
        #[arg(value_name = "HOST")]
        host: String,
    },
    /// List published ports
    Published,
    /// Egress NAT counters: flows held, refused and dropped
    Egress,
    /// Datapath threads that read container TAPs: ports each reads, frames it forwarded itself,
    /// frames it handed to the main datapath thread
    Workers,
    /// Capture the frames of an endpoint, a network or a tunnel peer to pcapng, as the switch
    /// sees them (direction and port in the pcapng metadata)
    Capture(CaptureArgs),
    /// Run a frame built from FRAME-SPEC through the switch without sending it, and show each
    /// decision: learning, MAC table lookup, flood set, gateway, DNS, egress policy, drop reason
    Trace(TraceArgs),
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The network the frame is on
    #[arg(value_parser = NonEmptyStringValueParser::new(), required_unless_present = "live")]
    pub network: Option<String>,
    /// The endpoint it comes from (source MAC and address default to its own)
    #[arg(long = "in", value_name = "ENDPOINT", value_parser = NonEmptyStringValueParser::new(), required_unless_present = "live")]
    pub in_port: Option<String>,
    /// Instead: show the verdicts of the next real frames coming in on this endpoint
    /// (NAME or NETWORK/NAME; a network: all its ports)
    #[arg(long, value_name = "PORT", conflicts_with_all = ["network", "in_port", "src_mac", "dst_mac", "src_ip", "dst_ip", "proto", "src_port", "dst_port", "dns_name"])]
    pub live: Option<String>,
    /// With --live: how many frames (default 10)
    #[arg(short = 'c', long, value_name = "COUNT", requires = "live", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<Mac>,
    /// Default: the MAC of the endpoint that has --dst-ip (the gateway's beyond the subnet)
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Option<Mac>,
    #[arg(long, value_name = "IP")]
    pub src_ip: Option<std::net::Ipv4Addr>,
    #[arg(long, value_name = "IP")]
    pub dst_ip: Option<std::net::Ipv4Addr>,
    /// icmp (echo request, the default), tcp (a SYN), udp (the default with --dport) or arp
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<String>,
    #[arg(long = "sport", value_name = "PORT")]
    pub src_port: Option<u16>,
    #[arg(long = "dport", value_name = "PORT")]
    pub dst_port: Option<u16>,
    /// For UDP to port 53: the name asked (default: the --in endpoint's own)
    #[arg(long = "name", value_name = "NAME")]
    pub dns_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// An endpoint (NAME or NETWORK/NAME), a network (all its ports) or a peer (peer:KEYPREFIX)
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub target: String,
    /// Stop after this many frames (default: until interrupted)
    #[arg(short = 'c', long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Bytes kept of each frame (default 262144: all)
    #[arg(short = 's', long, value_name = "SNAPLEN")]
    pub snaplen: Option<usize>,
    /// Only frames that pass this filter, in tcpdump's syntax (pcap-filter(7)), e.g.
    /// "icmp or udp port 53"; run in the switch, so the rest are never copied
    #[arg(short = 'f', long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Where the pcapng goes: a file, or - for stdout (e.g. `| tshark -r -`)
    #[arg(short = 'w', long = "write", value_name = "FILE", required = true)]
    pub write: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Show this host's public key and tunnel address
    Show,
    /// Make a new key pair for this host (only while no peer is set)
    Generate,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The store's endpoints and health, this host's lease, the hosts and their last-seen times
    Status,
    /// The hosts registered in the cluster
    Hosts,
}

#[derive(Debug, Subcommand)]
pub enum PeerCmd {
    /// Add a peer host
    Add {
        /// Its public key (base64, from `vswitchctl key show` on that host)
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        public_key: String,
        /// Its tunnel address, IP:PORT (leave out for a peer that connects to us)
        #[arg(long, value_name = "IP:PORT")]
        endpoint: Option<std::net::SocketAddr>,
        /// An overlay network it shares with us, repeatable
        #[arg(long = "network", value_name = "NAME", required = true)]
        networks: Vec<String>,
    },
    /// Remove a peer host
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        public_key: String,
    },
    /// List peers: endpoint, last handshake, traffic, drops
    #[command(visible_alias = "list")]
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum IpamCmd {
    /// Release address leases whose endpoint is gone
    Gc,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network
    Create(Box<CreateArgs>),
    /// List networks
    #[command(visible_alias = "list")]
    Ls,
    /// Show a network, its address usage and its endpoints
    Inspect {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Remove a network
    #[command(visible_alias = "remove")]
    Rm {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// Remove it even if endpoints are still attached, detaching them
        #[arg(long, short)]
        force: bool,
    },
    /// Remove every network that has no endpoint
    Prune,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Network name
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,
    /// IPv4 subnet in CIDR form, e.g. 10.89.0.0/24 [default: the next free one of the
    /// daemon's address pools]
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub subnet: Option<String>,
    /// Gateway address [default: the first host address of the subnet]
    #[arg(long, value_name = "IP")]
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 subnet for dual-stack endpoints, e.g. fd00:89::/64
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr6)]
    pub subnet6: Option<String>,
    /// IPv6 gateway address [default: ::1 of subnet6]
    #[arg(long, value_name = "IP6", requires = "subnet6")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Dual-stack with an IPv6 /64 from the daemon's ULA prefix (when --subnet6 is not given)
    #[arg(long)]
    pub ipv6: bool,
    /// Hand out addresses only from this part of the subnet (CIDR)
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Option<String>,
    /// An address never handed out, repeatable
    #[arg(long = "aux-address", value_name = "IP")]
    pub aux_addresses: Vec<std::net::IpAddr>,
    /// MTU of the network's interfaces [default: 1500]
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
    /// Forward nothing outside the network
    #[arg(long)]
    pub internal: bool,
    /// The network may span hosts through the encrypted tunnel (MTU sized to fit it)
    #[arg(long)]
    pub overlay: bool,
    /// Host loopback ports containers reach at the gateway's address: PORT, FIRST-LAST or
    /// all, repeatable (needs egress)
    #[arg(long = "host-loopback", value_name = "PORTS")]
    pub host_loopback: Vec<String>,
    /// A label, repeatable
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The network's 802.1Q VLAN id (1-4094): its tag on its uplink and on trunk ports
    #[arg(long, value_name = "ID")]
    pub vlan: Option<u32>,
    /// Put the network on the LAN behind this interface of vswitchd's namespace: --subnet and
    /// --gateway are the LAN's (its router); give vswitch an --ip-range of it
    #[arg(long, value_name = "IFNAME")]
    pub uplink: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["netns", "pid"])))]
pub struct AttachArgs {
    /// Network name
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub network: String,
    /// Network namespace: a NAME of `ip netns add` (no '/': /run/netns/NAME), or a file such
    /// as /proc/PID/ns/net or ./ns (relative paths need a '/')
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// A process whose network namespace to attach
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Endpoint name [default: the netns file name, or pid-PID]
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub name: Option<String>,
    /// Interface name inside the namespace [default: eth0]
    #[arg(long, value_name = "IFNAME")]
    pub ifname: Option<String>,
    /// Address to use [default: the next free one]
    #[arg(long, value_name = "IP")]
    pub ip: Option<Ipv4Addr>,
    /// IPv6 address to use on a dual-stack network [default: the next free one]
    #[arg(long, value_name = "IP6")]
    pub ip6: Option<std::net::Ipv6Addr>,
    /// MAC address to use [default: one derived by vswitchd]
    #[arg(long, value_name = "MAC", value_parser = parse_unicast_mac)]
    pub mac: Option<Mac>,
    /// A DNS alias of the endpoint, repeatable
    #[arg(long = "alias", value_name = "A")]
    pub aliases: Vec<String>,
    /// A service answered as an SRV record, _service._proto:PORT[:PRIORITY[:WEIGHT]], repeatable
    #[arg(long = "srv", value_name = "SRV")]
    pub srv: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum FdbCmd {
    /// Show MAC table entries, of one network or of all
    #[command(visible_alias = "ls")]
    Show {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: Option<String>,
    },
    /// Forget learned entries, of one network (or one endpoint of it), or of all
    Flush {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: Option<String>,
        /// Only the entries learned on this endpoint
        #[arg(long, value_name = "ENDPOINT", requires = "network", value_parser = NonEmptyStringValueParser::new())]
        port: Option<String>,
    },
    /// Add a static entry
    Add {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// MAC address, e.g. 02:42:ac:11:00:02
        #[arg(value_parser = parse_mac)]
        mac: Mac,
        /// Endpoint name on that network
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        port: String,
    },
    /// Delete an entry
    #[command(visible_alias = "rm")]
    Del {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// MAC address
        #[arg(value_parser = parse_mac)]
        mac: Mac,
    },
    /// Show MAC table counters
    Stats,
}

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// List ports with their counters (and impairments)
    #[command(visible_alias = "list")]
    Ls,
    /// Attach an existing interface of vswitchd's namespace (a veth end, a VM's TAP, a NIC)
    #[command(group(ArgGroup::new("tagging").args(["vlan", "trunk"])))]
    Add {
        /// Network name (with --trunk: one of the trunk's networks, or the native network of
        /// untagged frames when its VLAN id is not listed)
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// The interface
        #[arg(long, value_name = "IFNAME")]
        interface: String,
        /// Frames on the interface carry this 802.1Q VLAN id (1-4094)
        #[arg(long, value_name = "ID")]
        vlan: Option<u32>,
        /// A trunk: each VLAN id carries the network created with that --vlan, tagged
        #[arg(long, value_name = "ID[,ID...]", value_delimiter = ',')]
        trunk: Vec<u32>,
    },
    /// Take an interface port off its networks (the interface stays)
    #[command(visible_alias = "remove")]
    Rm {
        /// The interface
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        interface: String,
    },
    /// Impair a container's link inside the switch: delay, jitter, loss, rate, reorder,
    /// duplicate, seeded (a run repeats frame for frame); a change applies live
    Impair(ImpairArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").multiple(true).args([
    "delay", "jitter", "distribution", "loss", "loss_burst", "rate", "queue", "reorder", "duplicate", "seed"
])))]
pub struct ImpairArgs {
    /// The container's endpoint: ENDPOINT or NETWORK/ENDPOINT
    pub target: String,
    /// Frames from the container (with --egress: both ways)
    #[arg(long)]
    pub ingress: bool,
    /// Frames to the container (the default)
    #[arg(long)]
    pub egress: bool,
    /// Remove the impairment (frames held are sent at once)
    #[arg(long, conflicts_with = "what")]
    pub clear: bool,
    /// Delay added to every frame: 20ms, 1.5ms, 500us, 1s
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub delay: Option<std::time::Duration>,
    /// Spread of the delay (uniform: ± this; normal: its standard deviation)
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub jitter: Option<std::time::Duration>,
    /// How the jitter is spread: uniform (default) or normal
    #[arg(long, value_parser = ["uniform", "normal"])]
    pub distribution: Option<String>,
    /// Frames lost, in percent: 1%, 0.5%
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT")]
    pub loss: Option<f64>,
    /// Lose in bursts of this mean length, in frames (Gilbert's model with --loss as the mean)
    #[arg(long, requires = "loss", value_name = "FRAMES", value_parser = parse_burst)]
    pub loss_burst: Option<f64>,
    /// Rate limit: 100mbit, 512kbit, 1gbit, 64000bit
    #[arg(long, value_parser = parse_rate, value_name = "RATE")]
    pub rate: Option<u64>,
    /// Most frames held at once (waiting for the rate or the delay; default 1000)
    #[arg(long, value_name = "FRAMES")]
    pub queue: Option<u32>,
    /// Frames sent ahead of the delayed ones, in percent (needs --delay)
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT")]
    pub reorder: Option<f64>,
    /// Frames sent twice, in percent
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT")]
    pub duplicate: Option<f64>,
    /// Seed of the randomness (the daemon picks one and shows it when left out)
    #[arg(long)]
    pub seed: Option<u64>,
}

/// A duration with its unit: `20ms`, `1.5ms`, `500us`, `2s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?}: expected a number with a unit, as in 20ms"))?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "" => return Err(format!("{s:?}: give a unit (s, ms or us), as in 20ms")),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, ms or us)")),
    };
    let secs = v * scale;
    if !secs.is_finite() || secs > 60.0 {
        return Err(format!("{s:?}: at most 60s"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A percentage: `1%`, `0.5%` (the `%` may be left out).
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| format!("{s:?}: expected a percentage, as in 1%"))?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?}: a percentage is from 0 to 100"));
    }
    Ok(v)
}

fn parse_burst(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!("{s:?}: a mean burst length is a number of frames, 1 or more")),
    }
}

/// A rate in bits per second, tc's way: `100mbit`, `512kbit`, `1gbit`, `64000bit`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?}: expected a rate, as in 100mbit"))?;
    let scale = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(format!("{s:?}: give the rate in bit, kbit, mbit or gbit (per second), as in 100mbit")),
    };
    let bps = v * scale;
    if !bps.is_finite() || !(8000.0..=1e12).contains(&bps) {
        return Err(format!("{s:?}: a rate is from 8kbit to 1000gbit"));
    }
    Ok(bps.round() as u64)
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Rename an endpoint (its DNS name follows at once)
    Rename {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// Endpoint name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// The new name
        #[arg(value_name = "NEWNAME", value_parser = NonEmptyStringValueParser::new())]
        new_name: String,
    },
    /// Replace an endpoint's DNS aliases (none given: remove them all)
    Alias {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// Endpoint name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// The aliases the endpoint is to have
        #[arg(value_name = "ALIAS", value_parser = NonEmptyStringValueParser::new())]
        aliases: Vec<String>,
    },
    /// Replace an endpoint's SRV services (none given: remove them all)
    Srv {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// Endpoint name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// _service._proto:PORT[:PRIORITY[:WEIGHT]], e.g. _http._tcp:80
        #[arg(value_name = "SRV", value_parser = NonEmptyStringValueParser::new())]
        services: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CniCmd {
    /// Print a ready CNI conflist for NETWORK (checked to exist), naming this socket
    Conflist {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// Show the names the gateways answer, of one network or of all
    #[command(visible_alias = "ls")]
    Records {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: Option<String>,
    },
    /// Show a network's DNS upstreams, or set them
    Upstreams {
        /// Network name
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        network: String,
        /// Upstream resolvers to forward unknown names to, tried in order: IP (port 53) or
        /// IP:PORT ([IPv6]:PORT)
        #[arg(value_name = "ADDR", value_parser = parse_upstream)]
        addrs: Vec<String>,
        /// Forget the network's own upstreams: vswitchd's defaults apply again
        #[arg(long, conflicts_with = "addrs")]
        default: bool,
    },
    /// Show DNS counters
    Stats,
}

/// `K=V`, with a non-empty key.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err("the label key is empty: expected K=V".to_string()),
        None => Err("expected K=V".to_string()),
    }
}

/// An IPv6 network in CIDR form; whether it is a sensible subnet is the daemon's call.
fn parse_cidr6(s: &str) -> Result<String, String> {
    let err = || format!("expected an IPv6 subnet like fd00:89::/64, got {s:?}");
    let (addr, len) = s.split_once('/').ok_or_else(err)?;
    addr.parse::<std::net::Ipv6Addr>().map_err(|_| err())?;
    match len.parse::<u8>() {
        Ok(l) if l <= 128 && !len.starts_with('+') => Ok(s.to_string()),
        _ => Err(err()),
    }
}

/// An IPv4 network in CIDR form; whether it is a sensible subnet is the daemon's call.
pub fn parse_cidr(s: &str) -> Result<String, String> {
    let err = || format!("expected an IPv4 subnet like 10.89.0.0/24, got {s:?}");
    let (addr, len) = s.split_once('/').ok_or_else(err)?;
    addr.parse::<Ipv4Addr>().map_err(|_| err())?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    match len.parse::<u8>() {
        Ok(n) if n <= 32 => Ok(s.to_string()),
        _ => Err(format!("the prefix length of {s:?} is not between 0 and 32")),
    }
}

/// A DNS upstream as vswitchd takes it: `IP` or `IP:PORT` (IPv6 with a port in brackets).
/// Sent as given; vswitchd adds port 53 to a bare IP.
pub fn parse_upstream(s: &str) -> Result<String, String> {
    if s.parse::<IpAddr>().is_ok() || s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let what = if s.bytes().any(|b| b.is_ascii_alphabetic()) && !s.contains(':') { "host names are not resolved here; " } else { "" };
    Err(format!("{what}expected IP or IP:PORT, e.g. 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:5353"))
}

pub fn parse_mac(s: &str) -> Result<Mac, String> {
    s.parse::<Mac>().map_err(|e| e.to_string())
}

/// A MAC an interface can have: not multicast or broadcast, not all zeros.
pub fn parse_unicast_mac(s: &str) -> Result<Mac, String> {
    let mac = parse_mac(s)?;
    if mac.is_multicast() {
        return Err(format!("{mac} is a multicast address; an interface needs a unicast one"));
    }
    if mac.is_zero() {
        return Err("00:00:00:00:00:00 is not a usable interface address".to_string());
    }
    Ok(mac)
}

/// `[ADDR:]PORT[-PORT]` → (address, first port, last port if a range).
pub fn parse_host_ports(s: &str) -> Result<(std::net::Ipv4Addr, u16, Option<u16>), String> {
    let bad = || format!("{s:?}: expected [ADDR:]PORT[-PORT], e.g. 8080, 127.0.0.1:8080 or 0.0.0.0:8000-8010");
    let (addr, ports) = match s.rsplit_once(':') {
        Some((a, p)) => (a.parse().map_err(|_| bad())?, p),
        None => (std::net::Ipv4Addr::UNSPECIFIED, s),
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, Some(b.parse().map_err(|_| bad())?)),
        None => (ports.parse().map_err(|_| bad())?, None),
    };
    Ok((addr, first, last))
}

/// `PORT[/tcp|/udp]` → (port, udp?).
pub fn parse_proto_port(s: &str) -> Result<(u16, bool), String> {
    let bad = || format!("{s:?}: expected PORT, PORT/tcp or PORT/udp");
    let (port, udp) = match s.split_once('/') {
        Some((p, "udp")) => (p, true),
        Some((p, "tcp")) => (p, false),
        Some(_) => return Err(bad()),
        None => (s, false),
    };
    Ok((port.parse().map_err(|_| bad())?, udp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vswitchctl").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli = parse(&["--socket", "/tmp/s", "--json", "network", "ls"]).unwrap();
        assert_eq!(cli.socket.as_deref(), Some(std::path::Path::new("/tmp/s")));
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Network(NetworkCmd::Ls)));

        let cli = parse(&["port", "ls", "--json", "--socket=/x"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket.as_deref(), Some(std::path::Path::new("/x")));
    }

    #[test]
    fn network_create_with_everything() {
        let cli = parse(&[
            "network",
            "create",
            "net1",
            "--subnet",
            "10.89.0.0/24",
            "--gateway",
            "10.89.0.254",
            "--mtu",
            "9000",
            "--internal",
            "--label",
            "a=b",
            "--label",
            "c=d=e",
            "--label",
            "empty=",
        ])
        .unwrap();
        let Command::Network(NetworkCmd::Create(c)) = cli.command else { panic!("not create") };
        assert_eq!(c.name, "net1");
        assert_eq!(c.subnet.as_deref(), Some("10.89.0.0/24"));
        assert_eq!(c.gateway, Some(Ipv4Addr::new(10, 89, 0, 254)));
        assert_eq!(c.mtu, Some(9000));
        assert!(c.internal);
        assert_eq!(c.labels, vec![("a".into(), "b".into()), ("c".into(), "d=e".into()), ("empty".into(), String::new())]);
    }

    #[test]
    fn network_create_rejects_bad_values() {
        for bad in [
            &["network", "create", "n", "--gateway6", "fd00::1"][..],
            &["network", "create", "n", "--subnet", "10.89.0.0"],
            &["network", "create", "n", "--subnet", "10.89.0.0/33"],
            &["network", "create", "n", "--subnet", "10.89.0/24"],
            &["network", "create", "n", "--subnet", "10.89.0.0/+4"],
            &["network", "create", "n", "--subnet", "10.0.0.0/8", "--gateway", "x"],
            &["network", "create", "n", "--subnet", "10.0.0.0/8", "--mtu", "-1"],
            &["network", "create", "n", "--subnet", "10.0.0.0/8", "--label", "novalue"],
            &["network", "create", "n", "--subnet", "10.0.0.0/8", "--label", "=v"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn network_rm_force() {
        let cli = parse(&["network", "rm", "net1", "--force"]).unwrap();
        assert!(matches!(cli.command, Command::Network(NetworkCmd::Rm { ref name, force: true }) if name == "net1"));
        let cli = parse(&["network", "rm", "net1"]).unwrap();
        assert!(matches!(cli.command, Command::Network(NetworkCmd::Rm { force: false, .. })));
    }

    #[test]
    fn attach_needs_exactly_one_of_netns_and_pid() {
        let cli = parse(&["attach", "net1", "--netns", "/run/netns/c1"]).unwrap();
        let Command::Attach(a) = cli.command else { panic!("not attach") };
        assert_eq!(a.netns.as_deref(), Some("/run/netns/c1"));
        assert_eq!(a.pid, None);

        let cli = parse(&[
            "attach",
            "net1",
            "--pid",
            "42",
            "--name",
            "c1",
            "--ifname",
            "eth1",
            "--ip",
            "10.89.0.9",
            "--mac",
            "02:42:AC:11:00:02",
            "--alias",
            "web",
            "--alias",
            "www",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else { panic!("not attach") };
        assert_eq!(a.pid, Some(42));
        assert_eq!(a.name.as_deref(), Some("c1"));
        assert_eq!(a.ifname.as_deref(), Some("eth1"));
        assert_eq!(a.ip, Some(Ipv4Addr::new(10, 89, 0, 9)));
        assert_eq!(a.mac, Some(Mac([0x02, 0x42, 0xac, 0x11, 0, 2])));
        assert_eq!(a.aliases, ["web", "www"]);

        let err = parse(&["attach", "net1"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let err = parse(&["attach", "net1", "--netns", "/x", "--pid", "1"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        assert_eq!(parse(&["attach", "net1", "--pid", "0"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn attach_checks_the_mac() {
        for bad in ["02:42:ac:11:00", "zz:42:ac:11:00:02", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "0:0:0:0:0:0"] {
            let err = parse(&["attach", "n", "--pid", "1", "--mac", bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn fdb_commands() {
        let cli = parse(&["fdb", "show"]).unwrap();
        assert!(matches!(cli.command, Command::Fdb(FdbCmd::Show { network: None })));
        let cli = parse(&["fdb", "show", "net1"]).unwrap();
        assert!(matches!(cli.command, Command::Fdb(FdbCmd::Show { network: Some(_) })));
        let cli = parse(&["fdb", "flush", "net1", "--port", "c1"]).unwrap();
        assert!(matches!(cli.command, Command::Fdb(FdbCmd::Flush { network: Some(_), port: Some(_) })));
        // --port needs a network.
        assert_eq!(parse(&["fdb", "flush", "--port", "c1"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);

        let cli = parse(&["fdb", "add", "net1", "02:42:ac:11:00:02", "c1"]).unwrap();
        let Command::Fdb(FdbCmd::Add { network, mac, port }) = cli.command else { panic!() };
        assert_eq!((network.as_str(), mac.to_string().as_str(), port.as_str()), ("net1", "02:42:ac:11:00:02", "c1"));
        assert_eq!(parse(&["fdb", "add", "net1", "nope", "c1"]).unwrap_err().kind(), ErrorKind::ValueValidation);
        assert_eq!(parse(&["fdb", "del", "net1", "02:42:ac:11:00"]).unwrap_err().kind(), ErrorKind::ValueValidation);
        assert!(matches!(parse(&["fdb", "stats"]).unwrap().command, Command::Fdb(FdbCmd::Stats)));
    }

    #[test]
    fn endpoint_commands() {
        let cli = parse(&["endpoint", "rename", "net1", "c1", "c2"]).unwrap();
        let Command::Endpoint(EndpointCmd::Rename { network, name, new_name }) = cli.command else { panic!() };
        assert_eq!((network.as_str(), name.as_str(), new_name.as_str()), ("net1", "c1", "c2"));
        assert_eq!(parse(&["endpoint", "rename", "net1", "c1"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);

        let cli = parse(&["endpoint", "alias", "net1", "c1", "web", "www"]).unwrap();
        let Command::Endpoint(EndpointCmd::Alias { aliases, .. }) = cli.command else { panic!() };
        assert_eq!(aliases, ["web", "www"]);
        let cli = parse(&["endpoint", "alias", "net1", "c1"]).unwrap();
        assert!(matches!(cli.command, Command::Endpoint(EndpointCmd::Alias { ref aliases, .. }) if aliases.is_empty()));
        assert_eq!(parse(&["endpoint", "alias", "net1"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn dns_commands() {
        assert!(matches!(parse(&["dns", "records"]).unwrap().command, Command::Dns(DnsCmd::Records { network: None })));
        assert!(matches!(parse(&["dns", "records", "net1"]).unwrap().command, Command::Dns(DnsCmd::Records { network: Some(_) })));
        assert!(matches!(parse(&["dns", "stats"]).unwrap().command, Command::Dns(DnsCmd::Stats)));

        let cli = parse(&["dns", "upstreams", "net1"]).unwrap();
        let Command::Dns(DnsCmd::Upstreams { network, addrs, default }) = cli.command else { panic!() };
        assert_eq!((network.as_str(), addrs.len(), default), ("net1", 0, false));

        let cli = parse(&["dns", "upstreams", "net1", "192.0.2.53", "::1", "192.0.2.54:5353", "[::1]:53"]).unwrap();
        let Command::Dns(DnsCmd::Upstreams { addrs, default: false, .. }) = cli.command else { panic!() };
        assert_eq!(addrs, ["192.0.2.53", "::1", "192.0.2.54:5353", "[::1]:53"]);

        let cli = parse(&["dns", "upstreams", "net1", "--default"]).unwrap();
        assert!(matches!(cli.command, Command::Dns(DnsCmd::Upstreams { default: true, ref addrs, .. }) if addrs.is_empty()));
        assert_eq!(parse(&["dns", "upstreams", "net1", "--default", "192.0.2.53"]).unwrap_err().kind(), ErrorKind::ArgumentConflict);
        assert_eq!(parse(&["dns", "upstreams"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn dns_upstreams_must_be_addresses() {
        for bad in ["dns.google", "192.0.2.53:", "192.0.2.53:99999", "192.0.2", "::1:53:x", "2001:db8::53:53:1:2:3:4", ""] {
            let err = parse(&["dns", "upstreams", "net1", bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad:?}");
            assert_eq!(err.exit_code(), 2);
        }
        let err = parse(&["dns", "upstreams", "net1", "192.0.2.53", "dns.google"]).unwrap_err().to_string();
        assert!(err.contains("'dns.google'"), "{err}");
        assert!(err.contains(": host names are not resolved here; expected IP or IP:PORT, e.g. "), "{err}");
        let err = parse_upstream("192.0.2.53:").unwrap_err();
        assert!(err.starts_with("expected IP or IP:PORT, e.g. 192.0.2.53,"), "{err}");
        assert_eq!(parse_upstream("[2001:db8::53]:5353"), Ok("[2001:db8::53]:5353".into()));
        assert_eq!(parse_upstream("2001:db8::53"), Ok("2001:db8::53".into()));
    }

    #[test]
    fn unknown_commands_are_usage_errors() {
        assert_eq!(parse(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["network"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["detach", "net1"]).unwrap_err().exit_code(), 2);
        // The daemon's router skips empty path segments: "" would address another route.
        for empty in [
            &["network", "inspect", ""][..],
            &["network", "rm", ""],
            &["detach", "net1", ""],
            &["fdb", "show", ""],
            &["fdb", "flush", "net1", "--port", ""],
            &["attach", "", "--pid", "1"],
            &["attach", "n", "--pid", "1", "--name", ""],
            &["endpoint", "rename", "", "c1", "c2"],
            &["endpoint", "rename", "net1", "", "c2"],
            &["endpoint", "rename", "net1", "c1", ""],
            &["endpoint", "alias", "net1", "c1", "web", ""],
            &["dns", "records", ""],
            &["dns", "upstreams", ""],
        ] {
            assert_eq!(parse(empty).unwrap_err().kind(), ErrorKind::InvalidValue, "{empty:?}");
        }
    }

    #[test]
    fn label_and_cidr_parsers() {
        assert_eq!(parse_label("k=v"), Ok(("k".into(), "v".into())));
        assert!(parse_label("k").is_err());
        assert!(parse_label("=v").is_err());
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok("0.0.0.0/0".into()));
        assert!(parse_cidr("10.0.0.0/").is_err());
        assert!(parse_cidr("10.0.0.0/024x").is_err());
        assert!(parse_cidr("fd00::/64").is_err());
    }

    #[test]
    fn publish_arguments() {
        use std::net::Ipv4Addr;
        assert_eq!(parse_host_ports("8080"), Ok((Ipv4Addr::UNSPECIFIED, 8080, None)));
        assert_eq!(parse_host_ports("127.0.0.1:8000-8010"), Ok((Ipv4Addr::LOCALHOST, 8000, Some(8010))));
        for bad in ["", "x:80", "1.2.3.4:", "80-", "1.2.3.4:70000", "[::1]:80"] {
            assert!(parse_host_ports(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_proto_port("53/udp"), Ok((53, true)));
        assert_eq!(parse_proto_port("80/tcp"), Ok((80, false)));
        assert_eq!(parse_proto_port("80"), Ok((80, false)));
        assert!(parse_proto_port("80/sctp").is_err());
    }

    #[test]
    fn impairment_values() {
        use std::time::Duration;
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("20").unwrap_err().contains("unit"));
        assert!(parse_duration("20min").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("61s").is_err());
        assert_eq!(parse_percent("1%"), Ok(1.0));
        assert_eq!(parse_percent("0.5"), Ok(0.5));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("x").is_err());
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64000bit"), Ok(64_000));
        assert!(parse_rate("100mbps").unwrap_err().contains("mbit"));
        assert!(parse_rate("1bit").is_err());
        let cli = Cli::try_parse_from(["vswitchctl", "port", "impair", "c1", "--delay", "20ms", "--loss", "1%", "--seed", "42"]).unwrap();
        let Command::Port(PortCmd::Impair(a)) = cli.command else { panic!() };
        assert_eq!((a.delay, a.loss, a.seed, a.clear), (Some(Duration::from_millis(20)), Some(1.0), Some(42), false));
        assert!(Cli::try_parse_from(["vswitchctl", "port", "impair", "c1", "--clear", "--delay", "1ms"]).is_err());
        assert!(Cli::try_parse_from(["vswitchctl", "port", "impair", "c1", "--loss-burst", "3"]).is_err(), "needs --loss");
    }
}
