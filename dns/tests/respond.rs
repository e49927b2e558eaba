//! respond() against real bytes: queries built with hickory and one captured from dig.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use common::*;
use dns::{Decision, DropReason, Entry, Limit, Records, Responder};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn a_addrs(records: &[Record]) -> Vec<Ipv4Addr> {
    records.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect()
}

fn aaaa_addrs(records: &[Record]) -> Vec<Ipv6Addr> {
    records.iter().filter_map(|r| if let RData::AAAA(a) = &r.data { Some(a.0) } else { None }).collect()
}

/// The header fields every answer of ours carries.
fn assert_our_answer(m: &Message, rcode: ResponseCode) {
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.op_code, OpCode::Query);
    assert!(m.metadata.authoritative, "AA");
    assert!(m.metadata.recursion_available, "RA");
    assert!(m.metadata.recursion_desired, "RD copied");
    assert!(!m.metadata.truncation);
    assert_eq!(m.metadata.response_code, rcode);
    assert_eq!(m.queries.len(), 1, "question echoed");
}

/// `dig c1.net1. A` as DiG 9.18 sends it (captured on a socket): id 0xf551, RD+AD, one
/// question, an OPT record advertising 1232 bytes with a client COOKIE option.
const DIG_C1_NET1_A: [u8; 48] = [
    0xf5, 0x51, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // header
    0x02, b'c', b'1', 0x04, b'n', b'e', b't', b'1', 0x00, 0x00, 0x01, 0x00, 0x01, // c1.net1. A IN
    0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // OPT, 1232, v0, 12 bytes
    0x00, 0x0a, 0x00, 0x08, 0xba, 0xc7, 0xf8, 0x55, 0x37, 0xfd, 0x1c, 0x1a, // COOKIE
];

#[test]
fn dig_query_exact_answer() {
    let r = records();
    let mut out = [0u8; 512];
    let d = dns::respond(&r, &["net1"], false, &DIG_C1_NET1_A, 1, &mut out, Limit::Udp(1472));
    let Decision::Answer(n) = d else { panic!("{d:?}") };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0xf5, 0x51,             // same id
        0x85, 0x80,             // QR=1 opcode=0 AA=1 TC=0 RD=1 | RA=1 AD=0 CD=0 NOERROR
        0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, // 1 question, 1 answer, 0, 1 (OPT)
        0x02, b'c', b'1', 0x04, b'n', b'e', b't', b'1', 0x00, 0x00, 0x01, 0x00, 0x01, // question
        0xc0, 0x0c,             // answer owner: pointer to the question name
        0x00, 0x01, 0x00, 0x01, // A IN
        0x00, 0x00, 0x00, 0x05, // TTL 5
        0x00, 0x04, 10, 1, 0, 2, // 10.1.0.2
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // our OPT: 1232, v0, no options
    ];
    assert_eq!(&out[..n], want);

    // And read back field by field with hickory.
    let m = Message::from_vec(&out[..n]).unwrap();
    assert_eq!(m.metadata.id, 0xf551);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert!(m.metadata.authoritative && m.metadata.recursion_available && m.metadata.recursion_desired);
    assert!(!m.metadata.authentic_data && !m.metadata.truncation);
    assert_eq!(m.queries[0].name().to_ascii(), "c1.net1.");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ttl, 5);
    assert_eq!(a_addrs(&m.answers), [v4("10.1.0.2")]);
    let edns = m.edns.expect("OPT echoed");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
}

#[test]
fn a_and_aaaa_for_every_name_form() {
    for name in ["c1", "c1.", "c1.net1", "c1.net1.", "api", "api.net1."] {
        let m = answer(&["net1"], name, RecordType::A);
        assert_our_answer(&m, ResponseCode::NoError);
        assert_eq!(a_addrs(&m.answers), [v4("10.1.0.2")], "{name}");
        assert!(m.answers.iter().all(|r| r.ttl == 5 && r.name == m.queries[0].name().clone()));
        let m = answer(&["net1"], name, RecordType::AAAA);
        assert_our_answer(&m, ResponseCode::NoError);
        assert_eq!(aaaa_addrs(&m.answers), [v6("fd00:1::2")], "{name}");
    }
    // ANY: both families.
    let m = answer(&["net1"], "c1", RecordType::ANY);
    assert_eq!(a_addrs(&m.answers), [v4("10.1.0.2")]);
    assert_eq!(aaaa_addrs(&m.answers), [v6("fd00:1::2")]);
    // Under the domain suffix of net3 as well as under the network name.
    for name in ["e1.corp.example.", "e1.net3", "e1"] {
        assert_eq!(a_addrs(&answer(&["net3"], name, RecordType::A).answers), [v4("10.3.0.2")], "{name}");
    }
}

