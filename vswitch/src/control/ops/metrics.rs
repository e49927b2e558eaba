//! `GET /metrics`: everything the daemon already counts, in the Prometheus text exposition
//! format (version 0.0.4).
//!
//! Collected at scrape time: one datapath [`crate::datapath::Job`] (like `port ls`) takes a copy
//! of the counters the datapath keeps anyway, the model gives names and address usage, and a
//! fresh registry is filled and encoded. Nothing is counted for metrics on the hot path. Label
//! sets are bounded by configuration: network, port name, reason, worker, peer (key prefix);
//! never a MAC or a flow.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Control;
use crate::api::{ApiError, EgressStats, FdbStats, WorkerInfo};
use crate::control::model::{b64, internal};
use crate::datapath::capture::CaptureTotals;
use crate::switch::{DropReason, PortCounters};
use crate::types::PortId;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

/// What one datapath job copies out for a scrape.
#[derive(Debug)]
struct Snapshot {
    ports: Vec<(PortCounters, Option<usize>)>,
    /// Each port's impairments (ingress, egress), in the same order.
    impairs: Vec<(Option<crate::datapath::impaired::Status>, Option<crate::datapath::impaired::Status>)>,
    fdb: FdbStats,
    workers: Vec<WorkerInfo>,
    egress: EgressStats,
    peers: Vec<tunnel::PeerInfo>,
    now: std::time::Duration,
    capture: CaptureTotals,
}

/// A family of counters or gauges, registered once and filled row by row.
struct Families<'r> {
    reg: &'r mut Registry,
}

impl Families<'_> {
    fn counter(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.reg.register(name, help, f.clone());
        f
    }

    fn gauge(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.reg.register(name, help, f.clone());
        f
    }
}

fn set(f: &Family<Labels, Counter>, labels: Labels, v: u64) {
    f.get_or_create(&labels).inc_by(v);
}

fn gauge(f: &Family<Labels, Gauge>, labels: Labels, v: u64) {
    f.get_or_create(&labels).set(i64::try_from(v).unwrap_or(i64::MAX));
}

