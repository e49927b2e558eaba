//! `GET /v1/capture`: a packet capture of a port, a network or a tunnel peer, streamed as
//! pcapng.
//!
//! The datapath copies matching frames into a bounded queue ([`crate::datapath::capture`]);
//! this side turns them into pcapng blocks: one interface description per captured port
//! (`if_name` NETWORK/NAME, `if_description` its kind), one enhanced packet block per frame
//! with the direction in `epb_flags` and a super-frame's `gso_size` in a comment, and at the
//! end (when COUNT frames were captured) interface statistics with what was dropped.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::interface_statistics::{InterfaceStatisticsBlock, InterfaceStatisticsOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use tokio::sync::mpsc;

use super::Control;
use crate::api::{ApiError, ErrorCode};
use crate::control::model::PortRow;
use crate::datapath::capture::{Captured, Dir, Filter, Hub, Session};
use crate::datapath::segment;
use crate::types::PortId;

/// Default and largest snap length.
pub const DEFAULT_SNAPLEN: usize = 262_144;
/// A chunk of the stream is sent once it holds this much.
const CHUNK: usize = 256 * 1024;

/// What to capture, as the query string says: `target` (a network, `NETWORK/ENDPOINT`, an
/// endpoint name, or a peer: `peer:KEYPREFIX` or a key prefix) or one of `port`, `network`,
/// `peer`; `count`, `snaplen` and `filter` (pcap-filter(7) syntax).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureRequest {
    pub target: String,
    pub kind: Option<&'static str>,
    pub count: Option<u64>,
    pub snaplen: usize,
    pub filter: Option<String>,
}

impl CaptureRequest {
    /// Reads the query string.
    ///
    /// # Errors
    /// `invalid_request` naming what is wrong.
    pub fn from_query(query: &str) -> Result<CaptureRequest, ApiError> {
        let bad = |m: String| ApiError::new(ErrorCode::InvalidRequest, m);
        let mut req = CaptureRequest { snaplen: DEFAULT_SNAPLEN, ..Default::default() };
        let mut targets = 0;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
            match k {
                "target" | "port" | "network" | "peer" => {
                    targets += 1;
                    req.kind = match k {
                        "port" => Some("port"),
                        "network" => Some("network"),
                        "peer" => Some("peer"),
                        _ => None,
                    };
                    req.target = v;
                }
                "count" => {
                    let n: u64 = v.parse().map_err(|_| bad(format!("count must be a positive number, not {v:?}")))?;
                    if n == 0 {
                        return Err(bad("count must be at least 1 (leave it out to capture until stopped)".into()));
                    }
                    req.count = Some(n);
                }
                "snaplen" => {
                    let n: usize = v.parse().map_err(|_| bad(format!("snaplen must be a number of bytes, not {v:?}")))?;
                    if !(14..=DEFAULT_SNAPLEN).contains(&n) {
                        return Err(bad(format!("snaplen must be 14 to {DEFAULT_SNAPLEN} bytes, not {n}")));
                    }
                    req.snaplen = n;
                }
                "filter" => req.filter = Some(v).filter(|f| !f.trim().is_empty()),
                other => {
                    return Err(bad(format!("unknown capture parameter {other:?} (target, port, network, peer, count, snaplen, filter)")))
                }
            }
        }
        if targets != 1 || req.target.is_empty() {
            return Err(bad("say what to capture: exactly one of target, port, network or peer".into()));
        }
        Ok(req)
    }
}