#[test]
fn case_insensitive_and_asker_spelling_echoed() {
    for name in ["C1.NET1.", "c1.NeT1", "Api", "WEB.net1."] {
        let m = answer(&["net1"], name, RecordType::A);
        assert_our_answer(&m, ResponseCode::NoError);
        assert!(!m.answers.is_empty(), "{name}");
        // 0x20 bits survive: question and owner names are spelled as asked.
        let asked = Name::from_ascii(name).unwrap();
        assert_eq!(m.queries[0].name().to_ascii().trim_end_matches('.'), asked.to_ascii().trim_end_matches('.'));
        assert_ne!(m.queries[0].name().to_ascii(), m.queries[0].name().to_lowercase().to_ascii());
        for rec in &m.answers {
            assert_eq!(rec.name.to_ascii(), m.queries[0].name().to_ascii());
        }
    }
}

#[test]
fn shared_alias_answers_every_holder() {
    let m = answer(&["net1"], "web", RecordType::A);
    let got: BTreeSet<_> = a_addrs(&m.answers).into_iter().collect();
    assert_eq!(got, [v4("10.1.0.2"), v4("10.1.0.3")].into_iter().collect());
}

#[test]
fn nodata_for_our_name_without_that_type() {
    for (name, rtype) in [("c2", RecordType::AAAA), ("c1", RecordType::MX), ("c1.net1", RecordType::TXT)] {
        let m = answer(&["net1"], name, rtype);
        assert_our_answer(&m, ResponseCode::NoError);
        assert!(m.answers.is_empty() && m.authorities.is_empty(), "{name} {rtype}");
    }
}

#[test]
fn unknown_names_forward_or_nxdomain_when_internal() {
    let r = records();
    for name in ["example.com.", "c9", "c1.net2.", "net1.", "c1.net1.example.com."] {
        let q = query(name, RecordType::A, None);
        assert_eq!(ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).decision, Decision::Forward, "{name}");
        let a = ask(&r, &["net1"], true, &q, 0, Limit::Udp(512));
        assert!(matches!(a.decision, Decision::Answer(_)), "{name}");
        let m = a.msg.unwrap();
        assert_our_answer(&m, ResponseCode::NXDomain);
        assert!(m.answers.is_empty());
    }
    // Not class IN: not ours either.
    let mut m = Message::from_vec(&query("c1", RecordType::A, None)).unwrap();
    m.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    let q = m.to_vec().unwrap();
    assert_eq!(ask(&r, &["net1"], false, &q, 0, Limit::Tcp).decision, Decision::Forward);
    // A container on no network sees no names.
    let q = query("c1", RecordType::A, None);
    assert_eq!(ask(&r, &[], false, &q, 0, Limit::Tcp).decision, Decision::Forward);
    assert_eq!(ask(&r, &["nosuchnet"], false, &q, 0, Limit::Tcp).decision, Decision::Forward);
}

#[test]
fn other_networks_are_invisible() {
    let r = records();
    // d1/db live on net2: a container on net1 does not see them, one on net2 does.
    for name in ["d1", "db", "d1.net2", "d1.net2."] {
        let q = query(name, RecordType::A, None);
        assert_eq!(ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).decision, Decision::Forward, "{name}");
        let m = ask(&r, &["net1"], true, &q, 0, Limit::Udp(512)).msg.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = ask(&r, &["net2"], false, &q, 0, Limit::Udp(512)).msg.unwrap();
        assert_eq!(a_addrs(&m.answers), [v4("10.2.0.2")]);
        let m = ask(&r, &["net1", "net2"], false, &q, 0, Limit::Udp(512)).msg.unwrap();
        assert_eq!(a_addrs(&m.answers), [v4("10.2.0.2")]);
    }
    // PTR of a net2 address from net1: not ours.
    let q = query("2.0.2.10.in-addr.arpa.", RecordType::PTR, None);
    assert_eq!(ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).decision, Decision::Forward);
    // SRV of net1 from net2: not ours.
    let q = query("_http._tcp.c1", RecordType::SRV, None);
    assert_eq!(ask(&r, &["net2"], false, &q, 0, Limit::Udp(512)).decision, Decision::Forward);
}

