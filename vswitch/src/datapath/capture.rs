//! Packet capture: copies of the frames of some ports, as the switch sees them, for
//! `vswitchctl capture`.
//!
//! Off, it costs each datapath thread one relaxed atomic load per loop turn ([`View::refresh`]).
//! On, a frame of a captured port is copied (up to the session's snap length) into a bounded
//! channel with `try_send`: when the reader falls behind, the copy is dropped and counted, and
//! the datapath never waits. Sessions are added and removed by the control plane through the
//! shared [`Hub`]; each thread keeps its own [`View`] of them, reloaded when the hub's
//! generation moves.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::segment;
use crate::switch::Verdict;
pub use crate::sys::pcap_filter::Filter;
use crate::types::PortId;

/// Which way a frame went through a port, as the pcapng `epb_flags` direction bits say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Into the switch from the port (the container sent it).
    In,
    /// Out of the switch to the port (the container receives it).
    Out,
}

/// One captured frame.
#[derive(Debug)]
pub struct Captured {
    pub port: PortId,
    pub dir: Dir,
    /// Since the Unix epoch.
    pub ts: Duration,
    /// The frame's length before the snap length cut it.
    pub orig_len: u32,
    /// A super-frame's virtio `gso_size` and `gso_type` (0 for a plain frame).
    pub gso_size: u16,
    pub gso_type: u8,
    /// The Ethernet frame (no virtio header), at most the snap length.
    pub data: Vec<u8>,
    /// What the switch decided for a frame coming in (`trace --live`), when known.
    pub verdict: Option<Verdict>,
}

/// One running capture.
#[derive(Debug)]
pub struct Session {
    id: u64,
    ports: Vec<PortId>,
    snaplen: usize,
    filter: Option<Filter>,
    tx: mpsc::Sender<Captured>,
    /// Only frames coming in from the ports (`trace --live`).
    in_only: bool,
    /// Frames still wanted; `u64::MAX` for no limit.
    remaining: AtomicU64,
    pub captured: AtomicU64,
    pub dropped: AtomicU64,
}

