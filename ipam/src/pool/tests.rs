use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use proptest::prelude::*;
use serde::de::DeserializeOwned;

use super::*;

fn pool(cidr: &str) -> Pool {
    Pool::new(cidr.parse().unwrap(), None).unwrap()
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn opts(range: Option<&str>, aux: &[&str]) -> PoolOptions {
    PoolOptions { range: range.map(|r| r.parse().unwrap()), aux: aux.iter().map(|a| ip4(a)).collect() }
}

fn json<T: Serialize + DeserializeOwned>(t: &T) -> T {
    serde_json::from_str(&serde_json::to_string(t).unwrap()).unwrap()
}

// ---- The allocator as it was ----

#[test]
fn allocates_hosts_skipping_gateway() {
    let mut p = pool("10.0.0.0/29"); // hosts .1-.6, gateway .1
    let got: Vec<_> = (0..5).map(|_| p.allocate().unwrap()).collect();
    assert_eq!(got[0], Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(got[4], Ipv4Addr::new(10, 0, 0, 6));
    assert_eq!(p.allocate(), Err(IpamError::Exhausted { subnet: p.subnet().into(), used: 5 }));
    assert_eq!(p.capacity(), 5);
    assert_eq!(p.available(), 0);
}

#[test]
fn freed_address_is_not_reused_at_once() {
    let mut p = pool("10.0.0.0/24");
    let a = p.allocate().unwrap();
    assert!(p.release(a));
    let b = p.allocate().unwrap();
    assert_ne!(a, b);
}

#[test]
fn reserve_checks() {
    let mut p = pool("10.0.0.0/24");
    assert!(matches!(p.reserve(ip4("10.0.1.5")), Err(IpamError::OutOfRange { .. })));
    assert!(matches!(p.reserve(ip4("10.0.0.0")), Err(IpamError::Reserved { what: "network", .. })));
    assert!(matches!(p.reserve(ip4("10.0.0.255")), Err(IpamError::Reserved { what: "broadcast", .. })));
    assert!(matches!(p.reserve(ip4("10.0.0.1")), Err(IpamError::Reserved { what: "gateway", .. })));
    p.reserve(ip4("10.0.0.9")).unwrap();
    assert!(matches!(p.reserve(ip4("10.0.0.9")), Err(IpamError::Taken { .. })));
}

#[test]
fn bad_pools() {
    assert!(matches!(Pool::new("10.0.0.0/31".parse().unwrap(), None), Err(IpamError::TooSmall { .. })));
    let gw = Some(ip4("10.0.1.1"));
    assert!(matches!(Pool::new("10.0.0.0/24".parse().unwrap(), gw), Err(IpamError::BadGateway { .. })));
    let p = Pool::new("10.0.0.77/24".parse().unwrap(), None).unwrap();
    assert_eq!(p.subnet().to_string(), "10.0.0.0/24");
}

#[test]
fn ipv6_pool() {
    let mut p = Pool6::new("fd00:89::/64".parse().unwrap(), None).unwrap();
    assert_eq!(p.gateway(), ip6("fd00:89::1"));
    assert_eq!(p.allocate().unwrap(), ip6("fd00:89::2"));
    let a = ip6("fd00:89::2:5");
    p.reserve(a).unwrap();
    assert!(matches!(p.reserve(a), Err(IpamError::Taken { .. })));
    assert!(matches!(p.reserve(ip6("fd00:89::")), Err(IpamError::Reserved { what: "subnet-router", .. })));
    assert!(matches!(p.reserve(ip6("fd00:89::1")), Err(IpamError::Reserved { what: "gateway", .. })));
    assert!(matches!(p.reserve(ip6("fd00:90::5")), Err(IpamError::OutOfRange { .. })));
    assert!(p.release(a));
    assert_eq!(p.in_use(), 1);
    assert!(matches!(Pool6::new("fd00::/121".parse().unwrap(), None), Err(IpamError::TooSmall { .. })));
    assert!(matches!(Pool6::new("fd00::/64".parse().unwrap(), Some(ip6("fd00::"))), Err(IpamError::BadGateway { .. })));
    // A /120: 255 hosts minus the gateway, then exhausted.
    let mut small = Pool6::new("fd00:1::/120".parse().unwrap(), None).unwrap();
    for _ in 0..254 {
        small.allocate().unwrap();
    }
    assert!(matches!(small.allocate(), Err(IpamError::Exhausted { .. })));
    // The all-ones host is an ordinary IPv6 address.
    assert!(small.is_used(ip6("fd00:1::ff")));
}

// ---- Options: allocation range and auxiliary addresses ----

#[test]
fn range_and_aux() {
    let o = opts(Some("10.0.0.128/25"), &["10.0.0.130", "10.0.0.200", "10.0.0.7", "10.0.0.130"]);
    let mut p = Pool::with_options("10.0.0.0/24".parse().unwrap(), None, o).unwrap();
    assert_eq!(p.range(), Some("10.0.0.128/25".parse().unwrap()));
    assert_eq!(p.aux(), vec![ip4("10.0.0.7"), ip4("10.0.0.130"), ip4("10.0.0.200")]);
    assert_eq!(p.options().aux.len(), 3, "duplicates folded");
    let got: Vec<_> = (0..3).map(|_| p.allocate().unwrap()).collect();
    assert_eq!(got, [ip4("10.0.0.128"), ip4("10.0.0.129"), ip4("10.0.0.131")]);
    // Static addresses anywhere in the subnet, but never an auxiliary one.
    p.reserve(ip4("10.0.0.5")).unwrap();
    assert_eq!(
        p.reserve(ip4("10.0.0.7")),
        Err(IpamError::Reserved { addr: ip4("10.0.0.7").into(), what: "auxiliary", subnet: p.subnet().into() })
    );
    assert!(matches!(p.check_assignable(ip4("10.0.0.200")), Err(IpamError::Reserved { what: "auxiliary", .. })));
    assert_eq!(p.capacity(), 254 - 1 - 3);
    assert_eq!(p.in_use(), 4);
    assert_eq!(p.available(), 250 - 4);
    assert_eq!(p.range_capacity(), 127 - 2); // .128-.254 minus two aux
    assert_eq!(p.range_available(), 125 - 3);
}

#[test]
fn range_exhaustion_names_the_range() {
    let range: Ipv4Net = "10.0.0.252/30".parse().unwrap();
    let mut p = Pool::with_options("10.0.0.0/24".parse().unwrap(), None, PoolOptions { range: Some(range), aux: vec![] }).unwrap();
    assert_eq!(p.range_capacity(), 3); // .252-.254; .255 is the broadcast address
    for _ in 0..3 {
        p.allocate().unwrap();
    }
    p.reserve(ip4("10.0.0.10")).unwrap();
    assert_eq!(p.allocate(), Err(IpamError::Exhausted { subnet: range.into(), used: 3 }));
    assert_eq!(p.range_available(), 0);
    assert_eq!(p.available(), 253 - 4);
    assert!(p.release(ip4("10.0.0.253")));
    assert_eq!(p.allocate().unwrap(), ip4("10.0.0.253"));
}

#[test]
fn range_with_a_gateway_inside() {
    let o = PoolOptions { range: Some("10.0.0.0/30".parse().unwrap()), aux: vec![] };
    let mut p = Pool::with_options("10.0.0.0/24".parse().unwrap(), None, o).unwrap();
    assert_eq!(p.range_capacity(), 2); // .1 is the gateway, .0 the network
    assert_eq!(p.allocate().unwrap(), ip4("10.0.0.2"));
    assert_eq!(p.allocate().unwrap(), ip4("10.0.0.3"));
    assert!(p.allocate().is_err());
}

#[test]
fn option_errors() {
    let net: Ipv4Net = "10.0.0.0/24".parse().unwrap();
    let with = |o: PoolOptions| Pool::with_options(net, None, o);
    let reason = |e: SetupError| match e {
        SetupError::BadRange { reason, .. } | SetupError::BadAux { reason, .. } => reason,
        e => panic!("unexpected {e:?}"),
    };
    assert!(reason(with(opts(Some("10.0.1.0/25"), &[])).unwrap_err()).contains("not inside"));
    assert!(reason(with(opts(Some("10.0.0.0/23"), &[])).unwrap_err()).contains("not inside"));
    assert!(reason(with(opts(Some("10.0.0.0/32"), &[])).unwrap_err()).contains("no host address"));
    assert!(reason(with(opts(Some("10.0.0.1/32"), &[])).unwrap_err()).contains("leaves no address"));
    assert!(reason(with(opts(Some("10.0.0.2/31"), &["10.0.0.2", "10.0.0.3"])).unwrap_err()).contains("leaves no address"));
    assert!(reason(with(opts(None, &["10.0.1.1"])).unwrap_err()).contains("outside"));
    assert!(reason(with(opts(None, &["10.0.0.1"])).unwrap_err()).contains("gateway"));
    assert!(reason(with(opts(None, &["10.0.0.0"])).unwrap_err()).contains("network"));
    assert!(reason(with(opts(None, &["10.0.0.255"])).unwrap_err()).contains("broadcast"));
    let e = with(opts(Some("10.0.1.0/25"), &[])).unwrap_err();
    assert_eq!(e.to_string(), "IP range 10.0.1.0/25 cannot be used in subnet 10.0.0.0/24: it is not inside the subnet");
    assert!(matches!(
        Pool::with_options("10.0.0.0/31".parse().unwrap(), None, PoolOptions::default()),
        Err(SetupError::Ipam(IpamError::TooSmall { .. }))
    ));
    // A /30 whose only host besides the gateway is auxiliary has nothing to hand out.
    let e = Pool::with_options("10.0.0.0/30".parse().unwrap(), None, opts(None, &["10.0.0.2"])).unwrap_err();
    assert!(matches!(e, SetupError::BadRange { .. }), "{e}");
}

#[test]
fn ipv6_options_and_usage() {
    let o = Pool6Options { range: Some("fd00:89::100/120".parse().unwrap()), aux: vec![ip6("fd00:89::100"), ip6("fd00:89::7")] };
    let mut p = Pool6::with_options("fd00:89::/64".parse().unwrap(), None, o).unwrap();
    assert_eq!(p.allocate().unwrap(), ip6("fd00:89::101"));
    assert!(matches!(p.reserve(ip6("fd00:89::7")), Err(IpamError::Reserved { what: "auxiliary", .. })));
    p.reserve(ip6("fd00:89::2")).unwrap();
    // A /64: 2^64 - 1 hosts (not the subnet-router address), minus the gateway and two aux.
    assert_eq!(p.capacity(), u64::MAX - 3);
    assert_eq!(p.in_use(), 2);
    assert_eq!(p.available(), u64::MAX - 5);
    assert_eq!(p.range_capacity(), 255);
    assert_eq!(p.range_available(), 254);
    let big = Pool6::new("fd00:89::/48".parse().unwrap(), None).unwrap();
    assert_eq!((big.capacity(), big.available(), big.range_capacity()), (u64::MAX, u64::MAX, u64::MAX));
    let whole = Pool6::new("::/0".parse().unwrap(), None).unwrap();
    assert_eq!(whole.capacity(), u64::MAX);
    let e = Pool6::with_options(
        "fd00:89::/64".parse().unwrap(),
        None,
        Pool6Options { range: Some("fd00:88::/64".parse().unwrap()), aux: vec![] },
    )
    .unwrap_err();
    assert!(matches!(e, SetupError::BadRange { .. }));
    let e = Pool6::with_options("fd00:89::/64".parse().unwrap(), None, Pool6Options { range: None, aux: vec![ip6("fd00:89::")] });
    assert!(matches!(e, Err(SetupError::BadAux { .. })));
}

// ---- Leases ----

#[test]
fn leases_release_owner_and_gc() {
    let mut p = pool("10.0.0.0/24");
    let a1 = p.allocate_for("a").unwrap();
    let b1 = p.allocate_for("b").unwrap();
    p.reserve_for(ip4("10.0.0.50"), "a").unwrap();
    let anon = p.allocate().unwrap();
    p.reserve(ip4("10.0.0.60")).unwrap();
    assert!(matches!(p.reserve_for(ip4("10.0.0.50"), "c"), Err(IpamError::Taken { .. })));
    assert!(matches!(p.reserve_for(ip4("10.0.0.1"), "c"), Err(IpamError::Reserved { .. })));
    assert_eq!(p.leases().collect::<Vec<_>>(), vec![(a1, "a"), (b1, "b"), (ip4("10.0.0.50"), "a")]);
    assert_eq!(p.owner(a1), Some("a"));
    assert_eq!(p.owner(anon), None);
    assert_eq!(p.owner(ip4("10.0.0.99")), None);
    assert_eq!(p.used().count(), 5);

    assert_eq!(p.release_owner("a"), vec![a1, ip4("10.0.0.50")]);
    assert!(p.release_owner("a").is_empty());
    assert!(!p.is_used(a1));
    let c1 = p.allocate_for("c").unwrap();
    let live = |o: &str| o == "c";
    assert_eq!(p.gc(&live), vec![b1]);
    assert!(p.gc(&live).is_empty());
    assert_eq!(p.leases().collect::<Vec<_>>(), vec![(c1, "c")]);
    // Addresses without an owner are not garbage.
    assert!(p.is_used(anon) && p.is_used(ip4("10.0.0.60")));
    assert_eq!(p.in_use(), 3);
    // release() drops the lease too.
    assert!(p.release(c1));
    assert_eq!(p.leases().count(), 0);

    let mut p6 = Pool6::new("fd00::/64".parse().unwrap(), None).unwrap();
    let x = p6.allocate_for("x").unwrap();
    p6.reserve_for(ip6("fd00::99"), "y").unwrap();
    assert_eq!(p6.gc(&|o| o == "y"), vec![x]);
    assert_eq!(p6.leases().collect::<Vec<_>>(), vec![(ip6("fd00::99"), "y")]);
}

// ---- Snapshots ----

#[test]
fn snapshot_keeps_cursor_and_leases() {
    let o = opts(Some("10.0.0.0/25"), &["10.0.0.3"]);
    let mut p = Pool::with_options("10.0.0.0/24".parse().unwrap(), Some(ip4("10.0.0.254")), o).unwrap();
    let a = p.allocate_for("web").unwrap();
    let b = p.allocate().unwrap();
    p.reserve_for(ip4("10.0.0.200"), "db").unwrap();
    assert!(p.release(b));
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(
        text,
        r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.254","range":"10.0.0.0/25","aux":["10.0.0.3"],"cursor":"10.0.0.3","used":[{"addr":"10.0.0.1","owner":"web"},{"addr":"10.0.0.200","owner":"db"}]}"#
    );
    let mut q: Pool = serde_json::from_str(&text).unwrap();
    assert_eq!(q, p);
    assert_eq!(q.owner(a), Some("web"));
    // The freed address is still not handed out at once after a restart.
    assert_eq!(q.allocate().unwrap(), ip4("10.0.0.4"));
    assert_eq!(Pool::restore(p.snapshot()).unwrap(), p);

    let mut p6 = Pool6::new("fd00:1::/64".parse().unwrap(), None).unwrap();
    let x = p6.allocate_for("x").unwrap();
    p6.release(x);
    let mut q6 = json(&p6);
    assert_eq!(q6, p6);
    assert_ne!(q6.allocate().unwrap(), x);
    // Plain pools without options serialize without the optional fields.
    assert_eq!(
        serde_json::to_string(&pool("10.1.0.0/24")).unwrap(),
        r#"{"subnet":"10.1.0.0/24","gateway":"10.1.0.1","cursor":"10.1.0.1","used":[]}"#
    );
}

fn snap(subnet: &str) -> PoolSnapshot {
    let mut p = Pool::with_options(subnet.parse().unwrap(), None, opts(None, &[])).unwrap();
    p.allocate_for("a").unwrap();
    p.snapshot()
}

#[track_caller]
fn bad_snapshot(s: PoolSnapshot, needle: &str) {
    match Pool::restore(s.clone()) {
        Err(SetupError::BadSnapshot { reason, .. }) => assert!(reason.contains(needle), "{reason:?} lacks {needle:?}"),
        other => panic!("{s:?} gave {other:?}"),
    }
    let text = serde_json::to_string(&s).unwrap();
    let e = serde_json::from_str::<Pool>(&text).unwrap_err();
    assert!(e.to_string().contains(needle), "{e}");
}

#[test]
fn restore_refuses_bad_snapshots() {
    let good = snap("10.0.0.0/24");
    Pool::restore(good.clone()).unwrap();
    let lease = |a: &str, o: Option<&str>| Lease { addr: ip4(a), owner: o.map(str::to_owned) };

    let mut s = good.clone();
    s.used.push(lease("10.0.1.9", Some("b")));
    bad_snapshot(s, "outside subnet");
    let mut s = good.clone();
    s.used.push(lease("10.0.0.2", Some("b")));
    bad_snapshot(s, "listed twice");
    let mut s = good.clone();
    s.used.push(lease("10.0.0.1", None));
    bad_snapshot(s, "gateway");
    let mut s = good.clone();
    s.used.push(lease("10.0.0.255", None));
    bad_snapshot(s, "broadcast");
    let mut s = good.clone();
    s.aux = vec![ip4("10.0.0.2")];
    bad_snapshot(s, "auxiliary");
    let mut s = good.clone();
    s.aux = vec![ip4("10.0.0.9"), ip4("10.0.0.9")];
    bad_snapshot(s, "listed twice");
    let mut s = good.clone();
    s.aux = vec![ip4("10.0.3.9")];
    bad_snapshot(s, "outside");
    let mut s = good.clone();
    s.gateway = ip4("10.0.1.1");
    bad_snapshot(s, "gateway 10.0.1.1");
    let mut s = good.clone();
    s.gateway = ip4("10.0.0.255");
    bad_snapshot(s, "gateway");
    let mut s = good.clone();
    s.subnet = "10.0.0.5/24".parse().unwrap();
    bad_snapshot(s, "host bits");
    let mut s = good.clone();
    s.subnet = "10.0.0.0/31".parse().unwrap();
    s.gateway = ip4("10.0.0.1");
    bad_snapshot(s, "too small");
    let mut s = good.clone();
    s.range = Some("10.0.1.0/25".parse().unwrap());
    bad_snapshot(s, "not inside");
    let mut s = good.clone();
    s.range = Some("10.0.0.129/25".parse().unwrap());
    bad_snapshot(s, "host bits");
    let mut s = good.clone();
    s.cursor = ip4("10.0.0.0");
    bad_snapshot(s, "cursor");
    let mut s = good.clone();
    s.range = Some("10.0.0.128/25".parse().unwrap());
    s.cursor = ip4("10.0.0.5");
    bad_snapshot(s, "cursor");
    let mut s = good;
    s.cursor = ip4("192.168.0.1");
    bad_snapshot(s, "cursor");
}

#[test]
fn restore_refuses_bad_json() {
    let ok = r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","cursor":"10.0.0.2","used":[{"addr":"10.0.0.2"}]}"#;
    let p: Pool = serde_json::from_str(ok).unwrap();
    assert!(p.is_used(ip4("10.0.0.2")) && p.owner(ip4("10.0.0.2")).is_none());
    for bad in [
        r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","cursor":"10.0.0.2","used":[],"extra":1}"#,
        r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","used":[]}"#,
        r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","cursor":"10.0.0.2"}"#,
        r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","cursor":"10.0.0.2","used":[{"addr":"10.0.0.2","who":"x"}]}"#,
        r#"{"subnet":"10.0.0.0/24","gateway":"fd00::1","cursor":"10.0.0.2","used":[]}"#,
        r#"{"subnet":"10.0.0.0/33","gateway":"10.0.0.1","cursor":"10.0.0.2","used":[]}"#,
        r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","cursor":"10.0.0.2","used":[{"addr":"10.0.0.2"},{"addr":"10.0.0.2","owner":"x"}]}"#,
        r#"{"subnet":"fd00::/64","gateway":"fd00::1","cursor":"fd00::2","used":[]}"#,
        r#"[]"#,
        r#"null"#,
    ] {
        assert!(serde_json::from_str::<Pool>(bad).is_err(), "{bad}");
    }
    let six = r#"{"subnet":"fd00::/64","gateway":"fd00::1","cursor":"fd00::2","used":[{"addr":"fd00::1"}]}"#;
    let e = serde_json::from_str::<Pool6>(six).unwrap_err();
    assert!(e.to_string().contains("gateway"), "{e}");
    let six = r#"{"subnet":"fd00::/64","gateway":"fd00::1","range":"fd00::100/120","cursor":"fd00::2","used":[]}"#;
    assert!(serde_json::from_str::<Pool6>(six).unwrap_err().to_string().contains("cursor"));
}

// ---- Properties against a model ----

/// The pool API, shared by both families, in terms of host numbers of a test subnet.
trait Api: Clone + PartialEq + Debug + Serialize + DeserializeOwned {
    type A: Copy + Ord + Debug;
    fn addr(host: u16) -> Self::A;
    fn allocate_for(&mut self, owner: Option<&str>) -> Result<Self::A, IpamError>;
    fn reserve_for(&mut self, a: Self::A, owner: Option<&str>) -> Result<(), IpamError>;
    fn release(&mut self, a: Self::A) -> bool;
    fn release_owner(&mut self, owner: &str) -> Vec<Self::A>;
    fn gc(&mut self, live: &dyn Fn(&str) -> bool) -> Vec<Self::A>;
    fn leases(&self) -> Vec<(Self::A, String)>;
    fn used(&self) -> Vec<Self::A>;
    fn counts(&self) -> [u64; 5];
    fn snapshot_restore(&self) -> Self;
}

macro_rules! api {
    ($Pool:ident, $A:ty, $addr:expr) => {
        impl Api for $Pool {
            type A = $A;
            fn addr(host: u16) -> $A {
                $addr(host)
            }
            fn allocate_for(&mut self, owner: Option<&str>) -> Result<$A, IpamError> {
                match owner {
                    Some(o) => $Pool::allocate_for(self, o),
                    None => self.allocate(),
                }
            }
            fn reserve_for(&mut self, a: $A, owner: Option<&str>) -> Result<(), IpamError> {
                match owner {
                    Some(o) => $Pool::reserve_for(self, a, o),
                    None => self.reserve(a),
                }
            }
            fn release(&mut self, a: $A) -> bool {
                $Pool::release(self, a)
            }
            fn release_owner(&mut self, owner: &str) -> Vec<$A> {
                $Pool::release_owner(self, owner)
            }
            fn gc(&mut self, live: &dyn Fn(&str) -> bool) -> Vec<$A> {
                $Pool::gc(self, live)
            }
            fn leases(&self) -> Vec<($A, String)> {
                $Pool::leases(self).map(|(a, o)| (a, o.to_owned())).collect()
            }
            fn used(&self) -> Vec<$A> {
                $Pool::used(self).collect()
            }
            fn counts(&self) -> [u64; 5] {
                [self.capacity(), self.in_use(), self.available(), self.range_capacity(), self.range_available()]
            }
            fn snapshot_restore(&self) -> $Pool {
                $Pool::restore(self.snapshot()).unwrap()
            }
        }
    };
}

api!(Pool, Ipv4Addr, |h: u16| Ipv4Addr::from(u32::from(ip4("10.9.0.0")) + u32::from(h)));
api!(Pool6, Ipv6Addr, |h: u16| Ipv6Addr::from(u128::from(ip6("fd00:9::")) + u128::from(h)));

/// The v4 pool under test: 10.9.0.0/27 (hosts 1-30), gateway .1, range .16/28, aux .5 and .20.
fn v4_pool() -> Pool {
    Pool::with_options("10.9.0.0/27".parse().unwrap(), None, opts(Some("10.9.0.16/28"), &["10.9.0.5", "10.9.0.20"])).unwrap()
}

/// What v4_pool is, in host numbers.
fn v4_model() -> Model {
    Model::new(1..=30, 1, 16..=30, &[5, 20])
}

/// The v6 pool under test: fd00:9::/120 (hosts 1-255), gateway ::30 inside the range ::20/123
/// (hosts 32-63), aux ::3 and ::28.
fn v6_pool() -> Pool6 {
    let o = Pool6Options { range: Some("fd00:9::20/123".parse().unwrap()), aux: vec![ip6("fd00:9::3"), ip6("fd00:9::28")] };
    Pool6::with_options("fd00:9::/120".parse().unwrap(), Some(ip6("fd00:9::30")), o).unwrap()
}

fn v6_model() -> Model {
    Model::new(1..=255, 0x30, 0x20..=0x3f, &[3, 0x28])
}

const OWNERS: [&str; 4] = ["a", "b", "c", "d"];

/// The pool as a model: host numbers in use with their owners, and the serial cursor.
#[derive(Debug, Clone)]
struct Model {
    hosts: std::ops::RangeInclusive<u16>,
    gateway: u16,
    range: std::ops::RangeInclusive<u16>,
    aux: BTreeSet<u16>,
    used: BTreeMap<u16, Option<String>>,
    cursor: u16,
}

impl Model {
    fn new(hosts: std::ops::RangeInclusive<u16>, gateway: u16, range: std::ops::RangeInclusive<u16>, aux: &[u16]) -> Model {
        let cursor = *range.start();
        Model { hosts, gateway, range, aux: aux.iter().copied().collect(), used: BTreeMap::new(), cursor }
    }

    fn assignable(&self, h: u16) -> bool {
        self.hosts.contains(&h) && h != self.gateway && !self.aux.contains(&h)
    }

    fn free(&self, h: u16) -> bool {
        self.assignable(h) && !self.used.contains_key(&h)
    }

    fn allocate(&mut self, owner: Option<&str>) -> Option<u16> {
        let (lo, hi) = (*self.range.start(), *self.range.end());
        let found = (self.cursor..=hi).chain(lo..=self.cursor).find(|h| self.free(*h))?;
        self.used.insert(found, owner.map(str::to_owned));
        self.cursor = if found == hi { lo } else { found + 1 };
        Some(found)
    }

    fn release_where(&mut self, pred: impl Fn(&str) -> bool) -> Vec<u16> {
        let gone: Vec<u16> = self.used.iter().filter(|(_, o)| o.as_deref().is_some_and(&pred)).map(|(h, _)| *h).collect();
        for h in &gone {
            self.used.remove(h);
        }
        gone
    }

    fn counts(&self) -> [u64; 5] {
        let capacity = self.hosts.clone().filter(|h| self.assignable(*h)).count() as u64;
        let range_capacity = self.range.clone().filter(|h| self.assignable(*h)).count() as u64;
        let range_used = self.used.keys().filter(|h| self.range.contains(h)).count() as u64;
        let in_use = self.used.len() as u64;
        [capacity, in_use, capacity - in_use, range_capacity, range_capacity - range_used]
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(Option<usize>),
    Reserve(u16, Option<usize>),
    Release(u16),
    ReleaseOwner(usize),
    Gc(u8),
    Restore,
}

fn ops(hosts: u16) -> impl Strategy<Value = Vec<Op>> {
    let owner = prop::option::of(0..OWNERS.len());
    prop::collection::vec(
        prop_oneof![
            3 => owner.clone().prop_map(Op::Allocate),
            2 => (0..hosts, owner).prop_map(|(h, o)| Op::Reserve(h, o)),
            2 => (0..hosts).prop_map(Op::Release),
            1 => (0..OWNERS.len()).prop_map(Op::ReleaseOwner),
            1 => any::<u8>().prop_map(Op::Gc),
            1 => Just(Op::Restore),
        ],
        1..150,
    )
}

fn live(mask: u8) -> impl Fn(&str) -> bool {
    move |o: &str| OWNERS.iter().position(|x| *x == o).is_some_and(|i| mask & (1 << i) != 0)
}

/// Runs `ops` on the pool and the model side by side; any disagreement is a failure.
fn check_model<P: Api>(mut p: P, mut m: Model, ops: &[Op]) -> Result<(), TestCaseError> {
    let addrs = |hs: Vec<u16>| hs.into_iter().map(P::addr).collect::<Vec<_>>();
    for op in ops {
        match op {
            Op::Allocate(o) => {
                let owner = o.map(|i| OWNERS[i]);
                match (p.allocate_for(owner), m.allocate(owner)) {
                    (Ok(a), Some(h)) => prop_assert_eq!(a, P::addr(h)),
                    (Err(IpamError::Exhausted { .. }), None) => {}
                    (got, want) => prop_assert!(false, "allocate: pool {:?}, model {:?}", got, want),
                }
            }
            Op::Reserve(h, o) => {
                let owner = o.map(|i| OWNERS[i]);
                let got = p.reserve_for(P::addr(*h), owner);
                if m.free(*h) {
                    prop_assert_eq!(got, Ok(()));
                    m.used.insert(*h, owner.map(str::to_owned));
                } else if m.used.contains_key(h) {
                    prop_assert!(matches!(got, Err(IpamError::Taken { .. })), "{:?}", got);
                } else {
                    prop_assert!(matches!(got, Err(IpamError::OutOfRange { .. } | IpamError::Reserved { .. })), "{:?}", got);
                }
            }
            Op::Release(h) => prop_assert_eq!(p.release(P::addr(*h)), m.used.remove(h).is_some()),
            Op::ReleaseOwner(i) => {
                let want = m.release_where(|o| o == OWNERS[*i]);
                prop_assert_eq!(p.release_owner(OWNERS[*i]), addrs(want));
            }
            Op::Gc(mask) => {
                let alive = live(*mask);
                let want = m.release_where(|o| !alive(o));
                prop_assert_eq!(p.gc(&alive), addrs(want));
            }
            Op::Restore => {
                let q = p.snapshot_restore();
                prop_assert_eq!(&q, &p);
                let r: P = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
                prop_assert_eq!(&r, &p);
                p = r;
            }
        }
        prop_assert_eq!(p.counts(), m.counts());
        prop_assert_eq!(p.used(), addrs(m.used.keys().copied().collect()));
        let leases: Vec<_> = m.used.iter().filter_map(|(h, o)| Some((P::addr(*h), o.clone()?))).collect();
        prop_assert_eq!(p.leases(), leases);
    }
    Ok(())
}

/// The outcome of one operation, comparable across two pools.
fn apply<P: Api>(p: &mut P, op: &Op) -> String {
    match op {
        Op::Allocate(o) => format!("{:?}", p.allocate_for(o.map(|i| OWNERS[i]))),
        Op::Reserve(h, o) => format!("{:?}", p.reserve_for(P::addr(*h), o.map(|i| OWNERS[i]))),
        Op::Release(h) => format!("{:?}", p.release(P::addr(*h))),
        Op::ReleaseOwner(i) => format!("{:?}", p.release_owner(OWNERS[*i])),
        Op::Gc(mask) => format!("{:?}", p.gc(&live(*mask))),
        Op::Restore => String::new(),
    }
}

/// Snapshot → JSON → restore, then go on: the same as going on without the restart.
fn check_restart<P: Api>(mut p: P, before: &[Op], after: &[Op]) -> Result<(), TestCaseError> {
    for op in before {
        apply(&mut p, op);
    }
    let mut q: P = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    prop_assert_eq!(&q, &p);
    for op in after {
        prop_assert_eq!(apply(&mut p, op), apply(&mut q, op), "after {:?}", op);
    }
    prop_assert_eq!(q, p);
    Ok(())
}

proptest! {
    /// The plain pool of before (no options, no owners) against a set: no address twice,
    /// never a reserved one, exhausted only when full.
    #[test]
    fn plain_pool_matches_set(ops in prop::collection::vec(prop_oneof![
        Just(None),
        (0u8..16, any::<bool>()).prop_map(Some),
    ], 1..200)) {
        let mut p = pool("10.9.0.0/28");
        let mut model = BTreeSet::new();
        for op in ops {
            match op {
                None => match p.allocate() {
                    Ok(a) => {
                        prop_assert!(p.check_assignable(a).is_ok());
                        prop_assert!(model.insert(a));
                    }
                    Err(IpamError::Exhausted { .. }) => prop_assert_eq!(model.len() as u64, p.capacity()),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Some((h, true)) => {
                    let a = Ipv4Addr::new(10, 9, 0, h);
                    let ok = p.reserve(a).is_ok();
                    let expect = p.check_assignable(a).is_ok() && !model.contains(&a);
                    prop_assert_eq!(ok, expect);
                    if ok { model.insert(a); }
                }
                Some((h, false)) => {
                    let a = Ipv4Addr::new(10, 9, 0, h);
                    prop_assert_eq!(p.release(a), model.remove(&a));
                }
            }
            prop_assert_eq!(p.in_use(), model.len() as u64);
        }
    }

    /// IPv4 with a range, aux addresses, owners, gc and restarts against the model, cursor and all.
    #[test]
    fn v4_matches_model(ops in ops(40)) {
        check_model(v4_pool(), v4_model(), &ops)?;
    }

    #[test]
    fn v6_matches_model(ops in ops(300)) {
        check_model(v6_pool(), v6_model(), &ops)?;
    }

    #[test]
    fn v4_restart_changes_nothing(before in ops(40), after in ops(40)) {
        check_restart(v4_pool(), &before, &after)?;
    }

    #[test]
    fn v6_restart_changes_nothing(before in ops(300), after in ops(300)) {
        check_restart(v6_pool(), &before, &after)?;
    }

    /// Any snapshot, however made up, restores to exactly what it says or is refused: never a
    /// panic, never a pool that differs from its snapshot.
    #[test]
    fn made_up_snapshots_restore_faithfully_or_not_at_all(
        prefix in 24u8..=31,
        gateway in 0u32..64,
        range in prop::option::of((0u32..80, 24u8..=32)),
        aux in prop::collection::vec(0u32..80, 0..3),
        cursor in 0u32..64,
        used in prop::collection::vec((0u32..80, prop::option::of(0..OWNERS.len())), 0..5),
    ) {
        let at = |h: u32| Ipv4Addr::from(u32::from(ip4("10.0.0.0")) + h);
        let net = |h: u32, len: u8| Ipv4Net::new(at(h), len).unwrap().trunc();
        let s = PoolSnapshot {
            subnet: net(0, prefix),
            gateway: at(gateway),
            range: range.map(|(h, len)| net(h, len)),
            aux: aux.into_iter().map(at).collect(),
            cursor: at(cursor),
            used: used.into_iter().map(|(h, o)| Lease { addr: at(h), owner: o.map(|i| OWNERS[i].to_owned()) }).collect(),
        };
        if let Ok(p) = Pool::restore(s.clone()) {
            let mut want = s.clone();
            want.aux.sort();
            want.used.sort_by_key(|l| l.addr);
            prop_assert_eq!(p.snapshot(), want);
            prop_assert_eq!(p.in_use(), s.used.len() as u64);
            for l in &s.used {
                prop_assert!(p.check_assignable(l.addr).is_ok());
            }
            prop_assert!(p.range_available() <= p.range_capacity() && p.available() <= p.capacity());
            let mut p = p;
            if let Ok(a) = p.allocate() {
                prop_assert!(p.check_assignable(a).is_ok());
                prop_assert!(!s.used.iter().any(|l| l.addr == a));
            }
        }
    }

    /// A real snapshot with one thing changed restores to exactly what it says or is refused;
    /// a duplicate or an unassignable address in use is always refused.
    #[test]
    fn mutated_snapshots_restore_faithfully_or_not_at_all(ops in ops(40), mutation in 0u8..7, h in 0u16..40, o in 0..OWNERS.len()) {
        let mut p = v4_pool();
        for op in &ops {
            apply(&mut p, op);
        }
        let mut s = p.snapshot();
        let addr = <Pool as Api>::addr(h);
        let must_fail = match mutation {
            0 => { s.used.push(Lease { addr, owner: Some(OWNERS[o].to_owned()) }); p.is_used(addr) || p.check_assignable(addr).is_err() }
            1 => match s.used.first().cloned() { Some(l) => { s.used.push(l); true } None => false },
            2 => { s.gateway = addr; false }
            3 => { s.cursor = addr; false }
            4 => { s.aux.push(addr); p.is_used(addr) || p.check_assignable(addr).is_err() }
            5 => { s.range = Some(Ipv4Net::new(addr, 24 + (o as u8) * 2).unwrap().trunc()); false }
            _ => { s.used.reverse(); false }
        };
        match Pool::restore(s.clone()) {
            Ok(q) => {
                prop_assert!(!must_fail, "accepted {:?}", s);
                let mut want = s.clone();
                want.aux.sort();
                want.used.sort_by_key(|l| l.addr);
                prop_assert_eq!(q.snapshot(), want);
                for a in q.used() {
                    prop_assert!(q.check_assignable(a).is_ok());
                }
            }
            Err(e) => prop_assert!(matches!(e, SetupError::BadSnapshot { .. }), "{:?}", e),
        }
    }
}

#[test]
fn special_subnets_are_refused_with_options() {
    for bad in [
        "224.0.0.0/24",
        "239.1.0.0/16",
        "255.255.255.0/24",
        "240.0.0.0/8",
        "127.0.0.0/24",
        "169.254.1.0/24",
        "0.0.0.0/24",
        "0.0.0.0/0",
        "192.0.0.0/2",
    ] {
        let e = Pool::with_options(bad.parse().unwrap(), None, PoolOptions::default()).unwrap_err();
        assert!(matches!(e, SetupError::UnusableSubnet { .. }), "{bad}: {e}");
        assert!(e.to_string().contains("choose a unicast subnet"), "{e}");
    }
    for bad in ["ff02::/64", "fe80::/64", "::/64", "::ffff:0:0/112", "fec0::/64"] {
        let e = Pool6::with_options(bad.parse().unwrap(), None, Pool6Options::default()).unwrap_err();
        assert!(matches!(e, SetupError::UnusableSubnet { .. }), "{bad}: {e}");
    }
    for good in ["10.89.0.0/24", "172.16.0.0/12", "192.168.1.0/24", "100.64.0.0/24", "223.255.255.0/24", "1.0.0.0/24"] {
        Pool::with_options(good.parse().unwrap(), None, PoolOptions::default()).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for good in ["fd00:1::/64", "2001:db8::/64"] {
        Pool6::with_options(good.parse().unwrap(), None, Pool6Options::default()).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    // Pools restored from a state file are not re-judged (`new` does not check).
    Pool::new("127.0.0.0/24".parse().unwrap(), None).unwrap();
}
