//! Tunnel peers and the names they announce.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::errors::{invalid, tunnel_off};
use super::{b64, check_name, overlay_tag, parse_key, Model, PeerEntry};
use crate::announce::{self, RemoteName};
use crate::api::{ApiError, ErrorCode, PeerAdd};
use crate::datapath::overlay::PeerNetwork;
use crate::state::Phase;
use crate::types::NetworkId;

/// A peer the model took in: what the tunnel must be told.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    pub key: [u8; 32],
    /// The key in canonical base64.
    pub canonical: String,
    pub endpoint: Option<SocketAddr>,
    pub networks: Vec<PeerNetwork>,
}

/// A peer as the model knows it (the tunnel adds what it measured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    pub networks: Vec<String>,
}

impl Model {
    /// Validates a peer and takes it in, with a port per network it carries.
    ///
    /// # Errors
    /// The tunnel is off, a bad key or endpoint, a known peer, no network or one that is not an
    /// overlay network.
    pub fn add_peer(&mut self, req: &PeerAdd) -> Result<PeerPlan, ApiError> {
        if !self.cfg.tunnel {
            return Err(tunnel_off());
        }
        let key = parse_key(&req.public_key)?;
        let canonical = b64(&key);
        if self.peers.contains_key(&canonical) {
            return Err(ApiError::new(ErrorCode::EndpointExists, format!("peer {canonical} exists; remove it first")));
        }
        let endpoint = req
            .endpoint
            .as_deref()
            .map(|e| {
                e.parse::<SocketAddr>().map_err(|_| ApiError::new(ErrorCode::InvalidAddress, format!("endpoint {e:?} is not IP:PORT")))
            })
            .transpose()?;
        if req.networks.is_empty() {
            return Err(invalid("name at least one overlay network the peer shares"));
        }
        for name in &req.networks {
            if !self.net(name)?.overlay {
                return Err(invalid(format!("network {name} is not an overlay network (create it with --overlay to span hosts)")));
            }
        }
        let mut ports = Vec::new();
        let mut networks = Vec::new();
        for name in &req.networks {
            let (id, mtu) = (self.networks[name].id, self.networks[name].mtu);
            let port = self.ports.take();
            ports.push((name.clone(), port));
            networks.push(PeerNetwork { network: id, tag: overlay_tag(name), port, mtu });
        }
        self.peers.insert(canonical.clone(), PeerEntry { endpoint, networks: ports });
        Ok(PeerPlan { key, canonical, endpoint, networks })
    }

    /// Forgets a peer, its ports and the names it announced. Returns whether it was known.
    pub fn remove_peer(&mut self, canonical: &str) -> bool {
        let Some(p) = self.peers.remove(canonical) else { return false };
        for (_, port) in p.networks {
            self.ports.give_back(port);
        }
        for names in self.remote.values_mut() {
            names.remove(canonical);
        }
        self.assembly.retain(|(_, peer), _| peer != canonical);
        true
    }

    /// The key of a known peer, given in any base64 form.
    ///
    /// # Errors
    /// A bad key, or no such peer.
    pub fn peer_key(&self, key: &str) -> Result<([u8; 32], String), ApiError> {
        let key = parse_key(key)?;
        let canonical = b64(&key);
        if !self.peers.contains_key(&canonical) {
            return Err(ApiError::new(ErrorCode::NotFound, format!("no tunnel peer {canonical}")));
        }
        Ok((key, canonical))
    }

    pub fn peers(&self) -> Vec<PeerRow> {
        self.peers
            .iter()
            .map(|(k, p)| PeerRow {
                public_key: k.clone(),
                endpoint: p.endpoint,
                networks: p.networks.iter().map(|(n, _)| n.clone()).collect(),
            })
            .collect()
    }

    pub fn has_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    /// Our names of every overlay network some peer carries, as announcement frames, under a
    /// new generation (`now_ms`, or one past the last if the clock went back).
    pub fn announcements(&mut self, now_ms: u64) -> Vec<(NetworkId, Vec<Vec<u8>>)> {
        if self.peers.is_empty() {
            return Vec::new();
        }
        self.announced = now_ms.max(self.announced + 1);
        let mut out = Vec::new();
        for (name, net) in &self.networks {
            if !net.overlay || !self.peers.values().any(|p| p.networks.iter().any(|(n, _)| n == name)) {
                continue;
            }
            let names: Vec<RemoteName> = net
                .endpoints
                .values()
                .filter(|e| e.phase == Phase::Attached)
                .map(|e| RemoteName {
                    name: e.api.name.clone(),
                    aliases: e.api.aliases.clone(),
                    v4: vec![e.api.ip],
                    v6: e.api.ip6.into_iter().collect(),
                })
                .collect();
            out.push((net.id, announce::frames(net.gw_mac, self.announced, &names)));
        }
        out
    }

    /// Takes one announcement chunk from peer `key` on the network tagged `tag`: checks it
    /// against what that peer may speak for, and replaces the peer's names once the whole
    /// generation is in. Returns true when the names changed (DNS must follow).
    ///
    /// # Errors
    /// Why the chunk was refused (for a debug log; a refused chunk changes nothing).
    pub fn receive_announcement(&mut self, key: &[u8; 32], tag: u32, chunk: announce::Chunk) -> Result<bool, String> {
        let peer = b64(key);
        let Some(network) = self.networks.iter().find(|(n, net)| net.overlay && overlay_tag(n) == tag).map(|(n, _)| n.clone()) else {
            return Err("no overlay network with that tag".into());
        };
        if !self.peers.get(&peer).is_some_and(|p| p.networks.iter().any(|(n, _)| *n == network)) {
            return Err(format!("peer {peer} does not carry network {network}"));
        }
        let net = &self.networks[&network];
        let valid = |r: &RemoteName| {
            check_name(&r.name, "name").is_ok()
                && r.aliases.iter().all(|a| check_name(a, "alias").is_ok())
                && r.v4.iter().all(|a| net.pool.subnet().contains(a))
                && r.v6.iter().all(|a| net.pool6.as_ref().is_some_and(|p| p.subnet().contains(a)))
        };
        if !chunk.entries.iter().all(valid) {
            return Err(format!("announcement from {peer} on {network} with names or addresses outside the network"));
        }
        let Some(names) = self.assembly.entry((network.clone(), peer.clone())).or_default().add(chunk) else {
            return Ok(false);
        };
        if names.len() > announce::MAX_ENTRIES {
            return Err(format!("announcement from {peer} on {network} too large ({} names)", names.len()));
        }
        let changed = self.remote.get(&network).and_then(|m| m.get(&peer)) != Some(&names);
        self.remote.entry(network).or_default().insert(peer, names);
        Ok(changed)
    }

    /// Names peers announced for `network`, by peer.
    pub(super) fn remote_names(&self, network: &str) -> impl Iterator<Item = &RemoteName> {
        self.remote.get(network).into_iter().flat_map(BTreeMap::values).flatten()
    }

    /// Checks that the tunnel runs and no peer is set (they know this host's key).
    ///
    /// # Errors
    /// The tunnel is off, or peers are set.
    pub fn check_rekey(&self) -> Result<(), ApiError> {
        if !self.cfg.tunnel {
            return Err(tunnel_off());
        }
        if !self.peers.is_empty() {
            return Err(invalid("remove every tunnel peer before changing this host's key (they know the old one)"));
        }
        Ok(())
    }
}
