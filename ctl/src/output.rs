//! Rendering answers for people (tables, one-line confirmations) and for `--json`.
//! Pure functions from API values to text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vswitch::api::{
    ClusterHost, ClusterStatus, DnsRecord, DnsStats, DnsUpstreams, EgressStats, Endpoint, FdbEntry, FdbStats, Flushed, InterfacePort,
    LiveFrame, Network, NetworkDetail, Peer, PortInfo, Publication, Trace, TunnelKey, Version, WorkerInfo,
};
use vswitch::Mac;

/// Re-indents a JSON document the way `serde_json::to_string_pretty` does, but keeping the
/// daemon's key order and number spelling. `None` if `raw` is not JSON.
pub fn pretty_json(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;

    fn newline(out: &mut String, indent: usize) {
        out.push('\n');
        for _ in 0..indent {
            out.push_str("  ");
        }
    }

    let mut out = String::with_capacity(text.len() * 2);
    let mut indent = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    indent += 1;
                    newline(&mut out, indent);
                }
            }
            '}' | ']' => {
                indent = indent.saturating_sub(1);
                newline(&mut out, indent);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, indent);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

/// The top-level elements of a JSON array, as the text of each (whitespace trimmed). `None`
/// unless `text` is an array.
fn array_elements(text: &str) -> Option<Vec<&str>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0usize);
    for (i, c) in inner.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                out.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() || !out.is_empty() {
        out.push(last);
    }
    Some(out)
}

/// `--json port ls`: the daemon's array in the table's order (by port id), each element
/// kept as the daemon wrote it. `None` if `raw` is not an array of objects with an `id`.
pub fn ports_json_by_id(raw: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(raw).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let mut elements = Vec::new();
    for e in array_elements(text)? {
        let v: serde_json::Value = serde_json::from_str(e).ok()?;
        elements.push((v.get("id")?.as_u64()?, e));
    }
    elements.sort_by_key(|(id, _)| *id);
    let body: Vec<&str> = elements.into_iter().map(|(_, e)| e).collect();
    Some(format!("[{}]", body.join(",")).into_bytes())
}

/// `--json version`: the daemon's object with the client's version added last
/// (`"client_version"`). `None` if `raw` is not a JSON object.
pub fn version_json_with_client(raw: &[u8], client: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(raw).ok()?;
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).ok()?;
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    let field = format!("\"client_version\":{}", serde_json::Value::from(client));
    let body = if inner.is_empty() { format!("{{{field}}}") } else { format!("{{{inner},{field}}}") };
    Some(body.into_bytes())
}

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// An aligned table: a header row, then one line per row, columns two spaces apart, no
/// trailing blanks. Empty cells print as `-`.
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let header: Vec<String> = headers.iter().map(|(h, _)| h.to_string()).collect();
    let body: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&body) {
        let mut line = String::new();
        for (i, ((c, w), (_, align))) in row.iter().zip(&widths).zip(headers).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = w - c.chars().count();
            match align {
                Align::Left => {
                    line.push_str(c);
                    line.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values lined up.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        let _ = writeln!(out, "{key:<width$}  {v}");
    }
    out
}

/// The client's line of `version`, printed even when the daemon cannot be reached.
pub fn version_client(client: &str) -> String {
    format!("vswitchctl {client}\n")
}

pub fn version_daemon(daemon: &Version) -> String {
    let mut s = format!("vswitchd   {} (api {})\n", daemon.version, daemon.api);
    if daemon.rootless {
        s.push_str("rootless   yes");
        if let Some(pid) = daemon.userns_pid {
            let _ = write!(s, ": containers' network namespaces must belong to /proc/{pid}/ns/user (helper pid {pid})");
        }
        s.push('\n');
    }
    s
}

pub fn network_created(n: &Network) -> String {
    let mut s = format!("created network {}: {} gateway {} mtu {}", n.name, n.subnet, n.gateway, n.mtu);
    if n.internal {
        s.push_str(" internal");
    }
    s.push('\n');
    s
}

pub fn network_list(networks: &[Network]) -> String {
    use Align::*;
    let mut networks: Vec<&Network> = networks.iter().collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| vec![n.name.clone(), n.subnet.clone(), n.gateway.to_string(), n.mtu.to_string(), n.endpoints.to_string()])
        .collect();
    table(&[("NAME", Left), ("SUBNET", Left), ("GATEWAY", Left), ("MTU", Right), ("ENDPOINTS", Right)], &rows)
}

fn labels(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".to_string();
    }
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

