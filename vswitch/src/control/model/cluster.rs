//! Cluster mode, the I/O-free part: what the shared store (etcd) holds and how its keys are
//! laid out, how an overlay network's subnet is cut into per-host address blocks, and the
//! model changes the cluster front end asks for (names of other hosts, our own names).
//!
//! Keys under the prefix (default `/vswitch`):
//! - `hosts/HOST`: [`HostRecord`], under the host's lease (gone when the host is).
//! - `networks/NAME`: the network's definition, a [`NetworkCreate`] with every choice made
//!   (subnet, gateway, MTU), written once with a create-if-absent transaction.
//! - `blocks/NAME/A.B.C.D-LEN`: the host that owns that address block of the network (no
//!   lease: a host that restarts gets its block, and so its containers' addresses, back).
//! - `names/NAME/HOST`: [`NamesRecord`], the host's names on that network, under its lease.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{b64, check_name, parse_key, Model};
use crate::announce::RemoteName;
use crate::api::{ApiError, ErrorCode, NetworkCreate};
use crate::state::Phase;

/// The label a network made from the cluster's definition carries, with the address block
/// this host hands out from.
pub const BLOCK_LABEL: &str = "vswitch.cluster.block";

/// A host as it registers itself (`hosts/HOST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    pub name: String,
    /// Its tunnel public key, base64.
    pub public_key: String,
    /// Where its tunnel listens on the underlay.
    pub endpoint: SocketAddr,
    /// The etcd lease the record lives under (for `cluster status`'s last-seen time).
    pub lease: i64,
}

/// A host's names on one network (`names/NET/HOST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamesRecord {
    pub public_key: String,
    pub names: Vec<RemoteName>,
}

/// What a key of the store stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Host(String),
    Network(String),
    Block { network: String, block: Ipv4Net },
    Names { network: String, host: String },
}

/// The key layout under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// `prefix` without a trailing `/` (one is removed); empty is refused.
    ///
    /// # Errors
    /// An empty prefix, or one that does not start with `/`.
    pub fn new(prefix: &str) -> Result<Layout, String> {
        let p = prefix.trim_end_matches('/');
        if p.is_empty() || !p.starts_with('/') {
            return Err(format!("cluster prefix {prefix:?} must start with '/' and name something, e.g. /vswitch"));
        }
        Ok(Layout { prefix: p.to_string() })
    }

    /// Everything of the cluster (the watch's prefix), with a trailing `/`.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn host(&self, host: &str) -> String {
        format!("{}/hosts/{host}", self.prefix)
    }
    pub fn network(&self, name: &str) -> String {
        format!("{}/networks/{name}", self.prefix)
    }
    /// Every block of a network, with a trailing `/`.
    pub fn blocks(&self, network: &str) -> String {
        format!("{}/blocks/{network}/", self.prefix)
    }
    pub fn block(&self, network: &str, block: Ipv4Net) -> String {
        format!("{}/blocks/{network}/{}-{}", self.prefix, block.network(), block.prefix_len())
    }
    pub fn names(&self, network: &str, host: &str) -> String {
        format!("{}/names/{network}/{host}", self.prefix)
    }
    /// Every name record of a network, with a trailing `/`.
    pub fn all_names(&self, network: &str) -> String {
        format!("{}/names/{network}/", self.prefix)
    }

    /// What `key` stands for, or `None` for a key of this prefix we do not know (ignored) or
    /// one with a bad name in it.
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let ok = |n: &str| check_name(n, "x").is_ok();
        match parts.as_slice() {
            ["hosts", h] if ok(h) => Some(Key::Host(h.to_string())),
            ["networks", n] if ok(n) => Some(Key::Network(n.to_string())),
            ["blocks", n, b] if ok(n) => {
                let (addr, len) = b.split_once('-')?;
                let block = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
                (block.trunc() == block).then(|| Key::Block { network: n.to_string(), block })
            }
            ["names", n, h] if ok(n) && ok(h) => Some(Key::Names { network: n.to_string(), host: h.to_string() }),
            _ => None,
        }
    }
}

/// The prefix length of a network's per-host blocks: 16 blocks or more, at most 64 addresses
/// each (a /24 gives /28s, a /16 gives /26s), never smaller than a /30.
pub fn block_len(subnet: Ipv4Net) -> u8 {
    (subnet.prefix_len() + 4).clamp(26, 30)
}

