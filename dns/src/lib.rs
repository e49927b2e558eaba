//! dns: the I/O-free DNS responder of the network gateways.
//!
//! The daemon hands [`respond`] the bytes of one query a container sent to its gateway, the
//! [`Records`] of every network, the networks the container is on, a random word and an output
//! buffer; it gets back a [`Decision`]: an answer written into the buffer, "forward these bytes
//! upstream", or a drop with a reason for the counters. Nothing here reads a clock, draws random
//! numbers or touches a socket, and no input bytes make it panic (a proptest and the cargo-fuzz
//! target `dns_respond` throw garbage at it).
//!
//! What is answered, for a container on networks `N1, N2, ...` (looked up in that order, the
//! first network that has the name wins; names of other networks are invisible):
//! - A / AAAA for `name`, `alias`, `name.NETWORK`, `alias.NETWORK` and, when the network has a
//!   domain suffix, `name.SUFFIX` and `alias.SUFFIX`; case-insensitive, the asker's spelling is
//!   echoed. Several addresses come back in an order shuffled by the caller's random word.
//! - PTR (`in-addr.arpa`, `ip6.arpa`) for every address of every endpoint of those networks,
//!   pointing at the primary FQDN (`name.SUFFIX.`, else `name.NETWORK.`).
//! - SRV for `_service._proto.NAME` where an endpoint declares the service, with the target's
//!   A/AAAA records in the additional section.
//! - ANY on one of our names gets the A and AAAA (or PTR, SRV) records (RFC 8482 allows less).
//! - A name of ours without a record of the asked type: NOERROR, empty answer (NODATA).
//! - Any other name (or class other than IN): [`Decision::Forward`]; on an `internal` network
//!   (one that forwards nothing) NXDOMAIN instead.
//!
//! Answers are authoritative (AA=1), offer recursion (RA=1, since we forward), copy the id, RD
//! and CD, echo the question, and carry an OPT record when the query had one. An answer that
//! does not fit the size limit goes out with TC=1 and no records, so the client retries over TCP.
#![forbid(unsafe_code)]

mod records;
mod resolv;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use records::{key_labels, Host, Net, MAX_KEY};
pub use records::{Entry, Records, Srv};
pub use resolv::parse_resolv_conf;

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Queries longer than this are dropped unread ([`DropReason::TooLong`]): real queries are a
/// few dozen bytes, a few hundred with EDNS padding.
pub const MAX_QUERY_LEN: usize = 4096;
/// The UDP payload size every DNS client accepts (RFC 1035) when it does not say more.
pub const UDP_MIN: usize = 512;
/// The UDP payload size our OPT records advertise (the DNS Flag Day 2020 value).
pub const ADVERTISED_UDP_PAYLOAD: u16 = 1232;
/// The largest DNS message over TCP.
pub const TCP_MAX: usize = 65535;

/// How large an answer may be: it depends on the transport the query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// UDP, with the caller's own ceiling (what one frame out of the gateway can carry). The
    /// answer is further held to the client's EDNS payload size, or 512 bytes without EDNS.
    Udp(usize),
    /// TCP: up to 65 535 bytes.
    Tcp,
}

/// What to do with one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An answer (records, NODATA, NXDOMAIN on an internal network, or a TC=1 answer) was
    /// written into `out[..n]`.
    Answer(usize),
    /// Not one of our names: send the query bytes, unchanged, to the upstream resolvers.
    Forward,
    /// The query was bad but its header readable: an error answer (FORMERR, NOTIMP, BADVERS)
    /// was written into `out[..n]`; count the reason.
    Reject(usize, DropReason),
    /// Nothing to send back; count the reason.
    Drop(DropReason),
}

