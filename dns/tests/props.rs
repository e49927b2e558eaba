//! Property tests: respond() never panics on any bytes, what it writes is a DNS response to the
//! same id, and what it answers for generated records matches a plain model.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use common::*;
use dns::{Decision, Entry, Limit, Records};
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{RData, RecordType};
use proptest::prelude::*;

/// Runs every variant of the caller's arguments on `q` and checks what came out.
fn check(r: &Records, q: &[u8], rand: u64) {
    for (nets, internal, limit, out_len) in [
        (&["net1"][..], false, Limit::Udp(65507), 65535),
        (&["net2", "net1", "net3"][..], true, Limit::Udp(1472), 1472),
        (&[][..], false, Limit::Tcp, 65535),
        (&["net1"][..], true, Limit::Tcp, 40),
        (&["net1"][..], false, Limit::Udp(512), 11),
    ] {
        let mut out = vec![0u8; out_len];
        let d = dns::respond(r, nets, internal, q, rand, &mut out, limit);
        match d {
            Decision::Answer(n) | Decision::Reject(n, _) => {
                assert!(n >= 12 && n <= out_len, "{n}");
                let m = Message::from_vec(&out[..n]).expect("our answer parses");
                assert_eq!(m.metadata.id.to_be_bytes(), q[..2], "same id");
                assert_eq!(m.metadata.message_type, MessageType::Response);
                if let Limit::Udp(c) = limit {
                    assert!(n <= c.max(512));
                }
            }
            Decision::Forward => {
                // Only well-formed single-question queries are forwarded, never on internal.
                assert!(!internal);
                let m = Message::from_vec(q).expect("forwarded query parses");
                assert_eq!(m.queries.len(), 1);
                assert_eq!(m.metadata.message_type, MessageType::Query);
            }
            Decision::Drop(_) => {}
        }
    }
    for f in [dns::servfail as fn(&[u8], &mut [u8]) -> Option<usize>, dns::nxdomain] {
        let mut out = [0u8; 512];
        if let Some(n) = f(q, &mut out) {
            let m = Message::from_vec(&out[..n]).expect("helper answer parses");
            assert_eq!(m.metadata.id.to_be_bytes(), q[..2]);
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v = vec![
        query("c1", RecordType::A, None),
        query("C1.net1.", RecordType::AAAA, Some(1232)),
        query("many", RecordType::A, Some(4096)),
        query("big", RecordType::A, None),
        query("_http._tcp.web", RecordType::SRV, Some(1232)),
        query("2.0.1.10.in-addr.arpa.", RecordType::PTR, None),
        query("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.", RecordType::PTR, None),
        query("example.com.", RecordType::MX, Some(512)),
        query("e1.corp.example.", RecordType::ANY, None),
    ];
    // dig's bytes, with a compressed second name in an extra record to give pointers to mutate.
    v.push(vec![
        0xf5, 0x51, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, b'c', b'1', 0x04, b'n', b'e', b't', b'1', 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00, 0x08, 0xba, 0xc7, 0xf8, 0x55,
        0x37, 0xfd, 0x1c, 0x1a,
    ]);
    v.push(vec![
        0x00, 0x07, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, b'c', b'1', 0x04, b'n', b'e', b't', b'1', 0x00, 0x00,
        0x01, 0x00, 0x01, 0x03, b'w', b'w', b'w', 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x04, 10, 0, 0, 1,
    ]);
    v
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Xor(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Xor(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        // Interesting spots: header flags and counts, pointer bytes.
        (0..12usize, any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (12..40usize).prop_map(|i| Mutation::Set(i, 0xc0)),
    ]
}

fn apply(q: &mut Vec<u8>, m: &Mutation) {
    let len = q.len().max(1);
    match m {
        Mutation::Set(i, b) => {
            if let Some(x) = q.get_mut(i % len) {
                *x = *b;
            }
        }
        Mutation::Xor(i, b) => {
            if let Some(x) = q.get_mut(i % len) {
                *x ^= *b;
            }
        }
        Mutation::Truncate(i) => q.truncate(i % (len + 1)),
        Mutation::Insert(i, v) => {
            let at = i % (q.len() + 1);
            q.splice(at..at, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = i % len;
            let end = (at + n).min(q.len());
            if at < end {
                q.drain(at..end);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(q in prop::collection::vec(any::<u8>(), 0..600), rand in any::<u64>()) {
        let r = records();
        check(&r, &q, rand);
        // The same bytes behind a plausible query header (QR=0, opcode 0, one question).
        let mut q2 = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        q2.extend_from_slice(&q);
        check(&r, &q2, rand);
    }

    #[test]
    fn mutated_queries_never_panic(
        seed in 0..11usize,
        muts in prop::collection::vec(mutation(), 1..6),
        rand in any::<u64>(),
    ) {
        let r = records();
        let mut q = seeds()[seed].clone();
        for m in &muts {
            apply(&mut q, m);
        }
        check(&r, &q, rand);
    }
}

/// Generated networks: names from a small alphabet so that names collide and aliases are
/// shared; the model is "the first network in the asker's list that has the name, union of the
/// addresses of all its holders there".
fn entries() -> impl Strategy<Value = Vec<(String, Vec<String>, Vec<u8>)>> {
    let name = prop::sample::select(vec!["a", "b", "C", "d-1", "e.f", "web"]);
    prop::collection::vec((name.clone(), prop::collection::vec(name, 0..3), prop::collection::vec(any::<u8>(), 0..4)), 0..6).prop_map(|v| {
        v.into_iter().map(|(n, aliases, hosts)| (n.to_string(), aliases.into_iter().map(String::from).collect(), hosts)).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn a_answers_match_model(
        nets in prop::collection::vec(entries(), 1..4),
        asker in prop::collection::vec(0..4usize, 0..4),
        qname in prop::sample::select(vec!["a", "B", "c", "d-1", "E.F", "web", "zz", "a.n0", "web.N1.", "c.n2", "a.n3"]),
        rand in any::<u64>(),
    ) {
        let mut r = Records::new(5);
        let mut model: Vec<BTreeMap<String, BTreeSet<Ipv4Addr>>> = Vec::new();
        for (i, entries) in nets.iter().enumerate() {
            let net = format!("n{i}");
            let mut names: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
            let mut list = Vec::new();
            for (name, aliases, hosts) in entries {
                let v4: Vec<Ipv4Addr> = hosts.iter().map(|h| Ipv4Addr::new(10, i as u8, 0, *h)).collect();
                for n in std::iter::once(name).chain(aliases) {
                    for form in [n.to_lowercase(), format!("{}.{net}", n.to_lowercase())] {
                        names.entry(form).or_default().extend(v4.iter().copied());
                    }
                }
                list.push(Entry { name: name.clone(), aliases: aliases.clone(), v4, ..Default::default() });
            }
            r.set_network(&net, None, list);
            model.push(names);
        }
        let asker_names: Vec<String> = asker.iter().map(|i| format!("n{i}")).collect();
        let asker_refs: Vec<&str> = asker_names.iter().map(String::as_str).collect();
        let key = qname.trim_end_matches('.').to_lowercase();
        let want = asker.iter().filter_map(|i| model.get(*i)).find_map(|m| m.get(&key));

        let q = query(qname, RecordType::A, None);
        let a = ask(&r, &asker_refs, false, &q, rand, Limit::Tcp);
        match want {
            None => prop_assert_eq!(a.decision, Decision::Forward),
            Some(want) => {
                let m = a.msg.expect("answered");
                let got: Vec<Ipv4Addr> = m.answers.iter().filter_map(|r| match &r.data { RData::A(a) => Some(a.0), _ => None }).collect();
                prop_assert_eq!(got.len(), want.len(), "no duplicates");
                prop_assert_eq!(&got.into_iter().collect::<BTreeSet<_>>(), want);
            }
        }
    }
}