/// The blocks of `subnet`, in order.
pub fn blocks(subnet: Ipv4Net) -> Vec<Ipv4Net> {
    let len = block_len(subnet);
    if subnet.prefix_len() >= len {
        return vec![subnet];
    }
    subnet.subnets(len).map(Iterator::collect).unwrap_or_default()
}

/// The order in which `host` tries the free blocks of `subnet`: starting at a place that
/// depends on its name, so hosts joining together seldom race for the same block.
pub fn block_order(subnet: Ipv4Net, host: &str) -> Vec<Ipv4Net> {
    let all = blocks(subnet);
    if all.is_empty() {
        return all;
    }
    let start = (super::overlay_tag(host) as usize) % all.len();
    all[start..].iter().chain(&all[..start]).copied().collect()
}

/// Checks a network definition read from the store or about to be written: an overlay IPv4
/// network whose every choice is made, with no range, IPv6 or aux addresses (blocks replace
/// the range).
///
/// # Errors
/// What is wrong with it.
pub fn check_definition(def: &NetworkCreate) -> Result<Ipv4Net, String> {
    check_name(&def.name, "network").map_err(|e| e.error.message)?;
    if !def.overlay {
        return Err("not an overlay network".into());
    }
    if def.ip_range.is_some() || def.subnet6.is_some() || def.ipv6 || !def.aux_addresses.is_empty() {
        return Err("cluster networks take no --ip-range, IPv6 or aux addresses (each host gets address blocks)".into());
    }
    let subnet: Ipv4Net = def.subnet.as_deref().ok_or("no subnet")?.parse().map_err(|_| "subnet is not an IPv4 CIDR")?;
    if subnet.trunc() != subnet || subnet.prefix_len() > 28 {
        return Err(format!("subnet {subnet} must be a network address with a prefix of /28 or shorter"));
    }
    let gw: Ipv4Addr = def.gateway.as_deref().ok_or("no gateway")?.parse().map_err(|_| "gateway is not an IPv4 address")?;
    if !subnet.contains(&gw) {
        return Err(format!("gateway {gw} is outside {subnet}"));
    }
    if def.mtu.is_none() {
        return Err("no MTU".into());
    }
    Ok(subnet)
}

/// The definition a request makes for the cluster, from the network this host would make
/// for it (`made`: subnet, gateway and MTU chosen).
pub fn definition_of(req: &NetworkCreate, made: &crate::api::Network) -> NetworkCreate {
    NetworkCreate {
        name: req.name.clone(),
        subnet: Some(made.subnet.clone()),
        gateway: Some(made.gateway.to_string()),
        mtu: Some(made.mtu),
        internal: req.internal,
        overlay: true,
        host_loopback: req.host_loopback.clone(),
        labels: req.labels.clone(),
        ..NetworkCreate::default()
    }
}

/// Whether a local network is the cluster's `def` (same subnet, gateway and MTU).
pub fn same_network(local: &crate::api::Network, def: &NetworkCreate) -> bool {
    local.overlay
        && Some(&local.subnet) == def.subnet.as_ref()
        && Some(local.gateway.to_string()) == def.gateway
        && Some(local.mtu) == def.mtu
        && local.labels.contains_key(BLOCK_LABEL)
}

/// A request a front end may not send for a cluster network.
///
/// # Errors
/// `invalid_request` naming the option.
pub fn check_cluster_request(req: &NetworkCreate) -> Result<(), ApiError> {
    let bad = |what: &str| {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("an overlay network of the cluster takes no {what}: every host gets its own address blocks (IPv4 only)"),
        ))
    };
    if req.ip_range.is_some() {
        return bad("--ip-range");
    }
    if req.subnet6.is_some() || req.ipv6 {
        return bad("IPv6 subnet");
    }
    if !req.aux_addresses.is_empty() {
        return bad("--aux-address");
    }
    if req.labels.contains_key(BLOCK_LABEL) {
        return bad(&format!("label {BLOCK_LABEL}"));
    }
    Ok(())
}

impl Model {
    /// The networks made from the cluster's definitions, with the block each hands out from.
    pub fn cluster_networks(&self) -> BTreeMap<String, Ipv4Net> {
        self.networks
            .iter()
            .filter(|(_, n)| n.overlay)
            .filter_map(|(name, n)| Some((name.clone(), n.labels.get(BLOCK_LABEL)?.parse().ok()?)))
            .collect()
    }

    /// How many names other hosts have on `network` here (announced or from the store).
    pub fn remote_name_count(&self, network: &str) -> usize {
        self.remote_names(network).count()
    }