/// Why a query was rejected or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a DNS header (dropped).
    TooShort,
    /// Longer than [`MAX_QUERY_LEN`] (dropped unread).
    TooLong,
    /// QR=1: a response, never answered (no loops between resolvers).
    NotAQuery,
    /// Opcode other than QUERY (NOTIMP).
    NotImplemented,
    /// QDCOUNT=0 (FORMERR).
    NoQuestion,
    /// QDCOUNT>1 (FORMERR).
    TooManyQuestions,
    /// The question or a record does not parse: truncated, bad labels, compression loop,
    /// duplicate OPT... (FORMERR).
    Malformed,
    /// EDNS version other than 0 (BADVERS).
    BadEdnsVersion,
    /// The output buffer cannot hold even a header (dropped).
    NoRoom,
    /// The answer could not be encoded (dropped; not expected to happen).
    Encode,
}

impl DropReason {
    /// Stable snake_case name, for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::NotAQuery => "not_a_query",
            DropReason::NotImplemented => "not_implemented",
            DropReason::NoQuestion => "no_question",
            DropReason::TooManyQuestions => "too_many_questions",
            DropReason::Malformed => "malformed",
            DropReason::BadEdnsVersion => "bad_edns_version",
            DropReason::NoRoom => "no_room",
            DropReason::Encode => "encode",
        }
    }

    /// Every reason, for registering counters.
    pub const ALL: [DropReason; 10] = [
        DropReason::TooShort,
        DropReason::TooLong,
        DropReason::NotAQuery,
        DropReason::NotImplemented,
        DropReason::NoQuestion,
        DropReason::TooManyQuestions,
        DropReason::Malformed,
        DropReason::BadEdnsVersion,
        DropReason::NoRoom,
        DropReason::Encode,
    ];
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of the records plus [`respond`]. The datapath thread owns one and swaps the
/// snapshot when the control side sends a new one (through its job channel: a single owner
/// needs no lock and no `ArcSwap`).
#[derive(Debug, Clone)]
pub struct Responder {
    records: Arc<Records>,
}

impl Responder {
    pub fn new(records: Arc<Records>) -> Responder {
        Responder { records }
    }

    /// Installs a new snapshot and returns the old one.
    pub fn swap(&mut self, records: Arc<Records>) -> Arc<Records> {
        std::mem::replace(&mut self.records, records)
    }

    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    /// [`respond`] with this snapshot.
    pub fn respond(&self, networks: &[&str], internal: bool, query: &[u8], rand: u64, out: &mut [u8], limit: Limit) -> Decision {
        respond(&self.records, networks, internal, query, rand, out, limit)
    }
}

/// The first checks, on the raw header: enough of a query to answer at all.
struct RawHeader {
    opcode: u8,
    qdcount: u16,
}

fn raw_header(query: &[u8]) -> Result<RawHeader, DropReason> {
    let Some(h) = query.get(..HEADER_LEN) else {
        return Err(DropReason::TooShort);
    };
    if query.len() > MAX_QUERY_LEN {
        return Err(DropReason::TooLong);
    }
    if h[2] & 0x80 != 0 {
        return Err(DropReason::NotAQuery);
    }
    Ok(RawHeader { opcode: (h[2] >> 3) & 0x0f, qdcount: u16::from_be_bytes([h[4], h[5]]) })
}

