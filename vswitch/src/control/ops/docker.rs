//! Docker's remote network and IPAM drivers: each call of the plugin protocol becomes the
//! operations any other front end uses (create a network, attach, publish, ...), with the
//! Docker specifics (ids, pools, the TAP handed over) from `model::docker`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::Control;
use crate::api::{ApiError, Endpoint, ErrorCode, NetworkCreate, PublishRule};
use crate::control::model::docker::{self, LABEL_CREATED, LABEL_ID, OWN_NETNS};
use crate::sys::NetnsRef;
use crate::types::Mac;

/// What `docker network create -d vswitch` asks for.
#[derive(Debug, Clone, Default)]
pub struct DockerNetwork {
    /// Docker's network id.
    pub id: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub overlay: bool,
    pub mtu: Option<u32>,
    /// `-o vswitch.network=NAME`: stand for this vswitch network (made when it does not exist).
    pub name: Option<String>,
}

impl Control {
    /// IpamDriver.RequestPool.
    ///
    /// # Errors
    /// See [`crate::control::model::Model::docker_request_pool`].
    pub async fn docker_request_pool(&self, pool: &str, v6: bool) -> Result<Ipv4Net, ApiError> {
        self.model.lock().await.docker_request_pool(pool, v6, &super::routes::routed())
    }

    /// IpamDriver.RequestAddress. The gateway of a pool no network has yet (the call comes
    /// before CreateNetwork) is the address asked for or the subnet's first; a container's
    /// address is leased until its endpoint takes it.
    ///
    /// # Errors
    /// An address outside the pool or taken, a full pool.
    pub async fn docker_request_address(&self, subnet: Ipv4Net, want: Option<Ipv4Addr>, gateway: bool) -> Result<Ipv4Addr, ApiError> {
        if let Some(ip) = want {
            if !subnet.contains(&ip) {
                return Err(ApiError::new(ErrorCode::AddressOutOfRange, format!("{ip} is not in pool {subnet}")));
            }
        }
        let mut m = self.model.lock().await;
        if gateway {
            let existing = m.networks().into_iter().find(|n| n.subnet == subnet.to_string());
            return Ok(match (existing, want) {
                (Some(n), _) => n.gateway,
                (None, Some(ip)) => ip,
                (None, None) => subnet
                    .hosts()
                    .next()
                    .ok_or_else(|| ApiError::new(ErrorCode::InvalidSubnet, format!("pool {subnet} has no host address")))?,
            });
        }
        let ip = m.docker_request_address(subnet, want)?;
        if let Err(e) = self.save(&m) {
            m.docker_release_address(subnet, ip);
            return Err(e);
        }
        Ok(ip)
    }

    /// IpamDriver.ReleaseAddress: an address no endpoint took is free again; anything else
    /// was freed with its endpoint (or is a gateway), so there is nothing to do.
    ///
    /// # Errors
    /// When the change cannot be saved.
    pub async fn docker_release_address(&self, subnet: Ipv4Net, ip: Ipv4Addr) -> Result<(), ApiError> {
        let mut m = self.model.lock().await;
        if m.docker_release_address(subnet, ip) {
            self.save(&m)?;
        }
        Ok(())
    }

    /// NetworkDriver.CreateNetwork: makes the vswitch network (labelled with Docker's id), or
    /// binds the existing one `-o vswitch.network=NAME` names. Returns its name.
    ///
    /// # Errors
    /// As `network create`; a network bound to another Docker network; another subnet.
    pub async fn docker_create_network(&self, req: DockerNetwork) -> Result<String, ApiError> {
        docker::check_id(&req.id, "network")?;
        let mut m = self.model.lock().await;
        if let Ok(name) = m.docker_network(&req.id) {
            return Ok(name);
        }
        let name = req.name.clone().unwrap_or_else(|| format!("docker-{}", docker::short(&req.id)));
        if m.network(&name).is_ok() {
            m.docker_check_bind(&req.id, &name, req.subnet)?;
            m.docker_bind(&req.id, &name, false)?;
            if let Err(e) = self.save(&m) {
                m.docker_unbind(&name);
                return Err(e);
            }
            self.push_dns(&m);
            tracing::info!(network = %name, docker = docker::short(&req.id), "Docker network bound");
            return Ok(name);
        }
        drop(m);
        let create = NetworkCreate {
            name: name.clone(),
            subnet: req.subnet.map(|s| s.to_string()),
            gateway: req.gateway.map(|g| g.to_string()),
            internal: req.internal,
            overlay: req.overlay,
            mtu: req.mtu,
            labels: BTreeMap::from([(LABEL_ID.to_string(), req.id.clone()), (LABEL_CREATED.to_string(), "true".to_string())]),
            ..NetworkCreate::default()
        };
        self.create_network(create).await?;
        Ok(name)
    }

    /// NetworkDriver.DeleteNetwork: removes the network Docker made, unbinds one it was bound
    /// to.
    ///
    /// # Errors
    /// An unknown id; endpoints still on a network Docker made.
    pub async fn docker_delete_network(&self, id: &str) -> Result<(), ApiError> {
        let mut m = self.model.lock().await;
        let name = m.docker_network(id)?;
        if m.docker_created(&name) {
            drop(m);
            return self.remove_network(&name, false).await;
        }
        m.docker_unbind(&name);
        self.save(&m)?;
        tracing::info!(network = %name, docker = docker::short(id), "Docker network unbound");
        Ok(())
    }

