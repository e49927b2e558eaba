//! The persisted state: networks, endpoints, address leases, static MAC entries and DNS
//! upstreams, in one JSON file in the state directory.
//!
//! Written atomically on every change (a temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a crash leaves either the old or the new file, never a torn one.
//! A file that cannot be read or parsed, or whose contents contradict themselves, is an error
//! the daemon reports and stops on: it never overwrites it (the operator moves it aside).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::Endpoint;
use crate::types::Mac;

/// The file name inside the state directory.
pub const FILE: &str = "state.json";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;

/// Everything the daemon must remember across a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    /// The daemon's IPv6 ULA /48 (chosen at random at the first start).
    #[serde(default)]
    pub ula: Option<ipnet::Ipv6Net>,
    pub next_network: u32,
    pub networks: Vec<NetworkState>,
    /// Tunnel peers (the private key lives in its own 0600 file, `tunnel.key`).
    #[serde(default)]
    pub peers: Vec<PeerState>,
    /// Interface ports (existing interfaces of the daemon's namespace on networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interface_ports: Vec<IfacePortState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IfacePortState {
    pub interface: String,
    /// The network whose uplink it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_of: Option<String>,
    pub members: Vec<MemberState>,
}

/// One network an interface port carries, untagged or with a VLAN id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberState {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerState {
    pub public_key: String,
    pub endpoint: Option<std::net::SocketAddr>,
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkState {
    pub name: String,
    pub id: u32,
    pub pool: ipam::Pool,
    #[serde(default)]
    pub pool6: Option<ipam::Pool6>,
    pub gateway_mac: Mac,
    pub gateway_port: u32,
    pub mtu: u32,
    pub internal: bool,
    #[serde(default)]
    pub overlay: bool,
    /// Host loopback ports reachable at the gateway (egress).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_loopback: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// DNS upstreams set for this network (empty: the daemon's defaults).
    #[serde(default)]
    pub upstreams: Vec<String>,
    pub endpoints: Vec<EndpointState>,
    /// Static MAC table entries: MAC → endpoint name.
    #[serde(default)]
    pub static_macs: BTreeMap<Mac, String>,
    /// The network's 802.1Q VLAN id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The interface joining it to a LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// On an uplink network: the pool address the switch answers at (leased in `pool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ip: Option<std::net::Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointState {
    pub endpoint: Endpoint,
    /// (dev, inode) of the namespace when it was attached: a namespace file that now names a
    /// different namespace (a reused PID, a recreated `/run/netns/NAME`) is not ours.
    pub netns_id: Option<(u64, u64)>,
    pub phase: Phase,
    /// This endpoint gives its container the default route (its first network).
    pub default_route: bool,
}

/// Where an endpoint stands, so a crash at any point is finished or undone on the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recorded before its TAP is made: the next start makes (or reopens) the TAP.
    Attaching,
    Attached,
    /// Recorded before its TAP is removed: the next start removes the TAP and forgets it.
    Detaching,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} is corrupt: {message}; move it aside to start with an empty state (it is never overwritten)")]
    Corrupt { path: PathBuf, message: String },
    #[error("state file {path} has format version {found}; this vswitchd reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// Reads the state file; `Ok(None)` when there is none yet.
///
/// # Errors
/// Unreadable, unparsable, of another version, or inconsistent (see [`Snapshot::check`]).
pub fn load(dir: &Path) -> Result<Option<Snapshot>, StateError> {
    let path = dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    parse(text.as_bytes(), &path).map(Some)
}

/// Parses and checks the contents of a state file (`path` names it in errors); what
/// [`load`] does after reading it. Never panics, whatever the bytes.
///
/// # Errors
/// Unparsable, of another version, or inconsistent (see [`Snapshot::check`]).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Snapshot, StateError> {
    let path = path.to_path_buf();
    let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt { path: path.clone(), message: e.to_string() })?;
    if snap.version != VERSION {
        return Err(StateError::Version { path, found: snap.version });
    }
    snap.check().map_err(|message| StateError::Corrupt { path, message })?;
    Ok(snap)
}