/// Answers one query. See the crate documentation for what is answered.
///
/// - `networks`: the networks the asking container is attached to; only their names are seen.
/// - `internal`: the container's network forwards nothing: unknown names get NXDOMAIN.
/// - `rand`: a random word (the caller's RNG): it orders several addresses of one name.
/// - `out`: where the answer goes; `out.len()` is one more bound on its size.
/// - `limit`: the transport's size rule (see [`Limit`]).
pub fn respond(records: &Records, networks: &[&str], internal: bool, query: &[u8], rand: u64, out: &mut [u8], limit: Limit) -> Decision {
    let hdr = match raw_header(query) {
        Ok(h) => h,
        Err(why) => return Decision::Drop(why),
    };
    if out.len() < HEADER_LEN {
        return Decision::Drop(DropReason::NoRoom);
    }
    let reject = |out: &mut [u8], rcode, why| match error_answer(query, rcode, out, false) {
        Some(n) => Decision::Reject(n, why),
        None => Decision::Drop(why),
    };
    if hdr.opcode != 0 {
        return reject(out, ResponseCode::NotImp, DropReason::NotImplemented);
    }
    match hdr.qdcount {
        1 => {}
        0 => return reject(out, ResponseCode::FormErr, DropReason::NoQuestion),
        _ => return reject(out, ResponseCode::FormErr, DropReason::TooManyQuestions),
    }
    let Ok(msg) = Message::from_vec(query) else {
        return reject(out, ResponseCode::FormErr, DropReason::Malformed);
    };
    let Some(question) = msg.queries.first() else {
        return reject(out, ResponseCode::FormErr, DropReason::NoQuestion);
    };
    let max = max_len(limit, msg.edns.as_ref(), out.len());
    if max < HEADER_LEN {
        return Decision::Drop(DropReason::NoRoom);
    }
    let mut resp = response_to(&msg, question);
    if msg.edns.as_ref().is_some_and(|e| e.version() != 0) {
        resp.metadata.response_code = ResponseCode::BADVERS;
        resp.metadata.authoritative = false;
        return match emit(&mut resp, out, max) {
            Some(n) => Decision::Reject(n, DropReason::BadEdnsVersion),
            None => Decision::Drop(DropReason::BadEdnsVersion),
        };
    }
    if !lookup(records, networks, question, rand, &mut resp) {
        if !internal {
            return Decision::Forward;
        }
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    match emit(&mut resp, out, max) {
        Some(n) => Decision::Answer(n),
        None => Decision::Drop(DropReason::Encode),
    }
}

/// SERVFAIL for `query` (for example when every upstream failed), question and OPT echoed when
/// they parse. `None` when the bytes are not a readable query or `out` is under 12 bytes.
pub fn servfail(query: &[u8], out: &mut [u8]) -> Option<usize> {
    error_answer(query, ResponseCode::ServFail, out, false)
}

/// NXDOMAIN for `query` (for example when there is no upstream to forward to), like
/// [`servfail`].
pub fn nxdomain(query: &[u8], out: &mut [u8]) -> Option<usize> {
    error_answer(query, ResponseCode::NXDomain, out, false)
}

/// The answer size allowed by the transport, the client (EDNS) and the buffer.
fn max_len(limit: Limit, edns: Option<&Edns>, out_len: usize) -> usize {
    let transport = match limit {
        Limit::Udp(ceiling) => {
            let client = edns.map_or(UDP_MIN, |e| usize::from(e.max_payload()).max(UDP_MIN));
            ceiling.min(client)
        }
        Limit::Tcp => TCP_MAX,
    };
    transport.min(out_len)
}

/// The answer skeleton: header flags from the query, the question, OPT if the query had one.
fn response_to(msg: &Message, question: &Query) -> Message {
    let mut resp = Message::response(msg.metadata.id, OpCode::Query);
    let m = &mut resp.metadata;
    m.message_type = MessageType::Response;
    m.authoritative = true;
    m.recursion_desired = msg.metadata.recursion_desired;
    m.recursion_available = true;
    m.checking_disabled = msg.metadata.checking_disabled;
    resp.add_query(question.clone());
    if msg.edns.is_some() {
        resp.set_edns(our_edns());
    }
    resp
}

fn our_edns() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(ADVERTISED_UDP_PAYLOAD);
    e.set_version(0);
    e
}

