//! The gateway of a network: an address that the switch itself owns.
//!
//! I/O-free: a frame addressed to the gateway goes in, a reply frame (or nothing) comes out.
//! It answers ARP requests for its address and ICMP echo requests to it (and, on a dual-stack
//! network, neighbour solicitations for its IPv6 address, as a router, and ICMPv6 echo
//! requests to it), and hands DNS queries
//! (UDP to port 53) back to the caller, who answers them into the payload room of a reply that
//! [`Gateway::finish_udp_reply`] then wraps. Packet views come from `smoltcp::wire`, which
//! validates lengths and checksums before any field is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, UdpPacket,
    UdpRepr,
};

use crate::types::Mac;

/// What the gateway did with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A reply of this many bytes was written to the output buffer.
    Reply(usize),
    /// Not for the gateway, or a kind of traffic it does not answer.
    Ignored,
    /// Addressed to the gateway but malformed (bad length or checksum): dropped.
    Malformed,
    /// A DNS query over UDP to the gateway: the caller answers it.
    Dns(UdpQuery),
    /// A DHCP client's message (UDP to port 67, broadcast or to the gateway): the caller
    /// answers it.
    Dhcp(UdpQuery),
    /// A TCP segment to the gateway's DNS port: the IPv4 packet at `ip` goes to the caller's
    /// TCP stack.
    DnsTcp { client_mac: Mac, ip: Range<usize> },
    /// A TCP, UDP or ICMP packet sent to the gateway's MAC for somewhere else (or for one of
    /// the gateway's own TCP/UDP ports other than DNS): the IPv4 packet at `ip` is for egress.
    Routed { ip: Range<usize> },
}

/// Where a UDP query to the gateway came from, and where its payload sits in the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpQuery {
    pub client_mac: Mac,
    /// IPv4, or IPv6 on a dual-stack network (asked at the gateway's IPv6 address).
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub payload: Range<usize>,
}

/// The DNS port the gateway serves.
pub const DNS_PORT: u16 = 53;
/// DHCP's server and client ports.
pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
/// Where a reply's UDP payload starts in the frame: Ethernet (14) + IPv4 (20) + UDP (8).
pub const UDP_PAYLOAD_OFFSET: usize = 42;
/// The same over IPv6: Ethernet (14) + IPv6 (40) + UDP (8).
pub const UDP6_PAYLOAD_OFFSET: usize = 62;

impl UdpQuery {
    /// Where the reply's UDP payload starts in the reply frame.
    pub fn reply_offset(&self) -> usize {
        if self.client_ip.is_ipv4() {
            UDP_PAYLOAD_OFFSET
        } else {
            UDP6_PAYLOAD_OFFSET
        }
    }
}

/// One network's gateway identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// The gateway's IPv6 address on a dual-stack network.
    pub ip6: Option<Ipv6Addr>,
}

