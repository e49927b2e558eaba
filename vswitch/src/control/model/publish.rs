//! Published ports: which rules exist, which may be added, which listeners serve them.

use std::net::Ipv4Addr;

use super::errors::{invalid, no_endpoint};
use super::Model;
use crate::api::{ApiError, ErrorCode, Proto, Publication, PublishRule};
use crate::types::PortId;

/// Most ports one rule may publish.
pub const MAX_RANGE: u32 = 1024;

/// Parses `PORT`, `FIRST-LAST` and `all` into inclusive ranges.
///
/// # Errors
/// `invalid_request` naming the bad item.
pub fn parse_port_ranges(items: &[String]) -> Result<Vec<(u16, u16)>, ApiError> {
    items
        .iter()
        .map(|item| {
            let bad = || invalid(format!("host_loopback {item:?}: expected PORT, FIRST-LAST or all"));
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

/// Where a new rule's connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishTarget {
    pub gw_port: PortId,
    pub owner: PortId,
    pub ip: Ipv4Addr,
    /// How many host ports the rule binds.
    pub count: u32,
}

impl Model {
    /// Checks that `rule` may be published to `endpoint`: egress on, sane ports, not internal,
    /// no port already published by any endpoint.
    ///
    /// # Errors
    /// `invalid_request`, `port_in_use`, or no such network or endpoint.
    pub fn check_publish(&self, network: &str, endpoint: &str, rule: &PublishRule) -> Result<PublishTarget, ApiError> {
        if !self.cfg.egress {
            return Err(invalid("published ports need egress (start vswitchd with --egress, the default when rootless)"));
        }
        let end = rule.last_host_port();
        if rule.host_port == 0 || rule.container_port == 0 || end < rule.host_port {
            return Err(invalid("ports must be 1..=65535 and a range must not run backwards"));
        }
        let count = u32::from(end - rule.host_port) + 1;
        if count > MAX_RANGE || u32::from(rule.container_port) + count - 1 > u32::from(u16::MAX) {
            return Err(invalid(format!("a rule publishes at most {MAX_RANGE} ports, and the container's ports must stay below 65536")));
        }
        // One listener per host port: a rule overlapping another of this daemon is refused
        // whichever endpoint holds it.
        for (net_name, ep) in self.all_endpoints() {
            if ep.published.iter().any(|r| (rule.host_port..=end).any(|p| r.covers(rule.proto, rule.host_addr, p))) {
                return Err(ApiError::new(
                    ErrorCode::PortInUse,
                    format!(
                        "{}/{}:{} is already published to {} on {net_name}",
                        rule.proto.as_str(),
                        rule.host_addr,
                        rule.host_port,
                        ep.name
                    ),
                ));
            }
        }
        let net = self.net(network)?;
        if let Some(up) = &net.uplink {
            return Err(invalid(format!(
                "network {network} is on the LAN behind {up}: its containers are reached at their own addresses, nothing is published"
            )));
        }
        if !net.egress {
            return Err(invalid(format!("network {network} is internal: nothing is published into it")));
        }
        let ep = net.endpoints.get(endpoint).ok_or_else(|| no_endpoint(network, endpoint))?;
        Ok(PublishTarget { gw_port: net.gw_port, owner: ep.api.port, ip: ep.api.ip, count })
    }

    /// Records a rule served by the datapath's listeners `ids`.
    ///
    /// # Errors
    /// No such network or endpoint.
    pub fn add_publication(&mut self, network: &str, endpoint: &str, rule: PublishRule, ids: Vec<usize>) -> Result<(), ApiError> {
        let ep = self.ep_mut(network, endpoint)?;
        ep.api.published.push(rule);
        ep.publish_ids.push(ids);
        Ok(())
    }

    /// Takes back the rule [`Model::add_publication`] added last to `endpoint`; returns its
    /// listener ids.
    pub fn pop_publication(&mut self, network: &str, endpoint: &str) -> Vec<usize> {
        let Ok(ep) = self.ep_mut(network, endpoint) else { return Vec::new() };
        ep.api.published.pop();
        ep.publish_ids.pop().unwrap_or_default()
    }

    /// Removes the rule that publishes `proto`/`addr`:`port`; returns its listener ids.
    ///
    /// # Errors
    /// `not_found` when no rule publishes it.
    pub fn remove_publication(&mut self, proto: Proto, addr: Ipv4Addr, port: u16) -> Result<Vec<usize>, ApiError> {
        for ep in self.networks.values_mut().flat_map(|n| n.endpoints.values_mut()) {
            if let Some(i) =
                ep.api.published.iter().position(|r| r.proto == proto && r.host_addr == addr && r.ports().any(|(h, _)| h == port))
            {
                ep.api.published.remove(i);
                return Ok(if i < ep.publish_ids.len() { ep.publish_ids.remove(i) } else { Vec::new() });
            }
        }
        Err(ApiError::new(ErrorCode::NotFound, format!("nothing publishes {}/{addr}:{port}", proto.as_str())))
    }

    /// Takes the saved rules of a restored endpoint out, to be bound again one by one.
    pub fn take_saved_rules(&mut self, network: &str, endpoint: &str) -> Vec<PublishRule> {
        self.ep_mut(network, endpoint).map(|ep| std::mem::take(&mut ep.api.published)).unwrap_or_default()
    }

    pub fn publications(&self) -> Vec<Publication> {
        self.all_endpoints()
            .flat_map(|(net, ep)| {
                ep.published.iter().map(move |rule| Publication {
                    network: net.to_string(),
                    endpoint: ep.name.clone(),
                    container_ip: ep.ip,
                    rule: rule.clone(),
                })
            })
            .collect()
    }
}