/// An error answer with `rcode`: header from the query, question and OPT echoed when the query
/// parses (one question only), else the bare header. AA is `aa`, RA=1.
fn error_answer(query: &[u8], rcode: ResponseCode, out: &mut [u8], aa: bool) -> Option<usize> {
    let h = query.get(..HEADER_LEN)?;
    if h[2] & 0x80 != 0 || query.len() > MAX_QUERY_LEN || out.len() < HEADER_LEN {
        return None;
    }
    let id = u16::from_be_bytes([h[0], h[1]]);
    let opcode = OpCode::from_u8((h[2] >> 3) & 0x0f);
    let mut resp = Message::error_msg(id, opcode, rcode);
    let m = &mut resp.metadata;
    m.authoritative = aa;
    m.recursion_desired = h[2] & 0x01 != 0;
    m.recursion_available = true;
    m.checking_disabled = h[3] & 0x10 != 0;
    let mut max = out.len().min(UDP_MIN);
    if let Ok(msg) = Message::from_vec(query) {
        if msg.queries.len() == 1 {
            resp.add_queries(msg.queries);
        }
        if let Some(e) = &msg.edns {
            resp.set_edns(our_edns());
            max = out.len().min(usize::from(e.max_payload()).max(UDP_MIN));
        }
    }
    if rcode.high() != 0 && resp.edns.is_none() {
        // Extended codes need an OPT record to travel; without one, say FORMERR.
        resp.metadata.response_code = ResponseCode::FormErr;
    }
    emit(&mut resp, out, max)
}

/// Encodes `resp` into `out` if it fits `max` bytes; else the same with TC=1 and no records;
/// else the bare header with TC=1.
fn emit(resp: &mut Message, out: &mut [u8], max: usize) -> Option<usize> {
    let max = max.min(out.len());
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= max {
        out[..bytes.len()].copy_from_slice(&bytes);
        return Some(bytes.len());
    }
    resp.metadata.truncation = true;
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    let mut bytes = resp.to_vec().ok()?;
    if bytes.len() > max {
        resp.queries.clear();
        resp.edns = None;
        if resp.metadata.response_code.high() != 0 {
            resp.metadata.response_code = ResponseCode::FormErr;
        }
        bytes = resp.to_vec().ok()?;
    }
    let dst = out.get_mut(..bytes.len())?;
    if bytes.len() > max {
        return None;
    }
    dst.copy_from_slice(&bytes);
    Some(bytes.len())
}

/// The lower-cased key of a query name (see `records`), on the stack.
struct QKey {
    buf: [u8; MAX_KEY + 2],
    len: usize,
}

impl QKey {
    fn new(name: &Name) -> Option<QKey> {
        let mut k = QKey { buf: [0; MAX_KEY + 2], len: 0 };
        for label in name.iter() {
            let end = k.len + 1 + label.len();
            let dst = k.buf.get_mut(k.len..end)?;
            dst[0] = u8::try_from(label.len()).ok()?;
            for (d, s) in dst[1..].iter_mut().zip(label) {
                *d = s.to_ascii_lowercase();
            }
            k.len = end;
        }
        (k.len > 0).then_some(k)
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Fills `resp` if the question is ours; false if it is not (forward or NXDOMAIN).
fn lookup(records: &Records, networks: &[&str], q: &Query, rand: u64, resp: &mut Message) -> bool {
    if q.query_class() != DNSClass::IN {
        return false;
    }
    let Some(key) = QKey::new(q.name()) else {
        return false;
    };
    let key = key.bytes();
    let nets = || networks.iter().filter_map(|n| records.nets.get(*n));
    let qtype = q.query_type();
    let ttl = records.ttl;
    let mut rng = SplitMix(rand);

    if let Some(addr) = reverse_addr(key) {
        let Some((net, idx)) = nets().find_map(|n| n.ptr.get(&addr).map(|i| (n, *i as usize))) else {
            return false;
        };
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            if let Some(ep) = net.endpoints.get(idx) {
                resp.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::PTR(PTR(ep.fqdn.clone()))));
            }
        }
        return true;
    }

    if let Some((service, base)) = split_service(key) {
        let found = nets().find_map(|n| {
            let host = n.names.get(base)?;
            host.srv.iter().any(|s| &*s.service == service).then_some((n, host))
        });
        if let Some((net, host)) = found {
            if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                add_srv(net, host, service, q.name(), ttl, &mut rng, resp);
            }
            return true;
        }
    }

    let Some(host) = nets().find_map(|n| n.names.get(key)) else {
        return false;
    };
    if matches!(qtype, RecordType::A | RecordType::ANY) {
        add_addrs(q.name(), ttl, &host.v4, &[], &mut rng, &mut resp.answers);
    }
    if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
        add_addrs(q.name(), ttl, &[], &host.v6, &mut rng, &mut resp.answers);
    }
    true
}

