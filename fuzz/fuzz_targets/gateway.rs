//! Frames for a dual-stack gateway, steered by the first input byte towards ARP, IPv4 (ICMP,
//! UDP, TCP) and IPv6 (neighbour discovery, ICMPv6) to the gateway's own MAC and addresses,
//! so the fuzzer spends its time past the Ethernet header. Never a panic; a reply never
//! outgrows its buffer; every range handed back lies inside the frame.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use vswitch::gateway::{Gateway, Outcome};
use vswitch::switch::PortGuard;
use vswitch::Mac;

const GW: Gateway =
    Gateway { ip: Ipv4Addr::new(10, 89, 0, 1), mac: Mac([2, 0x56, 0, 0, 0, 1]), ip6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)) };

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let mut frame = Vec::with_capacity(rest.len() + 64);
    // Destination: the gateway's MAC, broadcast, or the all-nodes multicast group.
    frame.extend_from_slice(match ctl & 3 {
        0 => &[0xff; 6][..],
        1 => &[0x33, 0x33, 0, 0, 0, 1][..],
        _ => &GW.mac.0[..],
    });
    frame.extend_from_slice(&[2, 0x42, 10, 89, 0, 2]);
    match (ctl >> 2) & 3 {
        0 => frame.extend_from_slice(&[0x08, 0x06]),
        1 => frame.extend_from_slice(&[0x08, 0x00]),
        2 => {
            // IPv6 to the gateway, next header ICMPv6, hop limit 255: only the rest is fuzzed.
            frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            frame.extend_from_slice(&(rest.len() as u16).to_be_bytes());
            frame.extend_from_slice(&[58, 255]);
            frame.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
            frame.extend_from_slice(&GW.ip6.unwrap().octets());
        }
        _ => {}
    }
    frame.extend_from_slice(rest);
    let mut out = vec![0u8; frame.len() + 64];
    match GW.handle(&frame, &mut out, ctl & 0x10 != 0) {
        Outcome::Reply(n) => assert!((14..=out.len()).contains(&n)),
        Outcome::Dns(q) | Outcome::Dhcp(q) => assert!(q.payload.end <= frame.len() && q.payload.start <= q.payload.end),
        Outcome::DnsTcp { ip, .. } | Outcome::Routed { ip } => assert!(ip.end <= frame.len() && ip.start <= ip.end),
        Outcome::Ignored | Outcome::Malformed => {}
    }
    // The ARP/ND guard on the same bytes never panics either.
    let guard = PortGuard { ipv4: Some(Ipv4Addr::new(10, 89, 0, 2)), ipv6: None, gateway4: Some(GW.ip), gateway6: GW.ip6 };
    let _ = guard.check(&frame);
    let _ = vswitch::switch::needs_guard(&frame);
});
