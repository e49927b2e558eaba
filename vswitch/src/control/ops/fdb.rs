//! `/v1/fdb`, `/v1/ports`, `/v1/workers`: the MAC table and the ports' counters.

use super::Control;
use crate::api::{ApiError, ErrorCode, FdbAdd, FdbEntry, FdbFlush, FdbStats, Flushed, ImpairState, PortInfo, WorkerInfo};
use crate::control::model::{internal, PortRow};
use crate::datapath::Engine;
use crate::fdb::{FdbError, Flush};
use crate::switch::{DropReason, SwitchError};
use crate::types::{Mac, MacParseError, PortId};

impl Control {
    pub async fn fdb_show(&self, network: Option<&str>) -> Result<Vec<FdbEntry>, ApiError> {
        let m = self.model.lock().await;
        let only = network.map(|n| m.network_ports(n).map(|(id, _)| id)).transpose()?;
        let rows = self
            .dp
            .call(move |e| {
                let now = e.now();
                e.switch()
                    .fdb()
                    .iter()
                    .filter(|r| only.is_none_or(|n| n == r.network))
                    .map(|r| (r.mac, r.port, if r.is_static { 0 } else { now.saturating_sub(r.last_seen).as_secs() }, r.is_static))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(internal)?;
        let names = m.port_names();
        let mut out: Vec<FdbEntry> = rows
            .into_iter()
            .filter_map(|(mac, port, age_secs, is_static)| {
                let (network, port_name) = names.get(&port)?.clone();
                Some(FdbEntry { network, mac, port: port_name, port_id: port, age_secs, is_static })
            })
            .collect();
        out.sort_by(|a, b| (&a.network, a.mac).cmp(&(&b.network, b.mac)));
        Ok(out)
    }

    pub async fn fdb_add(&self, req: FdbAdd) -> Result<FdbEntry, ApiError> {
        if req.mac.is_multicast() || req.mac.is_zero() {
            return Err(ApiError::new(ErrorCode::InvalidAddress, format!("MAC {} is not a unicast address", req.mac)));
        }
        let mut m = self.model.lock().await;
        let (id, port) = m.port_of(&req.network, &req.port)?;
        let mac = req.mac;
        self.dp.call(move |e| e.switch_mut().add_static(id, mac, port)).await.map_err(internal)?.map_err(|e| match e {
            SwitchError::Fdb(f @ FdbError::Full) => ApiError::new(ErrorCode::FdbFull, f.to_string()),
            SwitchError::Fdb(f) => ApiError::new(ErrorCode::InvalidAddress, f.to_string()),
            other => internal(other),
        })?;
        m.add_static(&req.network, mac, &req.port);
        self.save(&m)?;
        Ok(FdbEntry { network: req.network, mac, port: req.port, port_id: port, age_secs: 0, is_static: true })
    }

    pub async fn fdb_del(&self, network: &str, mac: &str) -> Result<(), ApiError> {
        let mac: Mac = mac.parse().map_err(|e: MacParseError| ApiError::new(ErrorCode::InvalidAddress, e.to_string()))?;
        let mut m = self.model.lock().await;
        let (id, _) = m.network_ports(network)?;
        let removed = self.dp.call(move |e| e.switch_mut().fdb_mut().remove(id, mac)).await.map_err(internal)?;
        if !removed {
            return Err(ApiError::new(ErrorCode::FdbEntryNotFound, format!("no entry for {mac} on network {network}")));
        }
        if m.remove_static(network, mac) {
            self.save(&m)?;
        }
        Ok(())
    }

    pub async fn fdb_flush(&self, req: FdbFlush) -> Result<Flushed, ApiError> {
        let m = self.model.lock().await;
        let what = match (&req.network, &req.port) {
            (None, None) => Flush::All,
            (Some(n), None) => Flush::Network(m.network_ports(n)?.0),
            (Some(n), Some(p)) => Flush::Port(m.endpoint_port(n, p)?),
            (None, Some(_)) => return Err(ApiError::new(ErrorCode::InvalidRequest, "port needs network")),
        };
        let removed = self.dp.call(move |e| e.switch_mut().fdb_mut().flush(what, false)).await.map_err(internal)?;
        Ok(Flushed { removed: removed as u64 })
    }

    pub async fn fdb_stats(&self) -> Result<FdbStats, ApiError> {
        self.dp.call(|e| fdb_stats_of(e)).await.map_err(internal)
    }

    /// Every port with the datapath's counters.
    pub async fn ports(&self) -> Result<Vec<PortInfo>, ApiError> {
        let rows = self.model.lock().await.port_rows();
        self.port_infos(rows).await
    }

    /// `rows` with the datapath's counters and impairments.
    pub(super) async fn port_infos(&self, rows: Vec<PortRow>) -> Result<Vec<PortInfo>, ApiError> {
        let ids: Vec<PortId> = rows.iter().map(|r| r.id).collect();
        let counters = self
            .dp
            .call(move |e| {
                ids.iter().map(|p| (e.port_counters(*p).unwrap_or_default(), e.port_worker(*p), e.impairment(*p))).collect::<Vec<_>>()
            })
            .await
            .map_err(internal)?;
        let state =
            |s: Option<crate::datapath::impaired::Status>| s.map(|s| ImpairState { impairment: s.impairment, counters: s.counters });
        Ok(rows
            .into_iter()
            .zip(counters)
            .map(|(r, (c, worker, (imp_in, imp_out)))| PortInfo {
                id: r.id,
                network: r.network,
                name: r.name,
                kind: r.kind.to_string(),
                ifname: r.ifname,
                mac: r.mac,
                offloads: r.offloads,
                vlan: r.vlan,
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                segmented: c.segmented,
                coalesced: c.coalesced,
                drops: DropReason::ALL
                    .iter()
                    .filter(|r| c.drops[r.index()] > 0)
                    .map(|r| (r.as_str().to_string(), c.drops[r.index()]))
                    .collect(),
                worker,
                impair_ingress: state(imp_in),
                impair_egress: state(imp_out),
            })
            .collect())
    }

    /// The datapath threads that read container TAPs, with their totals.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, ApiError> {
        self.dp.call(|e| e.worker_stats()).await.map_err(internal)
    }
}

/// The MAC table's size and counters, read on the datapath thread.
pub(super) fn fdb_stats_of(e: &Engine) -> FdbStats {
    let fdb = e.switch().fdb();
    let (cfg, c) = (fdb.config(), fdb.counters());
    FdbStats {
        entries: fdb.len() as u64,
        max_entries: cfg.max_entries as u64,
        per_port_max: cfg.per_port_max as u64,
        aging_secs: cfg.aging.as_secs(),
        learned: c.learned,
        aged: c.aged,
        evicted: c.evicted,
        moved: c.moved,
        port_limit: c.port_limit,
    }
}