impl Session {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn offer(&self, hub: &Hub, port: PortId, dir: Dir, buf: &[u8], hdr: usize, verdict: Option<Verdict>) {
        if self.in_only && dir == Dir::Out {
            return;
        }
        let frame = buf.get(hdr..).unwrap_or_default();
        if self.filter.as_ref().is_some_and(|f| !f.matches(frame)) {
            return;
        }
        let mut left = self.remaining.load(Relaxed);
        loop {
            if left == 0 {
                return;
            }
            let next = if left == u64::MAX { left } else { left - 1 };
            match self.remaining.compare_exchange_weak(left, next, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(now) => left = now,
            }
        }
        let (gso_size, gso_type) = match (hdr, segment::VnetHdr::parse(buf)) {
            (0, _) | (_, None) => (0, 0),
            (_, Some(vh)) => (vh.gso_size, vh.gso_type),
        };
        let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let data = frame[..frame.len().min(self.snaplen)].to_vec();
        let c = Captured { port, dir, ts, orig_len: frame.len() as u32, gso_size, gso_type, data, verdict };
        match self.tx.try_send(c) {
            Ok(()) => {
                self.captured.fetch_add(1, Relaxed);
                hub.captured.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Relaxed);
                hub.dropped.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Lifetime totals of every capture, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureTotals {
    pub sessions: u64,
    pub captured: u64,
    pub dropped: u64,
}

/// The captures running, shared by the control plane and every datapath thread.
#[derive(Debug, Default)]
pub struct Hub {
    generation: AtomicU64,
    sessions: Mutex<Arc<[Arc<Session>]>>,
    next_id: AtomicU64,
    captured: AtomicU64,
    dropped: AtomicU64,
}

/// Copies queued per capture at most, and in bytes (the queue holds whichever is smaller).
const QUEUE_FRAMES: usize = 4096;
const QUEUE_BYTES: usize = 16 << 20;

impl Hub {
    /// Starts capturing `ports`: at most `count` frames (`None`: until the receiver is dropped),
    /// each cut to `snaplen` bytes. Remove it with [`Hub::remove`] when done.
    /// `in_only`: frames coming in only, each with its verdict (`trace --live`). With a
    /// `filter`, only the frames it passes (and `count` counts those).
    pub fn add(
        &self,
        ports: Vec<PortId>,
        snaplen: usize,
        count: Option<u64>,
        in_only: bool,
        filter: Option<Filter>,
    ) -> (Arc<Session>, mpsc::Receiver<Captured>) {
        let depth = (QUEUE_BYTES / snaplen.max(1)).clamp(64, QUEUE_FRAMES);
        let (tx, rx) = mpsc::channel(depth);
        let s = Arc::new(Session {
            id: self.next_id.fetch_add(1, Relaxed),
            ports,
            snaplen,
            filter,
            tx,
            in_only,
            remaining: AtomicU64::new(count.unwrap_or(u64::MAX)),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        self.update(|v| v.push(s.clone()));
        (s, rx)
    }

    pub fn remove(&self, id: u64) {
        self.update(|v| v.retain(|s| s.id != id));
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Arc<Session>>)) {
        let mut g = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v = g.to_vec();
        f(&mut v);
        *g = v.into();
        self.generation.fetch_add(1, Relaxed);
    }

    pub fn totals(&self) -> CaptureTotals {
        let sessions = self.sessions.lock().map_or(0, |s| s.len() as u64);
        CaptureTotals { sessions, captured: self.captured.load(Relaxed), dropped: self.dropped.load(Relaxed) }
    }
}

/// One datapath thread's copy of the session list.
#[derive(Debug)]
pub struct View {
    hub: Arc<Hub>,
    seen: u64,
    sessions: Arc<[Arc<Session>]>,
    /// Any session at all: the only thing the batch loops look at when capture is off.
    pub on: bool,
}

impl View {
    pub fn new(hub: Arc<Hub>) -> View {
        View { hub, seen: 0, sessions: Arc::new([]), on: false }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Picks up sessions added or removed since the last call: one relaxed load when nothing
    /// changed.
    #[inline]
    pub fn refresh(&mut self) {
        let g = self.hub.generation.load(Relaxed);
        if g != self.seen {
            self.seen = g;
            self.sessions = self.hub.sessions.lock().map(|s| s.clone()).unwrap_or_else(|_| Arc::new([]));
            self.on = !self.sessions.is_empty();
        }
    }

    /// Copies the frame in `buf` (after a virtio header of `hdr` bytes) to every session that
    /// captures `port`. Call only when [`View::on`].
    pub fn offer(&self, port: PortId, dir: Dir, buf: &[u8], hdr: usize) {
        self.offer_decided(port, dir, buf, hdr, None);
    }

    /// [`View::offer`] with the switch's verdict for a frame coming in.
    pub fn offer_decided(&self, port: PortId, dir: Dir, buf: &[u8], hdr: usize, verdict: Option<Verdict>) {
        for s in self.sessions.iter() {
            if s.ports.contains(&port) {
                s.offer(&self.hub, port, dir, buf, hdr, verdict);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame of `ethertype` with 46 bytes of zeros after the header.
    fn frame(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([0x02, 0, 0, 0, 0, 1]);
        f.extend(ethertype.to_be_bytes());
        f.extend([0u8; 46]);
        f
    }

    #[test]
    fn a_filter_keeps_what_it_passes_and_count_counts_those() {
        assert!(Filter::compile("tcp port").is_err());
        let (arp, ipv4) = (frame(0x0806), frame(0x0800));
        let f = Filter::compile("arp").unwrap();
        assert!(f.matches(&arp) && !f.matches(&ipv4));
        let hub = Arc::new(Hub::default());
        let mut v = View::new(hub.clone());
        let (s, mut rx) = hub.add(vec![PortId(1)], 100, Some(1), false, Some(f));
        v.refresh();
        v.offer(PortId(1), Dir::In, &ipv4, 0);
        v.offer(PortId(1), Dir::In, &arp, 0);
        let c = rx.try_recv().unwrap();
        assert_eq!(c.data, arp);
        assert!(rx.try_recv().is_err());
        assert_eq!((s.captured.load(Relaxed), s.dropped.load(Relaxed)), (1, 0));
    }

    #[test]
    fn off_costs_nothing_and_on_copies_matching_ports() {
        let hub = Arc::new(Hub::default());
        let mut v = View::new(hub.clone());
        v.refresh();
        assert!(!v.on);
        let (s, mut rx) = hub.add(vec![PortId(3)], 20, Some(2), false, None);
        v.refresh();
        assert!(v.on);
        let frame = [7u8; 60];
        v.offer(PortId(4), Dir::In, &frame, 0);
        v.offer(PortId(3), Dir::Out, &frame, 0);
        let c = rx.try_recv().unwrap();
        assert_eq!((c.port, c.dir, c.orig_len, c.data.len()), (PortId(3), Dir::Out, 60, 20));
        assert!(rx.try_recv().is_err(), "port 4 is not captured");
        v.offer(PortId(3), Dir::In, &frame, 0);
        v.offer(PortId(3), Dir::In, &frame, 0);
        assert_eq!(s.captured.load(Relaxed), 2, "the count stops it");
        hub.remove(s.id());
        v.refresh();
        assert!(!v.on);
        assert_eq!(hub.totals().captured, 2);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let hub = Arc::new(Hub::default());
        let mut v = View::new(hub.clone());
        let (s, _rx) = hub.add(vec![PortId(1)], 65535, None, false, None);
        v.refresh();
        let frame = [1u8; 100];
        for _ in 0..1000 {
            v.offer(PortId(1), Dir::In, &frame, 0);
        }
        let (captured, dropped) = (s.captured.load(Relaxed), s.dropped.load(Relaxed));
        assert_eq!(captured + dropped, 1000);
        assert!(dropped > 0);
        assert_eq!(hub.totals().dropped, dropped);
    }

    #[test]
    fn super_frames_lose_the_virtio_header_and_keep_gso_size() {
        let hub = Arc::new(Hub::default());
        let mut v = View::new(hub.clone());
        let (_s, mut rx) = hub.add(vec![PortId(1)], 65535, None, false, None);
        v.refresh();
        let mut buf = vec![0u8; 12 + 100];
        buf[0] = segment::F_NEEDS_CSUM;
        buf[1] = segment::GSO_TCPV4;
        buf[4..6].copy_from_slice(&1448u16.to_le_bytes());
        v.offer(PortId(1), Dir::In, &buf, 12);
        let c = rx.try_recv().unwrap();
        assert_eq!((c.gso_size, c.gso_type, c.data.len()), (1448, segment::GSO_TCPV4, 100));
    }
}
