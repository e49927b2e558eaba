//! Synchronous rtnetlink (NETLINK_ROUTE) requests, built with `netlink-packet-route` and sent
//! over a plain blocking `netlink-sys` socket.
//!
//! A netlink socket belongs to the network namespace its creator was in at `socket()` time,
//! so [`RtSocket::open`] is called inside the target namespace and every request on it acts
//! there, whichever namespace the thread is in later.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ALIGNTO, NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::ffi;
use super::netns::SysError;

/// `NLMSGERR_ATTR_MSG` (linux/netlink.h): the extended-ack error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Netlink header size.
const NLMSG_HDRLEN: usize = 16;
/// Acks arrive during our own sendmsg(); this only guards against a kernel that never answers.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// What to configure on a freshly created interface.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Default route via this gateway; `None` adds no route.
    pub gateway: Option<Ipv4Addr>,
    /// An IPv6 address to add as well, with DAD off (IPAM made it unique).
    pub addr6: Option<(std::net::Ipv6Addr, u8)>,
    /// An IPv6 default route via this gateway (with `addr6`); `None` adds none.
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// The link may already carry this configuration (a TAP reopened after a restart):
    /// replace addresses and routes instead of failing on "File exists".
    pub replace: bool,
}

/// A static default route of `family` via `gw` out of `ifindex`, in the main table.
fn default_route(family: AddressFamily, gw: RouteAddress, ifindex: u32) -> RouteMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = family;
    route.header.destination_prefix_length = 0;
    route.header.table = RouteHeader::RT_TABLE_MAIN;
    route.header.protocol = RouteProtocol::Static;
    route.header.scope = RouteScope::Universe;
    route.header.kind = RouteType::Unicast;
    route.attributes = vec![RouteAttribute::Gateway(gw), RouteAttribute::Oif(ifindex)];
    route
}

/// A NETLINK_ROUTE socket used synchronously: one batch out, the acks back.
#[derive(Debug)]
pub struct RtSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// The outcome of one request in a batch.
#[derive(Debug)]
struct Ack {
    /// 0 on success, else a positive errno.
    errno: i32,
    /// The kernel's extended-ack message, if any.
    msg: Option<String>,
}

