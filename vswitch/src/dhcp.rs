//! DHCPv4 server messages, without I/O: a client's message in, a [`Query`] out; a lease in,
//! the reply's bytes out. `dhcproto` parses and builds the messages; this module checks what
//! it would let through (the magic cookie, option lengths that run past the end, option
//! overload into `sname`/`file`, which is how option parsers loop) and decides nothing about
//! addresses: the control plane's IPAM does.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::types::Mac;

/// The server's and the client's UDP ports.
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// BOOTP's fixed header, then the magic cookie: the least a DHCP message has.
const FIXED_LEN: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Room for a reply: the fixed header, the cookie and our options, well under 576 bytes.
pub const MAX_REPLY: usize = 576;

/// What a client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

/// A client's message, reduced to what the server decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: Kind,
    pub xid: u32,
    pub mac: Mac,
    pub ciaddr: Ipv4Addr,
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
    /// Option 54: the server the client chose (or talks to).
    pub server_id: Option<Ipv4Addr>,
    /// The client asked for broadcast replies.
    pub broadcast: bool,
    pub giaddr: Ipv4Addr,
}

impl Query {
    /// The address a REQUEST asks to have: option 50, else `ciaddr` (renewing).
    pub fn wanted(&self) -> Option<Ipv4Addr> {
        self.requested.or((!self.ciaddr.is_unspecified()).then_some(self.ciaddr))
    }
}

/// Why a message was not taken (each a counted drop, never a log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Shorter than the fixed header, no magic cookie, or an option running past the end or
    /// with no end marker.
    #[error("truncated DHCP message")]
    Truncated,
    /// Option overload (52): options continued in `sname`/`file`, never followed here.
    #[error("DHCP options overloaded into sname/file")]
    Looping,
    /// Not a client's request (a BOOTREPLY, no message type, a server's message type) or not
    /// Ethernet.
    #[error("not a DHCP client message")]
    NotRequest,
}

/// Parses a client's message (the UDP payload).
///
/// # Errors
/// See [`Refused`].
pub fn parse(payload: &[u8]) -> Result<Query, Refused> {
    // dhcproto decodes every option it knows and asserts (in debug builds) on the lengths of
    // some it never needs here: it gets a copy holding only the options the server reads.
    let mut kept = [0u8; KEPT_LEN];
    let n = check_options(payload, &mut kept)?;
    let msg = Message::decode(&mut Decoder::new(&kept[..n])).map_err(|_| Refused::Truncated)?;
    if msg.opcode() != Opcode::BootRequest || msg.hlen() != 6 || msg.chaddr().len() < 6 {
        return Err(Refused::NotRequest);
    }
    let kind = match msg.opts().msg_type() {
        Some(MessageType::Discover) => Kind::Discover,
        Some(MessageType::Request) => Kind::Request,
        Some(MessageType::Decline) => Kind::Decline,
        Some(MessageType::Release) => Kind::Release,
        Some(MessageType::Inform) => Kind::Inform,
        _ => return Err(Refused::NotRequest),
    };
    let requested = match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
        _ => None,
    };
    let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    Ok(Query {
        kind,
        xid: msg.xid(),
        mac: Mac::from_slice(msg.chaddr(), 0),
        ciaddr: msg.ciaddr(),
        requested,
        server_id,
        broadcast: msg.flags().broadcast(),
        giaddr: msg.giaddr(),
    })
}

/// The options the server reads, with the one length each may have: message type,
/// requested address, server identifier.
const KEPT: [(u8, usize); 3] = [(53, 1), (50, 4), (54, 4)];
/// The fixed header, the cookie, the kept options and the end marker.
const KEPT_LEN: usize = FIXED_LEN + 4 + 6 + 6 + 3 + 1;