#[test]
fn first_attached_network_wins_a_shared_name() {
    let mut r = records();
    r.set_network("net4", None, vec![Entry { name: "c1".into(), v4: vec![v4("10.4.0.9")], ..Default::default() }]);
    let q = query("c1", RecordType::A, None);
    let m = ask(&r, &["net4", "net1"], false, &q, 0, Limit::Tcp).msg.unwrap();
    assert_eq!(a_addrs(&m.answers), [v4("10.4.0.9")]);
    let m = ask(&r, &["net1", "net4"], false, &q, 0, Limit::Tcp).msg.unwrap();
    assert_eq!(a_addrs(&m.answers), [v4("10.1.0.2")]);
    let q = query("c1.net4", RecordType::A, None);
    let m = ask(&r, &["net1", "net4"], false, &q, 0, Limit::Tcp).msg.unwrap();
    assert_eq!(a_addrs(&m.answers), [v4("10.4.0.9")]);
}

fn ptr_target(m: &Message) -> String {
    assert_eq!(m.answers.len(), 1);
    match &m.answers[0].data {
        RData::PTR(p) => p.0.to_ascii(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ptr_v4_and_v6() {
    let m = answer(&["net1"], "2.0.1.10.in-addr.arpa.", RecordType::PTR);
    assert_our_answer(&m, ResponseCode::NoError);
    assert_eq!(ptr_target(&m), "c1.net1.");
    assert_eq!(m.answers[0].record_type(), RecordType::PTR);
    // Case-insensitive suffix, every address of an endpoint.
    let m = answer(&["net1"], "17.1.1.10.IN-ADDR.ARPA.", RecordType::PTR);
    assert_eq!(ptr_target(&m), "many.net1.");
    // v6: fd00:1::2, nibbles reversed.
    let name = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.";
    let m = answer(&["net1"], name, RecordType::PTR);
    assert_eq!(ptr_target(&m), "c1.net1.");
    let name = reverse_v6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 1, 4));
    assert_eq!(ptr_target(&answer(&["net1"], &name, RecordType::PTR)), "many.net1.");
    // With a domain suffix the PTR points under it.
    assert_eq!(ptr_target(&answer(&["net3"], "2.0.3.10.in-addr.arpa", RecordType::PTR)), "e1.corp.example.");
    // Our reverse name, another type: NODATA.
    let m = answer(&["net1"], "2.0.1.10.in-addr.arpa.", RecordType::A);
    assert!(m.answers.is_empty());
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);

    // Not an address of ours, partial or non-canonical reverse names: forwarded.
    let r = records();
    for name in ["9.9.1.10.in-addr.arpa.", "1.10.in-addr.arpa.", "02.0.1.10.in-addr.arpa.", "256.0.1.10.in-addr.arpa.", "0.0.d.f.ip6.arpa."]
    {
        let q = query(name, RecordType::PTR, None);
        assert_eq!(ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).decision, Decision::Forward, "{name}");
        let m = ask(&r, &["net1"], true, &q, 0, Limit::Udp(512)).msg.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
}

fn reverse_v6(a: Ipv6Addr) -> String {
    let mut s = String::new();
    for b in a.octets().iter().rev() {
        s.push_str(&format!("{:x}.{:x}.", b & 0x0f, b >> 4));
    }
    s + "ip6.arpa."
}

