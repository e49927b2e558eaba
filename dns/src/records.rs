//! The name tables: what each network's endpoints are called, and the indexes `respond` reads.
//!
//! Names are stored as *keys*: the lower-cased wire form of the name without the root label
//! (`\x02c1\x04net1` for `c1.net1.`). A query name is turned into the same form on a stack
//! buffer, so a lookup is one hash of a few bytes and no allocation, and a label that contains a
//! dot (legal on the wire) can never be confused with two labels.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::Name;
use rustc_hash::FxHashMap;

/// The longest key: a wire name is at most 255 bytes including the root label.
pub(crate) const MAX_KEY: usize = 254;

/// One endpoint (container) of a network, as the daemon knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Primary name (the endpoint's name). Answered as `name`, `name.NETWORK` and, when the
    /// network has a domain suffix, `name.SUFFIX`; reverse (PTR) lookups answer the last of
    /// these that exists (`name.SUFFIX.` or else `name.NETWORK.`).
    pub name: String,
    /// Further names, answered like `name` (bare, `.NETWORK`, `.SUFFIX`). Several entries may
    /// share a name or alias: the name then answers the addresses of all of them (round robin).
    pub aliases: Vec<String>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    /// Services this endpoint offers: `_service._proto.NAME` answers SRV records whose target
    /// is this endpoint's primary FQDN.
    pub srv: Vec<Srv>,
}

/// One SRV service of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Srv {
    /// `_service._proto`, for example `_http._tcp` (the two leading labels of the SRV name).
    pub service: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// All names of all networks. Cloning is cheap (one `Arc` per network), so the control side can
/// keep the master copy, change one network and hand the datapath a fresh snapshot.
#[derive(Debug, Clone)]
pub struct Records {
    pub(crate) ttl: u32,
    pub(crate) nets: FxHashMap<Box<str>, Arc<Net>>,
}

impl Records {
    /// An empty table whose answers carry `ttl` seconds (0 is raised to 1: a zero TTL defeats
    /// the stub resolver's cache without making anything fresher).
    pub fn new(ttl: u32) -> Records {
        Records { ttl: ttl.max(1), nets: FxHashMap::default() }
    }

    /// The TTL of every answer.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Replaces every record of `network`. Names that cannot be DNS names (an empty label, a
    /// label over 63 bytes, over 253 bytes in all) are skipped, alone: the rest of the entry
    /// still answers.
    pub fn set_network(&mut self, network: &str, domain_suffix: Option<&str>, entries: Vec<Entry>) {
        let net = Net::build(network, domain_suffix, entries);
        self.nets.insert(network.into(), Arc::new(net));
    }

    /// Forgets `network` and every name in it. Unknown networks are ignored.
    pub fn remove_network(&mut self, network: &str) {
        self.nets.remove(network);
    }

    /// Whether `network` has records (possibly none: an empty network is still known).
    pub fn has_network(&self, network: &str) -> bool {
        self.nets.contains_key(network)
    }

    /// Number of names (keys: bare, `.network`, `.suffix` forms) answered in `network`.
    pub fn name_count(&self, network: &str) -> usize {
        self.nets.get(network).map_or(0, |n| n.names.len())
    }
}

/// One network's indexes.
#[derive(Debug)]
pub(crate) struct Net {
    /// Every endpoint's primary FQDN and addresses: SRV targets and PTR answers point here.
    pub(crate) endpoints: Vec<Endpoint>,
    /// name key → the addresses and services of every entry that claims the name.
    pub(crate) names: FxHashMap<Box<[u8]>, Host>,
    /// address → index in `endpoints` (the first endpoint that has the address).
    pub(crate) ptr: FxHashMap<IpAddr, u32>,
}

#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) fqdn: Name,
    pub(crate) v4: Vec<Ipv4Addr>,
    pub(crate) v6: Vec<Ipv6Addr>,
}

#[derive(Debug, Default)]
pub(crate) struct Host {
    pub(crate) v4: Vec<Ipv4Addr>,
    pub(crate) v6: Vec<Ipv6Addr>,
    pub(crate) srv: Vec<SrvRec>,
}