pub fn network_detail(d: &NetworkDetail) -> String {
    let n = &d.network;
    let u = &d.usage;
    let mut fields = vec![
        ("Name", n.name.clone()),
        ("ID", n.id.to_string()),
        ("Subnet", n.subnet.clone()),
        ("Gateway", format!("{} ({})", n.gateway, n.gateway_mac)),
    ];
    if let (Some(s6), Some(g6)) = (&n.subnet6, &n.gateway6) {
        fields.push(("Subnet6", s6.clone()));
        fields.push(("Gateway6", g6.to_string()));
    }
    if let Some(v) = n.vlan {
        fields.push(("VLAN", v.to_string()));
    }
    if let Some(u) = &n.uplink {
        fields.push(("Uplink", u.clone()));
    }
    if let Some(d) = n.dns_address {
        fields.push(("DNS", d.to_string()));
    }
    fields.extend([
        ("MTU", n.mtu.to_string()),
        ("Internal", if n.internal { "yes" } else { "no" }.to_string()),
        ("Labels", labels(&n.labels)),
        ("Addresses", format!("{} in use, {} available, {} total", u.in_use, u.available, u.total)),
        ("Endpoints", d.endpoint_list.len().to_string()),
    ]);
    let mut out = key_values(&fields);
    if !d.endpoint_list.is_empty() {
        out.push('\n');
        out.push_str(&endpoint_table(&d.endpoint_list));
    }
    if !d.dhcp_leases.is_empty() {
        use Align::*;
        let rows: Vec<Vec<String>> = d.dhcp_leases.iter().map(|l| vec![l.ip.to_string(), l.mac.clone()]).collect();
        out.push('\n');
        out.push_str(&table(&[("DHCP LEASE", Left), ("MAC", Left)], &rows));
    }
    out
}

/// NAME IP MAC IFNAME NETNS, plus ALIASES when any endpoint has some.
pub fn endpoint_table(endpoints: &[Endpoint]) -> String {
    use Align::*;
    let mut endpoints: Vec<&Endpoint> = endpoints.iter().collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    let with_aliases = endpoints.iter().any(|e| !e.aliases.is_empty());
    let with_ip6 = endpoints.iter().any(|e| e.ip6.is_some());
    let mut headers = vec![("NAME", Left), ("IP", Left), ("MAC", Left), ("IFNAME", Left), ("NETNS", Left)];
    if with_ip6 {
        headers.insert(2, ("IP6", Left));
    }
    if with_aliases {
        headers.push(("ALIASES", Left));
    }
    let rows: Vec<Vec<String>> = endpoints
        .iter()
        .map(|e| {
            let mut row = vec![e.name.clone(), format!("{}/{}", e.ip, e.prefix_len), e.mac.to_string(), e.ifname.clone(), e.netns.clone()];
            if with_ip6 {
                row.insert(2, e.ip6.map_or_else(|| "-".to_string(), |a| a.to_string()));
            }
            if with_aliases {
                row.push(e.aliases.join(","));
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

pub fn attached(e: &Endpoint) -> String {
    match e.ip6 {
        Some(a6) => format!("attached {} to {}: {}/{} {} {}\n", e.name, e.network, e.ip, e.prefix_len, a6, e.mac),
        None => format!("attached {} to {}: {}/{} {}\n", e.name, e.network, e.ip, e.prefix_len, e.mac),
    }
}

pub fn detached(network: &str, name: &str) -> String {
    format!("detached {name} from {network}\n")
}

pub fn network_removed(name: &str) -> String {
    format!("removed network {name}\n")
}

pub fn fdb_added(e: &FdbEntry) -> String {
    format!("added static entry {} -> {} on {}\n", e.mac, e.port, e.network)
}

pub fn fdb_deleted(network: &str, mac: &Mac) -> String {
    format!("deleted entry {mac} on {network}\n")
}

pub fn flushed(f: &Flushed, network: Option<&str>, port: Option<&str>) -> String {
    let what = if f.removed == 1 { "entry" } else { "entries" };
    let scope = match (network, port) {
        (Some(n), Some(p)) => format!(" on {p} in {n}"),
        (Some(n), None) => format!(" in {n}"),
        _ => String::new(),
    };
    format!("flushed {} learned {what}{scope}\n", f.removed)
}

/// A duration in seconds, short: `42s`, `3m05s`, `2h07m`, `3d04h`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub fn fdb_entries(entries: &[FdbEntry]) -> String {
    use Align::*;
    let mut entries: Vec<&FdbEntry> = entries.iter().collect();
    entries.sort_by(|a, b| (&a.network, a.mac).cmp(&(&b.network, b.mac)));
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.network.clone(),
                e.mac.to_string(),
                e.port.clone(),
                if e.is_static { "-".to_string() } else { age(e.age_secs) },
                if e.is_static { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    table(&[("NETWORK", Left), ("MAC", Left), ("PORT", Left), ("AGE", Right), ("STATIC", Left)], &rows)
}

pub fn fdb_stats(s: &FdbStats) -> String {
    key_values(&[
        ("entries", s.entries.to_string()),
        ("max_entries", s.max_entries.to_string()),
        ("per_port_max", s.per_port_max.to_string()),
        ("aging_secs", s.aging_secs.to_string()),
        ("learned", s.learned.to_string()),
        ("aged", s.aged.to_string()),
        ("evicted", s.evicted.to_string()),
        ("moved", s.moved.to_string()),
        ("port_limit", s.port_limit.to_string()),
    ])
}

pub fn endpoint_renamed(old: &str, e: &Endpoint) -> String {
    format!("renamed {old} to {} on {}\n", e.name, e.network)
}

pub fn tunnel_key(k: &TunnelKey) -> String {
    format!("public key:  {}\nlisten:      {}\ndrops:       {}\n", k.public_key, k.listen, drops(&k.drops))
}

/// PUBLIC KEY, ENDPOINT, NETWORKS, HANDSHAKE (seconds ago), RX/TX, DROPS.
pub fn peers(peers: &[Peer]) -> String {
    use Align::*;
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.public_key.clone(),
                p.endpoint.clone().unwrap_or_else(|| "-".into()),
                p.networks.join(","),
                p.last_handshake_secs.map_or_else(|| "never".into(), |s| format!("{s}s ago")),
                p.rx_bytes.to_string(),
                p.tx_bytes.to_string(),
                drops(&p.drops),
            ]
        })
        .collect();
    table(
        &[
            ("PUBLIC KEY", Left),
            ("ENDPOINT", Left),
            ("NETWORKS", Left),
            ("HANDSHAKE", Left),
            ("RX_BYTES", Right),
            ("TX_BYTES", Right),
            ("DROPS", Left),
        ],
        &rows,
    )
}

/// One `WHAT ITEM` line per item, or `nothing to do`.
pub fn lines(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        return "nothing to do\n".to_string();
    }
    items.iter().map(|i| format!("{what} {i}\n")).collect()
}

