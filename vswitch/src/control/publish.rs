//! Published ports and egress settings: the control side of `datapath::egress`.
//!
//! A publication binds its host sockets here, on the control plane, so that a port the user
//! may not bind or one already taken is a clear API error before anything changes. The bound
//! sockets then go to the datapath, which serves them. Rules are stored with their endpoint,
//! so they come back after a restart and go away when the endpoint is detached.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{find_net_mut, internal, Control};
use crate::api::{ApiError, EgressStats, ErrorCode, Proto, Publication, PublishRule};
use crate::datapath::egress::{Limits, NetConfig, Publish, PublishSocket};
use crate::gateway::Gateway;
use crate::types::PortId;

/// Most ports one rule may publish.
const MAX_RANGE: u32 = 1024;

/// Parses `PORT`, `FIRST-LAST` and `all` into inclusive ranges.
///
/// # Errors
/// `invalid_request` naming the bad item.
pub fn parse_port_ranges(items: &[String]) -> Result<Vec<(u16, u16)>, ApiError> {
    items
        .iter()
        .map(|item| {
            let bad = || ApiError::new(ErrorCode::InvalidRequest, format!("host_loopback {item:?}: expected PORT, FIRST-LAST or all"));
            if item == "all" {
                return Ok((1, u16::MAX));
            }
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a == 0 || b < a {
                return Err(bad());
            }
            Ok((a, b))
        })
        .collect()
}

/// Binds every host port of `rule`.
///
/// # Errors
/// `permission_denied` for a port the user may not bind, `port_in_use` for one another
/// program holds, `invalid_address` for an address the host does not have.
pub fn bind_rule(rule: &PublishRule) -> Result<Vec<(PublishSocket, u16)>, ApiError> {
    let mut out = Vec::new();
    for (host, container) in rule.ports() {
        let addr = SocketAddrV4::new(rule.host_addr, host);
        let bound = match rule.proto {
            Proto::Tcp => std::net::TcpListener::bind(addr).map(PublishSocket::Tcp),
            Proto::Udp => std::net::UdpSocket::bind(addr).map(PublishSocket::Udp),
        };
        let sock = bound.map_err(|e| bind_error(rule.proto, addr, &e))?;
        out.push((sock, container));
    }
    Ok(out)
}

fn bind_error(proto: Proto, addr: SocketAddrV4, e: &std::io::Error) -> ApiError {
    let what = format!("{}/{addr}", proto.as_str());
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => ApiError::new(
            ErrorCode::PermissionDenied,
            format!("cannot bind {what}: permission denied (ports below net.ipv4.ip_unprivileged_port_start need CAP_NET_BIND_SERVICE)"),
        ),
        Some(libc::EADDRINUSE) => ApiError::new(ErrorCode::PortInUse, format!("cannot bind {what}: another program uses it")),
        Some(libc::EADDRNOTAVAIL) => ApiError::new(ErrorCode::InvalidAddress, format!("cannot bind {what}: the host has no such address")),
        _ => ApiError::new(ErrorCode::Internal, format!("cannot bind {what}: {e}")),
    }
}

impl Control {
    /// Egress settings of a network, or `None` when egress is off for the daemon.
    pub(super) fn egress_config(
        &self,
        gw: Gateway,
        subnet: ipnet::Ipv4Net,
        mtu: u32,
        internal: bool,
        host_loopback: &[String],
    ) -> Option<NetConfig> {
        self.opts.egress.then(|| NetConfig {
            gw,
            subnet,
            mtu,
            egress: !internal,
            // Validated when the network was created.
            host_loopback: parse_port_ranges(host_loopback).unwrap_or_default(),
            // Every TAP has a virtio header when offloads are on (overlay ones too).
            vnet: self.opts.offloads,
        })
    }

