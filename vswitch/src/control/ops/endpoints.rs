//! `/v1/networks/{network}/endpoints`: attach, detach, rename.

use std::path::PathBuf;

use super::Control;
use crate::api::{ApiError, AttachRequest, Endpoint, EndpointUpdate, ErrorCode};
use crate::control::model::{internal, AttachPlan, Model, NetnsInfo};
use crate::sys::{NetnsRef, SysError};

impl Control {
    pub async fn attach(&self, network: &str, req: AttachRequest) -> Result<Endpoint, ApiError> {
        let netns = match (&req.netns, req.pid) {
            (Some(p), None) => NetnsRef::Path(PathBuf::from(p)),
            (None, Some(pid)) => NetnsRef::Pid(pid),
            _ => return Err(ApiError::new(ErrorCode::InvalidRequest, "give exactly one of netns (a path) and pid")),
        };
        let info = NetnsInfo {
            path: netns.path().display().to_string(),
            id: crate::sys::netns::netns_id(&netns).ok(),
            own: crate::sys::netns::current_netns_id().ok(),
        };
        let mut m = self.model.lock().await;
        let plan = m.attach(network, req, info)?;
        let api = self.bring_up(&mut m, plan, false).await?;
        self.local_change(&mut m);
        tracing::info!(network, endpoint = %api.name, ip = %api.ip, mac = %api.mac, port = api.port.0, "attached");
        Ok(api)
    }

    /// Makes the TAP of an endpoint the model took in (or reopens it when `restoring`), hands it
    /// to the datapath, brings back its published ports (restoring) and marks it attached;
    /// then, for a new one, saves and makes the TAP persistent. Any failure undoes all of it.
    pub(super) async fn bring_up(&self, m: &mut Model, plan: AttachPlan, restoring: bool) -> Result<Endpoint, ApiError> {
        let worker = self.netns.clone();
        let spec = plan.spec.clone();
        let attached = match tokio::task::spawn_blocking(move || worker.attach(spec)).await.map_err(internal) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                m.abandon_attach(plan);
                return Err(sys_error(e));
            }
            Err(e) => {
                m.abandon_attach(plan);
                return Err(e);
            }
        };
        let (port, net_id, mtu, gw_port, ip, ip6, mac) = (plan.port, plan.net_id, plan.mtu, plan.gw_port, plan.ip, plan.ip6, plan.mac);
        let (fd, hdr) = (attached.fd, attached.vnet_hdr_len);
        let added = self
            .dp
            .call(move |e| {
                e.add_tap(port, net_id, fd, hdr, mtu)?;
                // The addresses the port may speak for (IPv4 source, ARP and NDP checks).
                e.egress_client(port, gw_port, ip, mac);
                e.set_port_ipv6(port, ip6);
                Ok::<(), std::io::Error>(())
            })
            .await;
        if let Err(e) = added.map_err(internal).and_then(|r| r.map_err(internal)) {
            m.abandon_attach(plan);
            return Err(e);
        }
        if restoring {
            self.restore_rules(m, &plan).await;
        }
        let api = m.attached(&plan, attached.offloads.names())?;
        if !restoring {
            // One write per attach: the endpoint is on disk before its TAP may outlive us.
            if let Err(e) = self.save(m) {
                self.close_tap(port).await;
                m.abandon_attach(plan);
                return Err(e);
            }
            let _ = self.dp.call(move |e| e.set_tap_persist(port, true)).await;
        }
        Ok(api)
    }

    pub async fn detach(&self, network: &str, name: &str) -> Result<(), ApiError> {
        let mut m = self.model.lock().await;
        let port = m.endpoint_port(network, name)?;
        // Not persistent any more, so a crash from here on removes the TAP with the process.
        self.dp.call(move |e| e.set_tap_persist(port, false)).await.map_err(internal)?;
        m.forget(network, name);
        let saved = self.save(&m);
        self.close_tap(port).await;
        self.local_change(&mut m);
        saved?;
        tracing::info!(network, endpoint = name, "detached");
        Ok(())
    }

    /// Checks that an endpoint's namespace is still the one it was attached to and that its
    /// interface is in it (what a CNI CHECK asks).
    pub async fn check_endpoint(&self, network: &str, name: &str) -> Result<Endpoint, ApiError> {
        let (ep, attached_to) = self.model.lock().await.endpoint(network, name)?;
        let netns = NetnsRef::Path(PathBuf::from(&ep.netns));
        if attached_to.is_none() || crate::sys::netns::netns_id(&netns).ok() != attached_to {
            return Err(ApiError::new(ErrorCode::NetnsNotFound, format!("the namespace {} of endpoint {name} is gone", ep.netns)));
        }
        let (worker, ifname) = (self.netns.clone(), ep.ifname.clone());
        match tokio::task::spawn_blocking(move || worker.find_link(netns, &ifname)).await.map_err(internal)? {
            Ok(()) => Ok(ep),
            Err(e) => {
                Err(ApiError::new(ErrorCode::NotFound, format!("interface {} of endpoint {name} is not in {}: {e}", ep.ifname, ep.netns)))
            }
        }
    }

    /// Renames an endpoint or replaces its aliases; DNS follows at once.
    pub async fn update_endpoint(&self, network: &str, name: &str, req: EndpointUpdate) -> Result<Endpoint, ApiError> {
        let mut m = self.model.lock().await;
        let api = m.update_endpoint(network, name, req)?;
        self.save(&m)?;
        self.local_change(&mut m);
        Ok(api)
    }
}

pub(super) fn sys_error(e: SysError) -> ApiError {
    let code = match &e {
        SysError::NetnsNotFound(_) => ErrorCode::NetnsNotFound,
        SysError::PermissionDenied(_) => ErrorCode::PermissionDenied,
        SysError::InvalidName(_) => ErrorCode::InvalidName,
        SysError::Exists(_) => ErrorCode::EndpointExists,
        SysError::NoInterface(_) => ErrorCode::InterfaceNotFound,
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, e.to_string())
}
