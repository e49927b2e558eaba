//! DNS forwarding: queries the gateway's responder does not own go to upstream resolvers from
//! the daemon's own (host) namespace, so a loopback resolver such as 127.0.0.53 works.
//!
//! One task per query, each with its own ephemeral socket (no id juggling between clients);
//! each upstream is tried in order with a timeout, the first answer whose id matches wins, and
//! the answer goes back to the container through a datapath job. When every upstream fails the
//! container gets SERVFAIL. Concurrency is bounded: past [`MAX_IN_FLIGHT`] queries the daemon
//! answers SERVFAIL at once rather than queueing without bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::datapath::{Datapath, DnsCounters, DnsReply, ForwardRequest};

/// Most queries forwarded at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Where forwarded queries go: per-network upstreams when set, else the defaults.
#[derive(Debug, Default)]
pub struct Upstreams {
    pub default: Vec<SocketAddr>,
    pub per_network: HashMap<String, Vec<SocketAddr>>,
}

impl Upstreams {
    pub fn for_network(&self, network: &str) -> Vec<SocketAddr> {
        self.per_network.get(network).cloned().unwrap_or_else(|| self.default.clone())
    }
}

/// Runs the forwarder until the request channel closes.
pub async fn run(
    mut rx: mpsc::Receiver<ForwardRequest>,
    dp: Arc<Datapath>,
    upstreams: Arc<RwLock<Upstreams>>,
    counters: Arc<DnsCounters>,
    timeout: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    while let Some(req) = rx.recv().await {
        let targets = upstreams.read().map(|u| u.for_network(&req.network)).unwrap_or_default();
        let (dp, counters) = (dp.clone(), counters.clone());
        // Nowhere to ask (`--dns-upstream none`, no resolver) or too many in flight: SERVFAIL
        // at once, counted as a failure, never as forwarded.
        let permit = if targets.is_empty() { None } else { slots.clone().try_acquire_owned().ok() };
        let Some(permit) = permit else {
            DnsCounters::add(&counters.failures);
            answer(&dp, req, None);
            continue;
        };
        DnsCounters::add(&counters.forwarded);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let got = forward(&req.query, &targets, timeout).await;
            counters.forward_latency.observe(started.elapsed());
            match &got {
                Some(_) => DnsCounters::add(&counters.forward_answers),
                None => DnsCounters::add(&counters.failures),
            }
            answer(&dp, req, got);
            drop(permit);
        });
    }
}

/// Hands the upstream's answer (or, with `None`, a SERVFAIL) to the datapath.
fn answer(dp: &Datapath, req: ForwardRequest, upstream: Option<Vec<u8>>) {
    let reply = DnsReply { upstream, req };
    if let Err(e) = dp.submit_fn(move |e| e.send_dns_reply(reply)) {
        tracing::debug!(error = %e, "datapath gone; DNS answer dropped");
    }
}

/// Tries each upstream in turn; the first answer with the query's id wins.
async fn forward(query: &[u8], targets: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for target in targets {
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
        let Ok(sock) = UdpSocket::bind(bind).await else { continue };
        if sock.connect(target).await.is_err() || sock.send(query).await.is_err() {
            tracing::debug!(%target, "upstream unreachable");
            continue;
        }
        let mut buf = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 12 && &buf[..2] == id && buf[2] & 0x80 != 0 => {
                    buf.truncate(n);
                    return Some(buf);
                }
                // Not an answer to this query (wrong id, not a response): keep waiting.
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    tracing::debug!(%target, error = %e, "upstream refused");
                    break;
                }
                Err(_) => {
                    tracing::debug!(%target, "upstream timed out");
                    break;
                }
            }
        }
    }
    None
}
