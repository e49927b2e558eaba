//! What DNS answers: records per network, each port's view, upstreams per network.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{parse_srv, parse_upstream, Model};
use crate::api::{ApiError, DnsRecord, ErrorCode};
use crate::datapath::{DnsView, DNS_TTL};
use crate::types::PortId;

impl Model {
    /// The records of every network (ours and names peers announced) and every port's view
    /// (the networks its namespace is on), for the datapath's responder.
    pub fn dns_tables(&self) -> (::dns::Records, Vec<(PortId, DnsView)>) {
        let mut records = ::dns::Records::new(DNS_TTL);
        for (name, net) in &self.networks {
            let mut entries: Vec<::dns::Entry> = net
                .endpoints
                .values()
                .map(|e| ::dns::Entry {
                    name: e.api.name.clone(),
                    aliases: e.api.aliases.clone(),
                    v4: vec![e.api.ip],
                    v6: e.api.ip6.into_iter().collect(),
                    srv: e.api.srv.iter().filter_map(|s| parse_srv(s).ok()).collect(),
                })
                .collect();
            entries.extend(self.remote_names(name).map(|r| ::dns::Entry {
                name: r.name.clone(),
                aliases: r.aliases.clone(),
                v4: r.v4.clone(),
                v6: r.v6.clone(),
                ..Default::default()
            }));
            records.set_network(name, None, entries);
        }
        let mut views = Vec::new();
        for (name, net) in &self.networks {
            for ep in net.endpoints.values() {
                let mut visible = vec![name.clone()];
                for (other, onet) in &self.networks {
                    if other != name && ep.netns_id.is_some() && onet.endpoints.values().any(|e| e.netns_id == ep.netns_id) {
                        visible.push(other.clone());
                    }
                }
                views.push((ep.api.port, DnsView { network: name.clone(), visible, internal: net.internal, mtu: net.mtu }));
            }
        }
        (records, views)
    }

    /// Our endpoints' names, of one network or all.
    ///
    /// # Errors
    /// No such network.
    pub fn dns_records(&self, network: Option<&str>) -> Result<Vec<DnsRecord>, ApiError> {
        if let Some(n) = network {
            self.net(n)?;
        }
        Ok(self
            .networks
            .iter()
            .filter(|(n, _)| network.is_none_or(|want| want == n.as_str()))
            .flat_map(|(n, net)| {
                net.endpoints.values().map(move |e| DnsRecord {
                    network: n.clone(),
                    name: e.api.name.clone(),
                    aliases: e.api.aliases.clone(),
                    ipv4: vec![e.api.ip],
                    ipv6: e.api.ip6.into_iter().collect(),
                })
            })
            .collect())
    }

    /// Sets a network's upstreams (empty: the daemon's defaults).
    ///
    /// # Errors
    /// No such network, or an upstream that is not `IP` or `IP:PORT`.
    pub fn set_upstreams(&mut self, network: &str, upstreams: Vec<String>) -> Result<(), ApiError> {
        for u in &upstreams {
            parse_upstream(u).map_err(|m| ApiError::new(ErrorCode::InvalidAddress, m))?;
        }
        self.net_mut(network)?.upstreams = upstreams;
        Ok(())
    }

    /// A network's own upstreams as given, and whether it is internal (forwards nothing).
    ///
    /// # Errors
    /// No such network.
    pub fn upstreams(&self, network: &str) -> Result<(Vec<String>, bool), ApiError> {
        let net = self.net(network)?;
        Ok((net.upstreams.clone(), net.internal))
    }

    /// The forwarder's table: the networks that set their own upstreams.
    pub fn upstream_table(&self) -> HashMap<String, Vec<SocketAddr>> {
        self.networks
            .iter()
            .filter(|(_, n)| !n.upstreams.is_empty())
            .map(|(name, n)| (name.clone(), n.upstreams.iter().filter_map(|u| parse_upstream(u).ok()).collect()))
            .collect()
    }
}
