//! Arbitrary bytes as frames into the switch core and the gateway: never a panic, and every
//! gateway reply parses as a frame of at most the input's length.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vswitch::fdb::FdbConfig;
use vswitch::gateway::{Gateway, Outcome};
use vswitch::switch::{PortConfig, Switch, SwitchConfig};
use vswitch::{Mac, NetworkId, PortId};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, frame)) = data.split_first() else { return };
    let mut sw = Switch::new(SwitchConfig { fdb: FdbConfig { max_entries: 8, per_port_max: 4, aging: Duration::from_secs(1) }, storm: vswitch::switch::StormConfig::per_second(100) });
    let net = NetworkId(1);
    sw.add_network(net).unwrap();
    for p in 0..3 {
        sw.add_port(PortId(p), PortConfig { network: net, max_frame: 1518 }).unwrap();
    }
    let now = Duration::from_millis(u64::from(ctl) * 10);
    let _ = sw.handle_frame(now, PortId(u32::from(ctl % 4)), frame, ctl & 0x80 != 0);
    let gw = Gateway { ip: Ipv4Addr::new(10, 89, 0, 1), mac: Mac([2, 0x56, 0, 0, 0, 1]), ip6: None };
    let mut out = vec![0u8; frame.len() + 64];
    match gw.handle(frame, &mut out, ctl & 1 != 0) {
        Outcome::Reply(n) => assert!(n <= out.len() && n >= 14),
        Outcome::Dns(q) | Outcome::Dhcp(q) => assert!(q.payload.end <= frame.len()),
        Outcome::DnsTcp { ip, .. } | Outcome::Routed { ip } => assert!(ip.end <= frame.len()),
        Outcome::Ignored | Outcome::Malformed => {}
    }
});