pub fn srv_set(e: &Endpoint) -> String {
    if e.srv.is_empty() {
        format!("cleared the SRV services of {} on {}\n", e.name, e.network)
    } else {
        format!("set the SRV services of {} on {}: {}\n", e.name, e.network, e.srv.join(", "))
    }
}

pub fn aliases_set(e: &Endpoint) -> String {
    if e.aliases.is_empty() {
        format!("cleared the aliases of {} on {}\n", e.name, e.network)
    } else {
        format!("set the aliases of {} on {}: {}\n", e.name, e.network, e.aliases.join(", "))
    }
}

pub fn dns_records(records: &[DnsRecord]) -> String {
    use Align::*;
    let mut records: Vec<&DnsRecord> = records.iter().collect();
    records.sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
    let with_ip6 = records.iter().any(|r| !r.ipv6.is_empty());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let ipv4: Vec<String> = r.ipv4.iter().map(|ip| ip.to_string()).collect();
            let mut row = vec![r.network.clone(), r.name.clone(), r.aliases.join(","), ipv4.join(",")];
            if with_ip6 {
                let ipv6: Vec<String> = r.ipv6.iter().map(|ip| ip.to_string()).collect();
                row.push(ipv6.join(","));
            }
            row
        })
        .collect();
    let mut headers = vec![("NETWORK", Left), ("NAME", Left), ("ALIASES", Left), ("IPV4", Left)];
    if with_ip6 {
        headers.push(("IPV6", Left));
    }
    table(&headers, &rows)
}

/// A network's upstreams: its own (or the defaults) and where queries really go.
pub fn dns_upstreams(u: &DnsUpstreams) -> String {
    let upstreams = if u.upstreams.is_empty() { "(defaults)".to_string() } else { u.upstreams.join(", ") };
    let effective = match (u.effective.is_empty(), u.internal) {
        (false, _) => u.effective.join(", "),
        (true, false) => "none: unknown names get SERVFAIL".to_string(),
        (true, true) => "none: internal network, unknown names get NXDOMAIN".to_string(),
    };
    key_values(&[("network", u.network.clone()), ("upstreams", upstreams), ("effective", effective)])
}

pub fn dns_stats(s: &DnsStats) -> String {
    key_values(&[
        ("queries", s.queries.to_string()),
        ("answers", s.answers.to_string()),
        ("forwarded", s.forwarded.to_string()),
        ("forward_answers", s.forward_answers.to_string()),
        ("failures", s.failures.to_string()),
        ("dropped", s.dropped.to_string()),
    ])
}

pub fn published(list: &[Publication]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let r = &p.rule;
            // ADDR:PORT, or ADDR:FIRST-LAST for a range.
            let span = |addr: std::net::Ipv4Addr, first: u16, last: u16| {
                if last == first {
                    format!("{addr}:{first}")
                } else {
                    format!("{addr}:{first}-{last}")
                }
            };
            let last_container = r.container_port.wrapping_add(r.last_host_port() - r.host_port);
            vec![
                r.proto.as_str().to_string(),
                span(r.host_addr, r.host_port, r.last_host_port()),
                p.network.clone(),
                p.endpoint.clone(),
                span(p.container_ip, r.container_port, last_container),
            ]
        })
        .collect();
    table(
        &[("PROTO", Align::Left), ("HOST", Align::Left), ("NETWORK", Align::Left), ("ENDPOINT", Align::Left), ("CONTAINER", Align::Left)],
        &rows,
    )
}

pub fn egress(s: &EgressStats) -> String {
    key_values(&[
        ("enabled", s.enabled.to_string()),
        ("max_flows_per_endpoint", s.max_flows_per_endpoint.to_string()),
        ("tcp_flows", s.tcp_flows.to_string()),
        ("udp_flows", s.udp_flows.to_string()),
        ("icmp_flows", s.icmp_flows.to_string()),
        ("tcp_opened", s.tcp_opened.to_string()),
        ("udp_opened", s.udp_opened.to_string()),
        ("icmp_opened", s.icmp_opened.to_string()),
        ("published_accepted", s.published_accepted.to_string()),
        ("connect_failed", s.connect_failed.to_string()),
        ("denied", s.denied.to_string()),
        ("over_limit", s.over_limit.to_string()),
        ("spoofed", s.spoofed.to_string()),
        ("malformed", s.malformed.to_string()),
        ("icmp_unavailable", s.icmp_unavailable.to_string()),
    ])
}