#[test]
fn srv_with_additional_addresses() {
    for name in ["_http._tcp.c1", "_HTTP._tcp.c1.net1."] {
        let m = answer(&["net1"], name, RecordType::SRV);
        assert_our_answer(&m, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1, "{name}");
        let RData::SRV(srv) = &m.answers[0].data else { panic!() };
        assert_eq!((srv.priority, srv.weight, srv.port), (10, 5, 80));
        assert_eq!(srv.target.to_ascii(), "c1.net1.");
        let adds: Vec<_> = m.additionals.iter().map(|r| (r.name.to_ascii(), r.record_type())).collect();
        assert!(adds.contains(&("c1.net1.".into(), RecordType::A)), "{adds:?}");
        assert_eq!(a_addrs(&m.additionals), [v4("10.1.0.2")]);
        assert_eq!(aaaa_addrs(&m.additionals), [v6("fd00:1::2")]);
    }
    // The shared alias offers the service of both holders.
    let m = answer(&["net1"], "_http._tcp.web", RecordType::SRV);
    let mut ports: Vec<u16> = m.answers.iter().map(|r| if let RData::SRV(s) = &r.data { s.port } else { 0 }).collect();
    ports.sort();
    assert_eq!(ports, [80, 8080]);
    let adds: BTreeSet<_> = a_addrs(&m.additionals).into_iter().collect();
    assert_eq!(adds, [v4("10.1.0.2"), v4("10.1.0.3")].into_iter().collect());
    // Another declared service.
    let m = answer(&["net1"], "_metrics._tcp.c1", RecordType::SRV);
    assert_eq!(m.answers.len(), 1);
    // SRV name of ours, type A: NODATA. An undeclared service: not ours.
    let m = answer(&["net1"], "_http._tcp.c1", RecordType::A);
    assert!(m.answers.is_empty());
    let r = records();
    let q = query("_ftp._tcp.c1", RecordType::SRV, None);
    assert_eq!(ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).decision, Decision::Forward);
    let q = query("_http._tcp.c2", RecordType::SRV, None);
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).msg.unwrap();
    let RData::SRV(srv) = &m.answers[0].data else { panic!() };
    assert_eq!((srv.port, srv.target.to_ascii().as_str()), (8080, "c2.net1."));
}

#[test]
fn addresses_shuffled_by_rand_all_present() {
    let r = records();
    let q = query("many", RecordType::A, None);
    let all: BTreeSet<Ipv4Addr> = (10..18).map(|i| Ipv4Addr::new(10, 1, 1, i)).collect();
    let mut orders = HashSet::new();
    let mut firsts = HashSet::new();
    for rand in 0..200u64 {
        let m = ask(&r, &["net1"], false, &q, rand.wrapping_mul(0x9e37_79b9_7f4a_7c15), Limit::Udp(512)).msg.unwrap();
        let got = a_addrs(&m.answers);
        assert_eq!(got.len(), 8);
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), all);
        firsts.insert(got[0]);
        orders.insert(got);
    }
    assert!(orders.len() > 150, "only {} distinct orders", orders.len());
    assert_eq!(firsts.len(), 8, "every address comes first sometimes");
    // Same rand, same order (the caller's randomness is the only source).
    let a = ask(&r, &["net1"], false, &q, 42, Limit::Udp(512)).bytes;
    let b = ask(&r, &["net1"], false, &q, 42, Limit::Udp(512)).bytes;
    assert_eq!(a, b);
    let c = ask(&r, &["net1"], false, &q, 43, Limit::Udp(512)).bytes;
    assert_ne!(a, c);
    // AAAA too.
    let q = query("many", RecordType::AAAA, None);
    let orders: HashSet<_> =
        (0..50u64).map(|rand| aaaa_addrs(&ask(&r, &["net1"], false, &q, rand, Limit::Udp(512)).msg.unwrap().answers)).collect();
    assert!(orders.len() > 5);
    assert!(orders.iter().all(|o| o.len() == 4));
}

