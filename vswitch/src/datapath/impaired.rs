//! The datapath's side of link impairments: one [`Link`] per impaired port and direction, the
//! frames they hold, and the buffers those frames are copied into.
//!
//! Only the engine (thread 0) holds this: a port with an impairment gets no worker grants, so
//! every frame from or to it passes through the engine, which checks [`Impairs::any`] (one
//! branch on a length) before looking any further, so ports without impairments pay nothing
//! more. Ingress frames are held before the switch decides them and decided when released;
//! egress frames are held as they would be written (virtio header included) and written when
//! released. The engine's poll timeout wakes it for the next release ([`Impairs::next_due`]).

use std::time::Duration;

use crate::impair::{Config, Counters, Decision, Impairment, Link};
use crate::types::PortId;

/// Buffers kept for reuse after their frames left.
const POOL_MAX: usize = 64;

/// The two directions, as seen from the port's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Frames the switch receives from the port.
    Ingress,
    /// Frames the switch sends to the port.
    Egress,
}

#[derive(Debug)]
struct Impaired {
    /// What was asked (with the seed in use), for `port ls`.
    asked: Impairment,
    link: Link<Vec<u8>>,
}

#[derive(Debug, Default)]
struct PortLinks {
    ingress: Option<Impaired>,
    egress: Option<Impaired>,
}

impl PortLinks {
    fn get(&mut self, dir: Dir) -> &mut Option<Impaired> {
        match dir {
            Dir::Ingress => &mut self.ingress,
            Dir::Egress => &mut self.egress,
        }
    }
}

/// A frame whose time came: `bytes` as held (TAP read or TAP write, virtio header first).
#[derive(Debug)]
pub struct Released {
    pub port: PortId,
    pub dir: Dir,
    pub bytes: Vec<u8>,
}

/// One direction's impairment as `port ls` shows it.
#[derive(Debug, Clone)]
pub struct Status {
    pub impairment: Impairment,
    pub counters: Counters,
}

/// Every impaired port's links.
#[derive(Debug, Default)]
pub struct Impairs {
    ports: Vec<Option<PortLinks>>,
    /// Ports with at least one direction impaired.
    active: Vec<PortId>,
    pool: Vec<Vec<u8>>,
}

impl Impairs {
    /// Whether any port is impaired: the one check unimpaired traffic pays.
    #[inline]
    pub fn any(&self) -> bool {
        !self.active.is_empty()
    }

    fn links(&self, port: PortId) -> Option<&PortLinks> {
        self.ports.get(port.0 as usize)?.as_ref()
    }

    /// Whether `port` has an impairment in `dir`.
    pub fn on(&self, port: PortId, dir: Dir) -> bool {
        self.links(port).is_some_and(|l| match dir {
            Dir::Ingress => l.ingress.is_some(),
            Dir::Egress => l.egress.is_some(),
        })
    }

    /// Whether `port` has an impairment in either direction.
    pub fn touches(&self, port: PortId) -> bool {
        self.links(port).is_some()
    }

    /// Gives `bytes` (the first `hdr` of them a virtio header) to `port`'s link in `dir`, which
    /// drops or holds a copy. `false` when that direction is not impaired: send it as usual.
    pub fn offer(&mut self, port: PortId, dir: Dir, now: Duration, bytes: &[u8], hdr: usize) -> bool {
        let Some(Some(links)) = self.ports.get_mut(port.0 as usize) else { return false };
        let Some(imp) = links.get(dir) else { return false };
        match imp.link.decide(now, wire_len(bytes, hdr)) {
            Decision::Drop(_) => {}
            Decision::Hold { at, twice } => {
                let mut copy = self.pool.pop().unwrap_or_default();
                copy.clear();
                copy.extend_from_slice(bytes);
                if twice {
                    imp.link.hold(at, copy.clone());
                }
                imp.link.hold(at, copy);
            }
        }
        true
    }

    /// When the next held frame is due, if any is held.
    pub fn next_due(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        for p in &self.active {
            let Some(l) = self.links(*p) else { continue };
            for imp in [&l.ingress, &l.egress].into_iter().flatten() {
                if let Some(t) = imp.link.next_due() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        next
    }

    /// Moves every frame due at `now` to `out`, ports in turn, each port's frames in order.
    pub fn pop_due(&mut self, now: Duration, out: &mut Vec<Released>) {
        for &port in &self.active {
            let Some(Some(l)) = self.ports.get_mut(port.0 as usize) else { continue };
            for (dir, imp) in [(Dir::Ingress, &mut l.ingress), (Dir::Egress, &mut l.egress)] {
                let Some(imp) = imp else { continue };
                while let Some(bytes) = imp.link.pop_due(now) {
                    out.push(Released { port, dir, bytes });
                }
            }
        }
    }

    /// Takes a released frame's buffer back for the next held frame.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        if self.pool.len() < POOL_MAX {
            self.pool.push(bytes);
        }
    }