impl Control {
    /// The metrics text: ports, MAC table, workers, DNS, tunnel peers, egress, capture, address
    /// usage per network, process and build info.
    ///
    /// # Errors
    /// `internal` when the datapath has stopped.
    pub async fn metrics(&self) -> Result<String, ApiError> {
        let m = self.model.lock().await;
        let rows = m.port_rows();
        let ids: Vec<PortId> = rows.iter().map(|r| r.id).collect();
        let snap = self
            .dp
            .call(move |e| Snapshot {
                ports: ids.iter().map(|p| (e.port_counters(*p).unwrap_or_default(), e.port_worker(*p))).collect(),
                impairs: ids.iter().map(|p| e.impairment(*p)).collect(),
                fdb: super::fdb::fdb_stats_of(e),
                workers: e.worker_stats(),
                egress: e.egress_stats(),
                peers: e.peer_infos(),
                now: e.now(),
                capture: e.capture_totals(),
            })
            .await
            .map_err(internal)?;
        let networks: Vec<_> = m.networks().into_iter().map(|n| (m.usage(&n.name).ok(), n)).collect();
        let peer_nets: Vec<(String, usize)> = m.peers().into_iter().map(|p| (p.public_key, p.networks.len())).collect();
        drop(m);

        let mut reg = Registry::with_prefix("vswitch");
        let mut fam = Families { reg: &mut reg };

        // Ports.
        let rx_packets = fam.counter("port_rx_packets", "Frames received from the port (into the switch)");
        let rx_bytes = fam.counter("port_rx_bytes", "Bytes received from the port");
        let tx_packets = fam.counter("port_tx_packets", "Frames sent out of the port");
        let tx_bytes = fam.counter("port_tx_bytes", "Bytes sent out of the port");
        let segmented = fam.counter("port_segmented", "Super-frames cut into segments in software on their way out of the port");
        let coalesced = fam.counter("port_coalesced", "Super-frames coalesced from TCP segments on their way out of the port");
        let drops = fam.counter("port_drops", "Frames dropped, by port and reason");
        let port_info = fam.gauge("port_info", "One per port: its network, name, kind and the worker that reads it");
        for (r, (c, worker)) in rows.iter().zip(&snap.ports) {
            let l = || vec![("network", r.network.clone()), ("port", r.name.clone())];
            set(&rx_packets, l(), c.rx_packets);
            set(&rx_bytes, l(), c.rx_bytes);
            set(&tx_packets, l(), c.tx_packets);
            set(&tx_bytes, l(), c.tx_bytes);
            set(&segmented, l(), c.segmented);
            set(&coalesced, l(), c.coalesced);
            for reason in DropReason::ALL {
                // The core never counts unknown_port (there is no port to count it on).
                if reason != DropReason::UnknownPort {
                    let mut lr = l();
                    lr.push(("reason", reason.as_str().to_string()));
                    set(&drops, lr, c.drops_of(reason));
                }
            }
            let mut li = l();
            li.push(("kind", r.kind.to_string()));
            li.push(("worker", worker.map_or(String::new(), |w| w.to_string())));
            gauge(&port_info, li, 1);
        }

        // Link impairments: series only for impaired ports.
        let imp_frames = fam.counter(
            "port_impair_frames",
            "Frames met by a port's link impairment since it was set, by direction and outcome (offered, delayed, lost, queue_full, duplicated, reordered)",
        );
        let imp_queued = fam.gauge("port_impair_queued", "Frames a port's link impairment holds now, by direction");
        for (r, (ingress, egress)) in rows.iter().zip(&snap.impairs) {
            for (dir, st) in [("ingress", ingress), ("egress", egress)] {
                let Some(st) = st else { continue };
                let l = || vec![("network", r.network.clone()), ("port", r.name.clone()), ("direction", dir.to_string())];
                let c = &st.counters;
                for (outcome, v) in [
                    ("offered", c.frames),
                    ("delayed", c.delayed),
                    ("lost", c.dropped_loss),
                    ("queue_full", c.dropped_queue_full),
                    ("duplicated", c.duplicated),
                    ("reordered", c.reordered),
                ] {
                    let mut lo = l();
                    lo.push(("outcome", outcome.to_string()));
                    set(&imp_frames, lo, v);
                }
                gauge(&imp_queued, l(), c.queued);
            }
        }

        // MAC table.
        let f = &snap.fdb;
        gauge(&fam.gauge("fdb_entries", "Entries in the MAC table"), vec![], f.entries);
        gauge(&fam.gauge("fdb_max_entries", "Most entries the MAC table holds"), vec![], f.max_entries);
        set(&fam.counter("fdb_learned", "MAC table entries learned"), vec![], f.learned);
        set(&fam.counter("fdb_aged", "MAC table entries aged out"), vec![], f.aged);
        set(&fam.counter("fdb_evicted", "MAC table entries evicted from a full table"), vec![], f.evicted);
        set(&fam.counter("fdb_moved", "MAC addresses seen moving to another port"), vec![], f.moved);
        set(&fam.counter("fdb_port_limit", "Sources not learned: their port holds its maximum"), vec![], f.port_limit);

        // Workers.
        let w_ports = fam.gauge("worker_ports", "Container TAPs each datapath thread reads");
        let w_fwd = fam.counter("worker_forwarded", "Frames a worker forwarded on its own");
        let w_handed = fam.counter("worker_handed_over", "Frames a worker handed to the main datapath thread");
        let w_over = fam.counter("worker_overload", "Frames a worker dropped: the main datapath thread had not caught up");
        let w_decided = fam.counter("worker_decided_for_others", "Frames the main datapath thread decided for other workers");
        let w_picked = fam.counter("worker_picked_up", "Frames a datapath thread read from another thread's TAP while that one slept");
        let w_wake = fam.counter("worker_wakeups", "Times a datapath thread slept in epoll and woke up to events");
        let w_rt = fam.gauge("worker_realtime", "1 while a datapath thread runs SCHED_FIFO (--datapath-realtime)");
        for w in &snap.workers {
            let l = || vec![("worker", w.id.to_string())];
            gauge(&w_ports, l(), w.ports);
            set(&w_fwd, l(), w.forwarded);
            set(&w_handed, l(), w.handed_over);
            set(&w_over, l(), w.overload);
            set(&w_decided, l(), w.decided_for_others);
            set(&w_picked, l(), w.picked_up);
            set(&w_wake, l(), w.wakeups);
            gauge(&w_rt, l(), u64::from(w.realtime));
        }

        // DNS.
        let d = &self.dns_counters;
        set(&fam.counter("dns_queries", "DNS queries that reached a gateway"), vec![], d.queries.load(Relaxed));
        set(&fam.counter("dns_answers", "DNS queries answered by the gateway itself"), vec![], d.answers.load(Relaxed));
        set(&fam.counter("dns_forwarded", "DNS queries sent to an upstream"), vec![], d.forwarded.load(Relaxed));
        set(&fam.counter("dns_forward_answers", "Upstream DNS answers relayed back"), vec![], d.forward_answers.load(Relaxed));
        set(&fam.counter("dns_failures", "Forwarded DNS queries answered SERVFAIL"), vec![], d.failures.load(Relaxed));
        set(&fam.counter("dns_dropped", "DNS queries dropped unanswered"), vec![], d.dropped.load(Relaxed));
        let (sum, count, buckets) = d.forward_latency.snapshot();
        fam.reg.register_with_unit(
            "dns_forward_duration",
            "How long forwarded DNS queries took at the upstreams (answered or not)",
            prometheus_client::registry::Unit::Seconds,
            FixedHistogram { sum, count, buckets },
        );

        // Tunnel peers.
        let p_rx = fam.counter("peer_rx_packets", "Datagrams received from a tunnel peer and authenticated");
        let p_rxb = fam.counter("peer_rx_bytes", "Bytes received from a tunnel peer");
        let p_tx = fam.counter("peer_tx_packets", "Datagrams sealed for a tunnel peer");
        let p_txb = fam.counter("peer_tx_bytes", "Bytes sealed for a tunnel peer");
        let p_hs = fam.counter("peer_handshakes", "Handshakes completed with a tunnel peer");
        let p_drops = fam.counter("peer_drops", "Datagrams dropped for a tunnel peer, by reason");
        let p_age = fam.gauge("peer_last_handshake_age_seconds", "Seconds since the last handshake with a tunnel peer");
        let p_nets = fam.gauge("peer_networks", "Overlay networks a tunnel peer carries");
        for p in &snap.peers {
            let key = b64(&p.public_key);
            let l = || vec![("peer", key.get(..8).unwrap_or(&key).to_string())];
            set(&p_rx, l(), p.rx_packets);
            set(&p_rxb, l(), p.rx_bytes);
            set(&p_tx, l(), p.tx_packets);
            set(&p_txb, l(), p.tx_bytes);
            set(&p_hs, l(), p.handshakes);
            for (reason, n) in p.drops.iter() {
                let mut lr = l();
                lr.push(("reason", reason.as_str().to_string()));
                set(&p_drops, lr, n);
            }
            if let Some(t) = p.last_handshake {
                gauge(&p_age, l(), snap.now.saturating_sub(t).as_secs());
            }
            if let Some((_, n)) = peer_nets.iter().find(|(k, _)| *k == key) {
                gauge(&p_nets, l(), *n as u64);
            }
        }

        // Egress.
        let e = &snap.egress;
        let flows = fam.gauge("egress_flows", "Egress flows held, by protocol");
        gauge(&flows, vec![("proto", "tcp".into())], e.tcp_flows);
        gauge(&flows, vec![("proto", "udp".into())], e.udp_flows);
        gauge(&flows, vec![("proto", "icmp".into())], e.icmp_flows);
        let opened = fam.counter("egress_opened", "Egress flows opened, by protocol");
        set(&opened, vec![("proto", "tcp".into())], e.tcp_opened);
        set(&opened, vec![("proto", "udp".into())], e.udp_opened);
        set(&opened, vec![("proto", "icmp".into())], e.icmp_opened);
        set(&fam.counter("egress_published_accepted", "Connections accepted on published ports"), vec![], e.published_accepted);
        let refused = fam.counter("egress_refused", "Egress packets refused, by reason");
        for (reason, n) in [
            ("connect_failed", e.connect_failed),
            ("denied", e.denied),
            ("over_limit", e.over_limit),
            ("spoofed", e.spoofed),
            ("malformed", e.malformed),
            ("icmp_unavailable", e.icmp_unavailable),
        ] {
            set(&refused, vec![("reason", reason.into())], n);
        }

        // Packet capture.
        let c = &snap.capture;
        gauge(&fam.gauge("capture_sessions", "Packet captures running"), vec![], c.sessions);
        set(&fam.counter("capture_frames", "Frames copied to a packet capture"), vec![], c.captured);
        set(
            &fam.counter("capture_dropped", "Frames a packet capture could not keep up with (dropped from the capture only)"),
            vec![],
            c.dropped,
        );

        // Address usage.
        let total = fam.gauge("network_addresses", "Host addresses a network's subnet can hand out");
        let in_use = fam.gauge("network_addresses_in_use", "Addresses of a network leased to endpoints");
        let endpoints = fam.gauge("network_endpoints", "Endpoints attached to a network");
        for (usage, n) in &networks {
            let l = || vec![("network", n.name.clone())];
            if let Some(u) = usage {
                gauge(&total, l(), u.total);
                gauge(&in_use, l(), u.in_use);
            }
            gauge(&endpoints, l(), n.endpoints as u64);
        }

        // Process and build.
        let version = Family::<Labels, Gauge>::default();
        fam.reg.register("build_info", "The vswitchd build: version and API", version.clone());
        gauge(&version, vec![("version", env!("CARGO_PKG_VERSION").into()), ("api", crate::api::PREFIX.trim_start_matches('/').into())], 1);
        let start = self.started.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        gauge(&fam.gauge("process_start_time_seconds", "When vswitchd started, in seconds since the Unix epoch"), vec![], start);
        let proc = process_stats();
        if let Some(rss) = proc.rss_bytes {
            gauge(&fam.gauge("process_resident_memory_bytes", "Resident memory of vswitchd"), vec![], rss);
        }
        if let Some(fds) = proc.open_fds {
            gauge(&fam.gauge("process_open_fds", "File descriptors vswitchd holds open"), vec![], fds);
        }
        if let Some(max) = proc.max_fds {
            gauge(&fam.gauge("process_max_fds", "Open files soft limit of vswitchd"), vec![], max);
        }
        if let Some(threads) = proc.threads {
            gauge(&fam.gauge("process_threads", "Threads of vswitchd"), vec![], threads);
        }

        let mut out = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut out, &reg).map_err(internal)?;
        Ok(out)
    }
}

