//! `/v1/publish`, `/v1/egress`: published ports and egress, the control side of
//! `datapath::egress`.
//!
//! A publication binds its host sockets here, so that a port the user may not bind or one
//! already taken is a clear API error before anything changes. The bound sockets then go to
//! the datapath, which serves them. Rules are stored with their endpoint, so they come back
//! after a restart and go away when the endpoint is detached.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::Control;
use crate::api::{ApiError, EgressStats, ErrorCode, Proto, Publication, PublishRule};
use crate::control::model::internal;
use crate::datapath::egress::{Limits, Publish, PublishSocket};
use crate::types::PortId;

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
        let mut m = self.model.lock().await;
        let t = m.check_publish(network, endpoint, &rule)?;
        let sockets = bind_rule(&rule)?;
        let ids = self.start_listeners(t.gw_port, t.owner, t.ip, &rule, sockets).await;
        if ids.len() as u32 != t.count {
            let _ = self.stop_listeners(ids).await;
            return Err(ApiError::new(ErrorCode::Internal, "the datapath could not serve every port of the rule"));
        }
        m.add_publication(network, endpoint, rule.clone(), ids)?;
        if let Err(e) = self.save(&m) {
            let _ = self.stop_listeners(m.pop_publication(network, endpoint)).await;
            return Err(e);
        }
        tracing::info!(network, endpoint, proto = rule.proto.as_str(), host = %rule.host_addr, port = rule.host_port, "published");
        Ok(Publication { network: network.to_string(), endpoint: endpoint.to_string(), container_ip: t.ip, rule })
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
        let mut m = self.model.lock().await;
        let ids = m.remove_publication(proto, addr, port)?;
        self.stop_listeners(ids).await?;
        self.save(&m)
    }

    /// `GET /v1/publish`.
    pub async fn publications(&self) -> Vec<Publication> {
        self.model.lock().await.publications()
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
