//! `vswitch-cni`: a CNI plugin (spec 1.1.0; configs of 0.3.x, 0.4.0 and 1.0.0 get their own
//! result layout) that is a client of vswitchd's API, like `vswitchctl`.
//!
//! Every endpoint it makes carries the owner `cni/CONTAINER_ID/IFNAME`, so DEL, CHECK and GC
//! find it again after any restart of either side, and GC never touches an endpoint made by
//! `vswitchctl` (no owner) or by another plugin. The CNI side (environment, stdin, version
//! negotiation, result layouts, error results) is `rscni-plugin`'s; this file turns each verb
//! into API calls.
//!
//! The plugin's own keys in the network configuration: `network` (the vswitch network; default
//! the configuration's `name`) and `socket` (vswitchd's control socket; default
//! /run/vswitch/vswitchd.sock). Put both in the conflist: runtimes call DEL with a minimal
//! environment.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rscni_plugin::cni::Cni;
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, CNIResult, Dns, Interface, IpConfig, NetConf, PortMapping, Protocol, Route};
use serde_json::{json, Value};
use vswitch::api::{AttachRequest, Endpoint, Network, NetworkDetail, Proto, PublishRule, PREFIX};
use vswitch::Mac;

use crate::client::{self, enc, Call, SYSTEM_SOCKET};
use crate::error::Failure;

/// Owners of endpoints this plugin made start with this.
pub const OWNER_PREFIX: &str = "cni/";
/// The plugin's error code for a request vswitchd refused (its own code is in `details`).
pub const CODE_REFUSED: u32 = 100;

/// A ready conflist for `network` (what `vswitchctl cni conflist` prints).
pub fn conflist(network: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "vswitch-cni",
            "network": network,
            "socket": socket,
            "capabilities": {"portMappings": true, "aliases": true, "ips": true, "mac": true, "dns": true}
        }]
    })
}

/// The plugin: each verb of the spec as API calls.
#[derive(Debug, Default)]
pub struct VswitchCni;

/// What one call works on.
struct Target {
    network: String,
    socket: PathBuf,
}

impl Target {
    fn of(conf: &NetConf) -> Target {
        let network = conf.custom.get("network").and_then(Value::as_str).unwrap_or(&conf.name).to_string();
        let socket = conf.custom.get("socket").and_then(Value::as_str).map_or_else(|| PathBuf::from(SYSTEM_SOCKET), PathBuf::from);
        Target { network, socket }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: String) -> Result<T, Failure> {
        client::fetch(&self.socket, &Call::get(path))
    }

    fn network(&self) -> Result<NetworkDetail, Failure> {
        self.get(format!("{PREFIX}/networks/{}", enc(&self.network)))
    }

    /// The endpoints of the network that `owner` made.
    fn owned(&self, owner: impl Fn(&str) -> bool) -> Result<Vec<Endpoint>, Failure> {
        Ok(self.network()?.endpoint_list.into_iter().filter(|e| e.owner.as_deref().is_some_and(&owner)).collect())
    }

    /// The path under which vswitchd can open the namespace that is `netns` here.
    ///
    /// Rootless podman runs the plugin in a mount namespace of its own (its "rootless-netns")
    /// and bind-mounts each container's namespace at `$XDG_RUNTIME_DIR/netns/netns-ID` in the
    /// mount namespace of its pause process only: from vswitchd's mount namespace that path is
    /// an empty file. So when vswitchd runs rootless and its helper (`/proc/HELPER/root`, in
    /// vswitchd's mount namespace) sees something else at that path, the namespace is named
    /// through podman's pause process, `/proc/PAUSE/root/PATH` (pid from
    /// `$XDG_RUNTIME_DIR/libpod/tmp/pause.pid`), which lives as long as podman's user namespace
    /// and so serves later CHECKs and vswitchd's restarts too. Otherwise `netns` as it is.
    fn netns_for_daemon(&self, netns: &Path) -> Result<PathBuf, Error> {
        let Ok(here) = ns_identity(netns) else { return Ok(netns.to_path_buf()) };
        let Ok(v) = self.get::<vswitch::api::Version>(format!("{PREFIX}/version")) else { return Ok(netns.to_path_buf()) };
        let (true, Some(helper)) = (v.rootless, v.userns_pid) else { return Ok(netns.to_path_buf()) };
        if ns_identity(&under_root(helper, netns)).ok() == Some(here) {
            return Ok(netns.to_path_buf());
        }
        for pause in pause_pids(netns) {
            let path = under_root(pause, netns);
            if ns_identity(&path).ok() == Some(here) {
                return Ok(path);
            }
        }
        Err(Error::InvalidNetNS(format!(
            "{} is not visible from vswitchd's mount namespace (it shows a different file there), and no podman pause \
             process ($XDG_RUNTIME_DIR/libpod/tmp/pause.pid) shows it",
            netns.display()
        )))
    }