#[test]
fn truncation_sets_tc_and_drops_records() {
    let r = records();
    // 200 A records ≈ 3.2 KB: over 512 without EDNS.
    let q = query("big", RecordType::A, None);
    let a = ask(&r, &["net1"], false, &q, 0, Limit::Udp(65507));
    assert!(matches!(a.decision, Decision::Answer(n) if n <= 512));
    let m = a.msg.unwrap();
    assert!(m.metadata.truncation, "TC");
    assert!(m.answers.is_empty() && m.additionals.is_empty());
    assert_eq!(m.queries[0].name().to_ascii(), "big.");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // EDNS 1232: still too big, TC, OPT kept.
    let q = query("big", RecordType::A, Some(1232));
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Udp(65507)).msg.unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty() && m.edns.is_some());
    // EDNS 4096 and a ceiling that allows it: everything.
    let q = query("big", RecordType::A, Some(4096));
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Udp(4096)).msg.unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 200);
    // ...but the caller's ceiling wins over the client's wish.
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Udp(1472)).msg.unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    // TCP: the whole answer, EDNS or not.
    let q = query("big", RecordType::A, None);
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Tcp).msg.unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(a_addrs(&m.answers).len(), 200);
    // The output buffer is a limit too.
    let mut out = [0u8; 100];
    let d = dns::respond(&r, &["net1"], false, &q, 0, &mut out, Limit::Tcp);
    let Decision::Answer(n) = d else { panic!("{d:?}") };
    assert!(Message::from_vec(&out[..n]).unwrap().metadata.truncation);
    // A buffer too small for the question still gets a bare TC header.
    let mut out = [0u8; 14];
    let d = dns::respond(&r, &["net1"], false, &q, 0, &mut out, Limit::Tcp);
    let Decision::Answer(n) = d else { panic!("{d:?}") };
    assert_eq!(n, 12);
    let m = Message::from_vec(&out[..n]).unwrap();
    assert!(m.metadata.truncation && m.metadata.id == 0x1234 && m.queries.is_empty());
    // A UDP ceiling under a header: nothing either.
    let mut out = [0u8; 512];
    let d = dns::respond(&r, &["net1"], false, &q, 0, &mut out, Limit::Udp(11));
    assert_eq!(d, Decision::Drop(DropReason::NoRoom));
    // Under a header: nothing.
    let mut out = [0u8; 11];
    assert_eq!(dns::respond(&r, &["net1"], false, &q, 0, &mut out, Limit::Tcp), Decision::Drop(DropReason::NoRoom));
}

fn reject(q: &[u8]) -> (DropReason, Message) {
    let a = ask(&records(), &["net1"], false, q, 0, Limit::Udp(512));
    match a.decision {
        Decision::Reject(_, why) => (why, a.msg.unwrap()),
        d => panic!("{d:?}"),
    }
}