/// The ports a capture target names: a network (all its ports), `NETWORK/NAME`, an endpoint
/// name found on one network only, or a peer (`peer:PREFIX` or a key prefix of 4 or more).
///
/// # Errors
/// `not_found` when nothing matches, `invalid_request` when an endpoint name is on several
/// networks.
pub fn resolve(rows: &[PortRow], peers: &[String], req: &CaptureRequest) -> Result<Vec<PortRow>, ApiError> {
    let t = req.target.as_str();
    let want = |k: &str| req.kind.is_none_or(|kind| kind == k);
    if want("network") {
        let net: Vec<PortRow> = rows.iter().filter(|r| r.network == t).cloned().collect();
        if !net.is_empty() {
            return Ok(net);
        }
    }
    if want("port") {
        let (net, name) = t.split_once('/').map_or((None, t), |(n, e)| (Some(n), e));
        let found: Vec<PortRow> =
            rows.iter().filter(|r| r.kind != "tunnel" && r.name == name && net.is_none_or(|n| n == r.network)).cloned().collect();
        match found.len() {
            0 => {}
            1 => return Ok(found),
            _ => {
                let nets: Vec<&str> = found.iter().map(|r| r.network.as_str()).collect();
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{name} is on several networks ({}): say NETWORK/{name}", nets.join(", ")),
                ));
            }
        }
    }
    if want("peer") {
        let prefix = t.strip_prefix("peer:").unwrap_or(t);
        if prefix.len() >= 4 {
            if let Some(key) = peers.iter().find(|k| k.starts_with(prefix)) {
                let name = format!("peer:{}", key.get(..8).unwrap_or(key));
                let found: Vec<PortRow> = rows.iter().filter(|r| r.kind == "tunnel" && r.name == name).cloned().collect();
                if !found.is_empty() {
                    return Ok(found);
                }
            }
        }
    }
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("nothing to capture named {t:?}: give a network, an endpoint (NETWORK/NAME) or a peer key"),
    ))
}

/// A running capture, as pcapng bytes. Dropping it stops the capture.
pub struct CaptureStream {
    hub: Arc<Hub>,
    session: Arc<Session>,
    rx: mpsc::Receiver<Captured>,
    /// Interface id by port.
    ifaces: Vec<PortId>,
    writer: PcapNgWriter<Vec<u8>>,
    count: Option<u64>,
    seen: u64,
    done: bool,
    started: Duration,
}

impl std::fmt::Debug for CaptureStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureStream").field("session", &self.session.id()).field("seen", &self.seen).finish()
    }
}

