//! Docker's libnetwork remote network driver and IPAM driver, the model's side of it.
//!
//! Nothing Docker-specific needs a table of its own: a Docker network is the vswitch network
//! labelled [`LABEL_ID`]` = NETWORK_ID` (and [`LABEL_CREATED`] when Docker made it, so
//! `docker network rm` removes it; a network bound by name keeps living); a Docker endpoint is
//! the endpoint whose owner is `docker/ENDPOINT_ID`; its sandbox is the endpoint's namespace
//! once joined. All of it is in `state.json` with the rest, so neither a dockerd restart (which
//! never replays CreateNetwork) nor a vswitchd restart loses the mapping.
//!
//! IPAM pools are named by their subnet (`vswitch/10.77.0.0/24`), so a pool needs no state
//! either: an address Docker asked for before the endpoint exists is leased to [`PENDING`] in
//! the network's own allocator until CreateEndpoint takes it over (or ReleaseAddress frees it).

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use super::errors::{ipam_error, setup_error};
use super::{AttachPlan, Model, NetnsInfo};
use crate::api::{ApiError, AttachRequest, Endpoint, ErrorCode};
use crate::sys::AttachSpec;
use crate::types::Mac;

/// Label of a vswitch network that stands for a Docker network: Docker's network id.
pub const LABEL_ID: &str = "docker.network.id";
/// Label of a vswitch network Docker created (`true`): it goes with `docker network rm`.
pub const LABEL_CREATED: &str = "docker.network.created";
/// Owner of an endpoint made for Docker: `docker/ENDPOINT_ID`.
pub const OWNER_PREFIX: &str = "docker/";
/// Lease owner of an address the IPAM driver handed out that no endpoint holds yet.
pub const PENDING: &str = "docker-ipam";
/// Where a Docker endpoint's TAP lives before Join and after Leave: vswitchd's own namespace
/// (which must be dockerd's: dockerd moves the TAP from there into the container).
pub const OWN_NETNS: &str = "/proc/self/ns/net";
/// Pool ids are this prefix and the subnet.
const POOL_PREFIX: &str = "vswitch/";

/// A Docker endpoint's TAP is handed over, not wired: dockerd moves it into the sandbox,
/// renames it and sets its addresses and routes. Once joined, a restart finds it again by its
/// MAC (its name in the sandbox is dockerd's choice).
pub(super) fn adjust_spec(mut spec: AttachSpec, ep: &Endpoint) -> AttachSpec {
    if is_docker(ep) {
        spec.handover = true;
        spec.disable_ipv6 = false;
        spec.find_by_mac = ep.netns != OWN_NETNS;
    }
    spec
}

/// Made by the Docker driver.
pub fn is_docker(ep: &Endpoint) -> bool {
    ep.owner.as_deref().is_some_and(|o| o.starts_with(OWNER_PREFIX))
}

/// The pool id of `subnet`.
pub fn pool_id(subnet: Ipv4Net) -> String {
    format!("{POOL_PREFIX}{subnet}")
}

/// The subnet a pool id names.
///
/// # Errors
/// Not one of our pool ids.
pub fn pool_subnet(id: &str) -> Result<Ipv4Net, ApiError> {
    id.strip_prefix(POOL_PREFIX).and_then(|s| s.parse::<Ipv4Net>().ok()).filter(|n| n.trunc() == *n).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidRequest, format!("unknown pool id {id:?}: vswitch pool ids look like vswitch/10.77.0.0/24"))
    })
}

/// A Docker network or endpoint id: 1..=128 ASCII letters and digits (Docker's are 64 hex).
///
/// # Errors
/// Anything else.
pub fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, format!("{what} id {id:?} is not a Docker id (1-128 letters and digits)")));
    }
    Ok(())
}

