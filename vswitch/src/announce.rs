//! DNS names across hosts: each host announces the names of its endpoints on an overlay
//! network to the peers that share it, inside the encrypted tunnel.
//!
//! An announcement is a broadcast Ethernet frame from the gateway's MAC with the IEEE "local
//! experimental" ethertype 0x88B5, a magic string, and JSON: a generation number, a chunk
//! index and count, and the entries of that chunk. The receiving datapath never switches such
//! a frame: it hands the payload to the control plane, which checks it (names, addresses inside
//! the network's subnets, sizes) and replaces that peer's names once every chunk of a
//! generation is in. Peers re-announce every [`EVERY`], so a restarted host learns the names
//! again within that time. Only authenticated peers can send these (the tunnel drops anything
//! else), and a peer can only speak for the networks it carries.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::Mac;

/// The ethertype of announcements (IEEE 802 local experimental).
pub const ETHERTYPE: u16 = 0x88b5;
/// What follows the Ethernet header.
pub const MAGIC: &[u8] = b"VSWITCH-DNS1";
/// How often every host re-announces its names.
pub const EVERY: Duration = Duration::from_secs(10);
/// Most entries one peer may announce for one network.
pub const MAX_ENTRIES: usize = 4096;
/// Most chunks of one generation.
pub const MAX_CHUNKS: u16 = 512;
/// Payload budget of one chunk: well under the smallest overlay MTU.
const CHUNK_BYTES: usize = 1000;

/// One name announced by a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteName {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub v4: Vec<Ipv4Addr>,
    #[serde(default)]
    pub v6: Vec<Ipv6Addr>,
}

/// One chunk of one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    pub generation: u64,
    pub index: u16,
    pub count: u16,
    pub entries: Vec<RemoteName>,
}

/// The frames that announce `names` (at least one, so an empty set is announced too).
pub fn frames(gateway_mac: Mac, generation: u64, names: &[RemoteName]) -> Vec<Vec<u8>> {
    let mut groups: Vec<Vec<RemoteName>> = vec![Vec::new()];
    let mut size = 0;
    for n in names {
        let len = serde_json::to_vec(n).map_or(0, |v| v.len());
        if size + len > CHUNK_BYTES && !groups.last().is_some_and(Vec::is_empty) {
            groups.push(Vec::new());
            size = 0;
        }
        size += len;
        groups.last_mut().expect("never empty").push(n.clone());
    }
    let count = groups.len().min(usize::from(MAX_CHUNKS)) as u16;
    groups
        .into_iter()
        .take(usize::from(count))
        .enumerate()
        .map(|(i, entries)| {
            let chunk = Chunk { generation, index: i as u16, count, entries };
            let mut f = Vec::with_capacity(14 + MAGIC.len() + CHUNK_BYTES + 64);
            f.extend_from_slice(&Mac::BROADCAST.0);
            f.extend_from_slice(&gateway_mac.0);
            f.extend_from_slice(&ETHERTYPE.to_be_bytes());
            f.extend_from_slice(MAGIC);
            f.extend_from_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
            f
        })
        .collect()
}

/// True when `frame` is an announcement (the datapath's check before switching).
pub fn is_announcement(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&ETHERTYPE.to_be_bytes()[..]) && frame.get(14..14 + MAGIC.len()) == Some(MAGIC)
}

/// The chunk inside an announcement frame.
///
/// # Errors
/// Not an announcement, bad JSON, or indexes out of range.
pub fn parse(frame: &[u8]) -> Result<Chunk, String> {
    if !is_announcement(frame) {
        return Err("not an announcement".into());
    }
    let chunk: Chunk = serde_json::from_slice(&frame[14 + MAGIC.len()..]).map_err(|e| format!("bad announcement: {e}"))?;
    if chunk.count == 0 || chunk.count > MAX_CHUNKS || chunk.index >= chunk.count {
        return Err(format!("announcement chunk {} of {} is out of range", chunk.index, chunk.count));
    }
    Ok(chunk)
}

/// Collects the chunks of one peer's announcements for one network.
#[derive(Debug, Default)]
pub struct Assembly {
    generation: u64,
    chunks: Vec<Option<Vec<RemoteName>>>,
}

impl Assembly {
    /// Takes a chunk; returns the whole set once every chunk of its generation is in. A newer
    /// generation starts over; an older one is ignored.
    pub fn add(&mut self, chunk: Chunk) -> Option<Vec<RemoteName>> {
        if chunk.generation < self.generation {
            return None;
        }
        if chunk.generation > self.generation || self.chunks.len() != usize::from(chunk.count) {
            self.generation = chunk.generation;
            self.chunks = vec![None; usize::from(chunk.count)];
        }
        self.chunks[usize::from(chunk.index)] = Some(chunk.entries);
        if self.chunks.iter().all(Option::is_some) {
            let all: Vec<RemoteName> = self.chunks.iter_mut().flat_map(|c| c.take().unwrap_or_default()).collect();
            self.chunks.clear();
            return Some(all);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> RemoteName {
        RemoteName {
            name: format!("host-{i}"),
            aliases: vec![format!("alias-{i}")],
            v4: vec![Ipv4Addr::new(10, 0, 0, i as u8)],
            v6: vec![],
        }
    }

    #[test]
    fn round_trip_in_chunks() {
        let names: Vec<RemoteName> = (0..100).map(name).collect();
        let fs = frames(Mac([2, 0, 0, 0, 0, 1]), 7, &names);
        assert!(fs.len() > 1, "100 names need several chunks");
        assert!(fs.iter().all(|f| f.len() < 1300), "every chunk fits an overlay frame");
        let mut a = Assembly::default();
        let mut got = None;
        for f in fs.iter().rev() {
            assert!(is_announcement(f));
            got = a.add(parse(f).unwrap()).or(got);
        }
        assert_eq!(got.unwrap(), names);
    }

    #[test]
    fn empty_set_and_generations() {
        let fs = frames(Mac([2, 0, 0, 0, 0, 1]), 3, &[]);
        assert_eq!(fs.len(), 1);
        let mut a = Assembly::default();
        assert_eq!(a.add(parse(&fs[0]).unwrap()), Some(vec![]));
        let old = frames(Mac([2, 0, 0, 0, 0, 1]), 2, &[name(1)]);
        assert_eq!(a.add(parse(&old[0]).unwrap()), None, "an older generation is ignored");
    }

    #[test]
    fn garbage_is_refused() {
        let mut f = frames(Mac([2, 0, 0, 0, 0, 1]), 1, &[name(1)]).remove(0);
        assert!(parse(&f[..20]).is_err());
        let n = f.len();
        f[n - 3] = b'{';
        assert!(parse(&f).is_err());
        let bad = serde_json::to_vec(&Chunk { generation: 1, index: 5, count: 2, entries: vec![] }).unwrap();
        let mut g = f[..14 + MAGIC.len()].to_vec();
        g.extend_from_slice(&bad);
        assert!(parse(&g).is_err());
        assert!(!is_announcement(&[0u8; 10]));
    }
}