    /// NetworkDriver.CreateEndpoint: a TAP in vswitchd's namespace, switched at once, with the
    /// address from IPAM and Docker's MAC (or one of ours), persistent once saved.
    ///
    /// # Errors
    /// An unknown network, an address outside the subnet or taken, a MAC in use.
    pub async fn docker_create_endpoint(&self, network_id: &str, id: &str, ip: Ipv4Addr, mac: Option<Mac>) -> Result<Endpoint, ApiError> {
        let mut m = self.model.lock().await;
        let network = m.docker_network(network_id)?;
        let own = crate::sys::netns::current_netns_id().ok();
        let plan = m.docker_attach(&network, id, ip, mac, own)?;
        let api = self.bring_up(&mut m, plan, false).await?;
        self.local_change(&mut m);
        tracing::info!(network, endpoint = %api.name, ip = %api.ip, mac = %api.mac, tap = %api.ifname, "Docker endpoint created");
        Ok(api)
    }

    /// The endpoint of Docker endpoint `id`, checked to be on Docker network `network_id`.
    ///
    /// # Errors
    /// Either is unknown, or they do not belong together.
    pub async fn docker_endpoint(&self, network_id: &str, id: &str) -> Result<Endpoint, ApiError> {
        let m = self.model.lock().await;
        let network = m.docker_network(network_id)?;
        let ep = m.docker_endpoint(id)?;
        if ep.network != network {
            return Err(ApiError::new(
                ErrorCode::EndpointNotFound,
                format!("Docker endpoint {} is not on Docker network {}", docker::short(id), docker::short(network_id)),
            ));
        }
        Ok(ep)
    }

    /// NetworkDriver.DeleteEndpoint: detaches it (its TAP, lease and publications go).
    ///
    /// # Errors
    /// Unknown ids.
    pub async fn docker_delete_endpoint(&self, network_id: &str, id: &str) -> Result<(), ApiError> {
        let ep = self.docker_endpoint(network_id, id).await?;
        self.detach(&ep.network, &ep.name).await
    }

    /// NetworkDriver.Join: records the sandbox the TAP goes to; returns the TAP's name (what
    /// dockerd moves) and the gateway.
    ///
    /// # Errors
    /// Unknown ids; a sandbox that is not a network namespace.
    pub async fn docker_join(&self, network_id: &str, id: &str, sandbox: &str) -> Result<(Endpoint, Ipv4Addr), ApiError> {
        let ep = self.docker_endpoint(network_id, id).await?;
        if !sandbox.starts_with('/') {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("SandboxKey {sandbox:?} is not an absolute path")));
        }
        // dockerd calls Join before it makes the sandbox (its prestart hook mounts it there
        // and then moves the TAP in): an existing file must be a network namespace, a missing
        // one is recorded without an identity (see `restore`).
        let ns = match crate::sys::netns::netns_id(&NetnsRef::Path(PathBuf::from(sandbox))) {
            Ok(id) => Some(id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ApiError::new(ErrorCode::NetnsNotFound, format!("sandbox {sandbox} is not a network namespace: {e}"))),
        };
        self.set_docker_netns(&ep, sandbox, ns).await?;
        let gateway = self.model.lock().await.network(&ep.network)?.gateway;
        tracing::info!(network = %ep.network, endpoint = %ep.name, sandbox, "Docker endpoint joined");
        Ok((ep, gateway))
    }

    /// NetworkDriver.Leave: the TAP comes back to vswitchd's namespace (dockerd moves it).
    ///
    /// # Errors
    /// Unknown ids.
    pub async fn docker_leave(&self, network_id: &str, id: &str) -> Result<(), ApiError> {
        let ep = self.docker_endpoint(network_id, id).await?;
        self.set_docker_netns(&ep, OWN_NETNS, crate::sys::netns::current_netns_id().ok()).await
    }

    async fn set_docker_netns(&self, ep: &Endpoint, path: &str, id: Option<(u64, u64)>) -> Result<(), ApiError> {
        let mut m = self.model.lock().await;
        let (before, before_id) = m.endpoint(&ep.network, &ep.name)?;
        m.docker_set_netns(&ep.network, &ep.name, path, id)?;
        if let Err(e) = self.save(&m) {
            let _ = m.docker_set_netns(&ep.network, &ep.name, &before.netns, before_id);
            return Err(e);
        }
        Ok(())
    }

    /// NetworkDriver.ProgramExternalConnectivity: `-p` mappings become publications (kept
    /// when already there, so a repeated call changes nothing).
    ///
    /// # Errors
    /// Unknown ids; a publication refused (egress off, port in use, ...).
    pub async fn docker_program(&self, network_id: &str, id: &str, rules: Vec<PublishRule>) -> Result<(), ApiError> {
        let ep = self.docker_endpoint(network_id, id).await?;
        let mut done = Vec::new();
        for rule in rules.into_iter().filter(|r| !ep.published.contains(r)) {
            if let Err(e) = self.publish(&ep.network, &ep.name, rule.clone()).await {
                for r in done {
                    let _ = self.unpublish_rule(&r).await;
                }
                return Err(e);
            }
            done.push(rule);
        }
        Ok(())
    }

    /// NetworkDriver.RevokeExternalConnectivity: the endpoint's publications go.
    ///
    /// # Errors
    /// Unknown ids.
    pub async fn docker_revoke(&self, network_id: &str, id: &str) -> Result<(), ApiError> {
        let ep = self.docker_endpoint(network_id, id).await?;
        for rule in &ep.published {
            self.unpublish_rule(rule).await?;
        }
        Ok(())
    }

    async fn unpublish_rule(&self, rule: &PublishRule) -> Result<(), ApiError> {
        self.unpublish(rule.proto.as_str(), &rule.host_addr.to_string(), &rule.host_port.to_string()).await
    }
}
