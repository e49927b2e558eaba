//! `vswitchctl up FILE` / `down FILE`: a testbed in one TOML file.
//!
//! The file names networks, "containers" (network namespaces the testbed makes and owns, each
//! with setup commands run once and a command left running) and their links (attachments with
//! an address and the link's impairments). `up` makes what is missing, changes what differs and
//! removes what the file no longer has, so a second `up` changes nothing; `down` removes exactly
//! what `up` made. What `up` makes is written to a record *before* it is made (next to the
//! control socket: `topology/NAME.json`), so `down` finds it also after `up` or vswitchd died
//! half way. Networks carry the label `vswitch.topology=NAME`, endpoints the owner
//! `topology/NAME`. Namespaces are made with `ip netns add`, so this needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use vswitch::api::{AttachRequest, Distribution, ImpairRequest, Impairment, Loss, Network, NetworkCreate, NetworkDetail, PortInfo, PREFIX};

use crate::cli::{parse_duration, parse_percent, parse_rate};
use crate::client::{call, decode, enc, Call};
use crate::error::Failure;

/// The label on networks a topology made, its value the topology's name.
pub const LABEL: &str = "vswitch.topology";

/// A topology file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Names everything it makes: namespaces are `NAME-CONTAINER`.
    pub name: String,
    #[serde(default)]
    pub networks: Vec<NetSpec>,
    #[serde(default)]
    pub containers: Vec<ContainerSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub name: String,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    /// Commands run once, in order, after the namespace and its links are made (`sh -c`).
    #[serde(default)]
    pub setup: Vec<String>,
    /// A command left running in the namespace (`sh -c`), its output in the record's directory.
    #[serde(default)]
    pub run: Option<String>,
    #[serde(default)]
    pub links: Vec<LinkSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub network: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub impair: Option<ImpairSpec>,
}

/// A link's impairments in the CLI's words.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ImpairSpec {
    /// `egress` (default: frames to the container), `ingress` or `both`.
    #[serde(default)]
    pub direction: Option<String>,
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub distribution: Option<String>,
    pub loss: Option<String>,
    pub loss_burst: Option<f64>,
    pub rate: Option<String>,
    pub queue: Option<u32>,
    pub reorder: Option<String>,
    pub duplicate: Option<String>,
    pub seed: Option<u64>,
}

impl ImpairSpec {
    /// (ingress, egress, the impairment), checked as the daemon would.
    fn to_request(&self, at: &str) -> Result<(bool, bool, Impairment), String> {
        let field = |name: &str, e: String| format!("{at}: impair.{name}: {e}");
        let dur = |name: &str, v: &Option<String>| v.as_deref().map(parse_duration).transpose().map_err(|e| field(name, e));
        let pct = |name: &str, v: &Option<String>| v.as_deref().map(parse_percent).transpose().map_err(|e| field(name, e));
        let (ingress, egress) = match self.direction.as_deref() {
            None | Some("egress") => (false, true),
            Some("ingress") => (true, false),
            Some("both") => (true, true),
            Some(d) => return Err(field("direction", format!("{d:?}: egress, ingress or both"))),
        };
        let distribution = match self.distribution.as_deref() {
            None | Some("uniform") => Distribution::Uniform,
            Some("normal") => Distribution::Normal,
            Some(d) => return Err(field("distribution", format!("{d:?}: uniform or normal"))),
        };
        let loss = match (pct("loss", &self.loss)?, self.loss_burst) {
            (Some(p), Some(b)) if b >= 1.0 => Some(Loss::bursty(p, b)),
            (_, Some(b)) if b < 1.0 || self.loss.is_none() => {
                return Err(field("loss_burst", format!("{b}: a mean burst of 1 frame or more, with loss")))
            }
            (Some(p), _) => Some(Loss::Random { percent: p }),
            (None, _) => None,
        };
        let imp = Impairment {
            delay_us: dur("delay", &self.delay)?.map_or(0, |d| d.as_micros() as u64),
            jitter_us: dur("jitter", &self.jitter)?.map_or(0, |d| d.as_micros() as u64),
            distribution,
            loss,
            rate_bps: self.rate.as_deref().map(parse_rate).transpose().map_err(|e| field("rate", e))?,
            queue: self.queue,
            reorder_percent: pct("reorder", &self.reorder)?.unwrap_or(0.0),
            duplicate_percent: pct("duplicate", &self.duplicate)?.unwrap_or(0.0),
            seed: self.seed,
        };
        imp.check(0).map_err(|e| format!("{at}: impair: {e}"))?;
        Ok((ingress, egress, imp))
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Topology {
    /// Reads and checks a topology file: every error names its place.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML of this shape, or names something twice, a network
    /// it does not declare, or a value out of range.
    pub fn load(path: &Path) -> Result<Topology, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let t: Topology = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        t.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(t)
    }

    fn check(&self) -> Result<(), String> {
        if !valid_name(&self.name) || self.name.len() > 12 {
            return Err(format!("name {:?}: 1 to 12 letters, digits, '-' or '_'", self.name));
        }
        let mut nets = BTreeSet::new();
        for n in &self.networks {
            if !valid_name(&n.name) || !nets.insert(n.name.as_str()) {
                return Err(format!("network {:?}: a name of letters, digits, '-' or '_', used once", n.name));
            }
        }
        let mut names = BTreeSet::new();
        for c in &self.containers {
            if !valid_name(&c.name) || !names.insert(c.name.as_str()) {
                return Err(format!("container {:?}: a name of letters, digits, '-' or '_', used once", c.name));
            }
            let mut on = BTreeSet::new();
            for l in &c.links {
                if !nets.contains(l.network.as_str()) {
                    return Err(format!("container {}: network {:?} is not declared", c.name, l.network));
                }
                if !on.insert(l.network.as_str()) {
                    return Err(format!("container {}: two links to network {}", c.name, l.network));
                }
                if let Some(i) = &l.impair {
                    i.to_request(&format!("container {} link {}", c.name, l.network))?;
                }
            }
        }
        Ok(())
    }

    /// The namespace of container `c`.
    pub fn netns(&self, c: &str) -> String {
        format!("{}-{c}", self.name)
    }

    fn owner(&self) -> String {
        format!("topology/{}", self.name)
    }
}

/// What `up` made, written before it is made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub networks: BTreeSet<String>,
    pub namespaces: BTreeSet<String>,
    /// (network, endpoint)
    pub endpoints: BTreeSet<(String, String)>,
    /// Running commands: container → pid (its process group).
    pub pids: BTreeMap<String, u32>,
}

