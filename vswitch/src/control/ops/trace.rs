//! `POST /v1/trace`: why a frame would go where it goes.
//!
//! The frame is built here from the request and the model's defaults (the ingress endpoint's
//! MAC and address, the destination endpoint's MAC), then one datapath job runs it through the
//! core's read-only explain path: nothing is learned, counted or sent.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::capture::CaptureRequest;
use super::Control;
use crate::api::{ApiError, Endpoint, ErrorCode, LiveFrame, Network, Trace, TraceRequest, TraceStep};
use crate::control::model::internal;
use crate::datapath::capture::{Captured, Hub, Session};
use crate::switch::Verdict;
use crate::trace::{FrameSpec, Proto};
use crate::types::{Mac, PortId};

/// Source port of a built TCP or UDP frame when none is given.
const DEFAULT_SRC_PORT: u16 = 40000;

fn bad(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

/// The frame a request describes, defaults filled from the network and its endpoints.
///
/// # Errors
/// `endpoint_not_found` for an unknown ingress; `invalid_request` when a field is missing or
/// makes no sense.
pub fn frame_spec(req: &TraceRequest, net: &Network, endpoints: &[Endpoint]) -> Result<(FrameSpec, Endpoint), ApiError> {
    let ingress = endpoints
        .iter()
        .find(|e| e.name == req.in_port)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint {} on network {}", req.in_port, req.network)))?;
    let proto = match req.proto.as_deref() {
        Some(p) => Proto::parse(p).ok_or_else(|| bad(format!("proto must be icmp, tcp, udp or arp, not {p:?}")))?,
        None if req.dst_port.is_some() => Proto::Udp,
        None => Proto::Icmp,
    };
    let subnet: ipnet::Ipv4Net = net.subnet.parse().map_err(internal)?;
    let by_ip = |ip: Ipv4Addr| endpoints.iter().find(|e| e.ip == ip);
    let by_mac = |mac: Mac| endpoints.iter().find(|e| e.mac == mac);
    let dst_ip = match (req.dst_ip, req.dst_mac) {
        (Some(ip), _) => ip,
        (None, Some(mac)) if mac == net.gateway_mac => net.gateway,
        (None, Some(mac)) => by_mac(mac).map_or(Ipv4Addr::new(192, 0, 2, 1), |e| e.ip),
        (None, None) => return Err(bad("say where the frame goes: dst_ip, dst_mac or both".into())),
    };
    let dst_mac = match (req.dst_mac, proto) {
        (Some(mac), _) => mac,
        (None, Proto::Arp) => Mac::BROADCAST,
        (None, _) if dst_ip == net.gateway || !subnet.contains(&dst_ip) => net.gateway_mac,
        (None, _) => {
            by_ip(dst_ip).map(|e| e.mac).ok_or_else(|| bad(format!("no endpoint of {} has {dst_ip}: give dst_mac", req.network)))?
        }
    };
    let (src_port, dst_port) = match proto {
        Proto::Tcp | Proto::Udp => {
            let dst =
                req.dst_port.ok_or_else(|| bad(format!("a {} frame needs dst_port", if proto == Proto::Tcp { "TCP" } else { "UDP" })))?;
            (req.src_port.unwrap_or(DEFAULT_SRC_PORT), dst)
        }
        _ if req.dst_port.is_some() || req.src_port.is_some() => return Err(bad("ports are for tcp and udp frames".into())),
        _ => (0, 0),
    };
    let dns_name = (proto == Proto::Udp && dst_port == 53).then(|| req.dns_name.clone().unwrap_or_else(|| ingress.name.clone()));
    if req.dns_name.is_some() && dns_name.is_none() {
        return Err(bad("dns_name is for UDP frames to port 53".into()));
    }
    let spec = FrameSpec {
        src_mac: req.src_mac.unwrap_or(ingress.mac),
        dst_mac,
        src_ip: req.src_ip.unwrap_or(ingress.ip),
        dst_ip,
        proto,
        src_port,
        dst_port,
        dns_name,
    };
    Ok((spec, ingress))
}

impl Control {
    /// Traces a frame from an endpoint through the switch without sending it.
    ///
    /// # Errors
    /// `network_not_found`, `endpoint_not_found`, `invalid_request` for a frame that cannot be
    /// built.
    pub async fn trace(&self, req: TraceRequest) -> Result<Trace, ApiError> {
        let m = self.model.lock().await;
        let net = m.network(&req.network)?;
        let endpoints = m.endpoints(&req.network)?;
        let (spec, ingress) = frame_spec(&req, &net, &endpoints)?;
        let names: HashMap<_, _> = m.port_names().into_iter().map(|(id, (network, name))| (id, format!("{network}/{name}"))).collect();
        drop(m);
        let frame = spec.build().map_err(|e| bad(e.to_string()))?;
        let port = ingress.port;
        let traced = self.dp.call(move |e| e.trace(port, &frame, &names)).await.map_err(internal)?;
        let mut steps = vec![TraceStep {
            step: "network".into(),
            result: req.network.clone(),
            detail: format!("in on {}/{} (port {port}) of network {} {}", req.network, ingress.name, req.network, net.subnet),
        }];
        steps.extend(traced.steps);
        Ok(Trace {
            network: req.network,
            in_port: ingress.name,
            frame: spec.to_string(),
            steps,
            verdict: traced.verdict.to_string(),
            drop_reason: traced.drop_reason,
        })
    }
}

/// Frames a live trace shows when no count is given, and the most it may ask for.
const LIVE_DEFAULT: u64 = 10;
const LIVE_MAX: u64 = 100_000;
/// Bytes of each frame a live trace looks at: enough for the headers.
const LIVE_SNAPLEN: usize = 128;

/// `vswitchctl trace --live`: the verdicts of the next frames that come in on some ports, as
/// JSON lines. Dropping it stops it.
pub struct LiveTrace {
    hub: Arc<Hub>,
    session: Arc<Session>,
    rx: tokio::sync::mpsc::Receiver<Captured>,
    names: HashMap<PortId, String>,
    count: u64,
    seen: u64,
}

impl std::fmt::Debug for LiveTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTrace").field("session", &self.session.id()).field("seen", &self.seen).finish()
    }
}