    fn detach(&self, ep: &Endpoint) -> Result<(), Failure> {
        let path = format!("{PREFIX}/networks/{}/endpoints/{}", enc(&self.network), enc(&ep.name));
        match client::fetch::<Value>(&self.socket, &Call::delete(path)) {
            // Gone meanwhile is as good as detached.
            Err(Failure::Api { code, .. }) if code == "endpoint_not_found" => Ok(()),
            other => other.map(drop),
        }
    }
}

/// The device and inode of the file at `path` (for a namespace: its identity).
fn ns_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// `/proc/PID/root/PATH`: `path` as process `pid` sees it (its mount namespace and root).
fn under_root(pid: u32, path: &Path) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/{pid}/root"));
    p.push(path.strip_prefix("/").unwrap_or(path));
    p
}

/// Pids of podman pause processes that may hold `netns`'s mount: from
/// `$XDG_RUNTIME_DIR/libpod/tmp/pause.pid`, and from `libpod/tmp/pause.pid` beside the
/// directory holding `netns` (podman's rootless namespaces are `$XDG_RUNTIME_DIR/netns/...`).
fn pause_pids(netns: &Path) -> Vec<u32> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| d.is_absolute()).into_iter().collect();
    dirs.extend(netns.parent().and_then(Path::parent).map(Path::to_path_buf));
    let mut pids: Vec<u32> =
        dirs.iter().filter_map(|d| std::fs::read_to_string(d.join("libpod/tmp/pause.pid")).ok()?.trim().parse().ok()).collect();
    pids.dedup();
    pids
}

fn owner_of(args: &Args) -> Result<String, Error> {
    let cid = args.container_id().ok_or_else(|| Error::missing_env(&["CNI_CONTAINERID"]))?;
    let ifname = args.ifname().ok_or_else(|| Error::missing_env(&["CNI_IFNAME"]))?;
    Ok(format!("{OWNER_PREFIX}{cid}/{ifname}"))
}

