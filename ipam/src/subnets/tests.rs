use proptest::prelude::*;

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| net(s)).collect()
}

fn ula() -> Ipv6Net {
    SubnetPools::ula48([0x12, 0x34, 0x56, 0x78, 0x9a])
}

fn defaults() -> SubnetPools {
    SubnetPools::with_defaults(ula()).unwrap()
}

fn v4(p: &SubnetPools, in_use: &[&str], routed: &[&str]) -> Result<String, SetupError> {
    p.next_free_v4(&nets(in_use), &nets(routed)).map(|n| n.to_string())
}

fn v6(p: &SubnetPools, in_use: &[&str], routed: &[&str]) -> Result<String, SetupError> {
    p.next_free_v6(&nets(in_use), &nets(routed)).map(|n| n.to_string())
}

#[test]
fn defaults_carve_the_first_subnets() {
    let p = defaults();
    assert_eq!(ula().to_string(), "fd12:3456:789a::/48");
    assert_eq!(p.pools().len(), 2);
    assert_eq!(p.pools()[0].subnet_count(), 256);
    assert_eq!(p.pools()[1].subnet_count(), 65536);
    assert_eq!(v4(&p, &[], &[]).unwrap(), "10.89.0.0/24");
    assert_eq!(v6(&p, &[], &[]).unwrap(), "fd12:3456:789a::/64");
    // Subnets of the other family do not get in the way.
    assert_eq!(v4(&p, &["fd12:3456:789a::/64"], &["fd12:3456:789a::/48"]).unwrap(), "10.89.0.0/24");
    assert_eq!(v6(&p, &["10.89.0.0/24"], &["10.0.0.0/8"]).unwrap(), "fd12:3456:789a::/64");
}

#[test]
fn skips_subnets_in_use() {
    let p = defaults();
    assert_eq!(v4(&p, &["10.89.0.0/24", "10.89.1.0/24", "10.89.3.0/24"], &[]).unwrap(), "10.89.2.0/24");
    // A network in use that is smaller or bigger than a pool subnet blocks what it touches.
    assert_eq!(v4(&p, &["10.89.0.128/25", "10.89.1.7/32", "10.89.2.0/23"], &[]).unwrap(), "10.89.4.0/24");
    assert_eq!(v4(&p, &["10.89.0.0/20"], &[]).unwrap(), "10.89.16.0/24");
    assert_eq!(v6(&p, &["fd12:3456:789a::/64", "fd12:3456:789a:1::/64"], &[]).unwrap(), "fd12:3456:789a:2::/64");
}

#[test]
fn skips_routed_subnets() {
    let p = defaults();
    let routed = [
        "0.0.0.0/0",      // the default route is not a collision
        "10.89.0.0/23",   // a VPN route
        "10.89.2.77/32",  // a host route to one address
        "10.89.3.5/24",   // an interface address with its prefix
        "192.168.1.0/24", // elsewhere
    ];
    assert_eq!(v4(&p, &[], &routed).unwrap(), "10.89.4.0/24");
    assert_eq!(v4(&p, &["10.89.4.0/24"], &routed).unwrap(), "10.89.5.0/24");
    assert_eq!(v6(&p, &[], &["::/0", "fd12:3456:789a::/56"]).unwrap(), "fd12:3456:789a:100::/64");
    // A route over the whole pool leaves nothing.
    let e = v4(&p, &[], &["10.0.0.0/8"]).unwrap_err();
    assert_eq!(e, SetupError::PoolExhausted { family: "IPv4", pools: "10.89.0.0/16 in /24s".into() });
    assert_eq!(
        e.to_string(),
        "no free IPv4 subnet left in the address pools (10.89.0.0/16 in /24s): other networks and host routes cover them all"
    );
}

#[test]
fn later_pools_take_over() {
    let pools = vec![
        SubnetPools::DEFAULT_V4,
        AddressPool::new(net("172.30.0.0/16"), 20).unwrap(),
        AddressPool::new(net("fd00:1::/112"), 120).unwrap(),
    ];
    let p = SubnetPools::new(pools).unwrap();
    assert_eq!(v4(&p, &[], &["10.89.0.0/16"]).unwrap(), "172.30.0.0/20");
    assert_eq!(v4(&p, &["172.30.0.0/24"], &["10.89.0.0/16"]).unwrap(), "172.30.16.0/20");
    assert_eq!(v6(&p, &["fd00:1::/120"], &[]).unwrap(), "fd00:1::100/120");
    let e = v4(&p, &["172.30.0.0/16"], &["10.0.0.0/8"]).unwrap_err();
    assert!(matches!(&e, SetupError::PoolExhausted { pools, .. } if pools == "10.89.0.0/16 in /24s, 172.30.0.0/16 in /20s"), "{e}");
    let only4 = SubnetPools::new(vec![SubnetPools::DEFAULT_V4]).unwrap();
    assert_eq!(only4.next_free_v6(&[], &[]).unwrap_err(), SetupError::PoolExhausted { family: "IPv6", pools: "none configured".into() });
}