/// SRV answers for `service` on `host`, shuffled, and their targets' addresses as additionals.
fn add_srv(net: &Net, host: &Host, service: &[u8], owner: &Name, ttl: u32, rng: &mut SplitMix, resp: &mut Message) {
    let start = resp.answers.len();
    let mut targets: Vec<u32> = Vec::new();
    for s in host.srv.iter().filter(|s| &*s.service == service) {
        let Some(ep) = net.endpoints.get(s.target as usize) else {
            continue;
        };
        let srv = SRV::new(s.priority, s.weight, s.port, ep.fqdn.clone());
        resp.answers.push(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
        if !targets.contains(&s.target) {
            targets.push(s.target);
        }
    }
    rng.shuffle(&mut resp.answers[start..]);
    for t in targets {
        if let Some(ep) = net.endpoints.get(t as usize) {
            add_addrs(&ep.fqdn, ttl, &ep.v4, &ep.v6, rng, &mut resp.additionals);
        }
    }
}

/// A and AAAA records for `owner`, each family shuffled.
fn add_addrs(owner: &Name, ttl: u32, v4: &[Ipv4Addr], v6: &[Ipv6Addr], rng: &mut SplitMix, to: &mut Vec<Record>) {
    let start = to.len();
    to.extend(v4.iter().map(|a| Record::from_rdata(owner.clone(), ttl, RData::A(A(*a)))));
    rng.shuffle(&mut to[start..]);
    let start = to.len();
    to.extend(v6.iter().map(|a| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*a)))));
    rng.shuffle(&mut to[start..]);
}

/// `_service._proto.rest` → (key of `_service._proto`, key of `rest`).
fn split_service(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut labels = key_labels(key);
    let a = labels.next()?;
    let b = labels.next()?;
    if a.first() != Some(&b'_') || b.first() != Some(&b'_') {
        return None;
    }
    let cut = a.len() + b.len() + 2;
    let (service, base) = key.split_at(cut);
    (!base.is_empty()).then_some((service, base))
}

/// The address a reverse name spells: `d.c.b.a.in-addr.arpa` or 32 nibbles `.ip6.arpa`.
/// Partial names (a zone, not an address) and non-canonical spellings are not addresses.
fn reverse_addr(key: &[u8]) -> Option<IpAddr> {
    const V4: &[u8] = b"\x07in-addr\x04arpa";
    const V6: &[u8] = b"\x03ip6\x04arpa";
    if let Some(head) = key.strip_suffix(V4) {
        let mut octets = [0u8; 4];
        let mut n = 0;
        for label in key_labels(head) {
            let slot = octets.get_mut(n)?;
            if label.is_empty() || label.len() > 3 || (label.len() > 1 && label[0] == b'0') {
                return None;
            }
            if !label.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v = label.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
            *slot = u8::try_from(v).ok()?;
            n += 1;
        }
        if n != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(head) = key.strip_suffix(V6) {
        // 32 labels of one hex digit each: 64 bytes.
        if head.len() != 64 {
            return None;
        }
        let mut addr: u128 = 0;
        for (i, pair) in head.chunks_exact(2).enumerate() {
            if pair[0] != 1 {
                return None;
            }
            let nibble = (pair[1] as char).to_digit(16)?;
            addr |= u128::from(nibble) << (4 * i);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(addr)));
    }
    None
}

/// splitmix64: a tiny generator to turn the caller's random word into a shuffle.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests;