impl Drop for LiveTrace {
    fn drop(&mut self) {
        self.hub.remove(self.session.id());
    }
}

impl LiveTrace {
    /// The next JSON lines; `None` once `count` frames were shown.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        let mut out = Vec::new();
        while self.seen < self.count {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(c)) => {
                    self.seen += 1;
                    let name = |p: PortId| self.names.get(&p).cloned().unwrap_or_else(|| format!("port {p}"));
                    let verdict = match c.verdict {
                        Some(Verdict::Forward(p)) => format!("forward {}", name(p)),
                        Some(Verdict::Flood) => "flood".to_string(),
                        Some(Verdict::Drop(r)) => format!("drop {r}"),
                        None => "-".to_string(),
                    };
                    let line = LiveFrame {
                        time: c.ts.as_secs_f64(),
                        port: name(c.port),
                        len: c.orig_len,
                        frame: crate::trace::summarize(&c.data),
                        verdict,
                    };
                    if serde_json::to_writer(&mut out, &line).is_ok() {
                        out.push(b'\n');
                    }
                }
                Poll::Ready(None) => {
                    self.seen = self.count;
                }
                Poll::Pending => break,
            }
        }
        if !out.is_empty() {
            Poll::Ready(Some(out))
        } else if self.seen >= self.count {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// `target=…&count=…` of a live trace.
///
/// # Errors
/// `invalid_request` naming what is wrong.
pub fn live_request(query: &str) -> Result<(CaptureRequest, u64), ApiError> {
    let mut req = CaptureRequest::from_query(query)?;
    let count = req.count.unwrap_or(LIVE_DEFAULT);
    if count > LIVE_MAX {
        return Err(bad(format!("count must be at most {LIVE_MAX} for a live trace")));
    }
    req.count = Some(count);
    req.snaplen = LIVE_SNAPLEN;
    Ok((req, count))
}

impl Control {
    /// Starts showing the verdicts of the next frames that come in on the target's ports.
    ///
    /// # Errors
    /// As [`Control::capture`].
    pub async fn live_trace(&self, query: &str) -> Result<LiveTrace, ApiError> {
        let (req, count) = live_request(query)?;
        let m = self.model.lock().await;
        let rows = m.port_rows();
        let peers: Vec<String> = m.peers().into_iter().map(|p| p.public_key).collect();
        let names: HashMap<_, _> = m.port_names().into_iter().map(|(id, (network, name))| (id, format!("{network}/{name}"))).collect();
        drop(m);
        let ports = super::capture::resolve(&rows, &peers, &req)?;
        let hub = self.dp.capture.clone();
        let (session, rx) = hub.add(ports.iter().map(|p| p.id).collect(), LIVE_SNAPLEN, Some(count), true, None);
        Ok(LiveTrace { hub, session, rx, names, count, seen: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        serde_json::from_value(serde_json::json!({
            "name": "n1", "id": 1, "subnet": "10.89.0.0/24", "gateway": "10.89.0.1",
            "gateway_mac": "02:42:0a:59:00:01", "mtu": 1500, "internal": false, "labels": {}, "endpoints": 2
        }))
        .unwrap()
    }

    fn ep(name: &str, last: u8) -> Endpoint {
        Endpoint {
            name: name.into(),
            network: "n1".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            mac: Mac([2, 0x42, 10, 89, 0, last]),
            ip: Ipv4Addr::new(10, 89, 0, last),
            prefix_len: 24,
            ip6: None,
            port: PortId(u32::from(last)),
            aliases: vec![],
            srv: vec![],
            published: vec![],
            owner: None,
        }
    }

    fn req(json: serde_json::Value) -> TraceRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_come_from_the_endpoints() {
        let eps = [ep("c1", 2), ep("c2", 3)];
        let (s, _) = frame_spec(&req(serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "10.89.0.3"})), &net(), &eps).unwrap();
        assert_eq!((s.src_mac, s.dst_mac, s.src_ip, s.proto), (eps[0].mac, eps[1].mac, eps[0].ip, Proto::Icmp));
        // Outside the subnet, and the gateway itself: the gateway's MAC.
        let (s, _) = frame_spec(
            &req(serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "1.1.1.1", "proto": "tcp", "dst_port": 443})),
            &net(),
            &eps,
        )
        .unwrap();
        assert_eq!((s.dst_mac, s.src_port, s.dst_port), (net().gateway_mac, DEFAULT_SRC_PORT, 443));
        let (s, _) =
            frame_spec(&req(serde_json::json!({"network": "n1", "in_port": "c2", "dst_ip": "10.89.0.1", "dst_port": 53})), &net(), &eps)
                .unwrap();
        assert_eq!((s.proto, s.dns_name.as_deref()), (Proto::Udp, Some("c2")));
        let (s, _) =
            frame_spec(&req(serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "10.89.0.9", "proto": "arp"})), &net(), &eps)
                .unwrap();
        assert_eq!(s.dst_mac, Mac::BROADCAST);
    }

    #[test]
    fn bad_specs_are_400_or_404() {
        let eps = [ep("c1", 2)];
        for (json, code) in [
            (serde_json::json!({"network": "n1", "in_port": "zz", "dst_ip": "10.89.0.3"}), ErrorCode::EndpointNotFound),
            (serde_json::json!({"network": "n1", "in_port": "c1"}), ErrorCode::InvalidRequest),
            (serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "10.89.0.77"}), ErrorCode::InvalidRequest),
            (serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "1.1.1.1", "proto": "sctp"}), ErrorCode::InvalidRequest),
            (serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "1.1.1.1", "proto": "tcp"}), ErrorCode::InvalidRequest),
            (
                serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "1.1.1.1", "dst_port": 5, "proto": "icmp"}),
                ErrorCode::InvalidRequest,
            ),
            (serde_json::json!({"network": "n1", "in_port": "c1", "dst_ip": "1.1.1.1", "dns_name": "x"}), ErrorCode::InvalidRequest),
        ] {
            let e = frame_spec(&req(json.clone()), &net(), &eps).unwrap_err();
            assert_eq!(e.error.code, code, "{json}: {}", e.error.message);
        }
    }
}