/// The first 12 characters of an id (as `docker ps` shows them).
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Model {
    /// IpamDriver.RequestPool: the subnet asked for (or the next free one of the daemon's
    /// pools), checked against vswitch's networks. A subnet equal to that of a network no
    /// Docker network is bound to is fine: CreateNetwork binds it with `-o vswitch.network=`.
    ///
    /// # Errors
    /// IPv6, a bad CIDR, an overlap, exhausted pools.
    pub fn docker_request_pool(&self, pool: &str, v6: bool, routed: &[IpNet]) -> Result<Ipv4Net, ApiError> {
        if v6 {
            return Err(ApiError::new(
                ErrorCode::InvalidSubnet,
                "vswitch's Docker IPAM driver has no IPv6 pools yet: create the network without --ipv6",
            ));
        }
        if pool.is_empty() {
            let in_use: Vec<IpNet> = self.networks.values().map(|n| n.pool.subnet().into()).collect();
            return self.cfg.pools.next_free_v4(&in_use, routed).map_err(setup_error);
        }
        let subnet = match pool.parse::<IpNet>() {
            Ok(IpNet::V4(n)) if n.trunc() == n => n,
            Ok(IpNet::V4(n)) => {
                return Err(ApiError::new(ErrorCode::InvalidSubnet, format!("pool {pool} has host bits set: did you mean {}?", n.trunc())))
            }
            _ => return Err(ApiError::new(ErrorCode::InvalidSubnet, format!("pool {pool:?} is not an IPv4 CIDR like 10.77.0.0/24"))),
        };
        for (name, n) in &self.networks {
            let theirs = n.pool.subnet();
            let overlaps = theirs.contains(&subnet.network()) || subnet.contains(&theirs.network());
            if !overlaps || (theirs == subnet && !n.labels.contains_key(LABEL_ID)) {
                continue;
            }
            return Err(ApiError::new(
                ErrorCode::SubnetOverlap,
                format!("pool {subnet} overlaps subnet {theirs} of vswitch network {name}; choose another --subnet"),
            ));
        }
        Ok(subnet)
    }

    /// IpamDriver.RequestAddress for a container: `want` or the next free address of the
    /// network of `subnet`, leased to [`PENDING`] until an endpoint takes it.
    ///
    /// # Errors
    /// No network has that pool yet, the address is taken or outside, the pool is full.
    pub fn docker_request_address(&mut self, subnet: Ipv4Net, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, ApiError> {
        let net = self
            .networks
            .values_mut()
            .find(|n| n.pool.subnet() == subnet)
            .ok_or_else(|| ApiError::new(ErrorCode::NetworkNotFound, format!("pool {subnet} has no vswitch network (yet)")))?;
        match want {
            Some(ip) => net.pool.reserve_for(ip, PENDING).map(|()| ip),
            None => net.pool.allocate_for(PENDING),
        }
        .map_err(ipam_error)
    }

    /// IpamDriver.ReleaseAddress: frees an address still leased to [`PENDING`]; an endpoint's
    /// address was freed with its endpoint. True when something was freed.
    pub fn docker_release_address(&mut self, subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
        match self.networks.values_mut().find(|n| n.pool.subnet() == subnet) {
            Some(n) if n.pool.owner(ip) == Some(PENDING) => n.pool.release(ip),
            _ => false,
        }
    }

    /// The vswitch network standing for Docker network `id`.
    ///
    /// # Errors
    /// None does.
    pub fn docker_network(&self, id: &str) -> Result<String, ApiError> {
        self.networks
            .iter()
            .find(|(_, n)| n.labels.get(LABEL_ID).map(String::as_str) == Some(id))
            .map(|(name, _)| name.clone())
            .ok_or_else(|| ApiError::new(ErrorCode::NetworkNotFound, format!("no vswitch network stands for Docker network {}", short(id))))
    }

    /// Whether Docker created `network` (it goes with the Docker network).
    pub fn docker_created(&self, network: &str) -> bool {
        self.networks.get(network).is_some_and(|n| n.labels.get(LABEL_CREATED).map(String::as_str) == Some("true"))
    }

    /// Checks that `network` may stand for Docker network `id` (exists, bound to no other
    /// Docker network, and has `subnet` when one is given).
    ///
    /// # Errors
    /// Otherwise.
    pub fn docker_check_bind(&self, id: &str, network: &str, subnet: Option<Ipv4Net>) -> Result<(), ApiError> {
        let n = self.net(network)?;
        if let Some(other) = n.labels.get(LABEL_ID) {
            if other != id {
                return Err(ApiError::new(
                    ErrorCode::NetworkInUse,
                    format!("vswitch network {network} already stands for Docker network {}", short(other)),
                ));
            }
        }
        match subnet {
            Some(s) if s != n.pool.subnet() => Err(ApiError::new(
                ErrorCode::SubnetOverlap,
                format!("vswitch network {network} has subnet {}, not {s}: give Docker the same --subnet", n.pool.subnet()),
            )),
            _ => Ok(()),
        }
    }

    /// Labels `network` as Docker network `id` (`created`: Docker made it).
    ///
    /// # Errors
    /// No such network.
    pub fn docker_bind(&mut self, id: &str, network: &str, created: bool) -> Result<(), ApiError> {
        let n = self.net_mut(network)?;
        n.labels.insert(LABEL_ID.to_string(), id.to_string());
        if created {
            n.labels.insert(LABEL_CREATED.to_string(), "true".to_string());
        }
        Ok(())
    }

    /// Takes the Docker labels off `network` (a network bound by name stays).
    pub fn docker_unbind(&mut self, network: &str) {
        if let Some(n) = self.networks.get_mut(network) {
            n.labels.remove(LABEL_ID);
            n.labels.remove(LABEL_CREATED);
        }
    }

    /// The endpoint made for Docker endpoint `id`, with its network.
    ///
    /// # Errors
    /// None is.
    pub fn docker_endpoint(&self, id: &str) -> Result<Endpoint, ApiError> {
        let owner = format!("{OWNER_PREFIX}{id}");
        self.all_endpoints().find(|(_, e)| e.owner.as_deref() == Some(owner.as_str())).map(|(_, e)| e.clone()).ok_or_else(|| {
            ApiError::new(ErrorCode::EndpointNotFound, format!("no vswitch endpoint stands for Docker endpoint {}", short(id)))
        })
    }

    /// NetworkDriver.CreateEndpoint: takes the endpoint in with the address the IPAM driver
    /// gave (taking over its pending lease), a TAP named `vsw` + the id's first 12 characters
    /// in vswitchd's own namespace (`own`: its identity), to be handed over.
    ///
    /// # Errors
    /// As [`Model::attach`]; an endpoint for `id` exists already.
    pub fn docker_attach(
        &mut self,
        network: &str,
        id: &str,
        ip: Ipv4Addr,
        mac: Option<Mac>,
        own: Option<(u64, u64)>,
    ) -> Result<AttachPlan, ApiError> {
        check_id(id, "endpoint")?;
        if self.docker_endpoint(id).is_ok() {
            return Err(ApiError::new(ErrorCode::EndpointExists, format!("Docker endpoint {} exists already", short(id))));
        }
        let net = self.net_mut(network)?;
        let pending = net.pool.owner(ip) == Some(PENDING);
        if pending {
            net.pool.release(ip);
        }
        let req = AttachRequest {
            name: Some(format!("docker-{}", short(id))),
            ifname: Some(format!("vsw{}", short(id))),
            ip: Some(ip.to_string()),
            mac,
            owner: Some(format!("{OWNER_PREFIX}{id}")),
            ..AttachRequest::default()
        };
        // `own: None`: this attach is meant for the daemon's own namespace.
        let info = NetnsInfo { path: OWN_NETNS.to_string(), id: own, own: None };
        let plan = self.attach(network, req, info);
        if plan.is_err() && pending {
            if let Some(n) = self.networks.get_mut(network) {
                let _ = n.pool.reserve_for(ip, PENDING);
            }
        }
        plan
    }

    /// Join: the endpoint's TAP now belongs to the sandbox `path` (identity `id`), or back in
    /// the daemon's own namespace (Leave).
    ///
    /// # Errors
    /// No such endpoint.
    pub fn docker_set_netns(&mut self, network: &str, name: &str, path: &str, id: Option<(u64, u64)>) -> Result<(), ApiError> {
        let ep = self.ep_mut(network, name)?;
        ep.api.netns = path.to_string();
        ep.netns_id = id;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NetworkCreate;
    use crate::control::model::Config;

    fn model() -> Model {
        let cfg = Config {
            offloads: true,
            egress: true,
            tunnel: false,
            underlay_mtu: 1500,
            pools: ipam::SubnetPools::with_defaults(ipam::SubnetPools::ula48([1, 2, 3, 4, 5])).unwrap(),
        };
        Model::new(cfg, ipam::SubnetPools::ula48([1, 2, 3, 4, 5]))
    }

    fn docker_net(m: &mut Model, id: &str, subnet: &str) -> String {
        let name = format!("docker-{}", short(id));
        let labels = [(LABEL_ID.to_string(), id.to_string()), (LABEL_CREATED.to_string(), "true".to_string())].into();
        m.create_network(NetworkCreate { name: name.clone(), subnet: Some(subnet.into()), labels, ..Default::default() }, &[]).unwrap();
        name
    }

    #[test]
    fn pools_are_checked_against_vswitch_networks() {
        let mut m = model();
        m.create_network(NetworkCreate { name: "plain".into(), subnet: Some("10.1.0.0/24".into()), ..Default::default() }, &[]).unwrap();
        docker_net(&mut m, "aaaa", "10.2.0.0/24");
        let before = m.snapshot();
        assert_eq!(m.docker_request_pool("10.3.0.0/24", false, &[]).unwrap().to_string(), "10.3.0.0/24");
        // The same subnet as a network no Docker network stands for: to be bound by name.
        assert!(m.docker_request_pool("10.1.0.0/24", false, &[]).is_ok());
        for (pool, code) in [
            ("10.1.0.0/16", ErrorCode::SubnetOverlap),
            ("10.2.0.0/24", ErrorCode::SubnetOverlap),
            ("10.3.0.5/24", ErrorCode::InvalidSubnet),
            ("fd00::/64", ErrorCode::InvalidSubnet),
            ("nonsense", ErrorCode::InvalidSubnet),
        ] {
            assert_eq!(m.docker_request_pool(pool, false, &[]).unwrap_err().error.code, code, "{pool}");
        }
        assert!(m.docker_request_pool("", true, &[]).is_err());
        let auto = m.docker_request_pool("", false, &[]).unwrap();
        assert!(!auto.contains(&Ipv4Addr::new(10, 1, 0, 1)) && !auto.contains(&Ipv4Addr::new(10, 2, 0, 1)), "{auto}");
        assert_eq!(m.snapshot(), before, "RequestPool changes nothing");
    }

    #[test]
    fn a_pending_address_is_taken_over_by_its_endpoint() {
        let mut m = model();
        let net = docker_net(&mut m, "aaaa", "10.2.0.0/24");
        let subnet: Ipv4Net = "10.2.0.0/24".parse().unwrap();
        let ip = m.docker_request_address(subnet, None).unwrap();
        assert_eq!(m.docker_request_address(subnet, Some(ip)).unwrap_err().error.code, ErrorCode::AddressTaken);
        assert!(m.docker_request_address("10.9.0.0/24".parse().unwrap(), None).is_err());
        let plan = m.docker_attach(&net, "e1", ip, None, Some((1, 1))).unwrap();
        assert!(plan.spec.handover && !plan.spec.find_by_mac);
        assert_eq!(plan.spec.ifname, "vswe1");
        let ep = m.attached(&plan, Vec::new()).unwrap();
        assert_eq!(m.docker_endpoint("e1").unwrap(), ep);
        // The endpoint holds it now: ReleaseAddress (after DeleteEndpoint) frees nothing.
        assert!(!m.docker_release_address(subnet, ip));
        assert_eq!(m.usage(&net).unwrap().in_use, 1);
        assert_eq!(m.docker_attach(&net, "e1", Ipv4Addr::new(10, 2, 0, 9), None, None).unwrap_err().error.code, ErrorCode::EndpointExists);
        m.forget(&net, &ep.name);
        assert_eq!(m.usage(&net).unwrap().in_use, 0);
    }

    #[test]
    fn a_refused_attach_keeps_the_pending_lease() {
        let mut m = model();
        let net = docker_net(&mut m, "aaaa", "10.2.0.0/24");
        let subnet: Ipv4Net = "10.2.0.0/24".parse().unwrap();
        let ip = m.docker_request_address(subnet, None).unwrap();
        let before = m.snapshot();
        let bad_mac = Some(Mac([1, 0, 0, 0, 0, 1]));
        assert!(m.docker_attach(&net, "e1", ip, bad_mac, None).is_err());
        assert!(m.docker_attach(&net, "not an id", ip, None, None).is_err());
        assert_eq!(m.snapshot(), before);
        assert!(m.docker_release_address(subnet, ip));
        assert_eq!(m.usage(&net).unwrap().in_use, 0);
    }

    #[test]
    fn joined_endpoints_are_found_again_by_mac() {
        let mut m = model();
        let net = docker_net(&mut m, "aaaa", "10.2.0.0/24");
        let plan = m.docker_attach(&net, "e1", Ipv4Addr::new(10, 2, 0, 7), None, None).unwrap();
        let ep = m.attached(&plan, Vec::new()).unwrap();
        m.docker_set_netns(&net, &ep.name, "/run/docker/netns/abc", None).unwrap();
        let snap = m.snapshot();
        let saved = snap.networks[0].endpoints[0].clone();
        let mut again = model();
        again.restore_network(&snap.networks[0]);
        let plan = again.restore_endpoint(&net, saved).unwrap();
        assert!(plan.spec.handover && plan.spec.find_by_mac && plan.spec.reuse);
        assert_eq!(again.docker_network("aaaa").unwrap(), net);
        assert!(again.docker_created(&net));
    }

    #[test]
    fn binding_checks_the_subnet_and_the_owner() {
        let mut m = model();
        m.create_network(NetworkCreate { name: "plain".into(), subnet: Some("10.1.0.0/24".into()), ..Default::default() }, &[]).unwrap();
        assert!(m.docker_check_bind("x", "plain", Some("10.1.0.0/24".parse().unwrap())).is_ok());
        assert!(m.docker_check_bind("x", "plain", Some("10.1.1.0/24".parse().unwrap())).is_err());
        assert!(m.docker_check_bind("x", "nope", None).is_err());
        m.docker_bind("x", "plain", false).unwrap();
        assert!(m.docker_check_bind("y", "plain", None).is_err());
        assert!(!m.docker_created("plain"));
        m.docker_unbind("plain");
        assert!(m.docker_network("x").is_err());
        assert!(m.network("plain").unwrap().labels.is_empty());
    }

    #[test]
    fn pool_ids_round_trip() {
        let s: Ipv4Net = "10.77.0.0/24".parse().unwrap();
        assert_eq!(pool_subnet(&pool_id(s)).unwrap(), s);
        for bad in ["10.77.0.0/24", "vswitch/10.77.0.1/24", "vswitch/x", ""] {
            assert!(pool_subnet(bad).is_err(), "{bad}");
        }
        assert!(check_id("0123abcd", "network").is_ok());
        assert!(check_id("../x", "network").is_err() && check_id("", "network").is_err());
    }
}
