//! The cluster front end (`vswitchd --cluster etcd://HOST:PORT[,...]`): translates between
//! etcd and the control plane, nothing else.
//!
//! - From etcd: one task keeps this host registered under a lease, reads everything under the
//!   prefix, then watches it; after each batch of events it asks [`Control`] to make the
//!   cluster's networks (claiming an address block here first), the other hosts tunnel peers,
//!   and their names DNS records (`control/ops/cluster.rs`). Keys and values are checked by
//!   `control/model/cluster.rs`; a malformed value is reported and skipped, keeping what an
//!   earlier good value made.
//! - To etcd: `network create --overlay` stores the definition (create-if-absent transaction),
//!   `network rm` deletes it, and our names are written whenever they change.
//!
//! While etcd does not answer nothing is taken down: peers, names and addresses stay as they
//! were, cluster operations fail with `cluster_unavailable`, and the task reconnects and reads
//! everything again when it is back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity, KeyValue, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use ipnet::Ipv4Net;

use crate::announce::RemoteName;
use crate::api::{ApiError, ClusterEndpoint, ClusterHost, ClusterNetwork, ClusterStatus, ErrorCode, Network, NetworkCreate};
use crate::control::model::cluster::{
    block_order, check_cluster_request, check_definition, definition_of, HostRecord, Key, Layout, NamesRecord,
};
use crate::control::model::{b64, parse_key};
use crate::control::Control;

/// How often our names are compared with what the store has (a local check; the store is
/// written only when they changed).
const NAMES_EVERY: Duration = Duration::from_millis(300);
/// How long one request to the store may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of a request before it counts as failed (a dead member in the endpoint list fails
/// some requests: the next attempt goes to another member).
const ATTEMPTS: usize = 3;

/// What `--cluster` and its options say.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// This host's name in the cluster.
    pub host: String,
    /// The lease's time to live: a host that stops renewing it is gone after this long.
    pub lease_ttl: Duration,
    /// CA certificate, client certificate and key (PEM) for TLS to etcd.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClusterConfig {
    /// Checks the host name and the prefix.
    ///
    /// # Errors
    /// Which option is wrong and why.
    pub fn check(&self) -> Result<(), String> {
        crate::control::model::check_name(&self.host, "host")
            .map_err(|e| format!("--host-name (default: the machine's host name): {}", e.error.message))?;
        Layout::new(&self.prefix).map_err(|e| format!("--cluster-prefix: {e}"))?;
        if self.cert.is_some() != self.key.is_some() {
            return Err("--cluster-cert and --cluster-key go together".into());
        }
        Ok(())
    }
}

/// Parses `etcd://HOST:PORT[,HOST:PORT...]` (or `etcds://` for TLS).
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_cluster_url(url: &str) -> Result<(Vec<String>, bool), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("etcd://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("etcds://") {
        (true, r)
    } else {
        return Err(format!("--cluster {url:?}: expected etcd://HOST:PORT[,HOST:PORT...] (or etcds:// for TLS)"));
    };
    let mut eps = Vec::new();
    for ep in rest.split(',') {
        let ok = ep.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("--cluster {url:?}: {ep:?} is not HOST:PORT"));
        }
        eps.push(ep.to_string());
    }
    Ok((eps, tls))
}

/// Cluster mode's front end: its configuration and what it last read from the store.
#[derive(Debug)]
pub struct Cluster {
    cfg: ClusterConfig,
    layout: Layout,
    urls: Vec<String>,
    options: ConnectOptions,
    /// This host's record (key and tunnel endpoint; the lease is filled in per session).
    me: HostRecord,
    shared: Mutex<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    client: Option<Conn>,
    lease: Option<i64>,
    /// When the store last answered a keep-alive.
    last_ok: Option<Instant>,
    error: Option<String>,
    hosts: BTreeMap<String, HostRecord>,
    networks: BTreeMap<String, NetworkCreate>,
    names: BTreeMap<(String, String), NamesRecord>,
    /// Refused values: key → reason.
    malformed: BTreeMap<String, String>,
    /// Cluster changes that could not be made here: what → reason.
    failed: BTreeMap<String, String>,
    /// Our names as last written, per network.
    published: BTreeMap<String, Vec<RemoteName>>,
    /// (network, host key) whose names we gave the model.
    applied: BTreeSet<(String, String)>,
    /// Requests sent to the store (for the scale benchmark: requests per host at rest).
    requests: u64,
    /// Our own record as we wrote it, and whether the store now says something else there
    /// (changed or deleted by someone else: written again).
    registered: Vec<u8>,
    overwritten: bool,
}