#[derive(Debug)]
pub(crate) struct SrvRec {
    /// Key of `_service._proto` (two labels).
    pub(crate) service: Box<[u8]>,
    pub(crate) port: u16,
    pub(crate) priority: u16,
    pub(crate) weight: u16,
    /// Index in `Net::endpoints` of the target.
    pub(crate) target: u32,
}

impl Net {
    fn build(network: &str, suffix: Option<&str>, entries: Vec<Entry>) -> Net {
        let net_key = key_from_str(network);
        let suffix_key = suffix.and_then(key_from_str);
        let mut net = Net { endpoints: Vec::with_capacity(entries.len()), names: FxHashMap::default(), ptr: FxHashMap::default() };
        for entry in entries {
            let Some(name) = key_from_str(&entry.name) else {
                continue;
            };
            // The FQDN PTR and SRV answers point at: under the suffix when there is one.
            let fqdn = suffix_key
                .as_deref()
                .or(net_key.as_deref())
                .and_then(|domain| join(&name, domain))
                .and_then(|key| name_from_key(&key))
                .or_else(|| name_from_key(&name));
            let Some(fqdn) = fqdn else { continue };
            let idx = net.endpoints.len() as u32;

            let mut services = Vec::with_capacity(entry.srv.len());
            for s in &entry.srv {
                let Some(service) = key_from_str(&s.service) else {
                    continue;
                };
                if key_labels(&service).count() != 2 || !key_labels(&service).all(|l| l.first() == Some(&b'_')) {
                    continue;
                }
                services.push(SrvRec { service: service.into(), port: s.port, priority: s.priority, weight: s.weight, target: idx });
            }

            let mut keys: Vec<Vec<u8>> = Vec::new();
            let bare = std::iter::once(name).chain(entry.aliases.iter().filter_map(|a| key_from_str(a)));
            for b in bare {
                for domain in [net_key.as_deref(), suffix_key.as_deref()].into_iter().flatten() {
                    if let Some(k) = join(&b, domain) {
                        keys.push(k);
                    }
                }
                keys.push(b);
            }
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                let host = net.names.entry(k.into_boxed_slice()).or_default();
                for a in &entry.v4 {
                    if !host.v4.contains(a) {
                        host.v4.push(*a);
                    }
                }
                for a in &entry.v6 {
                    if !host.v6.contains(a) {
                        host.v6.push(*a);
                    }
                }
                for s in &services {
                    host.srv.push(SrvRec { service: s.service.clone(), ..*s });
                }
            }
            for a in entry.v4.iter().map(|a| IpAddr::V4(*a)).chain(entry.v6.iter().map(|a| IpAddr::V6(*a))) {
                net.ptr.entry(a).or_insert(idx);
            }
            net.endpoints.push(Endpoint { fqdn, v4: entry.v4, v6: entry.v6 });
        }
        net
    }
}

/// The key of a presentation name (`c1`, `C1.Net1.`): lower-cased, one trailing dot allowed.
/// `None` when it cannot be a DNS name.
pub(crate) fn key_from_str(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let mut key = Vec::with_capacity(s.len() + 1);
    for label in s.split('.') {
        let len = label.len();
        if len == 0 || len > 63 {
            return None;
        }
        key.push(len as u8);
        key.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    (key.len() <= MAX_KEY).then_some(key)
}

/// `a` followed by `b`, if the result is still a legal name.
fn join(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    (a.len() + b.len() <= MAX_KEY).then(|| [a, b].concat())
}

/// The labels of a key. Keys are well formed by construction; a malformed one ends the walk.
pub(crate) fn key_labels(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = key;
    std::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let label = tail.get(..len as usize)?;
        rest = &tail[len as usize..];
        Some(label)
    })
}

/// The FQDN a key spells.
pub(crate) fn name_from_key(key: &[u8]) -> Option<Name> {
    Name::from_labels(key_labels(key)).ok()
}