impl Cni for VswitchCni {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let conf = args.config();
        let t = Target::of(conf);
        let owner = owner_of(&args)?;
        let netns = args.netns().ok_or_else(|| Error::missing_env(&["CNI_NETNS"]))?;
        let net = t.network().map_err(|f| failure(&t, f))?;
        // A repeated ADD (a runtime retrying) gets the endpoint it already has.
        if let Some(ep) = net.endpoint_list.iter().find(|e| e.owner.as_deref() == Some(owner.as_str())) {
            return Ok(result(&net.network, ep, netns));
        }
        let seen = t.netns_for_daemon(netns)?;
        let req = attach_request(&args, conf, &t.network, &seen, owner)?;
        let ep: Endpoint = client::fetch(&t.socket, &Call::post(format!("{PREFIX}/networks/{}/endpoints", enc(&t.network)), &req))
            .map_err(|f| failure(&t, f))?;
        if let Err(e) = publish(&t, &ep, conf) {
            // All or nothing: a port that cannot be published takes the endpoint back.
            let _ = t.detach(&ep);
            return Err(e);
        }
        Ok(result(&net.network, &ep, netns))
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        let t = Target::of(args.config());
        let owner = owner_of(&args)?;
        let owned = match t.owned(|o| o == owner) {
            Ok(v) => v,
            // The network is gone, so is everything on it.
            Err(Failure::Api { code, .. }) if code == "network_not_found" => return Ok(()),
            Err(f) => return Err(failure(&t, f)),
        };
        for ep in &owned {
            t.detach(ep).map_err(|f| failure(&t, f))?;
        }
        Ok(())
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let conf = args.config();
        let t = Target::of(conf);
        let owner = owner_of(&args)?;
        let netns = args.netns().ok_or_else(|| Error::missing_env(&["CNI_NETNS"]))?;
        let owned = t.owned(|o| o == owner).map_err(|f| failure(&t, f))?;
        let ep = owned.first().ok_or_else(|| Error::NotExist(format!("no endpoint of {owner} on network {}", t.network)))?;
        if Path::new(&ep.netns) != netns && Path::new(&ep.netns) != t.netns_for_daemon(netns)? {
            return Err(Error::NotExist(format!("endpoint {} is in {}, not in {}", ep.name, ep.netns, netns.display())));
        }
        let live: Vec<IpAddr> = std::iter::once(IpAddr::V4(ep.ip)).chain(ep.ip6.map(IpAddr::V6)).collect();
        if let Some(prev) = &conf.prev_result {
            for ip in &prev.ips {
                if !live.contains(&ip.address.addr()) {
                    return Err(Error::Custom(
                        CODE_REFUSED,
                        "address mismatch".into(),
                        format!("{} is not an address of {}", ip.address, ep.name),
                    ));
                }
            }
        }
        // The daemon checks that the interface is still in that namespace with its addresses.
        let path = format!("{PREFIX}/networks/{}/endpoints/{}/check", enc(&t.network), enc(&ep.name));
        client::fetch::<Value>(&t.socket, &Call::get(path)).map(drop).map_err(|f| failure(&t, f))
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        let t = Target::of(args.config());
        match t.network() {
            Ok(_) => Ok(()),
            Err(f @ Failure::Api { .. }) => Err(Error::PluginNotAvailable(format!("{f}"))),
            Err(f) => Err(Error::PluginNotAvailable(format!("vswitchd does not answer: {f}"))),
        }
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let conf = args.config();
        let t = Target::of(conf);
        let valid: BTreeSet<String> =
            conf.valid_attachments.iter().flatten().map(|a| format!("{OWNER_PREFIX}{}/{}", a.container_id, a.ifname)).collect();
        let stale = t.owned(|o| o.starts_with(OWNER_PREFIX) && !valid.contains(o)).map_err(|f| failure(&t, f))?;
        // Best effort: one that cannot be removed does not keep the others.
        let mut failed = None;
        for ep in &stale {
            if let Err(f) = t.detach(ep) {
                failed = Some(failure(&t, f));
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// The attach request of an ADD: the runtime's capabilities (`ips`, `mac`, `aliases`) and
/// CNI_ARGS (`IP=`, `MAC=`, `K8S_POD_NAME=`).
fn attach_request(args: &Args, conf: &NetConf, network: &str, netns: &Path, owner: String) -> Result<AttachRequest, Error> {
    let cni_args = parse_cni_args(args.args().unwrap_or(""));
    let rt = conf.runtime_config.as_ref().map(|r| &r.custom);
    let rt_str = |key: &str| rt.and_then(|c| c.get(key));
    let ip = rt_str("ips")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().filter_map(Value::as_str).find(|s| !s.contains(':')))
        .map(|s| s.split('/').next().unwrap_or(s).to_string())
        .or_else(|| cni_args.iter().find(|(k, _)| k == "IP").map(|(_, v)| v.clone()));
    let mac = rt_str("mac")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| cni_args.iter().find(|(k, _)| k == "MAC").map(|(_, v)| v.clone()));
    let mac = mac.map(|m| m.parse::<Mac>().map_err(|e| Error::InvalidNetworkConfig(format!("MAC {m:?}: {e}")))).transpose()?;
    let cid = args.container_id().map(ToString::to_string).unwrap_or_default();
    let name = cni_args
        .iter()
        .find(|(k, _)| k == "K8S_POD_NAME")
        .map(|(_, v)| sanitize(v))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| sanitize(&cid[..cid.len().min(12)]));
    // runtimeConfig.aliases is keyed by the CNI network's name.
    let mut aliases: Vec<String> = rt_str("aliases")
        .and_then(|a| a.get(&conf.name).or_else(|| a.get(network)))
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).map(sanitize).collect())
        .unwrap_or_default();
    aliases.retain(|a| !a.is_empty() && *a != name);
    aliases.sort();
    aliases.dedup();
    Ok(AttachRequest {
        name: Some(name),
        netns: Some(netns.display().to_string()),
        ifname: args.ifname().map(ToString::to_string),
        ip,
        mac,
        aliases,
        owner: Some(owner),
        ..Default::default()
    })
}

/// `portMappings` as publications (the client's own address is kept, as for any vswitch
/// publication). SCTP is refused: vswitch publishes TCP and UDP.
fn publish(t: &Target, ep: &Endpoint, conf: &NetConf) -> Result<(), Error> {
    let maps: &[PortMapping] = conf.runtime_config.as_ref().map_or(&[], |r| &r.port_mappings);
    for m in maps {
        let proto = match m.protocol {
            None | Some(Protocol::Tcp) => Proto::Tcp,
            Some(Protocol::Udp) => Proto::Udp,
            Some(Protocol::Sctp) => return Err(Error::UnsupportedNetworkConfiguration("SCTP port mappings are not supported".into())),
        };
        let port = |p: u32| u16::try_from(p).ok().filter(|p| *p != 0);
        let (Some(host_port), Some(container_port)) = (port(m.host_port), port(m.container_port)) else {
            return Err(Error::InvalidNetworkConfig(format!("port mapping {}:{} is out of range", m.host_port, m.container_port)));
        };
        let host_ip = m.custom.get("hostIP").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("0.0.0.0");
        let host_addr = host_ip
            .parse()
            .map_err(|_| Error::UnsupportedNetworkConfiguration(format!("hostIP {host_ip:?}: vswitch publishes on IPv4 addresses")))?;
        let rule = PublishRule { proto, host_addr, host_port, host_port_end: None, container_port };
        let path = format!("{PREFIX}/networks/{}/endpoints/{}/publish", enc(&t.network), enc(&ep.name));
        client::fetch::<Value>(&t.socket, &Call::post(path, &rule)).map_err(|f| failure(t, f))?;
    }
    Ok(())
}

