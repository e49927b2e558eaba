//! The gateway of a network: an address that the switch itself owns.
//!
//! I/O-free: a frame addressed to the gateway goes in, a reply frame (or nothing) comes out.
//! It answers ARP requests for its address and ICMP echo requests to it. Packet views come from
//! `smoltcp::wire`, which validates lengths and checksums before any field is read.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

use crate::types::Mac;

/// What the gateway did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply of this many bytes was written to the output buffer.
    Reply(usize),
    /// Not for the gateway, or a kind of traffic it does not answer.
    Ignored,
    /// Addressed to the gateway but malformed (bad length or checksum): dropped.
    Malformed,
}

/// One network's gateway identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

impl Gateway {
    /// Answers `frame` into `out` (which must hold at least `frame.len()` bytes; a reply is
    /// never longer than its request).
    pub fn handle(&self, frame: &[u8], out: &mut [u8]) -> Outcome {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Outcome::Malformed;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.arp(&eth, out),
            EthernetProtocol::Ipv4 if Mac(eth.dst_addr().0) == self.mac => self.ipv4(&eth, out),
            _ => Outcome::Ignored,
        }
    }

    fn arp(&self, eth: &EthernetFrame<&[u8]>, out: &mut [u8]) -> Outcome {
        let Ok(repr) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) else {
            return Outcome::Malformed;
        };
        let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } = repr
        else {
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

    fn ipv4(&self, eth: &EthernetFrame<&[u8]>, out: &mut [u8]) -> Outcome {
        let caps = ChecksumCapabilities::default();
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return Outcome::Malformed };
        let Ok(ip_repr) = Ipv4Repr::parse(&ip, &caps) else { return Outcome::Malformed };
        if ip_repr.dst_addr != self.ip || ip_repr.next_header != IpProtocol::Icmp {
            return Outcome::Ignored;
        }
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

    fn eth_header(&self, dst: EthernetAddress, ethertype: EthernetProtocol) -> EthernetRepr {
        EthernetRepr { src_addr: EthernetAddress(self.mac.0), dst_addr: dst, ethertype }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Gateway = Gateway { ip: Ipv4Addr::new(10, 89, 0, 1), mac: Mac([0x02, 0x56, 0, 0, 0, 1]) };
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
        let Outcome::Reply(n) = GW.handle(&arp_request([10, 89, 0, 1]), &mut out) else { panic!() };
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
        assert_eq!(GW.handle(&arp_request([10, 89, 0, 3]), &mut out), Outcome::Ignored);
    }

    #[test]
    fn answers_echo_with_valid_checksums() {
        let req = echo_request();
        let mut out = [0u8; 128];
        let Outcome::Reply(n) = GW.handle(&req, &mut out) else { panic!() };
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

    #[test]
    fn malformed_input_never_panics() {
        let mut out = [0u8; 128];
        let mut bad = echo_request();
        bad[40] ^= 0xff; // breaks the ICMP checksum
        assert_eq!(GW.handle(&bad, &mut out), Outcome::Malformed);
        for len in 0..echo_request().len() {
            let _ = GW.handle(&echo_request()[..len], &mut out);
            let _ = GW.handle(&arp_request([10, 89, 0, 1])[..len.min(42)], &mut out);
        }
        let mut tiny = [0u8; 8];
        assert_eq!(GW.handle(&arp_request([10, 89, 0, 1]), &mut tiny), Outcome::Ignored);
    }
}
