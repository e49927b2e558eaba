//! Cluster mode's operations: what the cluster front end (`control/front/cluster.rs`) asks
//! for after reading the store, carried out with the same model changes and effects as the
//! API's (networks, tunnel peers, DNS). Nothing here talks to etcd.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use super::Control;
use crate::announce::RemoteName;
use crate::api::{ApiError, ErrorCode, Network, NetworkCreate, PeerAdd};
use crate::control::front::cluster::Cluster;
use crate::control::model::cluster::{same_network, BLOCK_LABEL};
use crate::control::model::{internal, Model};

impl Control {
    /// Hands the control plane its cluster front end (once, at start).
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster front end, when the daemon runs with `--cluster`.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The network this host would make for `req` (checked, subnet, gateway and MTU chosen),
    /// without making it: the model takes it in and gives it back at once.
    ///
    /// # Errors
    /// Whatever `network create` would refuse.
    pub async fn preview_network(&self, req: NetworkCreate) -> Result<Network, ApiError> {
        let mut m = self.model.lock().await;
        let (plan, api) = m.create_network(req, &super::routes::routed())?;
        m.undo_create_network(&plan);
        Ok(api)
    }

    /// The cluster networks made here, with the address block each hands out from.
    pub async fn cluster_networks(&self) -> BTreeMap<String, Ipv4Net> {
        self.model.lock().await.cluster_networks()
    }

    /// The cluster networks made here: block, and how many names other hosts have on it.
    pub async fn cluster_network_rows(&self) -> BTreeMap<String, (Ipv4Net, usize)> {
        let m = self.model.lock().await;
        m.cluster_networks()
            .into_iter()
            .map(|(n, b)| {
                let count = m.remote_name_count(&n);
                (n, (b, count))
            })
            .collect()
    }

    /// Makes the local copy of the cluster's network `def`, handing out addresses from
    /// `block`; a copy that is already there is returned as it is.
    ///
    /// # Errors
    /// A local network of that name that is not the cluster's (`network_exists`), or what
    /// `network create` refuses (a subnet overlapping a local network).
    pub async fn ensure_cluster_network(&self, def: &NetworkCreate, block: Ipv4Net) -> Result<Network, ApiError> {
        if let Ok(local) = self.model.lock().await.network(&def.name) {
            if same_network(&local, def) {
                return Ok(local);
            }
            return Err(ApiError::new(
                ErrorCode::NetworkExists,
                format!(
                    "this host has a network {} of its own (subnet {}) that is not the cluster's (subnet {}): remove or rename it",
                    def.name,
                    local.subnet,
                    def.subnet.as_deref().unwrap_or("?")
                ),
            ));
        }
        let mut req = def.clone();
        req.ip_range = Some(block.to_string());
        req.labels.insert(BLOCK_LABEL.to_string(), block.to_string());
        self.create_network(req).await
    }

    /// Removes the local copy of a cluster network the store no longer has, endpoints and
    /// all. The peers carrying it are taken out first; [`Control::sync_cluster_peers`] adds
    /// them back with the networks that are left.
    ///
    /// # Errors
    /// The datapath or the state file failed.
    pub async fn remove_cluster_network(&self, name: &str) -> Result<(), ApiError> {
        {
            let mut m = self.model.lock().await;
            if !m.cluster_networks().contains_key(name) {
                return Ok(());
            }
            let carrying: Vec<String> =
                m.peers().into_iter().filter(|p| p.networks.iter().any(|n| n == name)).map(|p| p.public_key).collect();
            for key in carrying {
                self.remove_peer_locked(&mut m, &key).await?;
            }
            self.save(&m)?;
        }
        self.remove_network(name, true).await
    }

    /// Makes the tunnel peers of the cluster's networks the hosts in `hosts` (public key,
    /// underlay endpoint), each carrying every cluster network made here: adds the new ones,
    /// re-adds those whose endpoint or networks changed and removes the others. Peers that
    /// carry any network that is not the cluster's are the user's and left alone.
    ///
    /// Returns why a host could not be made a peer, if one could not.
    pub async fn sync_cluster_peers(&self, hosts: &BTreeMap<String, SocketAddr>) -> Vec<String> {
        let mut m = self.model.lock().await;
        let nets: Vec<String> = m.cluster_networks().into_keys().collect();
        let mut problems = Vec::new();
        let mut changed = false;
        for p in m.peers() {
            if p.networks.is_empty() || !p.networks.iter().all(|n| nets.contains(n)) {
                continue;
            }
            let keep = hosts.get(&p.public_key).is_some_and(|ep| p.endpoint == Some(*ep) && p.networks == nets);
            if !keep {
                match self.remove_peer_locked(&mut m, &p.public_key).await {
                    Ok(()) => changed = true,
                    Err(e) => problems.push(format!("peer {}: {}", p.public_key, e.error.message)),
                }
            }
        }
        if !nets.is_empty() {
            let known: Vec<String> = m.peers().into_iter().map(|p| p.public_key).collect();
            for (key, ep) in hosts {
                if known.contains(key) {
                    continue;
                }
                let req = PeerAdd { public_key: key.clone(), endpoint: Some(ep.to_string()), networks: nets.clone() };
                match self.add_peer_locked(&mut m, &req).await {
                    Ok(_) => changed = true,
                    Err(e) => problems.push(format!("peer {key}: {}", e.error.message)),
                }
            }
        }
        if changed {
            if let Err(e) = self.save(&m) {
                problems.push(e.error.message);
            }
            self.push_dns(&m);
            self.announce(&mut m);
        }
        problems
    }

    /// Sets (or clears) the names the host with key `public_key` has on `network`.
    ///
    /// # Errors
    /// The record does not fit the network (nothing changes).
    pub async fn set_cluster_names(&self, network: &str, public_key: &str, names: Option<Vec<RemoteName>>) -> Result<(), String> {
        let mut m = self.model.lock().await;
        if m.set_cluster_names(network, public_key, names)? {
            self.push_dns(&m);
        }
        Ok(())
    }

    /// Our names on each cluster network, as the store should have them.
    pub async fn cluster_local_names(&self) -> BTreeMap<String, Vec<RemoteName>> {
        let m = self.model.lock().await;
        m.cluster_networks()
            .into_keys()
            .map(|n| {
                let names = m.local_names(&n);
                (n, names)
            })
            .collect()
    }

    /// Refuses an attach to a cluster network while the store cannot be reached: the new
    /// container's name could not be published, and its address block may not be ours any
    /// more.
    ///
    /// # Errors
    /// `cluster_unavailable` with the store's last error.
    pub async fn check_cluster_attach(&self, network: &str) -> Result<(), ApiError> {
        let Some(cluster) = self.cluster() else { return Ok(()) };
        if !self.model.lock().await.cluster_networks().contains_key(network) {
            return Ok(());
        }
        cluster.check_available().map(|_| ())
    }

    async fn remove_peer_locked(&self, m: &mut Model, canonical: &str) -> Result<(), ApiError> {
        let (key, canonical) = m.peer_key(canonical)?;
        self.dp.call(move |e| e.remove_peer(key)).await.map_err(internal)?.map_err(internal)?;
        m.remove_peer(&canonical);
        tracing::info!(peer = %canonical, "cluster: tunnel peer removed");
        Ok(())
    }
}
