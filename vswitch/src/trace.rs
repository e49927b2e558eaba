//! Frames for `vswitchctl trace`: built from a few fields, with valid checksums, so the
//! switch and the gateway decide on them exactly as on real traffic.
//!
//! I/O-free. The datapath runs the frame through [`crate::switch::Switch::explain`] and the
//! gateway's read-only paths; nothing is sent.

use std::fmt;
use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress,
    IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use crate::types::Mac;

/// What the frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// An ICMP echo request.
    Icmp,
    /// A TCP SYN.
    Tcp,
    Udp,
    /// An ARP request for the destination address.
    Arp,
}

impl Proto {
    /// `icmp`, `tcp`, `udp` or `arp`.
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "icmp" | "ping" => Some(Proto::Icmp),
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "arp" => Some(Proto::Arp),
            _ => None,
        }
    }
}

/// A frame to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub proto: Proto,
    pub src_port: u16,
    pub dst_port: u16,
    /// UDP to port 53: a query for this name (type A); else the payload is empty.
    pub dns_name: Option<String>,
}

impl fmt::Display for FrameSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {} ", self.src_mac, self.dst_mac)?;
        match self.proto {
            Proto::Arp => write!(f, "ARP who-has {} tell {}", self.dst_ip, self.src_ip),
            Proto::Icmp => write!(f, "IPv4 {} → {} ICMP echo request", self.src_ip, self.dst_ip),
            Proto::Tcp => write!(f, "IPv4 {}:{} → {}:{} TCP SYN", self.src_ip, self.src_port, self.dst_ip, self.dst_port),
            Proto::Udp => {
                write!(f, "IPv4 {}:{} → {}:{} UDP", self.src_ip, self.src_port, self.dst_ip, self.dst_port)?;
                match &self.dns_name {
                    Some(n) => write!(f, " DNS A? {n}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why a frame cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{0:?} is not a DNS name (labels of 1 to 63 characters, 253 in all)")]
    BadName(String),
}

impl FrameSpec {
    /// The Ethernet frame, with valid checksums.
    ///
    /// # Errors
    /// A DNS name that cannot be encoded.
    pub fn build(&self) -> Result<Vec<u8>, BuildError> {
        let eth = EthernetRepr {
            src_addr: EthernetAddress(self.src_mac.0),
            dst_addr: EthernetAddress(self.dst_mac.0),
            ethertype: if self.proto == Proto::Arp { EthernetProtocol::Arp } else { EthernetProtocol::Ipv4 },
        };
        let caps = ChecksumCapabilities::default();
        let (src, dst): (Ipv4Address, Ipv4Address) = (self.src_ip, self.dst_ip);
        if self.proto == Proto::Arp {
            let arp = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: eth.src_addr,
                source_protocol_addr: src,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: dst,
            };
            let mut buf = vec![0u8; (eth.buffer_len() + arp.buffer_len()).max(60)];
            let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
            eth.emit(&mut frame);
            arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
            return Ok(buf);
        }
        let payload = match (&self.dns_name, self.proto) {
            (Some(name), Proto::Udp) => dns_query(name)?,
            _ => Vec::new(),
        };
        let (next_header, l4_len) = match self.proto {
            Proto::Icmp => (IpProtocol::Icmp, 8 + payload.len()),
            Proto::Tcp => (IpProtocol::Tcp, 20),
            _ => (IpProtocol::Udp, 8 + payload.len()),
        };
        let ip = Ipv4Repr { src_addr: src, dst_addr: dst, next_header, payload_len: l4_len, hop_limit: 64 };
        let mut buf = vec![0u8; (eth.buffer_len() + ip.buffer_len() + l4_len).max(60)];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &caps);
        let l4 = packet.payload_mut();
        let (s, d) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
        match self.proto {
            Proto::Icmp => {
                let echo = Icmpv4Repr::EchoRequest { ident: 0x7472, seq_no: 1, data: &payload };
                echo.emit(&mut Icmpv4Packet::new_unchecked(l4), &caps);
            }
            Proto::Tcp => {
                let syn = TcpRepr {
                    src_port: self.src_port,
                    dst_port: self.dst_port,
                    control: TcpControl::Syn,
                    seq_number: TcpSeqNumber(0x7472_6163),
                    ack_number: None,
                    window_len: 64240,
                    window_scale: None,
                    max_seg_size: None,
                    sack_permitted: false,
                    sack_ranges: [None, None, None],
                    timestamp: None,
                    payload: &[],
                };
                syn.emit(&mut TcpPacket::new_unchecked(l4), &s, &d, &caps);
            }
            Proto::Udp | Proto::Arp => {
                let udp = UdpRepr { src_port: self.src_port, dst_port: self.dst_port };
                udp.emit(&mut UdpPacket::new_unchecked(l4), &s, &d, payload.len(), |p| p.copy_from_slice(&payload), &caps);
            }
        }
        Ok(buf)
    }
}

