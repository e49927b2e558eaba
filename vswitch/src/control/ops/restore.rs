//! Bringing back what the state file describes after a restart.

use super::Control;
use crate::api::PeerAdd;
use crate::control::model::AttachPlan;
use crate::state::{Phase, Snapshot};
use crate::sys::NetnsRef;

impl Control {
    /// Brings back networks, then every endpoint whose namespace still exists (its TAP
    /// reopened, or made again), dropping the others and finishing interrupted detaches; then
    /// static MAC entries and tunnel peers. Returns one line per thing dropped.
    ///
    /// # Errors
    /// When the datapath refuses a network of the snapshot, or the result cannot be saved.
    pub async fn restore(&self, snap: Snapshot) -> Result<Vec<String>, String> {
        let mut m = self.model.lock().await;
        let mut report = Vec::new();
        m.restore_globals(snap.next_network, snap.ula);
        for n in &snap.networks {
            let plan = m.restore_network(n);
            self.add_network_to_datapath(&plan).await.map_err(|e| format!("network {}: {}", n.name, e.error.message))?;
        }
        for n in snap.networks.clone() {
            let network = n.name;
            for e in n.endpoints {
                let (name, netns) = (e.endpoint.name.clone(), NetnsRef::Path(e.endpoint.netns.clone().into()));
                let found = crate::sys::netns::netns_id(&netns).ok();
                // A Docker sandbox is recorded before dockerd makes it (no identity then); its
                // path names one sandbox only (a random id under dockerd's exec-root).
                let docker_sandbox = e.netns_id.is_none() && crate::control::model::docker::is_docker(&e.endpoint);
                let alive = found.is_some() && (found == e.netns_id || docker_sandbox);
                let why = match (e.phase, alive) {
                    (Phase::Detaching, _) => "its detach was interrupted".to_string(),
                    (_, false) => format!("its namespace {} is gone", e.endpoint.netns),
                    (_, true) => {
                        let plan = m.restore_endpoint(&network, e.clone()).map_err(|e| e.error.message)?;
                        // bring_up forgets it and releases its addresses when it fails.
                        if let Err(err) = self.bring_up(&mut m, plan, true).await {
                            self.forget_docker_tap(&e.endpoint).await;
                            report.push(format!(
                                "dropped endpoint {name} of network {network}: its TAP could not be restored: {}",
                                err.error.message
                            ));
                        }
                        continue;
                    }
                };
                if alive {
                    // A TAP left behind (persistent) in a namespace that still exists.
                    let (worker, ifname) = (self.netns.clone(), e.endpoint.ifname.clone());
                    let _ = tokio::task::spawn_blocking(move || worker.delete_link(netns, &ifname)).await;
                }
                self.forget_docker_tap(&e.endpoint).await;
                m.drop_restored(&network, &e);
                report.push(format!("dropped endpoint {name} of network {network}: {why}"));
            }
            for (mac, port_name) in n.static_macs {
                let Ok((id, port)) = m.port_of(&network, &port_name) else { continue };
                if let Ok(Ok(())) = self.dp.call(move |e| e.switch_mut().add_static(id, mac, port)).await {
                    m.add_static(&network, mac, &port_name);
                }
            }
        }
        for s in &snap.interface_ports {
            let up = match m.restore_ifport(s) {
                Ok(plan) => self.bring_up_ifport(&mut m, plan, false).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = up {
                report.push(format!("dropped interface port {}: {}", s.interface, e.error.message));
            }
        }
        // On disk first, then persistent: the same order as an attach.
        self.save(&m).map_err(|e| e.error.message)?;
        let _ = self.dp.call(|e| e.persist_all_taps()).await;
        for p in snap.peers {
            let req = PeerAdd { public_key: p.public_key.clone(), endpoint: p.endpoint.map(|e| e.to_string()), networks: p.networks };
            if let Err(e) = self.add_peer_locked(&mut m, &req).await {
                report.push(format!("dropped tunnel peer {}: {}", p.public_key, e.error.message));
            }
        }
        self.save(&m).map_err(|e| e.error.message)?;
        self.local_change(&mut m);
        Ok(report)
    }

    /// A Docker endpoint that did not come back may have left its TAP, persistent, in
    /// vswitchd's own namespace under its own name (dockerd moves it back before Leave).
    async fn forget_docker_tap(&self, ep: &crate::api::Endpoint) {
        if crate::control::model::docker::is_docker(ep) {
            let (worker, ifname) = (self.netns.clone(), ep.ifname.clone());
            let own = NetnsRef::Path(crate::control::model::docker::OWN_NETNS.into());
            let _ = tokio::task::spawn_blocking(move || worker.delete_link(own, &ifname)).await;
        }
    }

    /// Binds a restored endpoint's published ports again; one that cannot be bound any more is
    /// dropped with a warning (the endpoint itself is fine).
    pub(super) async fn restore_rules(&self, m: &mut crate::control::model::Model, plan: &AttachPlan) {
        for rule in m.take_saved_rules(&plan.network, &plan.name) {
            match super::publish::bind_rule(&rule) {
                Ok(sockets) => {
                    let ids = self.start_listeners(plan.gw_port, plan.port, plan.ip, &rule, sockets).await;
                    let _ = m.add_publication(&plan.network, &plan.name, rule, ids);
                }
                Err(e) => tracing::warn!(endpoint = %plan.name, error = %e.error.message, "published port not restored"),
            }
        }
    }
}