/// The etcd client (which has no `Debug`).
#[derive(Clone)]
struct Conn(Client);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("etcd client")
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::ClusterUnavailable, format!("cluster store (etcd) did not answer {what}: {e}; try again when it is back"))
}

impl Cluster {
    /// The front end for this host (`public_key`, tunnel `endpoint`).
    ///
    /// # Errors
    /// A bad host name, prefix or TLS file.
    pub fn new(cfg: ClusterConfig, tls: bool, public_key: String, endpoint: SocketAddr) -> Result<Cluster, String> {
        cfg.check()?;
        let layout = Layout::new(&cfg.prefix).map_err(|e| format!("--cluster-prefix: {e}"))?;
        let tls = tls || cfg.ca.is_some() || cfg.cert.is_some();
        let scheme = if tls { "https" } else { "http" };
        let urls = cfg.endpoints.iter().map(|e| format!("{scheme}://{e}")).collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
        if tls {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
            let mut t = TlsOptions::new();
            if let Some(ca) = &cfg.ca {
                t = t.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&cfg.cert, &cfg.key) {
                (Some(c), Some(k)) => t = t.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => return Err("--cluster-cert and --cluster-key go together".into()),
            }
            options = options.with_tls(t);
        }
        let me = HostRecord { name: cfg.host.clone(), public_key, endpoint, lease: 0 };
        Ok(Cluster { cfg, layout, urls, options, me, shared: Mutex::new(Shared::default()) })
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store answered a keep-alive within the last 3 seconds (or a lease's third, if
    /// shorter): cluster operations may go ahead.
    fn healthy(&self) -> bool {
        let window = (self.cfg.lease_ttl / 3).clamp(Duration::from_secs(2), Duration::from_secs(3));
        let s = self.shared();
        s.client.is_some() && s.last_ok.is_some_and(|t| t.elapsed() < window)
    }

    /// The client, while the store answers.
    ///
    /// # Errors
    /// `cluster_unavailable` with the store's last error.
    pub fn check_available(&self) -> Result<Client, ApiError> {
        if self.healthy() {
            if let Some(Conn(c)) = self.shared().client.clone() {
                return Ok(c);
            }
        }
        let why = self.shared().error.clone().unwrap_or_else(|| "not connected yet".into());
        Err(ApiError::new(
            ErrorCode::ClusterUnavailable,
            format!(
                "the cluster store (etcd at {}) is not reachable ({why}): cluster operations wait until it is back; \
                 containers already attached keep working",
                self.cfg.endpoints.join(",")
            ),
        ))
    }

    fn count(&self, n: u64) {
        self.shared().requests += n;
    }

    /// `network create --overlay`: stores the definition once for the whole cluster (made
    /// only if absent) and makes it here.
    ///
    /// # Errors
    /// What a local create refuses, options a cluster network cannot have, a network of that
    /// name already in the cluster (`network_exists`), the store not answering.
    pub async fn create_network(&self, control: &Control, req: NetworkCreate) -> Result<Network, ApiError> {
        check_cluster_request(&req)?;
        let client = self.check_available()?;
        let made = control.preview_network(req.clone()).await?;
        let def = definition_of(&req, &made);
        check_definition(&def).map_err(|e| ApiError::new(ErrorCode::InvalidSubnet, format!("network {}: {e}", req.name)))?;
        let key = self.layout.network(&def.name);
        let value = serde_json::to_vec(&def).map_err(crate::control::model::internal)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self
            .retry(&client, |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await
            .map_err(|e| unavailable("the network's definition", e))?;
        if !resp.succeeded() {
            let theirs = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().and_then(|kv| serde_json::from_slice::<NetworkCreate>(kv.value()).ok()),
                _ => None,
            });
            return Err(ApiError::new(
                ErrorCode::NetworkExists,
                format!(
                    "network {} is already defined in the cluster{}: every host gets it from there",
                    def.name,
                    theirs.and_then(|t| t.subnet).map(|s| format!(" (subnet {s})")).unwrap_or_default()
                ),
            ));
        }
        tracing::info!(network = %def.name, subnet = ?def.subnet, "cluster: network defined");
        self.shared().networks.insert(def.name.clone(), def.clone());
        self.materialize(control, &client, &def).await
    }

    /// `network rm` of a cluster network: deletes its definition and blocks (every host then
    /// removes its copy) and the local copy.
    ///
    /// # Errors
    /// Endpoints attached here without `force`, the store not answering.
    pub async fn remove_network(&self, control: &Control, name: &str, force: bool) -> Result<(), ApiError> {
        let client = self.check_available()?;
        let detail = control.inspect_network(name).await?;
        if detail.network.endpoints > 0 && !force {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!("network {name} has {} endpoint(s) attached here; detach them or remove with --force", detail.network.endpoints),
            ));
        }
        let txn = Txn::new().and_then([
            TxnOp::delete(self.layout.network(name), None),
            TxnOp::delete(self.layout.blocks(name), Some(DeleteOptions::new().with_prefix())),
        ]);
        self.retry(&client, |mut c| {
            let t = txn.clone();
            async move { c.txn(t).await }
        })
        .await
        .map_err(|e| unavailable("the removal", e))?;
        self.shared().networks.remove(name);
        control.remove_cluster_network(name).await?;
        let hosts = self.peer_hosts();
        control.sync_cluster_peers(&hosts).await;
        tracing::info!(network = name, "cluster: network removed");
        Ok(())
    }

    /// Runs a request up to [`ATTEMPTS`] times.
    async fn retry<T, F, Fut>(&self, client: &Client, mut f: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for i in 0..ATTEMPTS {
            self.count(1);
            match tokio::time::timeout(REQUEST_TIMEOUT, f(client.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(etcd_client::Error::InvalidArgs("timed out".into())),
            }
            if i + 1 < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(last.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no attempt".into())))
    }

    /// Makes the cluster network `def` here: finds this host's block of it (or claims a free
    /// one) and makes the local copy handing out from it.
    async fn materialize(&self, control: &Control, client: &Client, def: &NetworkCreate) -> Result<Network, ApiError> {
        let block = match control.cluster_networks().await.get(&def.name) {
            Some(b) => *b,
            None => self.claim_block(client, def).await?,
        };
        control.ensure_cluster_network(def, block).await
    }

    /// This host's address block of `def`: the one it owns already, else the first free one
    /// it wins (create-if-absent), in [`block_order`].
    async fn claim_block(&self, client: &Client, def: &NetworkCreate) -> Result<Ipv4Net, ApiError> {
        let subnet = check_definition(def).map_err(|e| ApiError::new(ErrorCode::InvalidSubnet, e))?;
        let prefix = self.layout.blocks(&def.name);
        let resp = self
            .retry(client, |mut c| {
                let p = prefix.clone();
                async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|e| unavailable("the address blocks", e))?;
        let mut taken = BTreeSet::new();
        for kv in resp.kvs() {
            if let Some(Key::Block { block, .. }) = self.layout.parse(kv.key()) {
                if kv.value() == self.cfg.host.as_bytes() {
                    return Ok(block);
                }
                taken.insert(block);
            }
        }
        for block in block_order(subnet, &self.cfg.host) {
            if taken.contains(&block) {
                continue;
            }
            let key = self.layout.block(&def.name, block);
            let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
                key.clone(),
                self.cfg.host.clone(),
                None,
            )]);
            let r = self
                .retry(client, |mut c| {
                    let t = txn.clone();
                    async move { c.txn(t).await }
                })
                .await
                .map_err(|e| unavailable("the address block claim", e))?;
            if r.succeeded() {
                tracing::info!(network = %def.name, %block, "cluster: address block claimed");
                return Ok(block);
            }
        }
        Err(ApiError::new(
            ErrorCode::PoolExhausted,
            format!("every address block of network {} ({subnet}) belongs to another host", def.name),
        ))
    }

    /// The other hosts as tunnel peers: key → underlay endpoint.
    fn peer_hosts(&self) -> BTreeMap<String, SocketAddr> {
        let s = self.shared();
        s.hosts.values().filter(|h| h.name != self.cfg.host).map(|h| (h.public_key.clone(), h.endpoint)).collect()
    }

    /// Keeps this host in the cluster for as long as the daemon runs: connects, registers,
    /// reads, watches; on any failure waits a second and starts again, taking nothing down.
    pub async fn run(self: Arc<Self>, control: Arc<Control>) {
        let mut said: Option<String> = None;
        loop {
            let Err(e) = self.session(&control).await;
            {
                let mut s = self.shared();
                s.error = Some(e.clone());
            }
            if said.as_deref() != Some(&e) {
                tracing::warn!(error = %e, endpoints = %self.cfg.endpoints.join(","), "cluster: store not reachable; the data plane keeps what it has, retrying");
                said = Some(e);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// One connection with one lease. Returns only on failure.
    async fn session(&self, control: &Control) -> Result<std::convert::Infallible, String> {
        let client = Client::connect(&self.urls, Some(self.options.clone())).await.map_err(|e| format!("connect: {e}"))?;
        let ttl = self.cfg.lease_ttl.as_secs().max(1) as i64;
        let lease =
            self.retry(&client, |mut c| async move { c.lease_grant(ttl, None).await }).await.map_err(|e| format!("lease: {e}"))?.id();
        self.register(&client, lease).await?;
        {
            let mut s = self.shared();
            s.client = Some(Conn(client.clone()));
            s.lease = Some(lease);
            s.last_ok = Some(Instant::now());
            s.error = None;
            // Written again under this lease.
            s.published.clear();
        }
        tracing::info!(host = %self.cfg.host, lease = format!("{lease:x}"), "cluster: registered");
        let renew_every = (self.cfg.lease_ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(1));
        loop {
            // Read everything, then watch from the revision after it; a broken watch reads again.
            let watched = self.read_and_watch(control, &client, lease, renew_every).await;
            if let Err(e) = watched {
                tracing::debug!(error = %e, "cluster: watch interrupted; reading again");
                if !self.healthy() {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    /// Writes this host's record under `lease`.
    async fn register(&self, client: &Client, lease: i64) -> Result<(), String> {
        let mut me = self.me.clone();
        me.lease = lease;
        let value = serde_json::to_vec(&me).map_err(|e| e.to_string())?;
        let key = self.layout.host(&self.cfg.host);
        self.shared().registered = value.clone();
        self.retry(client, |mut c| {
            let (k, v) = (key.clone(), value.clone());
            async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await }
        })
        .await
        .map_err(|e| format!("register: {e}"))?;
        Ok(())
    }

    async fn read_and_watch(&self, control: &Control, client: &Client, lease: i64, renew_every: Duration) -> Result<(), String> {
        let root = self.layout.root();
        let resp = self
            .retry(client, |mut c| {
                let r = root.clone();
                async move { c.get(r, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|e| format!("read: {e}"))?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.replace_all(resp.kvs());
        self.count(1);
        let mut watch = client
            .clone()
            .watch(root.clone(), Some(WatchOptions::new().with_prefix().with_start_revision(rev + 1)))
            .await
            .map_err(|e| format!("watch: {e}"))?;
        self.reconcile(control, client, lease).await;
        let mut renew = tokio::time::interval(renew_every);
        let mut names = tokio::time::interval(NAMES_EVERY);
        loop {
            tokio::select! {
                msg = watch.message() => {
                    let resp = msg.map_err(|e| format!("watch: {e}"))?.ok_or("watch closed")?;
                    if resp.canceled() {
                        return Err(format!("watch canceled: {}", resp.cancel_reason()));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        match ev.event_type() {
                            EventType::Put => self.put_kv(kv),
                            EventType::Delete => self.delete_key(kv.key()),
                        }
                    }
                    if std::mem::take(&mut self.shared().overwritten) {
                        self.register(client, lease).await?;
                    }
                    if !resp.events().is_empty() {
                        self.reconcile(control, client, lease).await;
                    }
                }
                _ = renew.tick() => self.renew(client, lease).await?,
                _ = names.tick() => self.publish_names(control, client, lease).await?,
            }
        }
    }

    /// Renews the lease; an expired one ends the session (the next registers again).
    async fn renew(&self, client: &Client, lease: i64) -> Result<(), String> {
        let r = self
            .retry(client, |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
        match r {
            Ok(Some(resp)) if resp.ttl() > 0 => {
                self.shared().last_ok = Some(Instant::now());
                Ok(())
            }
            Ok(_) => Err("this host's lease expired".into()),
            Err(e) => Err(format!("keep-alive: {e}")),
        }
    }

    /// Writes our names of each cluster network when they changed since the last write.
    async fn publish_names(&self, control: &Control, client: &Client, lease: i64) -> Result<(), String> {
        let ours = control.cluster_local_names().await;
        for (net, names) in ours {
            if self.shared().published.get(&net) == Some(&names) {
                continue;
            }
            let rec = NamesRecord { public_key: self.me.public_key.clone(), names: names.clone() };
            let value = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
            let key = self.layout.names(&net, &self.cfg.host);
            self.retry(client, |mut c| {
                let (k, v) = (key.clone(), value.clone());
                async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await }
            })
            .await
            .map_err(|e| format!("names: {e}"))?;
            self.shared().published.insert(net, names);
        }
        Ok(())
    }

    /// Replaces what we know with a full read of the prefix (values refused keep the last
    /// good one).
    fn replace_all(&self, kvs: &[KeyValue]) {
        {
            let mut s = self.shared();
            let (old_hosts, old_nets, old_names) =
                (std::mem::take(&mut s.hosts), std::mem::take(&mut s.networks), std::mem::take(&mut s.names));
            s.malformed.clear();
            // Carried over only while their key is there with a refused value.
            drop(s);
            for kv in kvs {
                self.put_kv(kv);
            }
            let mut s = self.shared();
            let bad: Vec<String> = s.malformed.keys().cloned().collect();
            for k in bad {
                match self.layout.parse(k.as_bytes()) {
                    Some(Key::Host(h)) => {
                        if let Some(v) = old_hosts.get(&h) {
                            s.hosts.insert(h, v.clone());
                        }
                    }
                    Some(Key::Network(n)) => {
                        if let Some(v) = old_nets.get(&n) {
                            s.networks.insert(n, v.clone());
                        }
                    }
                    Some(Key::Names { network, host }) => {
                        if let Some(v) = old_names.get(&(network.clone(), host.clone())) {
                            s.names.insert((network, host), v.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Takes one key's new value.
    fn put_kv(&self, kv: &KeyValue) {
        let Some(key) = self.layout.parse(kv.key()) else { return };
        let key_text = String::from_utf8_lossy(kv.key()).into_owned();
        if key == Key::Host(self.cfg.host.clone()) {
            let mut s = self.shared();
            if kv.value() != s.registered.as_slice() {
                s.overwritten = true;
            }
        }
        let checked: Result<(), String> = match &key {
            Key::Host(h) => serde_json::from_slice::<HostRecord>(kv.value()).map_err(|e| e.to_string()).and_then(|r| {
                if r.name != *h {
                    return Err(format!("names host {:?}", r.name));
                }
                let k = parse_key(&r.public_key).map_err(|e| e.error.message)?;
                self.shared().hosts.insert(h.clone(), HostRecord { public_key: b64(&k), ..r });
                Ok(())
            }),
            Key::Network(n) => serde_json::from_slice::<NetworkCreate>(kv.value()).map_err(|e| e.to_string()).and_then(|d| {
                if d.name != *n {
                    return Err(format!("names network {:?}", d.name));
                }
                check_definition(&d)?;
                self.shared().networks.insert(n.clone(), d);
                Ok(())
            }),
            Key::Names { network, host } => serde_json::from_slice::<NamesRecord>(kv.value()).map_err(|e| e.to_string()).and_then(|r| {
                parse_key(&r.public_key).map_err(|e| e.error.message)?;
                self.shared().names.insert((network.clone(), host.clone()), r);
                Ok(())
            }),
            Key::Block { .. } => Ok(()),
        };
        let mut s = self.shared();
        match checked {
            Ok(()) => {
                s.malformed.remove(&key_text);
            }
            Err(why) => {
                if s.malformed.get(&key_text) != Some(&why) {
                    tracing::warn!(key = %key_text, %why, "cluster: malformed value in the store ignored (what it said before stays)");
                }
                s.malformed.insert(key_text, why);
            }
        }
    }

    fn delete_key(&self, key: &[u8]) {
        let mut s = self.shared();
        s.malformed.remove(&String::from_utf8_lossy(key).into_owned());
        match self.layout.parse(key) {
            Some(Key::Host(h)) => {
                s.overwritten |= h == self.cfg.host;
                s.hosts.remove(&h);
            }
            Some(Key::Network(n)) => {
                s.networks.remove(&n);
            }
            Some(Key::Names { network, host }) => {
                s.names.remove(&(network, host));
            }
            _ => {}
        }
    }

    /// Makes this host what the store says: its networks, peers and names.
    async fn reconcile(&self, control: &Control, client: &Client, lease: i64) {
        let defs: Vec<NetworkCreate> = self.shared().networks.values().cloned().collect();
        let mut failed = BTreeMap::new();
        for def in &defs {
            if let Err(e) = self.materialize(control, client, def).await {
                failed.insert(format!("network {}", def.name), e.error.message);
            }
        }
        let local = control.cluster_networks().await;
        for name in local.keys() {
            if !defs.iter().any(|d| d.name == *name) {
                tracing::info!(network = %name, "cluster: network removed from the cluster; removing it here");
                if let Err(e) = control.remove_cluster_network(name).await {
                    failed.insert(format!("network {name}"), e.error.message);
                }
            }
        }
        let hosts = self.peer_hosts();
        for p in control.sync_cluster_peers(&hosts).await {
            failed.insert(p.clone(), String::new());
        }
        // Names: every other host's on every cluster network here.
        let local = control.cluster_networks().await;
        let (records, applied) = {
            let s = self.shared();
            let known: BTreeSet<&String> = s.hosts.values().map(|h| &h.public_key).collect();
            let records: Vec<(String, String, Vec<RemoteName>)> = s
                .names
                .iter()
                .filter(|((net, host), r)| *host != self.cfg.host && local.contains_key(net) && known.contains(&r.public_key))
                .map(|((net, _), r)| (net.clone(), r.public_key.clone(), r.names.clone()))
                .collect();
            (records, s.applied.clone())
        };
        let mut now_applied = BTreeSet::new();
        for (net, key, names) in records {
            match control.set_cluster_names(&net, &key, Some(names)).await {
                Ok(()) => {
                    now_applied.insert((net, key));
                }
                Err(e) => {
                    failed.insert(format!("names of {key} on {net}"), e);
                }
            }
        }
        for (net, key) in applied.difference(&now_applied) {
            let _ = control.set_cluster_names(net, key, None).await;
        }
        {
            let mut s = self.shared();
            for (what, why) in &failed {
                if s.failed.get(what) != Some(why) {
                    tracing::warn!(%what, %why, "cluster: could not follow the store");
                }
            }
            s.failed = failed;
            s.applied = now_applied;
        }
        if let Err(e) = self.publish_names(control, client, lease).await {
            tracing::debug!(error = %e, "cluster: names not written yet");
        }
    }

    /// `GET /v1/cluster`.
    pub async fn status(&self, control: &Control) -> ClusterStatus {
        let mut endpoints = Vec::new();
        for (ep, url) in self.cfg.endpoints.iter().zip(&self.urls) {
            let probe = async {
                let mut c = Client::connect([url.as_str()], Some(self.options.clone())).await?;
                c.status().await
            };
            let (healthy, leader, error) = match tokio::time::timeout(Duration::from_secs(1), probe).await {
                Ok(Ok(s)) => (true, s.leader() == s.header().map_or(0, |h| h.member_id()), None),
                Ok(Err(e)) => (false, false, Some(e.to_string())),
                Err(_) => (false, false, Some("no answer within 1 s".to_string())),
            };
            endpoints.push(ClusterEndpoint { endpoint: ep.clone(), healthy, leader, error });
        }
        let hosts = self.hosts().await;
        let healthy = self.healthy();
        let local = control.cluster_network_rows().await;
        let networks = {
            let s = self.shared();
            local
                .into_iter()
                .map(|(name, (block, remote_names))| ClusterNetwork {
                    subnet: s.networks.get(&name).and_then(|d| d.subnet.clone()).unwrap_or_default(),
                    name,
                    block: block.to_string(),
                    remote_names,
                })
                .collect()
        };
        let s = self.shared();
        let mut problems: Vec<String> = s.malformed.iter().map(|(k, why)| format!("malformed value at {k}: {why}")).collect();
        problems.extend(s.failed.iter().map(|(what, why)| if why.is_empty() { what.clone() } else { format!("{what}: {why}") }));
        ClusterStatus {
            host: self.cfg.host.clone(),
            prefix: self.cfg.prefix.clone(),
            endpoints,
            healthy,
            error: if healthy { None } else { s.error.clone().or_else(|| Some("not connected yet".into())) },
            lease: s.lease.map(|l| format!("{l:x}")),
            lease_ttl_secs: self.cfg.lease_ttl.as_secs(),
            last_renewed_secs: s.last_ok.map(|t| t.elapsed().as_secs()),
            hosts,
            networks,
            problems,
        }
    }

    /// `GET /v1/cluster/hosts`: every registered host, with how long ago it renewed its lease
    /// (asked of the store while it answers).
    pub async fn hosts(&self) -> Vec<ClusterHost> {
        let (records, client) = {
            let s = self.shared();
            (s.hosts.values().cloned().collect::<Vec<_>>(), s.client.clone().map(|Conn(c)| c))
        };
        let mut out = Vec::new();
        for h in records {
            let mut last_seen_secs = None;
            if let (Some(mut c), true) = (client.clone(), self.healthy()) {
                if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), c.lease_time_to_live(h.lease, None)).await {
                    if r.ttl() > 0 {
                        last_seen_secs = Some((r.granted_ttl() - r.ttl()).max(0) as u64);
                    }
                }
            }
            out.push(ClusterHost {
                this_host: h.name == self.cfg.host,
                name: h.name,
                public_key: h.public_key,
                endpoint: h.endpoint.to_string(),
                last_seen_secs,
            });
        }
        out
    }

    /// Requests this host sent to the store since it started.
    pub fn requests(&self) -> u64 {
        self.shared().requests
    }
}

/// `POST /v1/networks`: an overlay network goes to the cluster when there is one.
///
/// # Errors
/// As [`Control::create_network`] and [`Cluster::create_network`].
pub async fn create_network(control: &Control, req: NetworkCreate) -> Result<Network, ApiError> {
    match control.cluster() {
        Some(c) if req.overlay => c.create_network(control, req).await,
        _ => control.create_network(req).await,
    }
}

/// `DELETE /v1/networks/NAME`: a cluster network is removed from the cluster.
///
/// # Errors
/// As [`Control::remove_network`] and [`Cluster::remove_network`].
pub async fn remove_network(control: &Control, name: &str, force: bool) -> Result<(), ApiError> {
    match control.cluster() {
        Some(c) if control.cluster_networks().await.contains_key(name) => c.remove_network(control, name, force).await,
        _ => control.remove_network(name, force).await,
    }
}

/// The cluster front end, or `not_found` saying how to turn cluster mode on.
///
/// # Errors
/// Cluster mode is off.
pub fn cluster_of(control: &Control) -> Result<&Arc<Cluster>, ApiError> {
    control.cluster().ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, "cluster mode is off: start vswitchd with --cluster etcd://HOST:PORT[,HOST:PORT...]")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(parse_cluster_url("etcd://10.0.0.1:2379").unwrap(), (vec!["10.0.0.1:2379".to_string()], false));
        let (eps, tls) = parse_cluster_url("etcds://a:1,b:2").unwrap();
        assert_eq!((eps.len(), tls), (2, true));
        for bad in ["http://a:1", "etcd://", "etcd://a", "etcd://a:0", "etcd://a:1,", "etcd://:1"] {
            assert!(parse_cluster_url(bad).is_err(), "{bad}");
        }
    }
}