impl RtSocket {
    /// Open a NETLINK_ROUTE socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<RtSocket> {
        let sock = Socket::new(NETLINK_ROUTE)?;
        // Both are best effort: they only improve error reports / trim acks.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        ffi::set_rcvtimeo(sock.as_fd(), RECV_TIMEOUT)?;
        Ok(RtSocket { sock, seq: 0, buf: Vec::with_capacity(8192) })
    }

    /// The ifindex of `name` in this socket's namespace.
    pub fn ifindex(&self, name: &str) -> io::Result<u32> {
        ffi::if_index(self.sock.as_fd(), name)
    }

    /// Set MAC + MTU + up, add `addr/prefix_len`, add the default route: one batch, one
    /// sendmsg, in that order (the route needs the link up and the subnet present).
    ///
    /// The kernel processes every message of a batch even if an earlier one fails; the first
    /// failure (in request order) is returned.
    pub fn configure_link(&mut self, cfg: &LinkConfig) -> Result<(), SysError> {
        let mut reqs: Vec<(&'static str, u16, RouteNetlinkMessage)> = Vec::with_capacity(4);
        let create = if cfg.replace { NLM_F_CREATE | NLM_F_REPLACE } else { NLM_F_CREATE | NLM_F_EXCL };

        let mut link = LinkMessage::default();
        link.header.index = cfg.ifindex;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        link.attributes = vec![LinkAttribute::Address(cfg.mac.to_vec()), LinkAttribute::Mtu(cfg.mtu)];
        reqs.push(("set MAC, MTU and link up", 0, RouteNetlinkMessage::SetLink(link)));

        let mut addr = AddressMessage::default();
        addr.header.family = AddressFamily::Inet;
        addr.header.prefix_len = cfg.prefix_len;
        addr.header.scope = AddressScope::Universe;
        addr.header.index = cfg.ifindex;
        addr.attributes = vec![AddressAttribute::Local(IpAddr::V4(cfg.addr)), AddressAttribute::Address(IpAddr::V4(cfg.addr))];
        reqs.push(("add address", create, RouteNetlinkMessage::NewAddress(addr)));

        if let Some((a6, len6)) = cfg.addr6 {
            let mut addr = AddressMessage::default();
            addr.header.family = AddressFamily::Inet6;
            addr.header.prefix_len = len6;
            addr.header.scope = AddressScope::Universe;
            addr.header.index = cfg.ifindex;
            addr.attributes = vec![
                AddressAttribute::Local(IpAddr::V6(a6)),
                AddressAttribute::Address(IpAddr::V6(a6)),
                AddressAttribute::Flags(netlink_packet_route::address::AddressFlags::Nodad),
            ];
            reqs.push(("add IPv6 address", create, RouteNetlinkMessage::NewAddress(addr)));
        }

        if let Some(gw) = cfg.gateway {
            let mut route = default_route(AddressFamily::Inet, RouteAddress::Inet(gw), cfg.ifindex);
            if !same_subnet(cfg.addr, gw, cfg.prefix_len) {
                // e.g. a /32 address with a link-local gateway: tell the kernel the gateway
                // is reachable on this link without a covering subnet route.
                route.header.flags = RouteFlags::Onlink;
            }
            reqs.push(("add default route", create, RouteNetlinkMessage::NewRoute(route)));
        }
        if let Some(gw6) = cfg.gateway6 {
            let route = default_route(AddressFamily::Inet6, RouteAddress::Inet6(gw6), cfg.ifindex);
            reqs.push(("add IPv6 default route", create, RouteNetlinkMessage::NewRoute(route)));
        }

        let acks = self.transact(&reqs)?;
        for ((op, _, _), ack) in reqs.iter().zip(acks) {
            if ack.errno != 0 {
                return Err(netlink_error(op, ack));
            }
        }
        Ok(())
    }

    /// Set the largest GSO super-frame the kernel builds for the link `ifindex`
    /// (IFLA_GSO_MAX_SIZE).
    pub fn set_gso_max_size(&mut self, ifindex: u32, size: u32) -> Result<(), SysError> {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        link.attributes = vec![LinkAttribute::GsoMaxSize(size)];
        let reqs = [("set gso_max_size", 0, RouteNetlinkMessage::SetLink(link))];
        let acks = self.transact(&reqs)?;
        match acks.into_iter().next() {
            Some(ack) if ack.errno != 0 => Err(netlink_error("set gso_max_size", ack)),
            _ => Ok(()),
        }
    }

    /// Set only the MAC and MTU of `ifindex` (a TAP handed over to a runtime, which brings it
    /// up where it puts it).
    pub fn set_mac_mtu(&mut self, ifindex: u32, mac: [u8; 6], mtu: u32) -> Result<(), SysError> {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        link.attributes = vec![LinkAttribute::Address(mac.to_vec()), LinkAttribute::Mtu(mtu)];
        let reqs = [("set MAC and MTU", 0, RouteNetlinkMessage::SetLink(link))];
        let acks = self.transact(&reqs)?;
        match acks.into_iter().next() {
            Some(ack) if ack.errno != 0 => Err(netlink_error("set MAC and MTU", ack)),
            _ => Ok(()),
        }
    }

    /// The name of the interface of this socket's namespace whose MAC is `mac`, if any (one
    /// RTM_GETLINK dump).
    pub fn link_by_mac(&mut self, mac: [u8; 6]) -> Result<Option<String>, SysError> {
        let recv_err = |e| SysError::Io { op: "netlink receive", source: e };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(LinkMessage::default())));
        nl.finalize();
        let mut out = vec![0; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|e| SysError::Io { op: "netlink send", source: e })?;
        let mut found = None;
        // A dump fills datagrams of up to a few pages, bigger than any ack.
        self.buf.reserve(32 * 1024);
        loop {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0).map_err(recv_err)?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let msg = NetlinkBuffer::new_checked(&self.buf[off..n])
                    .map_err(|e| SysError::Netlink { op: "link dump", message: format!("malformed reply: {e}") })?;
                let len = msg.length() as usize;
                if msg.sequence_number() == self.seq {
                    match msg.message_type() {
                        netlink_packet_core::NLMSG_DONE => return Ok(found),
                        NLMSG_ERROR => {
                            let ack = parse_ack(msg.flags(), msg.payload());
                            if ack.errno != 0 {
                                return Err(netlink_error("link dump", ack));
                            }
                        }
                        _ => {
                            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len.min(n - off)]);
                            if let Ok(NetlinkMessage {
                                payload: NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)), ..
                            }) = parsed
                            {
                                let has_mac = link.attributes.iter().any(|a| matches!(a, LinkAttribute::Address(m) if m[..] == mac[..]));
                                let name = link.attributes.iter().find_map(|a| match a {
                                    LinkAttribute::IfName(n) => Some(n.clone()),
                                    _ => None,
                                });
                                if has_mac && found.is_none() {
                                    found = name;
                                }
                            }
                        }
                    }
                }
                off += align(len.max(NLMSG_HDRLEN));
            }
        }
    }

    /// Delete the link `ifindex`; a link that is already gone is fine.
    pub fn delete_link(&mut self, ifindex: u32) -> Result<(), SysError> {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        let reqs = [("delete link", 0, RouteNetlinkMessage::DelLink(link))];
        let acks = self.transact(&reqs)?;
        match acks.into_iter().next() {
            Some(ack) if ack.errno != 0 && ack.errno != libc::ENODEV => Err(netlink_error("delete link", ack)),
            _ => Ok(()),
        }
    }

    /// Send `reqs` (each with NLM_F_REQUEST | NLM_F_ACK | its extra flags) in one datagram and
    /// collect one ack per request, in request order.
    fn transact(&mut self, reqs: &[(&'static str, u16, RouteNetlinkMessage)]) -> Result<Vec<Ack>, SysError> {
        let first_seq = self.seq.wrapping_add(1);
        let mut out = Vec::with_capacity(256 * reqs.len());
        for (i, (_, flags, msg)) in reqs.iter().enumerate() {
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            header.sequence_number = first_seq.wrapping_add(i as u32);
            let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg.clone()));
            nl.finalize();
            let start = out.len();
            out.resize(start + align(nl.buffer_len()), 0);
            nl.serialize(&mut out[start..start + nl.buffer_len()]);
        }
        self.seq = first_seq.wrapping_add(reqs.len() as u32).wrapping_sub(1);

        let sent = self.sock.send(&out, 0).map_err(|e| SysError::Io { op: "netlink send", source: e })?;
        if sent != out.len() {
            return Err(SysError::Netlink { op: "send", message: format!("short send: {sent} of {} bytes", out.len()) });
        }

        let mut acks: Vec<Option<Ack>> = (0..reqs.len()).map(|_| None).collect();
        let mut missing = reqs.len();
        while missing > 0 {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0).map_err(|e| SysError::Io { op: "netlink receive", source: e })?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let msg = NetlinkBuffer::new_checked(&self.buf[off..n])
                    .map_err(|e| SysError::Netlink { op: "receive", message: format!("malformed reply: {e}") })?;
                let len = msg.length() as usize;
                let idx = msg.sequence_number().wrapping_sub(first_seq) as usize;
                if msg.message_type() == NLMSG_ERROR && idx < acks.len() && acks[idx].is_none() {
                    acks[idx] = Some(parse_ack(msg.flags(), msg.payload()));
                    missing -= 1;
                }
                off += align(len.max(NLMSG_HDRLEN));
            }
        }
        Ok(acks.into_iter().flatten().collect())
    }
}