/// `reason=count,...` for the non-zero counters, `-` without drops.
pub fn drops(d: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = d.iter().filter(|(_, &n)| n > 0).map(|(k, n)| format!("{k}={n}")).collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

/// One direction's impairment on one line: what was asked, then what it did.
pub fn impairment(s: &vswitch::api::ImpairState) -> String {
    use vswitch::api::{Distribution, Loss};
    let i = &s.impairment;
    let mut parts = Vec::new();
    let ms = |us: u64| format!("{}ms", us as f64 / 1000.0);
    if i.delay_us > 0 {
        parts.push(format!("delay {}", ms(i.delay_us)));
    }
    if i.jitter_us > 0 {
        let d = match i.distribution {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
        };
        parts.push(format!("jitter {} ({d})", ms(i.jitter_us)));
    }
    match i.loss {
        Some(Loss::Random { percent }) => parts.push(format!("loss {percent}%")),
        Some(Loss::GilbertElliott { p_percent, r_percent, bad_loss_percent, good_loss_percent }) => parts
            .push(format!("loss gilbert-elliott p={p_percent:.4}% r={r_percent:.4}% bad={bad_loss_percent}% good={good_loss_percent}%")),
        None => {}
    }
    if let Some(r) = i.rate_bps {
        parts.push(format!("rate {}", rate(r)));
    }
    if i.reorder_percent > 0.0 {
        parts.push(format!("reorder {}%", i.reorder_percent));
    }
    if i.duplicate_percent > 0.0 {
        parts.push(format!("duplicate {}%", i.duplicate_percent));
    }
    parts.push(format!("queue {}", i.queue.unwrap_or(vswitch::impair::DEFAULT_QUEUE)));
    if let Some(seed) = i.seed {
        parts.push(format!("seed {seed}"));
    }
    let c = &s.counters;
    format!(
        "{} | frames={} delayed={} lost={} queue_full={} duplicated={} reordered={} queued={}",
        parts.join(" "),
        c.frames,
        c.delayed,
        c.dropped_loss,
        c.dropped_queue_full,
        c.duplicated,
        c.reordered,
        c.queued
    )
}

fn rate(bps: u64) -> String {
    for (unit, scale) in [("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000)] {
        if bps >= scale && bps.is_multiple_of(scale) {
            return format!("{}{unit}", bps / scale);
        }
    }
    format!("{bps}bit")
}

/// A port's impairments, one line per direction (nothing when it has none).
pub fn port_impairments(p: &PortInfo) -> String {
    let mut out = String::new();
    for (dir, s) in [("ingress", &p.impair_ingress), ("egress", &p.impair_egress)] {
        if let Some(s) = s {
            out.push_str(&format!("{}/{} {dir}: {}\n", p.network, p.name, impairment(s)));
        }
    }
    if out.is_empty() {
        out = format!("{}/{}: no impairment\n", p.network, p.name);
    }
    out
}

/// What `port add` made: the interface and each network it carries.
pub fn interface_port(p: &InterfacePort) -> String {
    let members: Vec<String> = p
        .members
        .iter()
        .map(|m| match m.vlan {
            Some(v) => format!("{} (VLAN {v}, port {})", m.network, m.port),
            None => format!("{} (untagged, port {})", m.network, m.port),
        })
        .collect();
    format!("added interface port {}: {}\n", p.interface, members.join(", "))
}

pub fn ports(ports: &[PortInfo]) -> String {
    let mut out = ports_table(ports);
    let mut sorted: Vec<&PortInfo> = ports.iter().filter(|p| p.impair_ingress.is_some() || p.impair_egress.is_some()).collect();
    sorted.sort_by_key(|p| p.id);
    if !sorted.is_empty() {
        out.push_str("\nIMPAIRMENTS\n");
        for p in sorted {
            out.push_str(&port_impairments(p));
        }
    }
    out
}

fn ports_table(ports: &[PortInfo]) -> String {
    use Align::*;
    let mut ports: Vec<&PortInfo> = ports.iter().collect();
    ports.sort_by_key(|p| p.id);
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.network.clone(),
                p.name.clone(),
                p.kind.clone(),
                p.ifname.clone(),
                p.vlan.map_or_else(|| "-".to_string(), |v| v.to_string()),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                drops(&p.drops),
                p.offloads.join(","),
                p.worker.map_or_else(|| "-".to_string(), |w| w.to_string()),
            ]
        })
        .collect();
    table(
        &[
            ("ID", Right),
            ("NETWORK", Left),
            ("NAME", Left),
            ("KIND", Left),
            ("IFNAME", Left),
            ("VLAN", Right),
            ("RX_PKTS", Right),
            ("RX_BYTES", Right),
            ("TX_PKTS", Right),
            ("TX_BYTES", Right),
            ("DROPS", Left),
            ("OFFLOADS", Left),
            ("WORKER", Right),
        ],
        &rows,
    )
}

