//! Helpers shared by the integration tests: records of two networks, queries built with
//! hickory, answers parsed with hickory.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use dns::{Decision, Entry, Limit, Records, Srv};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

pub fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// net1: c1 (alias web, one v4 + one v6, SRV _http._tcp:80), c2 (v4 only, alias "web" too),
/// many (8 v4), big (200 v4). net2: d1 (alias db). net3 (suffix "corp.example"): e1.
pub fn records() -> Records {
    let mut r = Records::new(5);
    r.set_network(
        "net1",
        None,
        vec![
            Entry {
                name: "c1".into(),
                aliases: vec!["web".into(), "API.".into()],
                v4: vec![v4("10.1.0.2")],
                v6: vec![v6("fd00:1::2")],
                srv: vec![
                    Srv { service: "_http._tcp".into(), port: 80, priority: 10, weight: 5 },
                    Srv { service: "_metrics._tcp".into(), port: 9100, priority: 0, weight: 0 },
                ],
            },
            Entry {
                name: "c2".into(),
                aliases: vec!["web".into()],
                v4: vec![v4("10.1.0.3")],
                v6: vec![],
                srv: vec![Srv { service: "_http._tcp".into(), port: 8080, priority: 20, weight: 1 }],
            },
            Entry {
                name: "many".into(),
                aliases: vec![],
                v4: (10..18).map(|i| Ipv4Addr::new(10, 1, 1, i)).collect(),
                v6: (1..5).map(|i| Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 1, i)).collect(),
                srv: vec![],
            },
            Entry {
                name: "big".into(),
                aliases: vec![],
                v4: (0..200).map(|i| Ipv4Addr::new(10, 1, 2 + (i / 250) as u8, (i % 250) as u8 + 1)).collect(),
                v6: vec![],
                srv: vec![],
            },
        ],
    );
    r.set_network(
        "net2",
        None,
        vec![Entry { name: "d1".into(), aliases: vec!["db".into()], v4: vec![v4("10.2.0.2")], v6: vec![], srv: vec![] }],
    );
    r.set_network("net3", Some("corp.example."), vec![Entry { name: "e1".into(), v4: vec![v4("10.3.0.2")], ..Default::default() }]);
    r
}

/// A query as a stub resolver sends it: RD=1, id 0x1234, optionally with EDNS.
pub fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

pub struct Asked {
    pub decision: Decision,
    pub msg: Option<Message>,
    pub bytes: Vec<u8>,
}

/// Runs respond() with a 64 KiB buffer and parses the answer, if any.
pub fn ask(r: &Records, nets: &[&str], internal: bool, q: &[u8], rand: u64, limit: Limit) -> Asked {
    let mut out = vec![0u8; 65535];
    let decision = dns::respond(r, nets, internal, q, rand, &mut out, limit);
    let bytes = match decision {
        Decision::Answer(n) | Decision::Reject(n, _) => out[..n].to_vec(),
        _ => Vec::new(),
    };
    let msg = (!bytes.is_empty()).then(|| Message::from_vec(&bytes).expect("our answer parses"));
    Asked { decision, msg, bytes }
}

/// The common case: container on net1, UDP, answer expected.
pub fn answer(nets: &[&str], name: &str, rtype: RecordType) -> Message {
    let q = query(name, rtype, None);
    let a = ask(&records(), nets, false, &q, 7, Limit::Udp(65535));
    assert!(matches!(a.decision, Decision::Answer(_)), "{name} {rtype}: {:?}", a.decision);
    a.msg.unwrap()
}