#[test]
fn hundreds_of_networks_then_exhausted() {
    let p = defaults();
    let mut in_use: Vec<IpNet> = Vec::new();
    for i in 0..256u32 {
        let n = p.next_free_v4(&in_use, &[]).unwrap();
        assert_eq!(n, Ipv4Net::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 89, 0, 0)) + (i << 8)), 24).unwrap());
        in_use.push(n.into());
    }
    assert!(matches!(p.next_free_v4(&in_use, &[]), Err(SetupError::PoolExhausted { .. })));
    // A freed subnet in the middle is found again.
    in_use.remove(100);
    assert_eq!(p.next_free_v4(&in_use, &[]).unwrap().to_string(), "10.89.100.0/24");

    // Thousands of IPv6 networks: each choice skips the used ones without trying them one by one.
    let mut in_use: Vec<IpNet> = Vec::new();
    for _ in 0..3000 {
        in_use.push(p.next_free_v6(&in_use, &[]).unwrap().into());
    }
    assert_eq!(in_use.last().unwrap().to_string(), "fd12:3456:789a:bb7::/64");
    let bigger = SubnetPools::new(vec![AddressPool::new(net("10.0.0.0/8"), 24).unwrap()]).unwrap();
    let mut in_use: Vec<IpNet> = Vec::new();
    for _ in 0..2000 {
        in_use.push(bigger.next_free_v4(&in_use, &[]).unwrap().into());
    }
    assert_eq!(in_use.last().unwrap().to_string(), "10.7.207.0/24");
}

#[test]
fn bad_address_pools() {
    let reason = |base: &str, size: u8| match AddressPool::new(net(base), size) {
        Err(SetupError::BadAddressPool { reason, .. }) => reason,
        other => panic!("{base} /{size}: {other:?}"),
    };
    assert!(reason("10.89.0.1/16", 24).contains("host bits"));
    assert!(reason("10.89.0.0/16", 8).contains("larger than the base"));
    assert!(reason("10.89.0.0/16", 31).contains("no room"));
    assert!(reason("fd00::/48", 121).contains("no room"));
    assert!(reason("0.0.0.0/0", 0).contains("/0"));
    assert!(reason("::/0", 0).contains("/0"));
    AddressPool::new(net("10.89.0.0/16"), 16).unwrap();
    AddressPool::new(net("10.89.0.0/16"), 30).unwrap();
    let e = SubnetPools::new(vec![SubnetPools::DEFAULT_V4, AddressPool { base: net("10.0.0.0/8"), size: 24 }]).unwrap_err();
    assert_eq!(e.to_string(), "address pool 10.0.0.0/8 split into /24 subnets is invalid: it overlaps pool 10.89.0.0/16 in /24s");
    assert!(matches!(SubnetPools::new(vec![AddressPool { base: net("10.89.0.0/16"), size: 33 }]), Err(SetupError::BadAddressPool { .. })));
    assert!(matches!(SubnetPools::with_defaults("fd00::/72".parse().unwrap()), Err(SetupError::BadAddressPool { .. })));
    assert!(matches!(SubnetPools::with_defaults("fd00::1/48".parse().unwrap()), Err(SetupError::BadAddressPool { .. })));
    SubnetPools::new(vec![]).unwrap();
}

#[test]
fn pools_serialize_like_docker() {
    let text = r#"[{"base":"10.89.0.0/16","size":24},{"base":"fd12:3456:789a::/48","size":64}]"#;
    let p: SubnetPools = serde_json::from_str(text).unwrap();
    assert_eq!(p, defaults());
    assert_eq!(serde_json::to_string(&p).unwrap(), text);
    for bad in [
        r#"[{"base":"10.89.0.0/16","size":24},{"base":"10.89.128.0/17","size":24}]"#,
        r#"[{"base":"10.89.0.0/16","size":40}]"#,
        r#"[{"base":"10.89.0.0/16","size":24,"extra":1}]"#,
        r#"[{"base":"10.89.0.0/16"}]"#,
    ] {
        assert!(serde_json::from_str::<SubnetPools>(bad).is_err(), "{bad}");
    }
}

#[test]
fn check_free_reports_overlaps() {
    let in_use = nets(&["10.89.0.0/24", "fd00::/64"]);
    let routed = nets(&["0.0.0.0/0", "::/0", "192.168.0.0/16", "10.100.0.0/16"]);
    SubnetPools::check_free(net("10.89.1.0/24"), &in_use, &routed).unwrap();
    SubnetPools::check_free(net("fd00:0:0:1::/64"), &in_use, &routed).unwrap();
    assert_eq!(
        SubnetPools::check_free(net("10.89.0.0/16"), &in_use, &routed),
        Err(SetupError::SubnetOverlap { subnet: net("10.89.0.0/16"), other: net("10.89.0.0/24"), what: "network" })
    );
    let e = SubnetPools::check_free(net("192.168.5.0/24"), &in_use, &routed).unwrap_err();
    assert_eq!(e.to_string(), "subnet 192.168.5.0/24 overlaps host route 192.168.0.0/16");
    assert!(SubnetPools::check_free(net("fd00::/48"), &in_use, &routed).is_err());
}

proptest! {
    /// The choice is the lowest /24 of 10.89.0.0/16 that overlaps nothing in use or routed,
    /// found by trying every candidate.
    #[test]
    fn first_free_is_the_lowest_free(
        blockers in prop::collection::vec((any::<u16>(), 14u8..=32, any::<bool>()), 0..40),
    ) {
        let p = SubnetPools::new(vec![SubnetPools::DEFAULT_V4]).unwrap();
        let mut in_use = Vec::new();
        let mut routed = Vec::new();
        for (host, len, is_route) in blockers {
            let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 89, 0, 0)) + u32::from(host));
            let n = IpNet::V4(Ipv4Net::new(a, len).unwrap());
            if is_route { routed.push(n) } else { in_use.push(n) }
        }
        let brute = (0..256u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 89, 0, 0)) + (i << 8)), 24).unwrap()))
            .find(|c| SubnetPools::check_free(*c, &in_use, &routed).is_ok());
        match (p.next_free_v4(&in_use, &routed), brute) {
            (Ok(n), Some(b)) => prop_assert_eq!(IpNet::V4(n), b),
            (Err(SetupError::PoolExhausted { .. }), None) => {}
            (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want),
        }
    }
}
