//! Operations: each resource's requests, carried out by asking the [`Model`] first and then
//! applying what it decided through the effects (the namespace thread, datapath jobs, the
//! state file), undoing the model's change when an effect fails.
//!
//! One change at a time: the model's lock is held across a whole operation, effects included,
//! so validation and commit never interleave.

pub mod capture;
mod cluster;
pub mod dhcp;
mod dns;
pub mod docker;
mod endpoints;
mod fdb;
mod ifports;
mod impair;
pub mod metrics;
mod networks;
mod peers;
mod publish;
mod restore;
pub mod routes;
pub mod trace;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;

pub use peers::{load_or_make_key, random_bytes};

use super::forwarder::{self, Upstreams};
use super::model::{self, internal, Model, NetworkPlan};
use crate::api::{ApiError, ErrorCode, Version};
use crate::datapath::egress::NetConfig;
use crate::datapath::{Datapath, DnsCounters};
use crate::sys::NetnsWorker;
use crate::types::PortId;

/// Options the daemon was started with that shape control decisions.
#[derive(Debug, Clone)]
pub struct Options {
    /// Open TAPs with `IFF_VNET_HDR` and offloads.
    pub offloads: bool,
    /// Where `state.json` lives.
    pub state_dir: PathBuf,
    /// Keep the TAPs on a planned stop (like Docker's live-restore): containers keep their
    /// interfaces and the next start picks them up. Without it a planned stop removes them
    /// (the next start makes them again for every endpoint whose namespace still exists).
    pub live_restore: bool,
    /// Where subnets of networks created without one come from.
    pub pools: ipam::SubnetPools,
    /// MTU of the underlay the tunnel runs on; overlay networks default to what fits in it.
    pub underlay_mtu: u32,
    /// Where `tunnel.key` lives and the tunnel listens, when it runs.
    pub tunnel_listen: Option<std::net::SocketAddr>,
    /// Containers of non-internal networks reach beyond them through the daemon's sockets
    /// (egress NAT, on by default when rootless).
    pub egress: bool,
    /// What one container may hold in egress flows.
    pub egress_limits: crate::datapath::egress::Limits,
}

/// The control plane: the model behind one lock, and the effects.
#[derive(Debug)]
pub struct Control {
    model: Mutex<Model>,
    dp: Arc<Datapath>,
    netns: Arc<NetnsWorker>,
    opts: Options,
    dns_counters: Arc<DnsCounters>,
    upstreams: Arc<RwLock<Upstreams>>,
    /// When the daemon started (for `process_start_time_seconds`).
    started: std::time::SystemTime,
    /// The cluster front end, with `--cluster` (set once at start).
    cluster: std::sync::OnceLock<Arc<super::front::cluster::Cluster>>,
}