pub fn workers(workers: &[WorkerInfo]) -> String {
    use Align::*;
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let role = if w.id == 0 { "main (gateway, DNS, egress, tunnel)" } else { "TAPs" };
            vec![
                w.id.to_string(),
                role.to_string(),
                w.ports.to_string(),
                w.forwarded.to_string(),
                w.handed_over.to_string(),
                w.overload.to_string(),
                w.decided_for_others.to_string(),
                w.picked_up.to_string(),
                w.wakeups.to_string(),
                if w.realtime { "fifo" } else { "normal" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("WORKER", Right),
            ("ROLE", Left),
            ("TAPS", Right),
            ("FORWARDED", Right),
            ("HANDED_OVER", Right),
            ("OVERLOAD", Right),
            ("DECIDED_FOR_OTHERS", Right),
            ("PICKED_UP", Right),
            ("WAKEUPS", Right),
            ("POLICY", Left),
        ],
        &rows,
    )
}

/// `trace --live`: one frame that came in and its verdict.
pub fn live_frame(f: &LiveFrame) -> String {
    let secs = f.time.rem_euclid(86_400.0);
    let (h, m, s) = ((secs / 3600.0) as u32, (secs / 60.0 % 60.0) as u32, secs % 60.0);
    format!("{h:02}:{m:02}:{s:09.6} {} {} bytes: {} → {}", f.port, f.len, f.frame, f.verdict)
}

/// `trace`: the frame, each decision, the verdict.
pub fn trace(t: &Trace) -> String {
    let mut out = format!("frame   {}\n", t.frame);
    let step_w = t.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
    let result_w = t.steps.iter().map(|s| s.result.len()).max().unwrap_or(0);
    for s in &t.steps {
        let _ = writeln!(out, "  {:<step_w$}  {:<result_w$}  {}", s.step, s.result, s.detail);
    }
    let _ = write!(out, "verdict {}", t.verdict);
    if let Some(r) = &t.drop_reason {
        let _ = write!(out, " ({r})");
    }
    out.push('\n');
    out
}

/// `cluster status`: the store, this host, the hosts, the networks, the problems.
pub fn cluster_status(c: &ClusterStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "host:        {}", c.host);
    let _ = writeln!(out, "prefix:      {}", c.prefix);
    let _ = writeln!(
        out,
        "store:       {}{}",
        if c.healthy { "healthy" } else { "UNREACHABLE" },
        c.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
    );
    for e in &c.endpoints {
        let state = match (e.healthy, e.leader) {
            (true, true) => "healthy, leader".to_string(),
            (true, false) => "healthy".to_string(),
            (false, _) => format!("down: {}", e.error.as_deref().unwrap_or("?")),
        };
        let _ = writeln!(out, "  {:<24} {state}", e.endpoint);
    }
    let _ = writeln!(
        out,
        "lease:       {} (ttl {}s{})",
        c.lease.as_deref().unwrap_or("-"),
        c.lease_ttl_secs,
        c.last_renewed_secs.map(|s| format!(", renewed {s}s ago")).unwrap_or_default()
    );
    for n in &c.networks {
        let _ = writeln!(out, "network:     {} {} (block here {}, {} names of other hosts)", n.name, n.subnet, n.block, n.remote_names);
    }
    for p in &c.problems {
        let _ = writeln!(out, "problem:     {p}");
    }
    out.push('\n');
    out.push_str(&cluster_hosts(&c.hosts));
    out
}

