//! DHCP client messages as the gateway's DHCP server sees them (the UDP payload): never a
//! panic; a message that parses gets an OFFER, an ACK and a NAK built, each of which dhcproto
//! reads back with the client's transaction id and hardware address.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vswitch::dhcp::{parse, reply, Answer, Lease, MAX_REPLY};

fuzz_target!(|data: &[u8]| {
    let Ok(q) = parse(data) else { return };
    let lease = Lease { ip: Ipv4Addr::new(10, 9, 0, 50), prefix_len: 24, server: Ipv4Addr::new(10, 9, 0, 1), mtu: 1500, lease_secs: 3600 };
    for answer in [Answer::Offer, Answer::Ack, Answer::Nak] {
        let mut out = [0u8; MAX_REPLY];
        let n = reply(&q, answer, &lease, &mut out).expect("a reply fits MAX_REPLY");
        use dhcproto::Decodable;
        let m = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&out[..n])).expect("our reply parses");
        assert_eq!(m.xid(), q.xid);
        assert_eq!(&m.chaddr()[..6], &q.mac.0);
    }
});