    /// Sets (`Some`) or removes (`None`) `port`'s impairment in `dir`. A change keeps the
    /// frames held; a removal hands them to `out`, to be sent at once.
    pub fn set(&mut self, port: PortId, dir: Dir, cfg: Option<(Impairment, Config)>, out: &mut Vec<Released>) {
        let i = port.0 as usize;
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        let links = self.ports[i].get_or_insert_with(PortLinks::default);
        let slot = links.get(dir);
        match (cfg, slot.as_mut()) {
            (Some((asked, cfg)), Some(imp)) => {
                imp.link.reconfigure(cfg);
                imp.asked = asked;
            }
            (Some((asked, cfg)), None) => *slot = Some(Impaired { asked, link: Link::new(cfg) }),
            (None, _) => {
                if let Some(mut imp) = slot.take() {
                    while let Some(bytes) = imp.link.pop_any() {
                        out.push(Released { port, dir, bytes });
                    }
                }
            }
        }
        if links.ingress.is_none() && links.egress.is_none() {
            self.ports[i] = None;
        }
        self.active.retain(|&p| p != port);
        if self.ports[i].is_some() {
            self.active.push(port);
        }
    }

    /// Forgets `port` and the frames it held (the port is going away).
    pub fn remove_port(&mut self, port: PortId) {
        if let Some(slot) = self.ports.get_mut(port.0 as usize) {
            *slot = None;
        }
        self.active.retain(|&p| p != port);
    }

    /// `port`'s impairments (ingress, egress) and what they did.
    pub fn status(&self, port: PortId) -> (Option<Status>, Option<Status>) {
        let Some(l) = self.links(port) else { return (None, None) };
        let st = |i: &Option<Impaired>| i.as_ref().map(|i| Status { impairment: i.asked.clone(), counters: i.link.counters() });
        (st(&l.ingress), st(&l.egress))
    }
}

/// The bytes a frame takes on the wire, virtio header left out: a TCP/UDP super-frame (GSO)
/// is the segments it stands for, each with its own headers (as the kernel's qdiscs count it).
fn wire_len(bytes: &[u8], hdr: usize) -> usize {
    let len = bytes.len().saturating_sub(hdr);
    if hdr == 0 {
        return len;
    }
    let Some(vh) = super::segment::VnetHdr::parse(bytes) else { return len };
    let (h, g) = (usize::from(vh.hdr_len), usize::from(vh.gso_size));
    if vh.gso_type == super::segment::GSO_NONE || g == 0 || h == 0 || h >= len {
        return len;
    }
    let segments = (len - h).div_ceil(g);
    len + (segments.saturating_sub(1)) * h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_offer_release_clear() {
        let mut imp = Impairs::default();
        let p = PortId(3);
        assert!(!imp.any());
        assert!(!imp.offer(p, Dir::Egress, Duration::ZERO, b"frame", 0));
        let asked = Impairment { delay_us: 1000, ..Default::default() };
        let mut out = Vec::new();
        imp.set(p, Dir::Egress, Some((asked.clone(), asked.check(1).unwrap())), &mut out);
        assert!(imp.any() && imp.on(p, Dir::Egress) && !imp.on(p, Dir::Ingress) && imp.touches(p));
        assert!(imp.offer(p, Dir::Egress, Duration::ZERO, b"frame", 0));
        assert!(!imp.offer(p, Dir::Ingress, Duration::ZERO, b"frame", 0));
        assert_eq!(imp.next_due(), Some(Duration::from_millis(1)));
        imp.pop_due(Duration::from_micros(999), &mut out);
        assert!(out.is_empty());
        imp.pop_due(Duration::from_millis(1), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, b"frame");
        imp.recycle(out.pop().unwrap().bytes);
        assert!(imp.offer(p, Dir::Egress, Duration::ZERO, b"again", 0));
        imp.set(p, Dir::Egress, None, &mut out);
        assert_eq!(out.len(), 1, "a removal releases what was held");
        assert!(!imp.any() && !imp.touches(p));
        assert_eq!(imp.status(p).1.map(|s| s.counters.frames), None);
    }

    #[test]
    fn super_frames_count_as_their_segments() {
        let mut f = vec![0u8; 12 + 66 + 3 * 1448];
        assert_eq!(wire_len(&f, 12), 66 + 3 * 1448, "no GSO: the frame");
        super::super::segment::VnetHdr { gso_type: 1, hdr_len: 66, gso_size: 1448, ..Default::default() }.write(&mut f[..12]);
        assert_eq!(wire_len(&f, 12), 3 * (66 + 1448));
        assert_eq!(wire_len(&f[12..], 0), 66 + 3 * 1448);
    }
}