#[test]
fn bad_input_gets_error_answers_or_drops() {
    let r = records();
    let good = query("c1", RecordType::A, None);
    let drop = |q: &[u8]| ask(&r, &["net1"], false, q, 0, Limit::Udp(512)).decision;

    // Too short, empty, too long.
    assert_eq!(drop(&[]), Decision::Drop(DropReason::TooShort));
    assert_eq!(drop(&good[..11]), Decision::Drop(DropReason::TooShort));
    let mut long = good.clone();
    long.resize(dns::MAX_QUERY_LEN + 1, 0);
    assert_eq!(drop(&long), Decision::Drop(DropReason::TooLong));

    // A response (QR=1) is never answered.
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert_eq!(drop(&resp), Decision::Drop(DropReason::NotAQuery));

    // Opcode STATUS (2) and UPDATE (5): NOTIMP, opcode and id echoed.
    for opcode in [2u8, 4, 5, 15] {
        let mut q = good.clone();
        q[2] = (q[2] & 0x87) | (opcode << 3);
        let (why, m) = reject(&q);
        assert_eq!(why, DropReason::NotImplemented);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(u8::from(m.metadata.op_code), opcode);
        assert_eq!(m.metadata.message_type, MessageType::Response);
    }

    // Two questions: FORMERR.
    let mut m = Message::from_vec(&good).unwrap();
    m.add_query(m.queries[0].clone());
    let (why, m) = reject(&m.to_vec().unwrap());
    assert_eq!((why, m.metadata.response_code), (DropReason::TooManyQuestions, ResponseCode::FormErr));
    assert!(m.queries.is_empty());
    // No question: FORMERR.
    let (why, m) = reject(&good[..12].iter().enumerate().map(|(i, b)| if i == 5 { 0 } else { *b }).collect::<Vec<_>>());
    assert_eq!((why, m.metadata.response_code), (DropReason::NoQuestion, ResponseCode::FormErr));

    // Truncated question, every cut: FORMERR with the id.
    for cut in 12..good.len() {
        let (why, m) = reject(&good[..cut]);
        assert_eq!((why, m.metadata.response_code, m.metadata.id), (DropReason::Malformed, ResponseCode::FormErr, 0x1234));
    }

    // Compression loop in the question: a pointer to itself.
    let q = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
    assert_eq!(reject(&q).0, DropReason::Malformed);
    // Two pointers pointing at each other.
    let q = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x01, b'a', 0xc0, 0x10, 0xc0, 0x0e, 0, 1, 0, 1];
    assert_eq!(reject(&q).0, DropReason::Malformed);
    // A forward pointer past the end.
    let q = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0, 1, 0, 1];
    assert_eq!(reject(&q).0, DropReason::Malformed);
    // Label longer than the message.
    let q = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'a', 0, 1, 0, 1];
    assert_eq!(reject(&q).0, DropReason::Malformed);
    // ARCOUNT says 1 but there is no record.
    let mut q = good.clone();
    q[11] = 1;
    assert_eq!(reject(&q).0, DropReason::Malformed);
    // Two OPT records: FORMERR (RFC 6891 §6.1.1).
    let mut q = query("c1", RecordType::A, Some(1232));
    let opt = q[q.len() - 11..].to_vec();
    q.extend_from_slice(&opt);
    q[11] = 2;
    assert_eq!(reject(&q).0, DropReason::Malformed);

    // EDNS version 1: BADVERS, with our OPT.
    let mut q = query("c1", RecordType::A, Some(1232));
    let n = q.len();
    q[n - 5] = 1; // OPT TTL: ext-rcode, version, flags
    let a = ask(&r, &["net1"], false, &q, 0, Limit::Udp(512));
    assert!(matches!(a.decision, Decision::Reject(_, DropReason::BadEdnsVersion)), "{:?}", a.decision);
    let m = a.msg.unwrap();
    assert_eq!(u16::from(m.metadata.response_code), 16, "BADVERS (hickory reads 16 as BADSIG)");
    assert_eq!(m.edns.unwrap().version(), 0);
}

#[test]
fn query_with_trailing_garbage_or_odd_flags_still_answered() {
    let r = records();
    // Flags a stub might set (AD, CD, TC) do not matter; CD is copied.
    let mut q = query("c1", RecordType::A, None);
    q[3] |= 0x30;
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).msg.unwrap();
    assert!(m.metadata.checking_disabled);
    assert_eq!(a_addrs(&m.answers), [v4("10.1.0.2")]);
    // RD=0 copied.
    let mut q = query("c1", RecordType::A, None);
    q[2] &= !0x01;
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).msg.unwrap();
    assert!(!m.metadata.recursion_desired);
}

#[test]
fn servfail_and_nxdomain_helpers() {
    let q = query("example.com.", RecordType::AAAA, Some(1232));
    let mut out = [0u8; 512];
    for (f, rcode) in
        [(dns::servfail as fn(&[u8], &mut [u8]) -> Option<usize>, ResponseCode::ServFail), (dns::nxdomain, ResponseCode::NXDomain)]
    {
        let n = f(&q, &mut out).unwrap();
        let m = Message::from_vec(&out[..n]).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, rcode);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert_eq!(m.queries[0].name().to_ascii(), "example.com.");
        assert_eq!(m.queries[0].query_type(), RecordType::AAAA);
        assert!(m.edns.is_some());
        assert!(m.answers.is_empty());
        // Header readable, rest garbage: bare header.
        let n = f(&q[..15], &mut out).unwrap();
        let m = Message::from_vec(&out[..n]).unwrap();
        assert_eq!((m.metadata.id, m.metadata.response_code, m.queries.len()), (0x1234, rcode, 0));
        // Not a query, too short, no room: nothing.
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert_eq!(f(&resp, &mut out), None);
        assert_eq!(f(&q[..5], &mut out), None);
        assert_eq!(f(&q, &mut [0u8; 11]), None);
    }
}