/// A histogram whose counts were taken elsewhere (atomics), encoded as they are.
#[derive(Debug)]
struct FixedHistogram {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative), +Inf last.
    buckets: Vec<(f64, u64)>,
}

impl prometheus_client::encoding::EncodeMetric for FixedHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// What `/proc/self` tells about this process.
#[derive(Debug, Default)]
struct ProcessStats {
    rss_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    threads: Option<u64>,
}

fn process_stats() -> ProcessStats {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse::<u64>().ok());
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let max_fds = limits.lines().find_map(|l| l.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok());
    ProcessStats {
        rss_bytes: field("VmRSS:").map(|kib| kib * 1024),
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
        max_fds,
        threads: field("Threads:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_in_the_text_format() {
        let mut reg = Registry::with_prefix("vswitch");
        let mut fam = Families { reg: &mut reg };
        let rx = fam.counter("port_rx_packets", "Frames received");
        set(&rx, vec![("network", "net1".into()), ("port", "c1".into())], 20);
        let g = fam.gauge("fdb_entries", "Entries");
        gauge(&g, vec![], 3);
        let h = crate::datapath::LatencyHistogram::default();
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(9));
        let (sum, count, buckets) = h.snapshot();
        fam.reg.register_with_unit(
            "dns_forward_duration",
            "Latency",
            prometheus_client::registry::Unit::Seconds,
            FixedHistogram { sum, count, buckets },
        );
        let mut out = String::new();
        prometheus_text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("# TYPE vswitch_port_rx_packets_total counter\n"), "{out}");
        assert!(out.contains("vswitch_port_rx_packets_total{network=\"net1\",port=\"c1\"} 20\n"), "{out}");
        assert!(out.contains("vswitch_fdb_entries 3\n"), "{out}");
        assert!(out.contains("# TYPE vswitch_dns_forward_duration_seconds histogram\n"), "{out}");
        assert!(out.contains("vswitch_dns_forward_duration_seconds_bucket{le=\"0.0025\"} 0\n"), "{out}");
        assert!(out.contains("vswitch_dns_forward_duration_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("vswitch_dns_forward_duration_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("vswitch_dns_forward_duration_seconds_count 2\n"), "{out}");
    }

    #[test]
    fn process_stats_read_proc() {
        let p = process_stats();
        assert!(p.rss_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() > 0);
        assert!(p.threads.unwrap() >= 1);
    }
}