/// NAME, ENDPOINT, LAST SEEN, PUBLIC KEY.
pub fn cluster_hosts(hosts: &[ClusterHost]) -> String {
    use Align::*;
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                if h.this_host { format!("{} (this host)", h.name) } else { h.name.clone() },
                h.endpoint.clone(),
                h.last_seen_secs.map_or_else(|| "-".into(), |s| format!("{s}s ago")),
                h.public_key.clone(),
            ]
        })
        .collect();
    table(&[("NAME", Left), ("ENDPOINT", Left), ("LAST SEEN", Left), ("PUBLIC KEY", Left)], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use vswitch::api::Usage;
    use vswitch::PortId;

    fn net(name: &str, subnet: &str, gw: [u8; 4], endpoints: usize) -> Network {
        Network {
            name: name.into(),
            id: 1,
            subnet: subnet.into(),
            gateway: Ipv4Addr::from(gw),
            gateway_mac: Mac([2, 0x56, 0, 0, 0, 1]),
            subnet6: None,
            gateway6: None,
            ip_range: None,
            aux_addresses: Vec::new(),
            mtu: 1500,
            internal: false,
            overlay: false,
            host_loopback: Vec::new(),
            egress: false,
            labels: BTreeMap::new(),
            endpoints,
            vlan: None,
            uplink: None,
            dns_address: None,
        }
    }

    fn endpoint(name: &str, last: u8, aliases: &[&str]) -> Endpoint {
        Endpoint {
            name: name.into(),
            network: "net1".into(),
            netns: format!("/run/netns/{name}"),
            ifname: "eth0".into(),
            mac: Mac([2, 0x42, 10, 89, 0, last]),
            ip: Ipv4Addr::new(10, 89, 0, last),
            prefix_len: 24,
            ip6: None,
            port: PortId(u32::from(last)),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            srv: Vec::new(),
            published: Vec::new(),
            owner: None,
        }
    }

    #[test]
    fn pretty_json_keeps_key_order_and_matches_serde_layout() {
        let raw = br#"{"name":"net1","id":3,"labels":{},"list":[],"nested":{"z":[1,2.50,{"a":null}],"b":"x:\"y\",{}"},"e":[ ]}"#;
        let got = pretty_json(raw).unwrap();
        let want = r#"{
  "name": "net1",
  "id": 3,
  "labels": {},
  "list": [],
  "nested": {
    "z": [
      1,
      2.50,
      {
        "a": null
      }
    ],
    "b": "x:\"y\",{}"
  },
  "e": []
}"#;
        assert_eq!(got, want);
        // Same layout as serde_json's for already-sorted input.
        let sorted = br#"{"a":[1,{"b":true}],"c":"\\"}"#;
        let v: serde_json::Value = serde_json::from_slice(sorted).unwrap();
        assert_eq!(pretty_json(sorted).unwrap(), serde_json::to_string_pretty(&v).unwrap());
        assert_eq!(pretty_json(b"[]").unwrap(), "[]");
        assert_eq!(pretty_json(b" \"s\" ").unwrap(), "\"s\"");
        assert!(pretty_json(b"{\"a\":").is_none());
        assert!(pretty_json(b"not json").is_none());
        assert!(pretty_json(b"{} trailing").is_none());
    }

    #[test]
    fn json_arrays_split_into_elements() {
        assert_eq!(array_elements("[]").unwrap(), Vec::<&str>::new());
        assert_eq!(array_elements(" [ 1 , {\"a\":[2,3],\"b\":\"x,]\\\"\"} ] ").unwrap(), ["1", "{\"a\":[2,3],\"b\":\"x,]\\\"\"}"]);
        assert!(array_elements("{}").is_none());
    }

    #[test]
    fn port_json_is_in_the_tables_order() {
        let raw = br#"[{"id":12,"name":"c1","drops":{"a":1}},{"id":1,"name":"gateway"},{"id":3,"name":"c,2"}]"#;
        let sorted = ports_json_by_id(raw).unwrap();
        assert_eq!(
            String::from_utf8(sorted).unwrap(),
            r#"[{"id":1,"name":"gateway"},{"id":3,"name":"c,2"},{"id":12,"name":"c1","drops":{"a":1}}]"#
        );
        assert_eq!(ports_json_by_id(b"[]").unwrap(), b"[]");
        assert!(ports_json_by_id(br#"[{"name":"x"}]"#).is_none());
        assert!(ports_json_by_id(b"nope").is_none());
    }

    #[test]
    fn version_json_gets_the_clients_version_last() {
        let out = version_json_with_client(br#"{"version":"0.1.0","api":"v1"}"#, "0.2.0").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"version":"0.1.0","api":"v1","client_version":"0.2.0"}"#);
        assert_eq!(version_json_with_client(b" {} ", "1").unwrap(), br#"{"client_version":"1"}"#);
        assert!(version_json_with_client(b"[1]", "1").is_none());
    }

    #[test]
    fn table_aligns_and_trims() {
        use Align::*;
        let t = table(
            &[("NAME", Left), ("N", Right), ("LAST", Left)],
            &[vec!["a".into(), "1".into(), "x".into()], vec!["long-name".into(), "1234".into(), String::new()]],
        );
        assert_eq!(t, "NAME          N  LAST\na             1  x\nlong-name  1234  -\n");
        assert_eq!(table(&[("A", Left), ("B", Left)], &[]), "A  B\n");
    }

    #[test]
    fn network_ls_table() {
        let mut b = net("beta", "10.90.0.0/16", [10, 90, 0, 1], 12);
        b.mtu = 9000;
        let out = network_list(&[b, net("alpha", "10.89.0.0/24", [10, 89, 0, 1], 0)]);
        assert_eq!(
            out,
            "NAME   SUBNET        GATEWAY     MTU  ENDPOINTS\n\
             alpha  10.89.0.0/24  10.89.0.1  1500          0\n\
             beta   10.90.0.0/16  10.90.0.1  9000         12\n"
        );
    }

    #[test]
    fn network_inspect_output() {
        let mut n = net("net1", "10.89.0.0/24", [10, 89, 0, 1], 2);
        n.labels.insert("team".into(), "infra".into());
        n.internal = true;
        let d = NetworkDetail {
            network: n,
            usage: Usage { total: 253, in_use: 2, available: 251 },
            endpoint_list: vec![endpoint("web", 3, &["www", "site"]), endpoint("db", 2, &[])],
            dhcp_leases: vec![],
        };
        let out = network_detail(&d);
        assert_eq!(
            out,
            "Name:       net1\n\
             ID:         1\n\
             Subnet:     10.89.0.0/24\n\
             Gateway:    10.89.0.1 (02:56:00:00:00:01)\n\
             MTU:        1500\n\
             Internal:   yes\n\
             Labels:     team=infra\n\
             Addresses:  2 in use, 251 available, 253 total\n\
             Endpoints:  2\n\
             \n\
             NAME  IP            MAC                IFNAME  NETNS           ALIASES\n\
             db    10.89.0.2/24  02:42:0a:59:00:02  eth0    /run/netns/db   -\n\
             web   10.89.0.3/24  02:42:0a:59:00:03  eth0    /run/netns/web  www,site\n"
        );
        // Without aliases there is no ALIASES column; without endpoints, no table.
        let e = endpoint_table(&[endpoint("db", 2, &[])]);
        assert!(e.starts_with("NAME  IP            MAC                IFNAME  NETNS\n"), "{e}");
        let empty = NetworkDetail { endpoint_list: vec![], ..d };
        assert!(network_detail(&empty).ends_with("Endpoints:  0\n"));
    }

    #[test]
    fn fdb_tables() {
        let entries = [
            FdbEntry {
                network: "net2".into(),
                mac: Mac([2, 0, 0, 0, 0, 9]),
                port: "gateway".into(),
                port_id: PortId(1),
                age_secs: 0,
                is_static: true,
            },
            FdbEntry {
                network: "net1".into(),
                mac: Mac([2, 0x42, 0, 0, 0, 2]),
                port: "c1".into(),
                port_id: PortId(3),
                age_secs: 125,
                is_static: false,
            },
        ];
        assert_eq!(
            fdb_entries(&entries),
            "NETWORK  MAC                PORT       AGE  STATIC\n\
             net1     02:42:00:00:00:02  c1       2m05s  no\n\
             net2     02:00:00:00:00:09  gateway      -  yes\n"
        );
        let stats = FdbStats { entries: 2, max_entries: 8192, learned: 10, ..FdbStats::default() };
        let out = fdb_stats(&stats);
        assert!(out.starts_with("entries:       2\nmax_entries:   8192\n"), "{out}");
        assert!(out.ends_with("port_limit:    0\n"), "{out}");
    }

    #[test]
    fn dns_tables() {
        let rec = |network: &str, name: &str, aliases: &[&str], ipv4: &[[u8; 4]]| DnsRecord {
            network: network.into(),
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            ipv4: ipv4.iter().map(|&a| Ipv4Addr::from(a)).collect(),
            ipv6: Vec::new(),
        };
        let out = dns_records(&[
            rec("net2", "db", &[], &[[10, 90, 0, 2]]),
            rec("net1", "web", &["www", "site"], &[[10, 89, 0, 3]]),
            rec("net1", "app", &[], &[[10, 89, 0, 4], [10, 89, 0, 5]]),
        ]);
        assert_eq!(
            out,
            "NETWORK  NAME  ALIASES   IPV4\n\
             net1     app   -         10.89.0.4,10.89.0.5\n\
             net1     web   www,site  10.89.0.3\n\
             net2     db    -         10.90.0.2\n"
        );
        assert_eq!(dns_records(&[]), "NETWORK  NAME  ALIASES  IPV4\n");

        let stats = DnsStats { queries: 12, answers: 9, forwarded: 3, forward_answers: 2, failures: 1, dropped: 0 };
        assert_eq!(
            dns_stats(&stats),
            "queries:          12\n\
             answers:          9\n\
             forwarded:        3\n\
             forward_answers:  2\n\
             failures:         1\n\
             dropped:          0\n"
        );
    }

    #[test]
    fn dns_upstreams_views() {
        let u = |upstreams: &[&str], effective: &[&str], internal: bool| DnsUpstreams {
            network: "net1".into(),
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            effective: effective.iter().map(|s| s.to_string()).collect(),
            internal,
        };
        let set = ["192.0.2.53:53", "[2001:db8::53]:5353"];
        assert_eq!(
            dns_upstreams(&u(&set, &set, false)),
            "network:    net1\n\
             upstreams:  192.0.2.53:53, [2001:db8::53]:5353\n\
             effective:  192.0.2.53:53, [2001:db8::53]:5353\n"
        );
        assert_eq!(
            dns_upstreams(&u(&[], &["127.0.0.53:53"], false)),
            "network:    net1\nupstreams:  (defaults)\neffective:  127.0.0.53:53\n"
        );
        assert_eq!(
            dns_upstreams(&u(&[], &[], false)),
            "network:    net1\nupstreams:  (defaults)\neffective:  none: unknown names get SERVFAIL\n"
        );
        // An internal network forwards nothing, whatever is set.
        assert_eq!(
            dns_upstreams(&u(&["192.0.2.53:53"], &[], true)),
            "network:    net1\n\
             upstreams:  192.0.2.53:53\n\
             effective:  none: internal network, unknown names get NXDOMAIN\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(60), "1m00s");
        assert_eq!(age(3599), "59m59s");
        assert_eq!(age(3600 * 2 + 7 * 60 + 5), "2h07m");
        assert_eq!(age(86400 * 3 + 3600 * 4), "3d04h");
    }

    #[test]
    fn port_table() {
        let mut drops_map = BTreeMap::new();
        drops_map.insert("too_short".to_string(), 2);
        drops_map.insert("hairpin".to_string(), 0);
        drops_map.insert("bad_source".to_string(), 7);
        let p = |id: u32, name: &str, kind: &str, d: BTreeMap<String, u64>, off: &[&str]| PortInfo {
            id: PortId(id),
            network: "net1".into(),
            name: name.into(),
            kind: kind.into(),
            ifname: if kind == "tap" { format!("vs{id}") } else { String::new() },
            mac: Mac([2, 0, 0, 0, 0, id as u8]),
            offloads: off.iter().map(|s| s.to_string()).collect(),
            vlan: None,
            rx_packets: u64::from(id) * 10,
            rx_bytes: u64::from(id) * 1000,
            tx_packets: 1,
            tx_bytes: 60,
            segmented: 0,
            coalesced: 0,
            drops: d,
            worker: (kind == "tap").then_some(1),
            impair_ingress: None,
            impair_egress: None,
        };
        let out = ports(&[p(12, "c1", "tap", drops_map, &["vnet_hdr", "csum"]), p(1, "gateway", "gateway", BTreeMap::new(), &[])]);
        assert_eq!(
            out,
            "ID  NETWORK  NAME     KIND     IFNAME  VLAN  RX_PKTS  RX_BYTES  TX_PKTS  TX_BYTES  DROPS                     OFFLOADS       WORKER\n \
             1  net1     gateway  gateway  -          -       10      1000        1        60  -                         -                   -\n\
             12  net1     c1       tap      vs12       -      120     12000        1        60  bad_source=7,too_short=2  vnet_hdr,csum       1\n"
        );
    }

    #[test]
    fn worker_table() {
        let w = |id: usize, ports: u64, forwarded: u64, handed_over: u64, decided: u64| WorkerInfo {
            id,
            ports,
            forwarded,
            handed_over,
            overload: 0,
            decided_for_others: decided,
            picked_up: 3,
            wakeups: 7,
            realtime: id == 1,
        };
        let out = workers(&[w(0, 1, 0, 0, 12), w(1, 2, 5000, 12, 0)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("WORKER  ROLE") && lines[0].ends_with("WAKEUPS  POLICY"), "{out}");
        assert!(lines[1].contains("main (gateway, DNS, egress, tunnel)") && lines[1].contains(" 12 "), "{out}");
        assert!(lines[2].contains("TAPs") && lines[2].contains("5000") && lines[2].ends_with("fifo"), "{out}");
        assert!(lines[1].ends_with("normal"), "{out}");
    }

    #[test]
    fn one_liners() {
        assert_eq!(attached(&endpoint("c1", 2, &[])), "attached c1 to net1: 10.89.0.2/24 02:42:0a:59:00:02\n");
        let mut n = net("net1", "10.89.0.0/24", [10, 89, 0, 1], 0);
        assert_eq!(network_created(&n), "created network net1: 10.89.0.0/24 gateway 10.89.0.1 mtu 1500\n");
        n.internal = true;
        assert!(network_created(&n).ends_with("mtu 1500 internal\n"));
        assert_eq!(detached("net1", "c1"), "detached c1 from net1\n");
        assert_eq!(network_removed("net1"), "removed network net1\n");
        let mut e = endpoint("c2", 2, &[]);
        assert_eq!(endpoint_renamed("c1", &e), "renamed c1 to c2 on net1\n");
        assert_eq!(aliases_set(&e), "cleared the aliases of c2 on net1\n");
        e.aliases = vec!["web".into(), "www".into()];
        assert_eq!(aliases_set(&e), "set the aliases of c2 on net1: web, www\n");
        assert_eq!(flushed(&Flushed { removed: 1 }, None, None), "flushed 1 learned entry\n");
        assert_eq!(flushed(&Flushed { removed: 3 }, Some("net1"), None), "flushed 3 learned entries in net1\n");
        assert_eq!(flushed(&Flushed { removed: 0 }, Some("net1"), Some("c1")), "flushed 0 learned entries on c1 in net1\n");
        let v = Version { version: "0.1.0".into(), api: "v1".into(), rootless: false, userns_pid: None };
        assert_eq!(version_client("0.1.0") + &version_daemon(&v), "vswitchctl 0.1.0\nvswitchd   0.1.0 (api v1)\n");
        let v = Version { rootless: true, userns_pid: Some(42), ..v };
        assert_eq!(
            version_daemon(&v),
            "vswitchd   0.1.0 (api v1)\nrootless   yes: containers' network namespaces must belong to /proc/42/ns/user (helper pid 42)\n"
        );
        // An older daemon's reply (no rootless fields) still decodes.
        let old: Version = serde_json::from_str(r#"{"version":"0.1.0","api":"v1"}"#).unwrap();
        assert!(!old.rootless && old.userns_pid.is_none());
    }

    #[test]
    fn published_rules_show_their_ranges() {
        use vswitch::api::{Proto, PublishRule};
        let rule = |port, end, cport| PublishRule {
            proto: Proto::Tcp,
            host_addr: "0.0.0.0".parse().unwrap(),
            host_port: port,
            host_port_end: end,
            container_port: cport,
        };
        let list = [
            Publication {
                network: "n".into(),
                endpoint: "c1".into(),
                container_ip: "10.89.0.2".parse().unwrap(),
                rule: rule(8000, Some(8002), 80),
            },
            Publication {
                network: "n".into(),
                endpoint: "c1".into(),
                container_ip: "10.89.0.2".parse().unwrap(),
                rule: rule(9000, None, 90),
            },
        ];
        let out = published(&list);
        assert!(out.contains("0.0.0.0:8000-8002") && out.contains("10.89.0.2:80-82"), "{out}");
        assert!(out.contains("0.0.0.0:9000 ") && out.contains("10.89.0.2:90\n"), "{out}");
    }
}