/// Walks the options as TLVs: each must fit, the list must end with 255, and option 52
/// (overload) is refused. Copies the fixed header, the cookie and the options in [`KEPT`]
/// (once each, with their length checked) into `kept`; returns the copy's length.
fn check_options(payload: &[u8], kept: &mut [u8; KEPT_LEN]) -> Result<usize, Refused> {
    if payload.len() < FIXED_LEN + MAGIC.len() || payload[FIXED_LEN..FIXED_LEN + 4] != MAGIC {
        return Err(Refused::Truncated);
    }
    kept[..FIXED_LEN + 4].copy_from_slice(&payload[..FIXED_LEN + 4]);
    let (mut out, mut seen) = (FIXED_LEN + 4, [false; KEPT.len()]);
    let mut i = FIXED_LEN + 4;
    while let Some(&code) = payload.get(i) {
        match code {
            0 => i += 1,
            255 => {
                kept[out] = 255;
                return Ok(out + 1);
            }
            52 => return Err(Refused::Looping),
            _ => {
                let len = usize::from(*payload.get(i + 1).ok_or(Refused::Truncated)?);
                let value = payload.get(i + 2..i + 2 + len).ok_or(Refused::Truncated)?;
                if let Some(k) = KEPT.iter().position(|&(c, _)| c == code) {
                    if KEPT[k].1 != len {
                        return Err(Refused::Truncated);
                    }
                    if !seen[k] {
                        seen[k] = true;
                        kept[out] = code;
                        kept[out + 1] = len as u8;
                        kept[out + 2..out + 2 + len].copy_from_slice(value);
                        out += 2 + len;
                    }
                }
                i += 2 + len;
            }
        }
    }
    Err(Refused::Truncated)
}

/// What the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Offer,
    Ack,
    Nak,
}

/// A lease's parameters, as the reply carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// The switch's address: server identifier, router and DNS server.
    pub server: Ipv4Addr,
    pub mtu: u16,
    pub lease_secs: u32,
}