#[test]
fn records_replace_remove_and_ttl() {
    let mut r = records();
    assert!(r.has_network("net1"));
    // c1, web, api: bare + .net1 → 6 keys; c2 adds c2, c2.net1 (web shared); many, big: 2 each.
    assert_eq!(r.name_count("net1"), 12);
    let q = query("c1", RecordType::A, None);
    // Replacing a network replaces its names.
    r.set_network("net1", None, vec![Entry { name: "c1".into(), v4: vec![v4("10.1.0.99")], ..Default::default() }]);
    let m = ask(&r, &["net1"], false, &q, 0, Limit::Tcp).msg.unwrap();
    assert_eq!(a_addrs(&m.answers), [v4("10.1.0.99")]);
    let q2 = query("web", RecordType::A, None);
    assert_eq!(ask(&r, &["net1"], false, &q2, 0, Limit::Tcp).decision, Decision::Forward);
    // Removing forgets it.
    r.remove_network("net1");
    r.remove_network("never-existed");
    assert_eq!(ask(&r, &["net1"], false, &q, 0, Limit::Tcp).decision, Decision::Forward);
    assert!(!r.has_network("net1"));
    // TTL: as configured, and 0 raised to 1.
    let mut r0 = Records::new(0);
    assert_eq!(r0.ttl(), 1);
    r0.set_network("n", None, vec![Entry { name: "x".into(), v4: vec![v4("10.0.0.1")], ..Default::default() }]);
    assert_eq!(ask(&r0, &["n"], false, &query("x", RecordType::A, None), 0, Limit::Tcp).msg.unwrap().answers[0].ttl, 1);
    // Names that cannot be DNS names are skipped alone.
    let mut r = Records::new(5);
    r.set_network(
        "n",
        None,
        vec![
            Entry { name: "".into(), v4: vec![v4("10.0.0.1")], ..Default::default() },
            Entry { name: "a..b".into(), v4: vec![v4("10.0.0.2")], ..Default::default() },
            Entry {
                name: "ok".into(),
                aliases: vec!["x".repeat(64), "".into(), "fine".into()],
                v4: vec![v4("10.0.0.3")],
                srv: vec![dns::Srv { service: "http".into(), port: 1, priority: 0, weight: 0 }],
                ..Default::default()
            },
        ],
    );
    assert_eq!(r.name_count("n"), 4); // ok, ok.n, fine, fine.n
    let q = query("_http.ok", RecordType::SRV, None);
    assert_eq!(ask(&r, &["n"], false, &q, 0, Limit::Tcp).decision, Decision::Forward);
}

#[test]
fn snapshot_clone_is_independent_and_responder_swaps() {
    let base = records();
    let mut next = base.clone();
    next.set_network("net1", None, vec![]);
    let q = query("c1", RecordType::A, None);
    let mut resp = Responder::new(Arc::new(base));
    let mut out = [0u8; 512];
    assert!(matches!(resp.respond(&["net1"], false, &q, 0, &mut out, Limit::Udp(512)), Decision::Answer(_)));
    let old = resp.swap(Arc::new(next));
    assert_eq!(resp.respond(&["net1"], false, &q, 0, &mut out, Limit::Udp(512)), Decision::Forward);
    // The old snapshot is untouched by the clone's change.
    assert!(matches!(dns::respond(&old, &["net1"], false, &q, 0, &mut out, Limit::Udp(512)), Decision::Answer(_)));
    assert_eq!(resp.records().name_count("net1"), 0);
}

#[test]
fn drop_reasons_have_distinct_names() {
    let names: HashSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), DropReason::ALL.len());
    assert_eq!(DropReason::Malformed.to_string(), "malformed");
}

#[test]
fn addresses_in_ip_order_are_reachable_by_ptr_for_all_of_big() {
    // Every address of a 200-address endpoint has its PTR.
    let r = records();
    for i in 0..200u32 {
        let a = Ipv4Addr::new(10, 1, 2 + (i / 250) as u8, (i % 250) as u8 + 1);
        let o = a.octets();
        let name = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
        let q = query(&name, RecordType::PTR, None);
        let m = ask(&r, &["net1"], false, &q, 0, Limit::Udp(512)).msg.unwrap();
        assert_eq!(ptr_target(&m), "big.net1.", "{a}");
    }
}