/// Writes the state file atomically, readable by its owner only (0600, in a 0700 directory:
/// it names every container's namespace and addresses).
///
/// # Errors
/// Any filesystem failure; the previous file is then still in place.
pub fn save(dir: &Path, snap: &Snapshot) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut bytes = serde_json::to_vec(snap).map_err(io::Error::other)?;
    bytes.push(b'\n');
    if fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let _ = fs::remove_file(&tmp); // a leftover of a crash may have wider permissions
    {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

impl Snapshot {
    /// Checks that the snapshot does not contradict itself: unique names, ids and ports,
    /// endpoint addresses inside their network's subnets and leased there, no overlapping
    /// subnets.
    ///
    /// # Errors
    /// A message naming the first contradiction found.
    pub fn check(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for (i, n) in self.networks.iter().enumerate() {
            if !names.insert(&n.name) {
                return Err(format!("network {} appears twice", n.name));
            }
            if !ids.insert(n.id) || n.id >= self.next_network {
                return Err(format!("network {} has a duplicate or out-of-range id {}", n.name, n.id));
            }
            if !ports.insert(n.gateway_port) {
                return Err(format!("port {} is used twice", n.gateway_port));
            }
            for other in &self.networks[..i] {
                let (a, b) = (n.pool.subnet(), other.pool.subnet());
                if a.contains(&b.network()) || b.contains(&a.network()) {
                    return Err(format!("networks {} and {} overlap", other.name, n.name));
                }
            }
            let mut ep_names = BTreeSet::new();
            for e in &n.endpoints {
                let ep = &e.endpoint;
                if !ep_names.insert(&ep.name) {
                    return Err(format!("endpoint {} appears twice in network {}", ep.name, n.name));
                }
                if !ports.insert(ep.port.0) {
                    return Err(format!("port {} is used twice", ep.port.0));
                }
                if ep.network != n.name {
                    return Err(format!("endpoint {} is filed under {} but names network {}", ep.name, n.name, ep.network));
                }
                if n.pool.check_assignable(ep.ip).is_err() || !n.pool.is_used(ep.ip) {
                    return Err(format!("endpoint {}'s address {} is not leased in {}", ep.name, ep.ip, n.pool.subnet()));
                }
                if let Some(a6) = ep.ip6 {
                    if !n.pool6.as_ref().is_some_and(|p| p.subnet().contains(&a6)) {
                        return Err(format!("endpoint {}'s address {a6} is outside the network's IPv6 subnet", ep.name));
                    }
                }
            }
            // More leases than endpoints is not a contradiction: `ipam gc` releases orphans.
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vswitch-state-test-{}-{}", std::process::id(), rand_suffix()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn net(name: &str, id: u32, cidr: &str) -> NetworkState {
        NetworkState {
            name: name.into(),
            id,
            pool: ipam::Pool::new(cidr.parse().unwrap(), None).unwrap(),
            pool6: None,
            gateway_mac: Mac([2, 0x56, 0, 0, 0, id as u8]),
            gateway_port: id,
            mtu: 1500,
            internal: false,
            overlay: false,
            host_loopback: Vec::new(),
            labels: BTreeMap::new(),
            upstreams: Vec::new(),
            endpoints: Vec::new(),
            static_macs: BTreeMap::new(),
            vlan: None,
            uplink: None,
            service_ip: None,
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let d = dir();
        assert!(load(&d).unwrap().is_none());
        let snap = Snapshot {
            version: VERSION,
            ula: None,
            peers: Vec::new(),
            interface_ports: Vec::new(),
            next_network: 2,
            networks: vec![net("a", 0, "10.1.0.0/24"), net("b", 1, "10.2.0.0/24")],
        };
        save(&d, &snap).unwrap();
        assert_eq!(load(&d).unwrap().unwrap(), snap);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn state_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        // A file of an older version, world-readable, and a stale temporary file.
        fs::write(d.join(FILE), "{}").unwrap();
        fs::set_permissions(d.join(FILE), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(d.join(format!(".{FILE}.tmp")), "x").unwrap();
        let snap = Snapshot { version: VERSION, ..Snapshot::default() };
        save(&d, &snap).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.join(FILE)), 0o600);
        assert_eq!(mode(&d), 0o700);
        assert_eq!(load(&d).unwrap().unwrap(), snap);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_files_are_errors_and_left_alone() {
        let d = dir();
        for bad in ["{", "[]", r#"{"version":1,"next_network":0,"networks":[],"extra":1}"#, "\u{0}\u{1}"] {
            fs::write(d.join(FILE), bad).unwrap();
            assert!(matches!(load(&d), Err(StateError::Corrupt { .. })), "{bad}");
            assert_eq!(fs::read_to_string(d.join(FILE)).unwrap(), bad, "never rewritten");
        }
        fs::write(d.join(FILE), r#"{"version":9,"next_network":0,"networks":[]}"#).unwrap();
        assert!(matches!(load(&d), Err(StateError::Version { found: 9, .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn contradictions_are_caught() {
        let mut s = Snapshot {
            version: VERSION,
            ula: None,
            peers: Vec::new(),
            interface_ports: Vec::new(),
            next_network: 2,
            networks: vec![net("a", 0, "10.1.0.0/24"), net("a", 1, "10.2.0.0/24")],
        };
        assert!(s.check().unwrap_err().contains("twice"));
        s.networks[1].name = "b".into();
        s.networks[1].pool = ipam::Pool::new("10.1.0.0/16".parse().unwrap(), None).unwrap();
        assert!(s.check().unwrap_err().contains("overlap"));
        s.networks[1].pool = ipam::Pool::new("10.2.0.0/24".parse().unwrap(), None).unwrap();
        s.check().unwrap();
    }
}
