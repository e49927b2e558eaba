//! Unit tests of the private helpers; respond() itself is tested in tests/.

use super::records::{key_from_str, key_labels, name_from_key};
use super::*;

#[test]
fn keys_are_lowercase_wire_labels() {
    assert_eq!(key_from_str("C1.Net1.").unwrap(), b"\x02c1\x04net1");
    assert_eq!(key_from_str("c1").unwrap(), b"\x02c1");
    for bad in ["", ".", "a..b", ".a", "a.b..", &"x".repeat(64)] {
        assert_eq!(key_from_str(bad), None, "{bad:?}");
    }
    // 253 characters is the longest presentation name.
    let longest = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
    assert_eq!(longest.len(), 253);
    assert_eq!(key_from_str(&longest).unwrap().len(), 254);
    assert_eq!(key_from_str(&(longest + "e")), None);
    let key = key_from_str("a.bc.def").unwrap();
    assert_eq!(key_labels(&key).collect::<Vec<_>>(), [&b"a"[..], b"bc", b"def"]);
    assert_eq!(name_from_key(&key).unwrap().to_ascii(), "a.bc.def.");
    // A malformed key ends the walk instead of panicking.
    assert_eq!(key_labels(b"\x05ab").count(), 0);
}

#[test]
fn query_key_from_name() {
    let n = Name::from_ascii("WwW.Example.COM.").unwrap();
    assert_eq!(QKey::new(&n).unwrap().bytes(), b"\x03www\x07example\x03com");
    assert!(QKey::new(&Name::root()).is_none());
}

#[test]
fn reverse_names() {
    let k = |s: &str| key_from_str(s).unwrap();
    assert_eq!(reverse_addr(&k("4.3.2.1.in-addr.arpa")), Some("1.2.3.4".parse().unwrap()));
    assert_eq!(reverse_addr(&k("0.0.0.255.in-addr.arpa")), Some("255.0.0.0".parse().unwrap()));
    for bad in [
        "3.2.1.in-addr.arpa",
        "5.4.3.2.1.in-addr.arpa",
        "256.3.2.1.in-addr.arpa",
        "04.3.2.1.in-addr.arpa",
        "a.3.2.1.in-addr.arpa",
        "4.3.2.1.in-addr.arpa.com",
        "4.3.2.1.ip6.arpa",
        "1.0.ip6.arpa",
        "example.com",
    ] {
        assert_eq!(reverse_addr(&k(bad)), None, "{bad}");
    }
    let v6: Ipv6Addr = "2001:db8::abcd".parse().unwrap();
    let mut name = String::new();
    for b in v6.octets().iter().rev() {
        name.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
    }
    assert_eq!(reverse_addr(&k(&(name.clone() + "ip6.arpa"))), Some(IpAddr::V6(v6)));
    // A two-character label in the nibble run is not an address.
    let bad = name.replacen("d.c.", "dc.", 1) + "0.ip6.arpa";
    assert_eq!(reverse_addr(&k(&bad)), None);
    let bad = name.replacen('d', "g", 1) + "ip6.arpa";
    assert_eq!(reverse_addr(&k(&bad)), None);
}

#[test]
fn service_split() {
    let k = key_from_str("_http._tcp.c1.net1").unwrap();
    let (svc, base) = split_service(&k).unwrap();
    assert_eq!(svc, b"\x05_http\x04_tcp");
    assert_eq!(base, b"\x02c1\x04net1");
    for no in ["_http._tcp", "_http.tcp.c1", "http._tcp.c1", "c1"] {
        assert_eq!(split_service(&key_from_str(no).unwrap()), None, "{no}");
    }
}

#[test]
fn shuffle_is_a_permutation_and_depends_on_the_seed() {
    let mut seen = std::collections::HashSet::new();
    for seed in 0..3000u64 {
        let mut v: Vec<u32> = (0..6).collect();
        SplitMix(seed).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..6).collect::<Vec<_>>());
        seen.insert(v);
    }
    // 720 permutations of 6: 3000 seeds reach nearly all of them (expected ≈ 709).
    assert!(seen.len() > 690, "{}", seen.len());
    SplitMix(1).shuffle::<u8>(&mut []);
    SplitMix(1).shuffle(&mut [1]);
}

#[test]
fn size_limits() {
    let mut e = Edns::new();
    e.set_max_payload(4096);
    assert_eq!(max_len(Limit::Udp(65507), None, 65535), 512);
    assert_eq!(max_len(Limit::Udp(65507), Some(&e), 65535), 4096);
    assert_eq!(max_len(Limit::Udp(1472), Some(&e), 65535), 1472);
    assert_eq!(max_len(Limit::Udp(65507), Some(&e), 1000), 1000);
    assert_eq!(max_len(Limit::Tcp, None, 100_000), TCP_MAX);
    e.set_max_payload(100); // below 512 counts as 512
    assert_eq!(max_len(Limit::Udp(65507), Some(&e), 65535), 512);
}
