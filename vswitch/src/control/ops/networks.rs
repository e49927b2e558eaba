//! `/v1/networks`, `/v1/ipam`: networks made, inspected and removed.

use super::Control;
use crate::api::{ApiError, ErrorCode, GcReport, Network, NetworkCreate, NetworkDetail, PortAdd, Pruned};
use crate::control::model::internal;

impl Control {
    pub async fn networks(&self) -> Vec<Network> {
        self.model.lock().await.networks()
    }

    pub async fn create_network(&self, req: NetworkCreate) -> Result<Network, ApiError> {
        let uplink = req.uplink.clone().map(|u| (u, req.vlan));
        if let Some((u, _)) = &uplink {
            if !super::ifports::interface_exists(u).await? {
                return Err(ApiError::new(ErrorCode::InterfaceNotFound, format!("no interface {u} in vswitchd's network namespace")));
            }
        }
        let mut m = self.model.lock().await;
        let (plan, api) = m.create_network(req, &super::routes::routed())?;
        let mut added = self.add_network_to_datapath(&plan).await;
        if let (Ok(()), Some((interface, vlan))) = (&added, uplink) {
            let port = PortAdd { network: plan.name.clone(), interface, vlan, trunk: Vec::new() };
            let up = match m.add_ifport(&port, true, Some(&plan.name)) {
                Ok(p) => self.bring_up_ifport(&mut m, p, false).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = up {
                let (id, gw_port) = (plan.id, plan.gw_port);
                let _ = self.dp.call(move |e| e.remove_network(id, gw_port)).await;
                added = Err(e);
            }
        }
        let done = match added {
            Ok(()) => match self.save(&m) {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Not on disk, so not made: undo in the datapath too.
                    let (id, gw_port) = (plan.id, plan.gw_port);
                    let main = m.network_uplink_port(&plan.name);
                    let _ = self
                        .dp
                        .call(move |e| {
                            if let Some(main) = main {
                                e.remove_iface(main);
                            }
                            e.remove_network(id, gw_port)
                        })
                        .await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            if let Some(u) = &plan.uplink {
                m.forget_ifport(u);
            }
            m.undo_create_network(&plan);
            return Err(e);
        }
        self.local_change(&mut m);
        tracing::info!(network = %api.name, subnet = %api.subnet, gateway = %api.gateway, "network created");
        Ok(api)
    }

    pub async fn inspect_network(&self, name: &str) -> Result<NetworkDetail, ApiError> {
        let m = self.model.lock().await;
        let dhcp_leases = m.dhcp_leases(name).into_iter().map(|(ip, mac)| crate::api::DhcpLease { ip, mac }).collect();
        Ok(NetworkDetail { network: m.network(name)?, usage: m.usage(name)?, endpoint_list: m.endpoints(name)?, dhcp_leases })
    }

    pub async fn remove_network(&self, name: &str, force: bool) -> Result<(), ApiError> {
        let mut m = self.model.lock().await;
        let plan = m.begin_remove_network(name, force)?;
        self.save(&m)?;
        let files = self
            .dp
            .call(move |e| {
                let mut files = Vec::new();
                for p in plan.endpoint_ports {
                    files.extend(e.remove_tap(p));
                }
                if let Some((_, main)) = plan.uplink {
                    e.remove_iface(main);
                }
                e.remove_network(plan.id, plan.gw_port).map(|()| files)
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
        tokio::task::spawn_blocking(move || drop(files));
        m.finish_remove_network(name);
        self.save(&m)?;
        self.local_change(&mut m);
        tracing::info!(network = name, "network removed");
        Ok(())
    }

    /// Removes every network that has no endpoint.
    pub async fn prune_networks(&self) -> Result<Pruned, ApiError> {
        let mut empty = self.model.lock().await.empty_networks();
        // The cluster's networks are removed through the cluster (`network rm`), never pruned.
        let cluster = self.cluster_networks().await;
        empty.retain(|n| !cluster.contains_key(n));
        let mut removed = Vec::new();
        for name in empty {
            // One that gained an endpoint meanwhile is refused and kept.
            if self.remove_network(&name, false).await.is_ok() {
                removed.push(name);
            }
        }
        Ok(Pruned { removed })
    }

    /// Releases leases whose endpoint is gone.
    pub async fn ipam_gc(&self) -> Result<GcReport, ApiError> {
        let mut m = self.model.lock().await;
        let report = m.ipam_gc();
        if !report.released.is_empty() {
            self.save(&m)?;
        }
        Ok(report)
    }
}