/// Writes the reply to `q` into `out`; returns its length (`None`: `out` too short).
pub fn reply(q: &Query, answer: Answer, lease: &Lease, out: &mut [u8]) -> Option<usize> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply).set_xid(q.xid).set_chaddr(&q.mac.0).set_giaddr(q.giaddr);
    m.set_flags(if q.broadcast { Flags::default().set_broadcast() } else { Flags::default() });
    let opts = m.opts_mut();
    opts.insert(DhcpOption::ServerIdentifier(lease.server));
    match answer {
        Answer::Nak => {
            opts.insert(DhcpOption::MessageType(MessageType::Nak));
        }
        Answer::Offer | Answer::Ack => {
            let mt = if answer == Answer::Offer { MessageType::Offer } else { MessageType::Ack };
            opts.insert(DhcpOption::MessageType(mt));
            let mask = u32::MAX.checked_shl(32 - u32::from(lease.prefix_len.min(32))).unwrap_or(0);
            opts.insert(DhcpOption::SubnetMask(Ipv4Addr::from(mask)));
            opts.insert(DhcpOption::Router(vec![lease.server]));
            opts.insert(DhcpOption::DomainNameServer(vec![lease.server]));
            opts.insert(DhcpOption::InterfaceMtu(lease.mtu));
            opts.insert(DhcpOption::AddressLeaseTime(lease.lease_secs));
            opts.insert(DhcpOption::Renewal(lease.lease_secs / 2));
            opts.insert(DhcpOption::Rebinding(lease.lease_secs / 8 * 7));
            if q.kind != Kind::Inform {
                m.set_yiaddr(lease.ip);
            }
            m.set_ciaddr(q.ciaddr);
        }
    }
    let mut bytes = Vec::with_capacity(MAX_REPLY);
    m.encode(&mut Encoder::new(&mut bytes)).ok()?;
    // Some clients ignore replies under BOOTP's 300 bytes.
    if bytes.len() < 300 {
        bytes.resize(300, 0);
    }
    out.get_mut(..bytes.len())?.copy_from_slice(&bytes);
    Some(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(kind: MessageType, extra: &[DhcpOption]) -> Vec<u8> {
        let mac = [2, 0, 0, 0, 0, 7];
        let mut m = Message::new(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &mac);
        m.set_xid(0x1234_5678);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in extra {
            m.opts_mut().insert(o.clone());
        }
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        b
    }

    #[test]
    fn discover_then_offer_round_trips() {
        let d = client(MessageType::Discover, &[]);
        let q = parse(&d).unwrap();
        assert_eq!((q.kind, q.xid, q.mac), (Kind::Discover, 0x1234_5678, Mac([2, 0, 0, 0, 0, 7])));
        let lease =
            Lease { ip: "10.9.0.50".parse().unwrap(), prefix_len: 24, server: "10.9.0.1".parse().unwrap(), mtu: 1400, lease_secs: 600 };
        let mut out = [0u8; MAX_REPLY];
        let n = reply(&q, Answer::Offer, &lease, &mut out).unwrap();
        let m = Message::decode(&mut Decoder::new(&out[..n])).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.yiaddr(), lease.ip);
        assert_eq!(m.xid(), q.xid);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(m.opts().get(OptionCode::SubnetMask), Some(&DhcpOption::SubnetMask("255.255.255.0".parse().unwrap())));
        assert_eq!(m.opts().get(OptionCode::InterfaceMtu), Some(&DhcpOption::InterfaceMtu(1400)));
        assert_eq!(m.opts().get(OptionCode::Router), Some(&DhcpOption::Router(vec![lease.server])));
        assert_eq!(m.opts().get(OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(vec![lease.server])));
    }

    #[test]
    fn request_carries_the_wanted_address() {
        let r = client(MessageType::Request, &[DhcpOption::RequestedIpAddress("10.9.0.50".parse().unwrap())]);
        let q = parse(&r).unwrap();
        assert_eq!(q.kind, Kind::Request);
        assert_eq!(q.wanted(), Some("10.9.0.50".parse().unwrap()));
    }

    #[test]
    fn truncated_and_looping_messages_are_refused() {
        let d = client(MessageType::Discover, &[]);
        for n in [0, 10, 235, 239, 240] {
            assert_eq!(parse(&d[..n]), Err(Refused::Truncated), "{n} bytes");
        }
        // Without the end marker.
        assert_eq!(parse(&d[..d.len() - 1]), Err(Refused::Truncated));
        // An option whose length runs past the end.
        let mut bad = d[..240].to_vec();
        bad.extend_from_slice(&[53, 1, 1, 12, 200, b'x']);
        assert_eq!(parse(&bad), Err(Refused::Truncated));
        // Option overload.
        let mut ov = d[..240].to_vec();
        ov.extend_from_slice(&[53, 1, 1, 52, 1, 3, 255]);
        assert_eq!(parse(&ov), Err(Refused::Looping));
        // Options dhcproto would assert on (a 4-byte BLQ time of length 1; a status code of
        // length 0) are never handed to it; a kept option of the wrong length is refused.
        let mut odd = d[..240].to_vec();
        odd.extend_from_slice(&[53, 1, 1, 152, 1, 0, 151, 0, 255]);
        assert_eq!(parse(&odd).map(|q| q.kind), Ok(Kind::Discover));
        let mut short = d[..240].to_vec();
        short.extend_from_slice(&[53, 1, 1, 50, 2, 10, 9, 255]);
        assert_eq!(parse(&short), Err(Refused::Truncated));
        // A server's message is not a request.
        assert_eq!(parse(&client(MessageType::Offer, &[])), Err(Refused::NotRequest));
    }

    #[test]
    fn any_bytes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let base = client(MessageType::Request, &[DhcpOption::RequestedIpAddress("10.9.0.50".parse().unwrap())]);
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            let cut = (x as usize >> 8) % (b.len() + 1);
            let _ = parse(&b[..cut]);
        }
    }
}