impl Drop for CaptureStream {
    fn drop(&mut self) {
        self.hub.remove(self.session.id());
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

impl CaptureStream {
    fn new(hub: Arc<Hub>, ports: &[PortRow], req: &CaptureRequest) -> Result<CaptureStream, ApiError> {
        let fail = |e: pcap_file::PcapError| ApiError::new(ErrorCode::Internal, format!("pcapng: {e}"));
        let filter = match &req.filter {
            Some(expr) => {
                Some(Filter::compile(expr).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("capture filter {expr:?}: {e}")))?)
            }
            None => None,
        };
        let mut writer = PcapNgWriter::new(Vec::with_capacity(CHUNK)).map_err(fail)?;
        for p in ports {
            let mut idb = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: req.snaplen as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(format!("{}/{}", p.network, p.name))),
                    InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                        "vswitch {} port {} of network {}",
                        p.kind, p.id, p.network
                    ))),
                    // Timestamps in nanoseconds.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            if let Some(expr) = &req.filter {
                // if_filter: a type byte (0: a libpcap filter string), then the expression.
                let value = [&[0u8][..], expr.as_bytes()].concat();
                idb.options.push(InterfaceDescriptionOption::IfFilter(Cow::Owned(value)));
            }
            writer.write_pcapng_block(idb).map_err(fail)?;
        }
        let (session, rx) = hub.add(ports.iter().map(|p| p.id).collect(), req.snaplen, req.count, false, filter);
        Ok(CaptureStream {
            hub,
            session,
            rx,
            ifaces: ports.iter().map(|p| p.id).collect(),
            writer,
            count: req.count,
            seen: 0,
            done: false,
            started: now(),
        })
    }

    /// The next piece of the pcapng stream: the header blocks first, then the frames as they
    /// come; `None` once COUNT frames were written (followed by the statistics).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        while !self.done && self.writer.get_ref().len() < CHUNK {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(c)) => {
                    self.write_frame(&c);
                    self.seen += 1;
                    if self.count.is_some_and(|n| self.seen >= n) {
                        self.finish();
                    }
                }
                Poll::Ready(None) => self.finish(),
                Poll::Pending => break,
            }
        }
        let buf = std::mem::take(self.writer.get_mut());
        if !buf.is_empty() {
            return Poll::Ready(Some(buf));
        }
        if self.done {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    fn write_frame(&mut self, c: &Captured) {
        let Some(iface) = self.ifaces.iter().position(|&p| p == c.port) else { return };
        // epb_flags bits 0-1: 01 inbound, 10 outbound.
        let flags = match c.dir {
            Dir::In => 1,
            Dir::Out => 2,
        };
        let mut options = vec![EnhancedPacketOption::Flags(flags)];
        if c.gso_type != segment::GSO_NONE {
            let kind = match c.gso_type & !segment::GSO_ECN {
                segment::GSO_TCPV4 => "tcpv4",
                segment::GSO_TCPV6 => "tcpv6",
                _ => "other",
            };
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!("vnet gso_type={kind} gso_size={}", c.gso_size))));
        }
        let epb = EnhancedPacketBlock {
            interface_id: iface as u32,
            timestamp: c.ts,
            original_len: c.orig_len,
            data: Cow::Borrowed(&c.data),
            options,
        };
        let _ = self.writer.write_pcapng_block(epb);
    }

    /// Interface statistics for the end of the capture: frames copied and dropped.
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let (captured, dropped) = (self.session.captured.load(Relaxed), self.session.dropped.load(Relaxed));
        let end = now();
        for iface in 0..self.ifaces.len() {
            let mut options = vec![
                InterfaceStatisticsOption::IsbStartTime(self.started.as_nanos() as u64),
                InterfaceStatisticsOption::IsbEndTime(end.as_nanos() as u64),
            ];
            if iface == 0 {
                options.push(InterfaceStatisticsOption::IsbUsrDeliv(captured));
                options.push(InterfaceStatisticsOption::IsbIfDrop(dropped));
                options.push(InterfaceStatisticsOption::Comment(Cow::Owned(format!(
                    "vswitch capture: {captured} frames copied, {dropped} dropped (the reader fell behind)"
                ))));
            }
            let isb = InterfaceStatisticsBlock { interface_id: iface as u32, timestamp: end.as_nanos() as u64, options };
            let _ = self.writer.write_pcapng_block(isb);
        }
    }
}