    /// Hands bound sockets to the datapath; returns the listener ids (those it refused are
    /// logged and left out).
    pub(super) async fn start_listeners(
        &self,
        gw_port: PortId,
        owner: PortId,
        ip: Ipv4Addr,
        rule: &PublishRule,
        sockets: Vec<(PublishSocket, u16)>,
    ) -> Vec<usize> {
        let proto = rule.proto;
        let res = self
            .dp
            .call(move |e| {
                sockets
                    .into_iter()
                    .filter_map(|(socket, cport)| {
                        let p = Publish { owner, gw_port, container: SocketAddrV4::new(ip, cport), socket };
                        match e.publish(p) {
                            Ok(id) => Some(id),
                            Err(err) => {
                                tracing::warn!(error = %err, proto = proto.as_str(), "published port not served");
                                None
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        res.unwrap_or_default()
    }

    /// Closes the datapath's listeners `ids`.
    async fn stop_listeners(&self, ids: Vec<usize>) -> Result<(), ApiError> {
        self.dp.call(move |e| ids.into_iter().for_each(|id| e.unpublish(id))).await.map_err(internal)
    }

    /// `POST /v1/networks/{network}/endpoints/{endpoint}/publish`.
    pub async fn publish(&self, network: &str, endpoint: &str, rule: PublishRule) -> Result<Publication, ApiError> {
        if !self.opts.egress {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "published ports need egress (start vswitchd with --egress, the default when rootless)",
            ));
        }
        let end = rule.last_host_port();
        if rule.host_port == 0 || rule.container_port == 0 || end < rule.host_port {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "ports must be 1..=65535 and a range must not run backwards"));
        }
        let count = u32::from(end - rule.host_port) + 1;
        if count > MAX_RANGE || u32::from(rule.container_port) + count - 1 > u32::from(u16::MAX) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a rule publishes at most {MAX_RANGE} ports, and the container's ports must stay below 65536"),
            ));
        }
        let mut st = self.state.lock().await;
        // One listener per host port: a rule overlapping another of this daemon is refused
        // whichever endpoint holds it.
        for (net_name, n) in &st.networks {
            for (ep_name, ep) in &n.endpoints {
                for r in &ep.api.published {
                    if (rule.host_port..=end).any(|p| r.covers(rule.proto, rule.host_addr, p)) {
                        return Err(ApiError::new(
                            ErrorCode::PortInUse,
                            format!(
                                "{}/{}:{} is already published to {ep_name} on {net_name}",
                                rule.proto.as_str(),
                                rule.host_addr,
                                rule.host_port
                            ),
                        ));
                    }
                }
            }
        }
        let net = find_net_mut(&mut st, network)?;
        if !net.egress {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("network {network} is internal: nothing is published into it")));
        }
        let gw_port = net.gw_port;
        let Some(ep) = net.endpoints.get(endpoint) else {
            return Err(ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint {endpoint} on network {network}")));
        };
        let (owner, ip) = (ep.api.port, ep.api.ip);
        let sockets = bind_rule(&rule)?;
        let ids = self.start_listeners(gw_port, owner, ip, &rule, sockets).await;
        if ids.len() as u32 != count {
            let _ = self.stop_listeners(ids).await;
            return Err(ApiError::new(ErrorCode::Internal, "the datapath could not serve every port of the rule"));
        }
        let net = find_net_mut(&mut st, network)?;
        let ep = net.endpoints.get_mut(endpoint).ok_or_else(|| internal("endpoint vanished under the lock"))?;
        ep.api.published.push(rule.clone());
        ep.publish_ids.push(ids);
        if let Err(e) = self.save(&st) {
            let net = find_net_mut(&mut st, network)?;
            if let Some(ep) = net.endpoints.get_mut(endpoint) {
                ep.api.published.pop();
                let ids = ep.publish_ids.pop().unwrap_or_default();
                let _ = self.stop_listeners(ids).await;
            }
            return Err(e);
        }
        tracing::info!(network, endpoint, proto = rule.proto.as_str(), host = %rule.host_addr, port = rule.host_port, "published");
        Ok(Publication { network: network.to_string(), endpoint: endpoint.to_string(), container_ip: ip, rule })
    }

    /// `DELETE /v1/publish/{proto}/{addr}/{port}`: removes the rule that publishes that port.
    pub async fn unpublish(&self, proto: &str, addr: &str, port: &str) -> Result<(), ApiError> {
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(ApiError::new(ErrorCode::InvalidRequest, format!("protocol {proto:?} is not tcp or udp"))),
        };
        let addr: Ipv4Addr =
            addr.parse().map_err(|_| ApiError::new(ErrorCode::InvalidAddress, format!("{addr:?} is not an IPv4 address")))?;
        let port: u16 = port.parse().map_err(|_| ApiError::new(ErrorCode::InvalidRequest, format!("{port:?} is not a port")))?;
        let mut st = self.state.lock().await;
        let mut found = None;
        for n in st.networks.values_mut() {
            for ep in n.endpoints.values_mut() {
                if let Some(i) =
                    ep.api.published.iter().position(|r| r.proto == proto && r.host_addr == addr && r.ports().any(|(h, _)| h == port))
                {
                    ep.api.published.remove(i);
                    found = Some(if i < ep.publish_ids.len() { ep.publish_ids.remove(i) } else { Vec::new() });
                }
            }
        }
        let Some(ids) = found else {
            return Err(ApiError::new(ErrorCode::NotFound, format!("nothing publishes {}/{addr}:{port}", proto.as_str())));
        };
        self.stop_listeners(ids).await?;
        self.save(&st)
    }

    /// `GET /v1/publish`.
    pub async fn publications(&self) -> Vec<Publication> {
        let st = self.state.lock().await;
        let mut out = Vec::new();
        for (net_name, n) in &st.networks {
            for (ep_name, ep) in &n.endpoints {
                for rule in &ep.api.published {
                    out.push(Publication {
                        network: net_name.clone(),
                        endpoint: ep_name.clone(),
                        container_ip: ep.api.ip,
                        rule: rule.clone(),
                    });
                }
            }
        }
        out
    }

    /// `GET /v1/egress`.
    pub async fn egress_stats(&self) -> Result<EgressStats, ApiError> {
        let mut s = self.dp.call(|e| e.egress_stats()).await.map_err(internal)?;
        s.enabled = self.opts.egress;
        s.max_flows_per_endpoint = self.opts.egress_limits.max_flows;
        Ok(s)
    }

    /// The limits egress starts with.
    pub fn egress_limits(&self) -> Limits {
        self.opts.egress_limits
    }
}
