//! Fuzz target for the DNS responder: any bytes as a query, with the caller's arguments (which
//! networks, internal or not, UDP ceiling or TCP, output buffer size, random word) also taken
//! from the input. respond() must never panic, and whatever it writes must be a response
//! carrying the query's id; the servfail/nxdomain helpers likewise.
//!
//! Input layout: byte 0 = options, bytes 1..9 = rand, the rest = the query.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use dns::{Decision, Entry, Limit, Records, Srv};
use libfuzzer_sys::fuzz_target;

fn records() -> &'static Records {
    static R: OnceLock<Records> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = Records::new(5);
        r.set_network(
            "net1",
            None,
            vec![
                Entry {
                    name: "c1".into(),
                    aliases: vec!["web".into()],
                    v4: vec![Ipv4Addr::new(10, 1, 0, 2)],
                    v6: vec![Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2)],
                    srv: vec![Srv { service: "_http._tcp".into(), port: 80, priority: 1, weight: 1 }],
                },
                Entry {
                    name: "many".into(),
                    aliases: vec!["web".into()],
                    v4: (1..=150).map(|i| Ipv4Addr::new(10, 1, 1, i)).collect(),
                    v6: vec![],
                    srv: vec![],
                },
            ],
        );
        r.set_network(
            "net2",
            Some("corp.example"),
            vec![Entry { name: "d1".into(), v4: vec![Ipv4Addr::new(10, 2, 0, 2)], ..Default::default() }],
        );
        r
    })
}

/// Checks an answer's header by hand (the fuzz crate does not depend on hickory): at least a
/// header, QR=1, same id.
fn check_answer(query: &[u8], answer: &[u8]) {
    assert!(answer.len() >= 12, "answer shorter than a header");
    assert_eq!(answer[..2], query[..2], "id");
    assert!(answer[2] & 0x80 != 0, "QR");
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else { return };
    let (rand, query) = match rest.split_at_checked(8) {
        Some((r, q)) => (u64::from_le_bytes(r.try_into().unwrap_or([0; 8])), q),
        None => (0, rest),
    };
    let nets: &[&str] = match opts & 3 {
        0 => &["net1"],
        1 => &["net2", "net1"],
        2 => &[],
        _ => &["net2"],
    };
    let internal = opts & 4 != 0;
    let limit = if opts & 8 != 0 { Limit::Tcp } else { Limit::Udp(1472) };
    let out_len = match (opts >> 4) & 3 {
        0 => 65535,
        1 => 512,
        2 => 40,
        _ => usize::from(opts >> 6) * 5, // 0..15: below and around a header
    };
    let mut out = vec![0u8; out_len];
    match dns::respond(records(), nets, internal, query, rand, &mut out, limit) {
        Decision::Answer(n) | Decision::Reject(n, _) => {
            assert!(n <= out_len);
            check_answer(query, &out[..n]);
        }
        Decision::Forward => assert!(!internal, "internal networks never forward"),
        Decision::Drop(_) => {}
    }
    let mut out = [0u8; 512];
    if let Some(n) = dns::servfail(query, &mut out) {
        check_answer(query, &out[..n]);
    }
    if let Some(n) = dns::nxdomain(query, &mut out) {
        check_answer(query, &out[..n]);
    }
});