impl Gateway {
    /// Answers `frame` into `out` (which must hold at least `frame.len()` bytes; a reply is
    /// never longer than its request). `csum_partial` says the sender left the transport
    /// checksum to offload (virtio `NEEDS_CSUM`), so it is not verified.
    pub fn handle(&self, frame: &[u8], out: &mut [u8], csum_partial: bool) -> Outcome {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Outcome::Malformed;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.arp(&eth, out),
            EthernetProtocol::Ipv4 if Mac(eth.dst_addr().0) == self.mac => self.ipv4(&eth, out, csum_partial),
            EthernetProtocol::Ipv4 if eth.dst_addr().is_broadcast() => self.dhcp_broadcast(&eth, csum_partial),
            // Neighbour solicitations come multicast (flooded to every port, this one too).
            EthernetProtocol::Ipv6 if self.ip6.is_some() => self.ipv6(&eth, out, csum_partial),
            _ => Outcome::Ignored,
        }
    }

    /// Wraps a UDP reply to `q` whose payload the caller wrote at
    /// `out[q.reply_offset()..][..payload_len]`: fills the Ethernet, IP and UDP headers and the
    /// checksums. Returns the frame length, or `None` when `out` is too short (or an IPv6
    /// client asks a gateway without an IPv6 address).
    pub fn finish_udp_reply(&self, q: &UdpQuery, payload_len: usize, out: &mut [u8]) -> Option<usize> {
        let caps = ChecksumCapabilities::default();
        let udp = UdpRepr { src_port: DNS_PORT, dst_port: q.client_port };
        let len = q.reply_offset() + payload_len;
        let buf = out.get_mut(..len)?;
        let mut frame = EthernetFrame::new_unchecked(buf);
        let dst_mac = EthernetAddress(q.client_mac.0);
        let (src, dst, mut udp_out) = match q.client_ip {
            IpAddr::V4(client) => {
                let ip = Ipv4Repr {
                    src_addr: self.ip,
                    dst_addr: client,
                    next_header: IpProtocol::Udp,
                    payload_len: 8 + payload_len,
                    hop_limit: 64,
                };
                self.eth_header(dst_mac, EthernetProtocol::Ipv4).emit(&mut frame);
                let mut ip_out = Ipv4Packet::new_unchecked(frame.payload_mut());
                ip.emit(&mut ip_out, &caps);
                (IpAddress::Ipv4(self.ip), IpAddress::Ipv4(client), UdpPacket::new_unchecked(ip_out.into_inner().get_mut(20..)?))
            }
            IpAddr::V6(client) => {
                let me = self.ip6?;
                let ip =
                    Ipv6Repr { src_addr: me, dst_addr: client, next_header: IpProtocol::Udp, payload_len: 8 + payload_len, hop_limit: 64 };
                self.eth_header(dst_mac, EthernetProtocol::Ipv6).emit(&mut frame);
                let mut ip_out = Ipv6Packet::new_unchecked(frame.payload_mut());
                ip.emit(&mut ip_out);
                (IpAddress::Ipv6(me), IpAddress::Ipv6(client), UdpPacket::new_unchecked(ip_out.into_inner().get_mut(40..)?))
            }
        };
        // The payload is already in place: emit only writes the header and the checksum.
        udp.emit(&mut udp_out, &src, &dst, payload_len, |_| {}, &caps);
        Some(len)
    }

    /// Wraps a DHCP reply whose payload the caller wrote at `out[UDP_PAYLOAD_OFFSET..]`: from
    /// the gateway's port 67 to `dst_ip`:68, in a frame to `dst_mac`. Returns the frame length,
    /// or `None` when `out` is too short.
    pub fn finish_dhcp_reply(&self, dst_mac: Mac, dst_ip: Ipv4Addr, payload_len: usize, out: &mut [u8]) -> Option<usize> {
        let caps = ChecksumCapabilities::default();
        let len = UDP_PAYLOAD_OFFSET + payload_len;
        let mut frame = EthernetFrame::new_unchecked(out.get_mut(..len)?);
        self.eth_header(EthernetAddress(dst_mac.0), EthernetProtocol::Ipv4).emit(&mut frame);
        let ip =
            Ipv4Repr { src_addr: self.ip, dst_addr: dst_ip, next_header: IpProtocol::Udp, payload_len: 8 + payload_len, hop_limit: 64 };
        let mut ip_out = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut ip_out, &caps);
        let mut udp_out = UdpPacket::new_unchecked(ip_out.into_inner().get_mut(20..)?);
        let udp = UdpRepr { src_port: DHCP_SERVER_PORT, dst_port: DHCP_CLIENT_PORT };
        udp.emit(&mut udp_out, &IpAddress::Ipv4(self.ip), &IpAddress::Ipv4(dst_ip), payload_len, |_| {}, &caps);
        Some(len)
    }

    /// A broadcast IPv4 frame: a DHCP client's message (to 255.255.255.255 or the gateway,
    /// UDP port 67), or not the gateway's.
    fn dhcp_broadcast(&self, eth: &EthernetFrame<&[u8]>, csum_partial: bool) -> Outcome {
        let caps = ChecksumCapabilities::default();
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return Outcome::Ignored };
        let Ok(ip_repr) = Ipv4Repr::parse(&ip, &caps) else { return Outcome::Ignored };
        if ip_repr.next_header != IpProtocol::Udp || !(ip_repr.dst_addr.is_broadcast() || ip_repr.dst_addr == self.ip) {
            return Outcome::Ignored;
        }
        match self.udp(eth, &ip, &ip_repr, csum_partial) {
            d @ Outcome::Dhcp(_) => d,
            // Malformed broadcasts are not addressed to the gateway: not its drop to count.
            _ => Outcome::Ignored,
        }
    }

    fn arp(&self, eth: &EthernetFrame<&[u8]>, out: &mut [u8]) -> Outcome {
        let Ok(repr) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) else {
            return Outcome::Malformed;
        };
        let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } = repr else {
            return Outcome::Ignored;
        };
        if operation != ArpOperation::Request || target_protocol_addr != self.ip {
            return Outcome::Ignored;
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(self.mac.0),
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let len = EthernetFrame::<&[u8]>::header_len() + reply.buffer_len();
        let Some(buf) = out.get_mut(..len) else { return Outcome::Ignored };
        let mut frame = EthernetFrame::new_unchecked(buf);
        self.eth_header(source_hardware_addr, EthernetProtocol::Arp).emit(&mut frame);
        reply.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        Outcome::Reply(len)
    }

    fn ipv4(&self, eth: &EthernetFrame<&[u8]>, out: &mut [u8], csum_partial: bool) -> Outcome {
        let caps = ChecksumCapabilities::default();
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return Outcome::Malformed };
        let Ok(ip_repr) = Ipv4Repr::parse(&ip, &caps) else { return Outcome::Malformed };
        let start = EthernetFrame::<&[u8]>::header_len();
        let whole = start..start + usize::from(ip.total_len());
        let routed = matches!(ip_repr.next_header, IpProtocol::Icmp | IpProtocol::Udp | IpProtocol::Tcp);
        if ip_repr.dst_addr != self.ip {
            return if routed { Outcome::Routed { ip: whole } } else { Outcome::Ignored };
        }
        match ip_repr.next_header {
            IpProtocol::Icmp => self.icmp(eth, &ip, &ip_repr, out),
            IpProtocol::Udp => match self.udp(eth, &ip, &ip_repr, csum_partial) {
                Outcome::Ignored => Outcome::Routed { ip: whole },
                other => other,
            },
            IpProtocol::Tcp => match smoltcp::wire::TcpPacket::new_checked(ip.payload()) {
                Ok(tcp) if tcp.dst_port() == DNS_PORT => Outcome::DnsTcp { client_mac: Mac(eth.src_addr().0), ip: whole },
                Ok(_) => Outcome::Routed { ip: whole },
                Err(_) => Outcome::Malformed,
            },
            _ => Outcome::Ignored,
        }
    }

    fn udp(&self, eth: &EthernetFrame<&[u8]>, ip: &Ipv4Packet<&[u8]>, ip_repr: &Ipv4Repr, csum_partial: bool) -> Outcome {
        // A fragment is never a whole query.
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Outcome::Ignored;
        }
        let addrs = (IpAddress::Ipv4(ip_repr.src_addr), IpAddress::Ipv4(ip_repr.dst_addr));
        self.dns_query(eth, ip.payload(), addrs, usize::from(ip.header_len()), csum_partial)
    }

    /// A DNS query over UDP to the gateway's IPv6 address (no extension headers: the next
    /// header is UDP).
    fn udp6(&self, eth: &EthernetFrame<&[u8]>, ip: &Ipv6Packet<&[u8]>, ip_repr: &Ipv6Repr, csum_partial: bool) -> Outcome {
        let addrs = (IpAddress::Ipv6(ip_repr.src_addr), IpAddress::Ipv6(ip_repr.dst_addr));
        self.dns_query(eth, ip.payload(), addrs, 40, csum_partial)
    }

    /// A UDP datagram (`l4`, after `ip_len` bytes of IP header, from `addrs.0` to `addrs.1`)
    /// to the gateway: a DNS query to hand out, or not the gateway's.
    fn dns_query(
        &self,
        eth: &EthernetFrame<&[u8]>,
        l4: &[u8],
        addrs: (IpAddress, IpAddress),
        ip_len: usize,
        csum_partial: bool,
    ) -> Outcome {
        let mut caps = ChecksumCapabilities::default();
        if csum_partial {
            caps.udp = smoltcp::phy::Checksum::None;
        }
        let Ok(udp) = UdpPacket::new_checked(l4) else { return Outcome::Malformed };
        let Ok(repr) = UdpRepr::parse(&udp, &addrs.0, &addrs.1, &caps) else { return Outcome::Malformed };
        // Offsets of the UDP payload inside the Ethernet frame.
        let at = EthernetFrame::<&[u8]>::header_len() + ip_len;
        let q = UdpQuery {
            client_mac: Mac(eth.src_addr().0),
            client_ip: addrs.0.into(),
            client_port: repr.src_port,
            payload: at + 8..at + usize::from(udp.len()),
        };
        match repr.dst_port {
            DNS_PORT => Outcome::Dns(q),
            DHCP_SERVER_PORT if matches!(addrs.0, IpAddress::Ipv4(_)) && repr.src_port == DHCP_CLIENT_PORT => Outcome::Dhcp(q),
            _ => Outcome::Ignored,
        }
    }

    fn icmp(&self, eth: &EthernetFrame<&[u8]>, ip: &Ipv4Packet<&[u8]>, ip_repr: &Ipv4Repr, out: &mut [u8]) -> Outcome {
        let caps = ChecksumCapabilities::default();
        let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else { return Outcome::Malformed };
        let Ok(icmp_repr) = Icmpv4Repr::parse(&icmp, &caps) else { return Outcome::Malformed };
        let Icmpv4Repr::EchoRequest { ident, seq_no, data } = icmp_repr else { return Outcome::Ignored };
        let reply = Icmpv4Repr::EchoReply { ident, seq_no, data };
        let reply_ip = Ipv4Repr {
            src_addr: ip_repr.dst_addr,
            dst_addr: ip_repr.src_addr,
            next_header: IpProtocol::Icmp,
            payload_len: reply.buffer_len(),
            hop_limit: 64,
        };
        let len = EthernetFrame::<&[u8]>::header_len() + reply_ip.buffer_len() + reply.buffer_len();
        let Some(buf) = out.get_mut(..len) else { return Outcome::Ignored };
        let mut frame = EthernetFrame::new_unchecked(buf);
        self.eth_header(eth.src_addr(), EthernetProtocol::Ipv4).emit(&mut frame);
        let mut ip_out = Ipv4Packet::new_unchecked(frame.payload_mut());
        reply_ip.emit(&mut ip_out, &caps);
        reply.emit(&mut Icmpv4Packet::new_unchecked(ip_out.payload_mut()), &caps);
        Outcome::Reply(len)
    }

    /// Neighbour solicitations for the gateway's IPv6 address (answered as a router, so a
    /// default route via it works) and echo requests to it; any other IPv6 is not ours.
    fn ipv6(&self, eth: &EthernetFrame<&[u8]>, out: &mut [u8], csum_partial: bool) -> Outcome {
        let Some(me) = self.ip6 else { return Outcome::Ignored };
        let caps = ChecksumCapabilities::default();
        let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else { return Outcome::Malformed };
        let Ok(ip_repr) = Ipv6Repr::parse(&ip) else { return Outcome::Malformed };
        let to_me = ip_repr.dst_addr == me && Mac(eth.dst_addr().0) == self.mac;
        if ip_repr.next_header == IpProtocol::Udp && to_me {
            return self.udp6(eth, &ip, &ip_repr, csum_partial);
        }
        if ip_repr.next_header != IpProtocol::Icmpv6 {
            return Outcome::Ignored;
        }
        let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else { return Outcome::Malformed };
        let Ok(repr) = Icmpv6Repr::parse(&ip_repr.src_addr, &ip_repr.dst_addr, &icmp, &caps) else {
            return Outcome::Malformed;
        };
        let (reply, dst, hop_limit) = match repr {
            // RFC 4861 §7.1.1: only from on-link senders (hop limit 255).
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) if target_addr == me && ip_repr.hop_limit == 255 => {
                let flags = NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE;
                // An unspecified source (duplicate address detection) is answered to all nodes.
                let (flags, dst) = if ip_repr.src_addr.is_unspecified() {
                    (flags, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1))
                } else {
                    (flags | NdiscNeighborFlags::SOLICITED, ip_repr.src_addr)
                };
                let lladdr = Some(EthernetAddress(self.mac.0).into());
                (Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr: me, lladdr }), dst, 255)
            }
            Icmpv6Repr::EchoRequest { ident, seq_no, data } if ip_repr.dst_addr == me && Mac(eth.dst_addr().0) == self.mac => {
                (Icmpv6Repr::EchoReply { ident, seq_no, data }, ip_repr.src_addr, 64)
            }
            _ => return Outcome::Ignored,
        };
        let reply_ip =
            Ipv6Repr { src_addr: me, dst_addr: dst, next_header: IpProtocol::Icmpv6, payload_len: reply.buffer_len(), hop_limit };
        let len = EthernetFrame::<&[u8]>::header_len() + reply_ip.buffer_len() + reply.buffer_len();
        let Some(buf) = out.get_mut(..len) else { return Outcome::Ignored };
        let mut frame = EthernetFrame::new_unchecked(buf);
        let dst_mac = if dst.is_multicast() {
            let o = dst.octets();
            EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
        } else {
            eth.src_addr()
        };
        self.eth_header(dst_mac, EthernetProtocol::Ipv6).emit(&mut frame);
        let mut ip_out = Ipv6Packet::new_unchecked(frame.payload_mut());
        reply_ip.emit(&mut ip_out);
        reply.emit(&me, &dst, &mut Icmpv6Packet::new_unchecked(ip_out.payload_mut()), &caps);
        Outcome::Reply(len)
    }

    fn eth_header(&self, dst: EthernetAddress, ethertype: EthernetProtocol) -> EthernetRepr {
        EthernetRepr { src_addr: EthernetAddress(self.mac.0), dst_addr: dst, ethertype }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdb8, 0, 0, 0, 0, 0, 1);
    const GW: Gateway = Gateway { ip: Ipv4Addr::new(10, 89, 0, 1), mac: Mac([0x02, 0x56, 0, 0, 0, 1]), ip6: Some(GW6) };
    const C1: [u8; 6] = [0x02, 0x42, 0x0a, 0x59, 0x00, 0x02];

    /// An ARP request "who-has 10.89.0.1 tell 10.89.0.2", as `tcpdump -xx` shows it.
    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&C1);
        f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]);
        f.extend_from_slice(&C1);
        f.extend_from_slice(&[10, 89, 0, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    /// An ICMP echo request from 10.89.0.2 to 10.89.0.1, id 0x1234, seq 1, payload "abcd".
    fn echo_request() -> Vec<u8> {
        let mut f = GW.mac.0.to_vec();
        f.extend_from_slice(&C1);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 89, 0, 2, 10, 89, 0, 1];
        let c = !checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c', b'd'];
        let c = !checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&icmp);
        f
    }

    fn checksum(b: &[u8]) -> u16 {
        let mut sum: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn answers_arp_for_its_address() {
        let mut out = [0u8; 128];
        let Outcome::Reply(n) = GW.handle(&arp_request([10, 89, 0, 1]), &mut out, false) else { panic!() };
        let r = &out[..n];
        assert_eq!(&r[0..6], &C1);
        assert_eq!(&r[6..12], &GW.mac.0);
        assert_eq!(&r[20..22], &[0, 2], "opcode reply");
        assert_eq!(&r[22..28], &GW.mac.0, "sender hw = gateway");
        assert_eq!(&r[28..32], &[10, 89, 0, 1]);
        assert_eq!(&r[32..38], &C1);
        assert_eq!(&r[38..42], &[10, 89, 0, 2]);
    }

    #[test]
    fn ignores_arp_for_other_addresses() {
        let mut out = [0u8; 128];
        assert_eq!(GW.handle(&arp_request([10, 89, 0, 3]), &mut out, false), Outcome::Ignored);
    }

    #[test]
    fn answers_echo_with_valid_checksums() {
        let req = echo_request();
        let mut out = [0u8; 128];
        let Outcome::Reply(n) = GW.handle(&req, &mut out, false) else { panic!() };
        let r = &out[..n];
        assert_eq!(n, req.len());
        assert_eq!(&r[0..6], &C1);
        assert_eq!(&r[26..30], &[10, 89, 0, 1], "src ip");
        assert_eq!(&r[30..34], &[10, 89, 0, 2], "dst ip");
        assert_eq!(checksum(&r[14..34]), 0xffff, "ip header checksum");
        assert_eq!(r[34], 0, "echo reply");
        assert_eq!(checksum(&r[34..]), 0xffff, "icmp checksum");
        assert_eq!(&r[38..], &req[38..], "id, seq and payload echoed");
    }

    /// A UDP datagram from 10.89.0.2:40000 to the gateway's port 53 carrying `payload`.
    fn dns_query(payload: &[u8], udp_csum: bool) -> Vec<u8> {
        let mut f = GW.mac.0.to_vec();
        f.extend_from_slice(&C1);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 89, 0, 2, 10, 89, 0, 1];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let c = !checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut udp = vec![0x9c, 0x40, 0, 53, 0, 0, 0, 0];
        udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(payload);
        if udp_csum {
            let mut pseudo = vec![10, 89, 0, 2, 10, 89, 0, 1, 0, 17];
            pseudo.extend_from_slice(&((udp.len()) as u16).to_be_bytes());
            pseudo.extend_from_slice(&udp);
            let c = !checksum(&pseudo);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f
    }

    #[test]
    fn dns_queries_are_handed_out_and_replies_wrapped() {
        let q = dns_query(b"QUERYBYTES", true);
        let mut out = [0u8; 256];
        let Outcome::Dns(uq) = GW.handle(&q, &mut out, false) else { panic!("not a DNS query") };
        assert_eq!(&q[uq.payload.clone()], b"QUERYBYTES");
        assert_eq!((uq.client_ip, uq.client_port, uq.client_mac), (IpAddr::V4(Ipv4Addr::new(10, 89, 0, 2)), 40000, Mac(C1)));
        // A bad UDP checksum is refused, unless the sender left it to offload.
        let mut bad = dns_query(b"QUERYBYTES", true);
        bad[40] ^= 0x55;
        assert_eq!(GW.handle(&bad, &mut out, false), Outcome::Malformed);
        assert!(matches!(GW.handle(&bad, &mut out, true), Outcome::Dns(_)));

        out[UDP_PAYLOAD_OFFSET..UDP_PAYLOAD_OFFSET + 6].copy_from_slice(b"ANSWER");
        let n = GW.finish_udp_reply(&uq, 6, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 42 + 6);
        assert_eq!(&r[0..6], &C1);
        assert_eq!(checksum(&r[14..34]), 0xffff, "ip header checksum");
        assert_eq!(&r[34..36], &53u16.to_be_bytes());
        assert_eq!(&r[36..38], &40000u16.to_be_bytes());
        let mut pseudo = vec![10, 89, 0, 1, 10, 89, 0, 2, 0, 17, 0, 14];
        pseudo.extend_from_slice(&r[34..]);
        assert_eq!(checksum(&pseudo), 0xffff, "udp checksum");
        assert_eq!(GW.finish_udp_reply(&uq, 6, &mut [0u8; 20]), None);
    }

    const C1_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdb8, 0, 0, 0, 0, 0, 2);

    /// An IPv6 frame from C1 carrying `repr`, built with smoltcp's emitters.
    fn icmp6_frame(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, repr: &Icmpv6Repr) -> Vec<u8> {
        let caps = ChecksumCapabilities::default();
        let ip = Ipv6Repr { src_addr: src, dst_addr: dst, next_header: IpProtocol::Icmpv6, payload_len: repr.buffer_len(), hop_limit };
        let mut f = vec![0u8; 14 + ip.buffer_len() + repr.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        EthernetRepr { src_addr: EthernetAddress(C1), dst_addr: EthernetAddress(dst_mac), ethertype: EthernetProtocol::Ipv6 }
            .emit(&mut eth);
        let mut ip_out = Ipv6Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut ip_out);
        repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(ip_out.payload_mut()), &caps);
        f
    }

    /// Parses a reply frame back: (destination MAC, IPv6 header, ICMPv6 message), checksums checked.
    fn parse6(r: &[u8], f: impl FnOnce([u8; 6], Ipv6Repr, Icmpv6Repr)) {
        let eth = EthernetFrame::new_checked(r).unwrap();
        assert_eq!(eth.src_addr().0, GW.mac.0);
        assert_eq!(eth.ethertype(), EthernetProtocol::Ipv6);
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let ip_repr = Ipv6Repr::parse(&ip).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let repr =
            Icmpv6Repr::parse(&ip_repr.src_addr, &ip_repr.dst_addr, &icmp, &ChecksumCapabilities::default()).expect("valid checksum");
        f(eth.dst_addr().0, ip_repr, repr);
    }

    #[test]
    fn answers_neighbour_solicitations_for_its_ipv6_address_as_a_router() {
        let sol = NdiscRepr::NeighborSolicit { target_addr: GW6, lladdr: Some(EthernetAddress(C1).into()) };
        let snm = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
        let req = icmp6_frame([0x33, 0x33, 0xff, 0, 0, 1], C1_IP6, snm, 255, &Icmpv6Repr::Ndisc(sol));
        let mut out = [0u8; 256];
        let Outcome::Reply(n) = GW.handle(&req, &mut out, false) else { panic!("no advertisement") };
        parse6(&out[..n], |dst_mac, ip, repr| {
            assert_eq!(dst_mac, C1);
            assert_eq!((ip.src_addr, ip.dst_addr, ip.hop_limit), (GW6, C1_IP6, 255));
            let Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr, lladdr }) = repr else { panic!("{repr:?}") };
            assert_eq!(target_addr, GW6);
            assert!(flags.contains(NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE));
            assert_eq!(lladdr, Some(EthernetAddress(GW.mac.0).into()));
        });
        // Not from on-link (hop limit below 255), or for another address: not answered.
        let off_link = icmp6_frame([0x33, 0x33, 0xff, 0, 0, 1], C1_IP6, snm, 64, &Icmpv6Repr::Ndisc(sol));
        assert_eq!(GW.handle(&off_link, &mut out, false), Outcome::Ignored);
        let other = NdiscRepr::NeighborSolicit { target_addr: Ipv6Addr::new(0xfd00, 0xdb8, 0, 0, 0, 0, 0, 9), lladdr: None };
        let other = icmp6_frame([0x33, 0x33, 0xff, 0, 0, 9], C1_IP6, snm, 255, &Icmpv6Repr::Ndisc(other));
        assert_eq!(GW.handle(&other, &mut out, false), Outcome::Ignored);
        // A network without IPv6 answers no IPv6 at all.
        let v4_only = Gateway { ip6: None, ..GW };
        assert_eq!(v4_only.handle(&req, &mut out, false), Outcome::Ignored);
        // A broken checksum is a counted drop.
        let mut bad = req.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(GW.handle(&bad, &mut out, false), Outcome::Malformed);
    }

    #[test]
    fn ipv6_dns_queries_are_handed_out_and_replies_wrapped() {
        let caps = ChecksumCapabilities::default();
        let payload = b"QUERYBYTES";
        let udp = UdpRepr { src_port: 40000, dst_port: DNS_PORT };
        let ip = Ipv6Repr { src_addr: C1_IP6, dst_addr: GW6, next_header: IpProtocol::Udp, payload_len: 8 + payload.len(), hop_limit: 64 };
        let mut q = vec![0u8; 14 + 40 + 8 + payload.len()];
        let mut eth = EthernetFrame::new_unchecked(&mut q[..]);
        EthernetRepr { src_addr: EthernetAddress(C1), dst_addr: EthernetAddress(GW.mac.0), ethertype: EthernetProtocol::Ipv6 }
            .emit(&mut eth);
        let mut ip_out = Ipv6Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut ip_out);
        let (src, dst) = (IpAddress::Ipv6(C1_IP6), IpAddress::Ipv6(GW6));
        udp.emit(&mut UdpPacket::new_unchecked(ip_out.payload_mut()), &src, &dst, payload.len(), |b| b.copy_from_slice(payload), &caps);

        let mut out = [0u8; 256];
        let Outcome::Dns(uq) = GW.handle(&q, &mut out, false) else { panic!("not a DNS query") };
        assert_eq!(&q[uq.payload.clone()], payload);
        assert_eq!((uq.client_ip, uq.client_port), (IpAddr::V6(C1_IP6), 40000));
        assert_eq!(uq.reply_offset(), UDP6_PAYLOAD_OFFSET);
        // A bad checksum is refused (IPv6 UDP checksums are mandatory).
        let mut bad = q.clone();
        bad[62] ^= 0x55;
        assert_eq!(GW.handle(&bad, &mut out, false), Outcome::Malformed);

        out[UDP6_PAYLOAD_OFFSET..UDP6_PAYLOAD_OFFSET + 6].copy_from_slice(b"ANSWER");
        let n = GW.finish_udp_reply(&uq, 6, &mut out).unwrap();
        assert_eq!(n, 62 + 6);
        let eth = EthernetFrame::new_checked(&out[..n]).unwrap();
        assert_eq!((eth.dst_addr().0, eth.ethertype()), (C1, EthernetProtocol::Ipv6));
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let ip_repr = Ipv6Repr::parse(&ip).unwrap();
        assert_eq!((ip_repr.src_addr, ip_repr.dst_addr), (GW6, C1_IP6));
        let reply = UdpPacket::new_checked(ip.payload()).unwrap();
        let r = UdpRepr::parse(&reply, &dst, &src, &caps).expect("valid UDP checksum");
        assert_eq!((r.src_port, r.dst_port), (DNS_PORT, 40000));
        assert_eq!(reply.payload(), b"ANSWER");
        // A gateway without an IPv6 address cannot answer an IPv6 client.
        assert_eq!(Gateway { ip6: None, ..GW }.finish_udp_reply(&uq, 6, &mut out), None);
    }

    #[test]
    fn answers_ipv6_echo_to_its_address() {
        let ping = Icmpv6Repr::EchoRequest { ident: 7, seq_no: 3, data: b"hello" };
        let req = icmp6_frame(GW.mac.0, C1_IP6, GW6, 64, &ping);
        let mut out = [0u8; 256];
        let Outcome::Reply(n) = GW.handle(&req, &mut out, false) else { panic!("no echo reply") };
        assert_eq!(n, req.len());
        parse6(&out[..n], |dst_mac, ip, repr| {
            assert_eq!(dst_mac, C1);
            assert_eq!((ip.src_addr, ip.dst_addr), (GW6, C1_IP6));
            assert_eq!(repr, Icmpv6Repr::EchoReply { ident: 7, seq_no: 3, data: b"hello" });
        });
        // An echo to somebody else's address is not the gateway's to answer.
        let elsewhere = icmp6_frame(GW.mac.0, C1_IP6, Ipv6Addr::new(0xfd00, 0xdb8, 0, 0, 0, 0, 0, 3), 64, &ping);
        assert_eq!(GW.handle(&elsewhere, &mut out, false), Outcome::Ignored);
        for len in 0..req.len() {
            let _ = GW.handle(&req[..len], &mut out, false);
        }
    }

    #[test]
    fn malformed_input_never_panics() {
        let mut out = [0u8; 128];
        let mut bad = echo_request();
        bad[40] ^= 0xff; // breaks the ICMP checksum
        assert_eq!(GW.handle(&bad, &mut out, false), Outcome::Malformed);
        for len in 0..echo_request().len() {
            let _ = GW.handle(&echo_request()[..len], &mut out, false);
            let _ = GW.handle(&arp_request([10, 89, 0, 1])[..len.min(42)], &mut out, false);
        }
        let mut tiny = [0u8; 8];
        assert_eq!(GW.handle(&arp_request([10, 89, 0, 1]), &mut tiny, false), Outcome::Ignored);
    }
}