/// Parse the payload of an NLMSG_ERROR: `int error; struct nlmsghdr msg; [payload]; [TLVs]`.
fn parse_ack(outer_flags: u16, payload: &[u8]) -> Ack {
    let errno = payload.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).unwrap_or(-libc::EBADMSG).wrapping_neg();
    let mut msg = None;
    if errno != 0 && outer_flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request: only its header when capped, else the whole request.
        let inner_len = if outer_flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            payload.get(4..8).and_then(|b| b.try_into().ok()).map(|b| u32::from_ne_bytes(b) as usize).unwrap_or(NLMSG_HDRLEN)
        };
        let mut off = 4 + align(inner_len);
        while let Some(hdr) = payload.get(off..off + 4) {
            let nla_len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
            let nla_type = u16::from_ne_bytes([hdr[2], hdr[3]]) & 0x3fff;
            if nla_len < 4 {
                break;
            }
            if nla_type == NLMSGERR_ATTR_MSG {
                if let Some(raw) = payload.get(off + 4..off + nla_len) {
                    let text = raw.split(|&b| b == 0).next().unwrap_or_default();
                    msg = Some(String::from_utf8_lossy(text).into_owned());
                }
            }
            off += align(nla_len);
        }
    }
    Ack { errno, msg }
}

fn netlink_error(op: &'static str, ack: Ack) -> SysError {
    let err = io::Error::from_raw_os_error(ack.errno);
    if matches!(ack.errno, libc::EPERM | libc::EACCES) {
        return SysError::PermissionDenied(format!("netlink {op}: {err}"));
    }
    let mut message = match ack.msg {
        Some(m) if !m.is_empty() => format!("{m} ({err})"),
        _ => err.to_string(),
    };
    if op == "add default route" && ack.errno == libc::EEXIST {
        message.push_str("; the namespace already has a default route");
    }
    SysError::Netlink { op, message }
}

fn align(len: usize) -> usize {
    let a = usize::from(NLMSG_ALIGNTO);
    (len + a - 1) & !(a - 1)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    if prefix_len == 0 {
        return true;
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn subnet_check() {
        let a = Ipv4Addr::new(10, 0, 0, 2);
        assert!(same_subnet(a, Ipv4Addr::new(10, 0, 0, 1), 24));
        assert!(!same_subnet(a, Ipv4Addr::new(10, 0, 1, 1), 24));
        assert!(!same_subnet(a, Ipv4Addr::new(169, 254, 1, 1), 32));
        assert!(same_subnet(a, a, 32));
        assert!(same_subnet(a, Ipv4Addr::new(1, 2, 3, 4), 0));
    }

    #[test]
    fn ack_with_extack_message() {
        // error = -EINVAL, capped inner header (16 bytes), TLV type 1 "bad mtu\0".
        let mut p = Vec::new();
        p.extend_from_slice(&(-libc::EINVAL).to_ne_bytes());
        p.extend_from_slice(&[0u8; 16]);
        let text = b"bad mtu\0";
        p.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(text);
        let ack = parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p);
        assert_eq!(ack.errno, libc::EINVAL);
        assert_eq!(ack.msg.as_deref(), Some("bad mtu"));
        let ok = parse_ack(NLM_F_CAPPED, &0i32.to_ne_bytes());
        assert_eq!(ok.errno, 0);
        assert!(ok.msg.is_none());
    }
}