/// The ADD result: the interface in its sandbox, its addresses with the gateway, the default
/// route(s), and the gateway as nameserver.
fn result(net: &Network, ep: &Endpoint, netns: &Path) -> CNIResult {
    let mut ips = vec![IpConfig {
        interface: Some(0),
        address: ipnet::IpNet::new(IpAddr::V4(ep.ip), ep.prefix_len).unwrap_or_else(|_| ipnet::IpNet::from(IpAddr::V4(ep.ip))),
        gateway: Some(IpAddr::V4(net.gateway)),
    }];
    let mut routes = vec![default_route(ipnet::IpNet::V4(ipnet::Ipv4Net::default()), IpAddr::V4(net.gateway))];
    if let (Some(ip6), Some(gw6), Some(prefix)) =
        (ep.ip6, net.gateway6, net.subnet6.as_deref().and_then(|s| s.split('/').nth(1)?.parse().ok()))
    {
        ips.push(IpConfig {
            interface: Some(0),
            address: ipnet::IpNet::new(IpAddr::V6(ip6), prefix).unwrap_or(IpAddr::V6(ip6).into()),
            gateway: Some(IpAddr::V6(gw6)),
        });
        routes.push(default_route(ipnet::IpNet::V6(ipnet::Ipv6Net::default()), IpAddr::V6(gw6)));
    }
    CNIResult {
        interfaces: vec![Interface {
            name: ep.ifname.clone(),
            mac: ep.mac.to_string(),
            mtu: Some(net.mtu),
            sandbox: Some(netns.display().to_string()),
            socket_path: None,
            pci_id: None,
        }],
        ips,
        routes,
        dns: Some(Dns { nameservers: vec![net.gateway.to_string()], domain: None, search: None, options: None }),
    }
}

fn default_route(dst: ipnet::IpNet, gw: IpAddr) -> Route {
    Route { dst, gw: Some(gw), mtu: None, advmss: None, priority: None, table: None, scope: None }
}

/// `K=V;K=V` pairs of CNI_ARGS.
fn parse_cni_args(s: &str) -> Vec<(String, String)> {
    s.split(';').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

/// A name vswitch accepts (`[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`, no empty DNS label) made from
/// what a runtime calls the container.
fn sanitize(s: &str) -> String {
    let mapped: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '-' }).collect();
    let labels: Vec<&str> = mapped.split('.').filter(|l| !l.is_empty()).collect();
    let joined = labels.join(".");
    let trimmed = joined.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    trimmed.chars().take(63).collect::<String>().trim_end_matches('.').to_string()
}

/// A failed API call as the spec's error: vswitchd not answering is "try again later" (11), a
/// namespace it cannot use is 8, an unknown network is 7; anything else vswitchd refused is
/// [`CODE_REFUSED`] with vswitchd's own code in the details.
fn failure(t: &Target, f: Failure) -> Error {
    match f {
        Failure::Api { code, message, .. } => match code.as_str() {
            "netns_not_found" => Error::InvalidNetNS(format!("{code}: {message}")),
            "network_not_found" => Error::InvalidNetworkConfig(format!("{code}: {message}")),
            _ => Error::Custom(CODE_REFUSED, message.clone(), format!("{code}: {message}")),
        },
        Failure::Unreachable { .. } | Failure::Transport { .. } | Failure::NotASocket { .. } => {
            Error::TryAgainLater(format!("vswitchd at {} does not answer: {f}", t.socket.display()))
        }
        other => Error::Custom(CODE_REFUSED + 1, "cannot use vswitchd".into(), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_runtimes() {
        assert_eq!(sanitize("web_1"), "web_1");
        assert_eq!(sanitize("my pod/x"), "my-pod-x");
        assert_eq!(sanitize("..a..b."), "a.b");
        assert_eq!(sanitize(&"x".repeat(80)).len(), 63);
        assert_eq!(sanitize("-_-"), "");
    }

    #[test]
    fn cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.88.0.9");
        assert_eq!(a[1], ("K8S_POD_NAME".to_string(), "web".to_string()));
        assert_eq!(a.len(), 3);
        assert!(parse_cni_args("").is_empty());
    }

    #[test]
    fn the_conflist_names_network_and_socket() {
        let c = conflist("vsw", Path::new("/run/x.sock"));
        assert_eq!(c["plugins"][0]["type"], "vswitch-cni");
        assert_eq!(c["plugins"][0]["socket"], "/run/x.sock");
        assert_eq!(c["plugins"][0]["capabilities"]["portMappings"], true);
    }
}