fn record_dir(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or(Path::new("/")).join("topology")
}

fn record_path(socket: &Path, name: &str) -> PathBuf {
    record_dir(socket).join(format!("{name}.json"))
}

fn load_record(socket: &Path, name: &str) -> Result<Option<Record>, Failure> {
    let p = record_path(socket, name);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| Failure::Local(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::Local(format!("cannot read {}: {e}", p.display()))),
    }
}

/// Writes the record atomically (temp file, fsync, rename).
fn save_record(socket: &Path, name: &str, r: &Record) -> Result<(), Failure> {
    let dir = record_dir(socket);
    let fail = |e: std::io::Error| Failure::Local(format!("cannot write the topology record in {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let tmp = dir.join(format!(".{name}.json.tmp"));
    let body = serde_json::to_vec_pretty(r).map_err(|e| Failure::Local(e.to_string()))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&body).and_then(|()| f.sync_all()).map_err(fail)?;
    }
    std::fs::rename(&tmp, record_path(socket, name)).map_err(fail)
}

fn sh(program: &str, args: &[&str]) -> Result<(), Failure> {
    let out =
        Command::new(program).args(args).stdin(Stdio::null()).output().map_err(|e| Failure::Local(format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(Failure::Local(format!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

fn alive(pid: u32) -> bool {
    // A zombie or a reused pid would not be in our process group.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.split_whitespace().nth(2).map(str::to_string)))
        .flatten()
        .is_some_and(|pgrp| pgrp == pid.to_string())
}

fn stop(pid: u32) {
    if alive(pid) {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
    }
}

fn is_not_found(f: &Failure) -> bool {
    matches!(f, Failure::Api { code, .. } if code.ends_with("not_found"))
}

/// Calls the daemon; a refusal becomes a [`Failure::Api`].
fn api(socket: &Path, c: &Call) -> Result<crate::client::Reply, Failure> {
    let reply = call(socket, c)?;
    if !reply.status.is_success() {
        return Err(Failure::from_error_reply(reply.status, &reply.body));
    }
    Ok(reply)
}

/// `up FILE`: makes the topology true; returns what it changed, one line each.
///
/// # Errors
/// A bad file (nothing done), the daemon unreachable or refusing, a command that fails. What
/// was made until then is in the record: `down` removes it.
pub fn up(socket: &Path, file: &Path) -> Result<String, Failure> {
    let t = Topology::load(file).map_err(Failure::Usage)?;
    let mut rec = load_record(socket, &t.name)?.unwrap_or_default();
    let mut done = Vec::new();
    let networks: Vec<Network> = decode(&api(socket, &Call::get(format!("{PREFIX}/networks")))?)?;
    let by_name: BTreeMap<&str, &Network> = networks.iter().map(|n| (n.name.as_str(), n)).collect();

    // What the file no longer has goes first (its addresses may be reused below).
    let want_ns: BTreeSet<String> = t.containers.iter().map(|c| t.netns(&c.name)).collect();
    let want_eps: BTreeSet<(String, String)> =
        t.containers.iter().flat_map(|c| c.links.iter().map(|l| (l.network.clone(), c.name.clone()))).collect();
    for (c, pid) in rec.pids.clone() {
        if !t.containers.iter().any(|s| s.name == c && s.run.is_some()) {
            stop(pid);
            rec.pids.remove(&c);
            done.push(format!("stopped the command of {c}"));
        }
    }
    for (net, ep) in rec.endpoints.clone() {
        if !want_eps.contains(&(net.clone(), ep.clone())) {
            detach(socket, &net, &ep)?;
            rec.endpoints.remove(&(net.clone(), ep.clone()));
            save_record(socket, &t.name, &rec)?;
            done.push(format!("detached {ep} from {net}"));
        }
    }
    for ns in rec.namespaces.clone() {
        if !want_ns.contains(&ns) {
            remove_namespace(&ns)?;
            rec.namespaces.remove(&ns);
            save_record(socket, &t.name, &rec)?;
            done.push(format!("removed namespace {ns}"));
        }
    }
    for net in rec.networks.clone() {
        if !t.networks.iter().any(|n| n.name == net) {
            remove_network(socket, &net)?;
            rec.networks.remove(&net);
            save_record(socket, &t.name, &rec)?;
            done.push(format!("removed network {net}"));
        }
    }

    for n in &t.networks {
        match by_name.get(n.name.as_str()) {
            Some(have) if have.labels.get(LABEL) != Some(&t.name) => {
                return Err(Failure::Usage(format!("network {} exists and was not made by topology {}", n.name, t.name)));
            }
            Some(have) if n.subnet.as_ref().is_some_and(|s| *s != have.subnet) => {
                return Err(Failure::Usage(format!(
                    "network {} has subnet {}, the file says {}: `down` first to change it",
                    n.name,
                    have.subnet,
                    n.subnet.as_deref().unwrap_or("")
                )));
            }
            Some(_) => {}
            None => {
                rec.networks.insert(n.name.clone());
                save_record(socket, &t.name, &rec)?;
                let create = NetworkCreate {
                    name: n.name.clone(),
                    subnet: n.subnet.clone(),
                    internal: n.internal,
                    mtu: n.mtu,
                    labels: [(LABEL.to_string(), t.name.clone())].into(),
                    ..Default::default()
                };
                api(socket, &Call::post(format!("{PREFIX}/networks"), &create))?;
                done.push(format!("created network {}", n.name));
            }
        }
    }

    let mut fresh = BTreeSet::new();
    for c in &t.containers {
        let ns = t.netns(&c.name);
        if !netns_exists(&ns) {
            rec.namespaces.insert(ns.clone());
            save_record(socket, &t.name, &rec)?;
            sh("ip", &["netns", "add", &ns])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            fresh.insert(c.name.clone());
            done.push(format!("made namespace {ns}"));
        } else if !rec.namespaces.contains(&ns) {
            return Err(Failure::Usage(format!("namespace {ns} exists and was not made by topology {}", t.name)));
        }
    }

    let ports: Vec<PortInfo> = decode(&api(socket, &Call::get(format!("{PREFIX}/ports")))?)?;
    for c in &t.containers {
        for (k, l) in c.links.iter().enumerate() {
            let detail: NetworkDetail = decode(&api(socket, &Call::get(format!("{PREFIX}/networks/{}", enc(&l.network))))?)?;
            if k == 0 && write_resolver(&t.netns(&c.name), detail.network.gateway)? {
                done.push(format!("{}: resolver {}", c.name, detail.network.gateway));
            }
            if let Some(have) = detail.endpoint_list.iter().find(|e| e.name == c.name) {
                if l.ip.as_ref().is_some_and(|ip| *ip != have.ip.to_string()) {
                    return Err(Failure::Usage(format!(
                        "{} has {} on {}, the file says {}: an address is not changed in place (`down` first, or take the link out, `up`, put it back)",
                        c.name,
                        have.ip,
                        l.network,
                        l.ip.as_deref().unwrap_or("")
                    )));
                }
            } else {
                rec.endpoints.insert((l.network.clone(), c.name.clone()));
                save_record(socket, &t.name, &rec)?;
                let req = AttachRequest {
                    name: Some(c.name.clone()),
                    netns: Some(format!("/run/netns/{}", t.netns(&c.name))),
                    ip: l.ip.clone(),
                    owner: Some(t.owner()),
                    ..Default::default()
                };
                api(socket, &Call::post(format!("{PREFIX}/networks/{}/endpoints", enc(&l.network)), &req))?;
                done.push(format!("attached {} to {}", c.name, l.network));
            }
            let port = ports.iter().find(|p| p.network == l.network && p.name == c.name);
            let (have_in, have_out) = (port.and_then(|p| p.impair_ingress.clone()), port.and_then(|p| p.impair_egress.clone()));
            let want = l.impair.as_ref().map(|i| i.to_request("")).transpose().map_err(Failure::Usage)?;
            let (want_in, want_out) = match &want {
                Some((i, e, imp)) => (i.then(|| imp.clone()), e.then(|| imp.clone())),
                None => (None, None),
            };
            for (ingress, want, have) in [(true, want_in, have_in), (false, want_out, have_out)] {
                let same = match (&want, &have) {
                    (None, None) => true,
                    (Some(w), Some(h)) => *w == Impairment { seed: w.seed.or(h.impairment.seed), ..h.impairment.clone() },
                    _ => false,
                };
                if same {
                    continue;
                }
                let req =
                    ImpairRequest { target: format!("{}/{}", l.network, c.name), ingress, egress: !ingress, impairment: want.clone() };
                api(socket, &Call::post(format!("{PREFIX}/ports/impair"), &req))?;
                let dir = if ingress { "ingress" } else { "egress" };
                done.push(if want.is_some() {
                    format!("impaired {}/{} {dir}", l.network, c.name)
                } else {
                    format!("cleared {}/{} {dir}", l.network, c.name)
                });
            }
        }
    }

    let logs = record_dir(socket).join(&t.name);
    for c in &t.containers {
        let ns = t.netns(&c.name);
        if fresh.contains(&c.name) {
            for cmd in &c.setup {
                sh("ip", &["netns", "exec", &ns, "sh", "-c", cmd])?;
                done.push(format!("{}: ran {cmd:?}", c.name));
            }
        }
        let Some(run) = &c.run else { continue };
        if rec.pids.get(&c.name).is_some_and(|&p| alive(p)) {
            continue;
        }
        std::fs::create_dir_all(&logs).map_err(|e| Failure::Local(format!("cannot make {}: {e}", logs.display())))?;
        let log = std::fs::File::create(logs.join(format!("{}.log", c.name))).map_err(|e| Failure::Local(e.to_string()))?;
        let err = log.try_clone().map_err(|e| Failure::Local(e.to_string()))?;
        let child = Command::new("setsid")
            .args(["ip", "netns", "exec", &ns, "sh", "-c", run])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Failure::Local(format!("cannot start the command of {}: {e}", c.name)))?;
        // setsid execs (no fork) when it is not a group leader already: the pid is the group's.
        rec.pids.insert(c.name.clone(), child.id());
        save_record(socket, &t.name, &rec)?;
        done.push(format!("{}: started {run:?}", c.name));
    }
    save_record(socket, &t.name, &rec)?;
    Ok(if done.is_empty() {
        format!("topology {}: up to date, nothing changed\n", t.name)
    } else {
        format!("topology {}: {} change(s)\n{}\n", t.name, done.len(), done.join("\n"))
    })
}

/// Where `ip netns exec NS` finds the namespace's own resolv.conf.
fn resolver_dir(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns)
}

/// Points the namespace's resolv.conf (as `ip netns exec` mounts it) at the gateway of its first
/// network, which answers the containers' names; `true` when it changed.
fn write_resolver(ns: &str, gw: std::net::Ipv4Addr) -> Result<bool, Failure> {
    let dir = resolver_dir(ns);
    let want = format!("nameserver {gw}\noptions timeout:1 attempts:2\n");
    if std::fs::read_to_string(dir.join("resolv.conf")).is_ok_and(|s| s == want) {
        return Ok(false);
    }
    let fail = |e: std::io::Error| Failure::Local(format!("cannot write {}: {e}", dir.join("resolv.conf").display()));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    std::fs::write(dir.join("resolv.conf"), want).map_err(fail)?;
    Ok(true)
}

fn remove_namespace(ns: &str) -> Result<(), Failure> {
    if netns_exists(ns) {
        sh("ip", &["netns", "del", ns])?;
    }
    let dir = resolver_dir(ns);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Failure::Local(format!("cannot remove {}: {e}", dir.display())))?;
    }
    Ok(())
}

fn detach(socket: &Path, net: &str, ep: &str) -> Result<(), Failure> {
    match api(socket, &Call::delete(format!("{PREFIX}/networks/{}/endpoints/{}", enc(net), enc(ep)))) {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_network(socket: &Path, net: &str) -> Result<(), Failure> {
    match api(socket, &Call::delete(format!("{PREFIX}/networks/{}?force=true", enc(net)))) {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `down FILE`: removes what `up` made (and only that), as its record says.
///
/// # Errors
/// A file that cannot be read, a record that cannot be read or written, vswitchd refusing. When
/// vswitchd cannot be reached the processes and namespaces still go (its endpoints with them:
/// vswitchd drops endpoints whose namespace is gone when it starts); the networks stay in the
/// record for the next `down`.
pub fn down(socket: &Path, file: &Path) -> Result<String, Failure> {
    let t = Topology::load(file).map_err(Failure::Usage)?;
    let Some(mut rec) = load_record(socket, &t.name)? else {
        return Ok(format!("topology {}: nothing to take down (no record)\n", t.name));
    };
    let mut done = Vec::new();
    for (c, pid) in std::mem::take(&mut rec.pids) {
        stop(pid);
        done.push(format!("stopped the command of {c}"));
    }
    save_record(socket, &t.name, &rec)?;
    let mut unreachable = None;
    for (net, ep) in rec.endpoints.clone() {
        match detach(socket, &net, &ep) {
            Ok(()) => {
                rec.endpoints.remove(&(net.clone(), ep.clone()));
                done.push(format!("detached {ep} from {net}"));
            }
            Err(e @ (Failure::Unreachable { .. } | Failure::Transport { .. })) => {
                unreachable = Some(e);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    save_record(socket, &t.name, &rec)?;
    for ns in rec.namespaces.clone() {
        remove_namespace(&ns)?;
        rec.namespaces.remove(&ns);
        save_record(socket, &t.name, &rec)?;
        done.push(format!("removed namespace {ns}"));
    }
    if unreachable.is_none() {
        for net in rec.networks.clone() {
            match remove_network(socket, &net) {
                Ok(()) => {
                    rec.networks.remove(&net);
                    done.push(format!("removed network {net}"));
                }
                Err(e @ (Failure::Unreachable { .. } | Failure::Transport { .. })) => {
                    unreachable = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(e) = unreachable {
        save_record(socket, &t.name, &rec)?;
        return Err(Failure::Local(format!(
            "{e}; processes and namespaces are gone, networks {:?} stay in the record: run `down` again when vswitchd is back",
            rec.networks
        )));
    }
    let _ = std::fs::remove_file(record_path(socket, &t.name));
    let _ = std::fs::remove_dir_all(record_dir(socket).join(&t.name));
    Ok(format!("topology {}: down, {} change(s)\n{}\n", t.name, done.len(), done.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Topology, String> {
        let t: Topology = toml::from_str(s).map_err(|e| e.to_string())?;
        t.check()?;
        Ok(t)
    }

    #[test]
    fn files_are_checked() {
        let ok = r#"
            name = "wan"
            [[networks]]
            name = "a"
            subnet = "10.1.0.0/24"
            [[containers]]
            name = "c1"
            run = "sleep 100"
            [[containers.links]]
            network = "a"
            ip = "10.1.0.5"
            impair = { delay = "20ms", loss = "1%", loss_burst = 3, direction = "both", seed = 4 }
        "#;
        let t = parse(ok).unwrap();
        assert_eq!(t.netns("c1"), "wan-c1");
        let (i, e, imp) = t.containers[0].links[0].impair.as_ref().unwrap().to_request("x").unwrap();
        assert!(i && e);
        assert_eq!(imp.delay_us, 20_000);
        assert!(matches!(imp.loss, Some(Loss::GilbertElliott { .. })));
        assert!(parse(&ok.replace("network = \"a\"", "network = \"b\"")).unwrap_err().contains("not declared"));
        assert!(parse(&ok.replace("\"1%\"", "\"101%\"")).unwrap_err().contains("impair.loss"));
        assert!(parse(&ok.replace("\"both\"", "\"sideways\"")).unwrap_err().contains("direction"));
        assert!(parse(&ok.replace("name = \"wan\"", "name = \"much-too-long-name\"")).unwrap_err().contains("12"));
        assert!(parse(&ok.replace("run = ", "rum = ")).unwrap_err().contains("unknown field"));
        assert!(parse(&format!("{ok}\n[[containers]]\nname = \"c1\"\n")).unwrap_err().contains("used once"));
    }

    #[test]
    fn the_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/topologies");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Topology::load(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 2, "examples in {}", dir.display());
    }
}
