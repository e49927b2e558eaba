//! respond() on a network of 1 000 endpoints: an A query answered from the table (the common
//! case), the same as dig sends it (EDNS), a name that is not ours (forward decision) and a PTR.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dns::{Decision, Entry, Limit, Records, Srv};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

fn records() -> Records {
    let mut r = Records::new(5);
    let entries = (0..1000u32)
        .map(|i| Entry {
            name: format!("c{i}"),
            aliases: vec![format!("svc{i}")],
            v4: vec![Ipv4Addr::from(0x0a01_0000 + i + 2)],
            v6: vec![],
            srv: vec![Srv { service: "_http._tcp".into(), port: 80, priority: 0, weight: 0 }],
        })
        .collect();
    r.set_network("bench", None, entries);
    // Other networks the asker is not on, so the lookup walks a realistic table.
    for n in 0..10 {
        r.set_network(&format!("other{n}"), None, vec![Entry { name: "c500".into(), ..Default::default() }]);
    }
    r
}

fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn bench(c: &mut Criterion) {
    let r = records();
    let nets = ["bench"];
    let mut out = [0u8; 1500];
    let mut g = c.benchmark_group("dns_respond_1000_endpoints");
    g.throughput(Throughput::Elements(1));
    for (label, q, expect_answer) in [
        ("a", query("c500.bench.", RecordType::A, false), true),
        ("a_edns", query("C500.bench.", RecordType::A, true), true),
        ("forward", query("www.example.com.", RecordType::A, true), false),
        ("ptr", query("246.1.1.10.in-addr.arpa.", RecordType::PTR, false), true),
        ("srv", query("_http._tcp.c500", RecordType::SRV, false), true),
    ] {
        let d = dns::respond(&r, &nets, false, &q, 1, &mut out, Limit::Udp(1472));
        assert_eq!(matches!(d, Decision::Answer(_)), expect_answer, "{label}: {d:?}");
        let mut rand = 0u64;
        g.bench_function(label, |b| {
            b.iter(|| {
                rand = rand.wrapping_add(0x9e37_79b9_7f4a_7c15);
                dns::respond(black_box(&r), &nets, false, black_box(&q), rand, &mut out, Limit::Udp(1472))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