impl Control {
    /// The control plane over a running datapath. DNS queries the gateways do not own are
    /// forwarded to `default_upstreams` (or a network's own) by a task started here: call it
    /// inside the tokio runtime.
    pub fn new(
        dp: Arc<Datapath>,
        netns: Arc<NetnsWorker>,
        opts: Options,
        dns_counters: Arc<DnsCounters>,
        default_upstreams: Vec<std::net::SocketAddr>,
        dns_timeout: std::time::Duration,
    ) -> Control {
        let upstreams = Arc::new(RwLock::new(Upstreams { default: default_upstreams, ..Default::default() }));
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(forwarder::run(rx, dp.clone(), upstreams.clone(), dns_counters.clone(), dns_timeout));
        let _ = dp.submit_fn(move |e| e.set_dns_forwarder(tx));
        let limits = opts.egress_limits;
        let _ = dp.submit_fn(move |e| e.set_egress_limits(limits));
        let cfg = model::Config {
            offloads: opts.offloads,
            egress: opts.egress,
            tunnel: opts.tunnel_listen.is_some(),
            underlay_mtu: opts.underlay_mtu,
            pools: opts.pools.clone(),
        };
        let model = Model::new(cfg, random_ula());
        Control {
            model: Mutex::new(model),
            dp,
            netns,
            opts,
            dns_counters,
            upstreams,
            started: std::time::SystemTime::now(),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Stops the datapath: every TAP fd is closed, so the kernel removes every TAP we made
    /// (unless live-restore keeps them).
    pub async fn shutdown(&self) {
        let _in_flight_done = self.model.lock().await;
        let keep = self.opts.live_restore;
        let _ = self
            .dp
            .call(move |e| {
                if !keep {
                    e.unpersist_all();
                }
                e.stop()
            })
            .await;
        self.dp.join();
    }

    pub fn version(&self) -> Version {
        let userns_pid = self.netns.userns_pid();
        Version { version: env!("CARGO_PKG_VERSION").to_string(), api: "v1".to_string(), rootless: userns_pid.is_some(), userns_pid }
    }

    /// Writes the state file; a failure is logged and reported (the change stays in memory).
    fn save(&self, m: &Model) -> Result<(), ApiError> {
        crate::state::save(&self.opts.state_dir, &m.snapshot()).map_err(|e| {
            tracing::error!(error = %e, dir = %self.opts.state_dir.display(), "cannot write the state file");
            ApiError::new(ErrorCode::Internal, format!("the change could not be saved to {}: {e}", self.opts.state_dir.display()))
        })
    }

    /// After a change to our own endpoints or peers: new records here, and our names to the
    /// peers. (Names received from peers only call `push_dns`: announcing in answer to an
    /// announcement would make hosts echo each other forever.)
    fn local_change(&self, m: &mut Model) {
        self.push_dns(m);
        self.announce(m);
    }

    /// Rebuilds the DNS records, every port's view and the forwarder's upstreams from the
    /// model and hands them over in one job: a pointer swap there, no socket touched, no query
    /// lost.
    fn push_dns(&self, m: &Model) {
        if let Ok(mut u) = self.upstreams.write() {
            u.per_network = m.upstream_table();
        }
        let (records, views) = m.dns_tables();
        let records = Arc::new(records);
        if let Err(e) = self.dp.submit_fn(move |e| e.set_dns(records, views)) {
            tracing::error!(error = %e, "cannot update DNS records: datapath stopped");
        }
    }

    /// Sends our names of every overlay network to the peers that carry it.
    fn announce(&self, m: &mut Model) {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        for (id, frames) in m.announcements(now_ms) {
            let _ = self.dp.submit_fn(move |e| e.send_to_peers(id, frames));
        }
    }

    /// Tells the datapath about a network (its gateway, and egress when on).
    async fn add_network_to_datapath(&self, plan: &NetworkPlan) -> Result<(), ApiError> {
        let (id, gw_port, gw, prefix_len, mtu) = (plan.id, plan.gw_port, plan.gw, plan.subnet.prefix_len(), plan.mtu);
        let egress = self.egress_config(plan);
        self.dp
            .call(move |e| {
                let r = e.add_network(id, gw_port, gw, prefix_len, mtu);
                if let (Ok(()), Some(cfg)) = (&r, egress) {
                    e.set_egress_network(gw_port, cfg);
                }
                r
            })
            .await
            .map_err(internal)?
            .map_err(internal)
    }

    /// Egress settings of a network, or `None` when egress is off for the daemon.
    fn egress_config(&self, plan: &NetworkPlan) -> Option<NetConfig> {
        // On an uplink network the LAN's router is the gateway: nothing is routed here.
        (self.opts.egress && plan.uplink.is_none()).then(|| NetConfig {
            gw: plan.gw,
            subnet: plan.subnet,
            mtu: plan.mtu,
            egress: !plan.internal,
            // Validated when the network was created.
            host_loopback: model::parse_port_ranges(&plan.host_loopback).unwrap_or_default(),
            // Every TAP has a virtio header when offloads are on (overlay ones too).
            vnet: self.opts.offloads,
        })
    }

    /// Takes a TAP out of the datapath and closes it on a blocking thread: deleting a network
    /// device waits for RCU grace periods (tens of ms) and must not stall the datapath.
    async fn close_tap(&self, port: PortId) {
        if let Ok(Some(file)) = self.dp.call(move |e| e.remove_tap(port)).await {
            let _ = tokio::task::spawn_blocking(move || drop(file)).await;
        }
    }
}

/// A random ULA /48 (RFC 4193 global id from the kernel's random source).
fn random_ula() -> ipnet::Ipv6Net {
    ipam::SubnetPools::ula48(random_bytes::<5>())
}