impl Control {
    /// Starts a capture; the stream ends after `count` frames, or when dropped.
    ///
    /// # Errors
    /// `not_found` for an unknown target, `invalid_request` for an ambiguous one.
    pub async fn capture(&self, req: &CaptureRequest) -> Result<CaptureStream, ApiError> {
        let m = self.model.lock().await;
        let rows = m.port_rows();
        let peers: Vec<String> = m.peers().into_iter().map(|p| p.public_key).collect();
        drop(m);
        let ports = resolve(&rows, &peers, req)?;
        tracing::info!(target = %req.target, ports = ports.len(), count = ?req.count, snaplen = req.snaplen, "capture started");
        CaptureStream::new(self.dp.capture.clone(), &ports, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Mac;

    fn row(id: u32, network: &str, name: &str, kind: &'static str) -> PortRow {
        PortRow {
            id: PortId(id),
            network: network.into(),
            name: name.into(),
            kind,
            ifname: String::new(),
            mac: Mac::default(),
            offloads: vec![],
            vlan: None,
        }
    }

    fn rows() -> Vec<PortRow> {
        vec![
            row(1, "a", "gateway", "gateway"),
            row(2, "a", "c1", "tap"),
            row(3, "a", "c2", "tap"),
            row(4, "b", "gateway", "gateway"),
            row(5, "b", "c1", "tap"),
            row(6, "a", "peer:AbCdEfGh", "tunnel"),
        ]
    }

    fn ids(r: Result<Vec<PortRow>, ApiError>) -> Vec<u32> {
        r.unwrap().iter().map(|r| r.id.0).collect()
    }

    #[test]
    fn targets_resolve_to_ports() {
        let peers = vec!["AbCdEfGhIjKl=".to_string()];
        let req = |q: &str| CaptureRequest::from_query(q).unwrap();
        assert_eq!(ids(resolve(&rows(), &peers, &req("target=a"))), [1, 2, 3, 6]);
        assert_eq!(ids(resolve(&rows(), &peers, &req("target=c2"))), [3]);
        assert_eq!(ids(resolve(&rows(), &peers, &req("port=b%2Fc1"))), [5]);
        assert_eq!(ids(resolve(&rows(), &peers, &req("peer=AbCd"))), [6]);
        assert_eq!(ids(resolve(&rows(), &peers, &req("target=peer:AbCdEf"))), [6]);
        let e = resolve(&rows(), &peers, &req("target=c1")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
        assert!(e.error.message.contains("NETWORK/c1"), "{}", e.error.message);
        assert_eq!(resolve(&rows(), &peers, &req("network=c2")).unwrap_err().error.code, ErrorCode::NotFound);
        assert_eq!(resolve(&rows(), &peers, &req("target=zz")).unwrap_err().error.code, ErrorCode::NotFound);
    }

    #[test]
    fn bad_queries_are_400() {
        for q in [
            "",
            "count=3",
            "target=a&port=b",
            "target=a&count=0",
            "target=a&count=x",
            "target=a&snaplen=5",
            "target=a&snaplen=999999",
            "target=a&x=1",
        ] {
            let e = CaptureRequest::from_query(q).unwrap_err();
            assert_eq!(e.error.code.status(), 400, "{q}: {}", e.error.message);
        }
        let r = CaptureRequest::from_query("port=c1&count=5&snaplen=96").unwrap();
        assert_eq!((r.target.as_str(), r.kind, r.count, r.snaplen), ("c1", Some("port"), Some(5), 96));
        assert_eq!(r.filter, None);
        let r = CaptureRequest::from_query("target=a&filter=udp%20port%2053").unwrap();
        assert_eq!(r.filter.as_deref(), Some("udp port 53"));
        // Compiled when the stream starts: a bad one is the client's error.
        let bad = CaptureRequest { filter: Some("tcp port".into()), ..r };
        let e = CaptureStream::new(Arc::new(Hub::default()), &[row(2, "a", "c1", "tap")], &bad).unwrap_err();
        assert_eq!(e.error.code.status(), 400, "{}", e.error.message);
    }

    #[test]
    fn the_stream_is_pcapng_with_direction_and_statistics() {
        let hub = Arc::new(Hub::default());
        let mut view = crate::datapath::capture::View::new(hub.clone());
        let ports = vec![row(2, "a", "c1", "tap"), row(3, "a", "c2", "tap")];
        let req = CaptureRequest { target: "a".into(), kind: None, count: Some(2), snaplen: 64, filter: None };
        let mut s = CaptureStream::new(hub.clone(), &ports, &req).unwrap();
        view.refresh();
        view.offer(PortId(3), Dir::Out, &[0x02; 100], 0);
        view.offer(PortId(2), Dir::In, &[0x02; 60], 0);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let Poll::Ready(Some(bytes)) = s.poll_chunk(&mut cx) else { panic!("no chunk") };
        assert!(matches!(s.poll_chunk(&mut cx), Poll::Ready(None)));
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(b) = r.next_block() {
            match b.unwrap() {
                pcap_file::pcapng::Block::EnhancedPacket(p) => {
                    let flags = p.options.iter().find_map(|o| if let EnhancedPacketOption::Flags(f) = o { Some(*f) } else { None });
                    seen.push((p.interface_id, p.original_len, p.data.len(), flags));
                }
                pcap_file::pcapng::Block::InterfaceStatistics(i) if i.interface_id == 0 => {
                    assert!(i.options.contains(&InterfaceStatisticsOption::IsbIfDrop(0)));
                }
                _ => {}
            }
        }
        assert_eq!(seen, [(1, 100, 64, Some(2)), (0, 60, 60, Some(1))]);
        drop(s);
        assert_eq!(hub.totals().sessions, 0, "dropping the stream ends the session");
    }
}