/// One line about a frame's headers (for `trace --live`); never fails, whatever the bytes.
pub fn summarize(frame: &[u8]) -> String {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return format!("{} bytes, shorter than an Ethernet header", frame.len()) };
    let macs = format!("{} → {}", Mac(eth.src_addr().0), Mac(eth.dst_addr().0));
    let what = match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()).and_then(|a| ArpRepr::parse(&a)) {
            Ok(ArpRepr::EthernetIpv4 { operation: ArpOperation::Request, source_protocol_addr, target_protocol_addr, .. }) => {
                format!("ARP who-has {target_protocol_addr} tell {source_protocol_addr}")
            }
            Ok(ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_protocol_addr, source_hardware_addr, .. }) => {
                format!("ARP reply {source_protocol_addr} is-at {source_hardware_addr}")
            }
            _ => "ARP".to_string(),
        },
        EthernetProtocol::Ipv4 => match Ipv4Packet::new_checked(eth.payload()) {
            Ok(ip) => {
                let (s, d) = (ip.src_addr(), ip.dst_addr());
                match ip.next_header() {
                    IpProtocol::Icmp => match Icmpv4Packet::new_checked(ip.payload()) {
                        Ok(i) => format!("IPv4 {s} → {d} ICMP {}", i.msg_type()),
                        Err(_) => format!("IPv4 {s} → {d} ICMP"),
                    },
                    IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
                        Ok(t) => {
                            let flags: String = [(t.syn(), 'S'), (t.fin(), 'F'), (t.rst(), 'R'), (t.psh(), 'P'), (t.ack(), '.')]
                                .iter()
                                .filter_map(|&(on, c)| on.then_some(c))
                                .collect();
                            format!("IPv4 {s}:{} → {d}:{} TCP [{flags}] {} bytes", t.src_port(), t.dst_port(), t.payload().len())
                        }
                        Err(_) => format!("IPv4 {s} → {d} TCP"),
                    },
                    IpProtocol::Udp => match UdpPacket::new_checked(ip.payload()) {
                        Ok(u) => format!("IPv4 {s}:{} → {d}:{} UDP {} bytes", u.src_port(), u.dst_port(), u.payload().len()),
                        Err(_) => format!("IPv4 {s} → {d} UDP"),
                    },
                    other => format!("IPv4 {s} → {d} {other}"),
                }
            }
            // Snapped short: the header may be cut.
            Err(_) => "IPv4".to_string(),
        },
        EthernetProtocol::Ipv6 => "IPv6".to_string(),
        other => format!("ethertype {other}"),
    };
    format!("{macs} {what}")
}

/// A standard query (recursion desired) for `name`, type A, class IN.
fn dns_query(name: &str) -> Result<Vec<u8>, BuildError> {
    let bad = || BuildError::BadName(name.to_string());
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let mut q = vec![0x74, 0x72, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad());
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(proto: Proto) -> FrameSpec {
        FrameSpec {
            src_mac: Mac([2, 0x42, 10, 89, 0, 2]),
            dst_mac: Mac([2, 0x42, 10, 89, 0, 3]),
            src_ip: Ipv4Addr::new(10, 89, 0, 2),
            dst_ip: Ipv4Addr::new(10, 89, 0, 3),
            proto,
            src_port: 40000,
            dst_port: 53,
            dns_name: Some("c2".into()),
        }
    }

    #[test]
    fn frames_parse_back_with_valid_checksums() {
        let caps = ChecksumCapabilities::default();
        for proto in [Proto::Icmp, Proto::Tcp, Proto::Udp] {
            let f = spec(proto).build().unwrap();
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            assert_eq!(eth.dst_addr().0, [2, 0x42, 10, 89, 0, 3]);
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            let ip_repr = Ipv4Repr::parse(&ip, &caps).unwrap();
            let (s, d) = (IpAddress::Ipv4(ip_repr.src_addr), IpAddress::Ipv4(ip_repr.dst_addr));
            match proto {
                Proto::Icmp => assert!(Icmpv4Packet::new_checked(ip.payload()).unwrap().verify_checksum()),
                Proto::Tcp => {
                    let t = TcpPacket::new_checked(ip.payload()).unwrap();
                    assert!(t.syn() && t.verify_checksum(&s, &d));
                }
                _ => {
                    let u = UdpPacket::new_checked(ip.payload()).unwrap();
                    assert!(u.verify_checksum(&s, &d));
                    assert_eq!(&u.payload()[12..16], &[2, b'c', b'2', 0]);
                }
            }
        }
        let arp = spec(Proto::Arp).build().unwrap();
        assert_eq!(arp.len(), 60);
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        assert_eq!(spec(Proto::Icmp).to_string(), "02:42:0a:59:00:02 → 02:42:0a:59:00:03 IPv4 10.89.0.2 → 10.89.0.3 ICMP echo request");
    }

    #[test]
    fn summaries_say_what_the_frame_is() {
        let ping = spec(Proto::Icmp).build().unwrap();
        assert!(summarize(&ping).ends_with("IPv4 10.89.0.2 → 10.89.0.3 ICMP echo request"), "{}", summarize(&ping));
        assert!(summarize(&spec(Proto::Tcp).build().unwrap()).contains("10.89.0.2:40000 → 10.89.0.3:53 TCP [S] 0 bytes"));
        assert!(summarize(&spec(Proto::Arp).build().unwrap()).ends_with("ARP who-has 10.89.0.3 tell 10.89.0.2"));
        assert!(summarize(&spec(Proto::Udp).build().unwrap()).contains("UDP 20 bytes"));
        assert_eq!(summarize(&[1, 2, 3]), "3 bytes, shorter than an Ethernet header");
        for len in 0..ping.len() {
            let _ = summarize(&ping[..len]);
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "a..b", &"x".repeat(64), &"a.".repeat(130)] {
            let mut s = spec(Proto::Udp);
            s.dns_name = Some(name.to_string());
            assert!(matches!(s.build(), Err(BuildError::BadName(_))), "{name:?}");
        }
        assert_eq!(Proto::parse("TCP"), Some(Proto::Tcp));
        assert_eq!(Proto::parse("sctp"), None);
    }
}
