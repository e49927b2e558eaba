//! `/v1/dns` and `/v1/networks/{network}/dns`: records, upstreams, counters.

use std::sync::atomic::Ordering::Relaxed;

use super::Control;
use crate::api::{ApiError, DnsRecord, DnsStats, DnsUpstreams, DnsUpstreamsSet};
use crate::control::model::{internal, parse_upstream};

impl Control {
    pub async fn dns_records(&self, network: Option<&str>) -> Result<Vec<DnsRecord>, ApiError> {
        self.model.lock().await.dns_records(network)
    }

    pub async fn dns_upstreams(&self, network: &str) -> Result<DnsUpstreams, ApiError> {
        let (own, internal_net) = self.model.lock().await.upstreams(network)?;
        let own = own.iter().filter_map(|u| parse_upstream(u).ok()).map(|a| a.to_string()).collect();
        let effective = if internal_net {
            Vec::new()
        } else {
            self.upstreams.read().map_err(internal)?.for_network(network).iter().map(|a| a.to_string()).collect()
        };
        Ok(DnsUpstreams { network: network.to_string(), upstreams: own, effective, internal: internal_net })
    }

    pub async fn set_dns_upstreams(&self, network: &str, req: DnsUpstreamsSet) -> Result<DnsUpstreams, ApiError> {
        {
            let mut m = self.model.lock().await;
            m.set_upstreams(network, req.upstreams)?;
            self.push_dns(&m);
            self.save(&m)?;
        }
        self.dns_upstreams(network).await
    }

    pub fn dns_stats(&self) -> DnsStats {
        let c = &self.dns_counters;
        DnsStats {
            queries: c.queries.load(Relaxed),
            answers: c.answers.load(Relaxed),
            forwarded: c.forwarded.load(Relaxed),
            forward_answers: c.forward_answers.load(Relaxed),
            failures: c.failures.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
        }
    }
}