    /// Our attached endpoints' names on `network`, as the cluster publishes them.
    pub fn local_names(&self, network: &str) -> Vec<RemoteName> {
        let Some(net) = self.networks.get(network) else { return Vec::new() };
        net.endpoints
            .values()
            .filter(|e| e.phase == Phase::Attached)
            .map(|e| RemoteName {
                name: e.api.name.clone(),
                aliases: e.api.aliases.clone(),
                v4: vec![e.api.ip],
                v6: e.api.ip6.into_iter().collect(),
            })
            .collect()
    }

    /// Sets (or with `None` clears) what the host with key `public_key` has on `network`, as
    /// read from the store. Returns whether DNS must follow.
    ///
    /// # Errors
    /// A bad key, an unknown network, or names or addresses that do not belong to it (the
    /// record is ignored, nothing changes).
    pub fn set_cluster_names(&mut self, network: &str, public_key: &str, names: Option<Vec<RemoteName>>) -> Result<bool, String> {
        let key = b64(&parse_key(public_key).map_err(|e| e.error.message)?);
        let Some(net) = self.networks.get(network).filter(|n| n.overlay) else {
            return Err(format!("no overlay network {network} here"));
        };
        let Some(names) = names else {
            let removed = self.remote.get_mut(network).and_then(|m| m.remove(&key));
            return Ok(removed.is_some_and(|n| !n.is_empty()));
        };
        let valid = |r: &RemoteName| {
            check_name(&r.name, "name").is_ok()
                && r.aliases.iter().all(|a| check_name(a, "alias").is_ok())
                && r.v4.iter().all(|a| net.pool.subnet().contains(a))
                && r.v6.iter().all(|a| net.pool6.as_ref().is_some_and(|p| p.subnet().contains(a)))
        };
        if names.len() > crate::announce::MAX_ENTRIES || !names.iter().all(valid) {
            return Err(format!("names of {key} on {network}: too many, or names or addresses outside the network"));
        }
        let slot = self.remote.entry(network.to_string()).or_default();
        let changed = slot.get(&key) != Some(&names);
        slot.insert(key, names);
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let l = Layout::new("/vswitch/").unwrap();
        assert_eq!(l.parse(l.host("h1").as_bytes()), Some(Key::Host("h1".into())));
        assert_eq!(l.parse(l.network("ov").as_bytes()), Some(Key::Network("ov".into())));
        let b: Ipv4Net = "10.91.0.16/28".parse().unwrap();
        assert_eq!(l.parse(l.block("ov", b).as_bytes()), Some(Key::Block { network: "ov".into(), block: b }));
        assert_eq!(l.parse(l.names("ov", "h2").as_bytes()), Some(Key::Names { network: "ov".into(), host: "h2".into() }));
        for bad in ["/vswitch/hosts/a/b", "/vswitch/hosts/", "/other/hosts/h1", "/vswitch/blocks/ov/10.0.0.1-28", "/vswitch/x/y"] {
            assert_eq!(l.parse(bad.as_bytes()), None, "{bad}");
        }
        assert!(Layout::new("vswitch").is_err());
        assert!(Layout::new("/").is_err());
    }

    #[test]
    fn blocks_cover_the_subnet_once() {
        let s: Ipv4Net = "10.91.0.0/24".parse().unwrap();
        assert_eq!(block_len(s), 28);
        let all = blocks(s);
        assert_eq!(all.len(), 16);
        let order = block_order(s, "h1");
        assert_eq!(order.len(), 16);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, all);
        assert_eq!(block_len("10.0.0.0/16".parse().unwrap()), 26);
        assert_eq!(blocks("10.0.0.0/28".parse().unwrap()).len(), 4, "/30 blocks at the smallest");
        assert_eq!(blocks("10.0.0.0/30".parse().unwrap()).len(), 1);
    }

    #[test]
    fn definitions_are_checked() {
        let mut d = NetworkCreate {
            name: "ov".into(),
            subnet: Some("10.91.0.0/24".into()),
            gateway: Some("10.91.0.1".into()),
            mtu: Some(1422),
            overlay: true,
            ..Default::default()
        };
        assert!(check_definition(&d).is_ok());
        d.gateway = Some("10.92.0.1".into());
        assert!(check_definition(&d).is_err());
        d.gateway = Some("10.91.0.1".into());
        d.ip_range = Some("10.91.0.0/25".into());
        assert!(check_definition(&d).is_err());
        d.ip_range = None;
        d.subnet = Some("10.91.0.1/24".into());
        assert!(check_definition(&d).is_err());
    }
}
