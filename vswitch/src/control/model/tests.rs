//! The model without tokio, namespaces or files: unit tests, and a property test against a
//! reference model of networks, endpoints and leases.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::api::{AttachRequest, EndpointUpdate, ErrorCode, NetworkCreate, PeerAdd, Proto, PublishRule};

fn model() -> Model {
    let cfg = Config {
        offloads: true,
        egress: true,
        tunnel: true,
        underlay_mtu: 1500,
        pools: ipam::SubnetPools::with_defaults(ipam::SubnetPools::ula48([1, 2, 3, 4, 5])).unwrap(),
    };
    Model::new(cfg, ipam::SubnetPools::ula48([1, 2, 3, 4, 5]))
}

fn net(name: &str, subnet: &str) -> NetworkCreate {
    NetworkCreate { name: name.into(), subnet: Some(subnet.into()), ..Default::default() }
}

fn ns(i: u64) -> NetnsInfo {
    NetnsInfo { path: format!("/run/netns/c{i}"), id: Some((4, i)), own: Some((4, 0)) }
}

fn attach(m: &mut Model, network: &str, name: &str, netns: u64) -> Result<Endpoint, ApiError> {
    let req = AttachRequest { name: Some(name.into()), netns: Some(ns(netns).path), ..Default::default() };
    let plan = m.attach(network, req, ns(netns))?;
    m.attached(&plan, Vec::new())
}

#[test]
fn refused_requests_change_nothing() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    attach(&mut m, "a", "c1", 1).unwrap();
    let before = m.snapshot();
    let refusals = [
        m.create_network(net("a", "10.2.0.0/24"), &[]).map(|_| ()).unwrap_err(),
        m.create_network(net("b", "10.1.0.128/25"), &[]).map(|_| ()).unwrap_err(),
        m.create_network(net("b", "10.2.0.5/24"), &[]).map(|_| ()).unwrap_err(),
        m.create_network(NetworkCreate { mtu: Some(100), ..net("b", "10.2.0.0/24") }, &[]).map(|_| ()).unwrap_err(),
        attach(&mut m, "a", "c1", 2).map(|_| ()).unwrap_err(),
        attach(&mut m, "a", "gateway", 2).map(|_| ()).unwrap_err(),
        attach(&mut m, "nope", "c2", 2).map(|_| ()).unwrap_err(),
        attach(&mut m, "a", "c2", 0).map(|_| ()).unwrap_err(),
        m.attach("a", AttachRequest { name: Some("c2".into()), ip: Some("10.1.0.2".into()), ..Default::default() }, ns(2))
            .map(|_| ())
            .unwrap_err(),
        m.attach("a", AttachRequest { name: Some("c2".into()), aliases: vec!["a..b".into()], ..Default::default() }, ns(2))
            .map(|_| ())
            .unwrap_err(),
        m.update_endpoint("a", "c9", EndpointUpdate::default()).unwrap_err(),
        m.begin_remove_network("a", false).map(|_| ()).unwrap_err(),
    ];
    let codes: Vec<ErrorCode> = refusals.iter().map(|e| e.error.code).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::NetworkExists,
            ErrorCode::SubnetOverlap,
            ErrorCode::InvalidSubnet,
            ErrorCode::InvalidMtu,
            ErrorCode::EndpointExists,
            ErrorCode::InvalidName,
            ErrorCode::NetworkNotFound,
            ErrorCode::InvalidRequest,
            ErrorCode::AddressTaken,
            ErrorCode::InvalidName,
            ErrorCode::EndpointNotFound,
            ErrorCode::NetworkInUse,
        ]
    );
    assert_eq!(m.snapshot(), before);
    assert!(refusals[2].error.message.contains("did you mean 10.2.0.0/24"), "{}", refusals[2].error.message);
    assert_eq!(refusals[3].error.message, "MTU 100 is out of range: it must be 576 to 65521");
}

#[test]
fn an_abandoned_attach_leaves_the_allocator_as_it_was() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    let before = m.snapshot();
    let plan = m.attach("a", AttachRequest { name: Some("c1".into()), ..Default::default() }, ns(1)).unwrap();
    assert_eq!(plan.ip, Ipv4Addr::new(10, 1, 0, 2));
    m.abandon_attach(plan);
    assert_eq!(m.snapshot(), before);
    // The retry gets the address the failed attempt had, not the next one.
    assert_eq!(attach(&mut m, "a", "c1", 1).unwrap().ip, Ipv4Addr::new(10, 1, 0, 2));
}

#[test]
fn a_second_network_gets_the_next_interface_name_and_no_default_route() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    m.create_network(net("b", "10.2.0.0/24"), &[]).unwrap();
    let p1 = m.attach("a", AttachRequest { name: Some("c1".into()), ..Default::default() }, ns(1)).unwrap();
    assert_eq!((p1.spec.ifname.as_str(), p1.spec.gateway), ("eth0", Ipv4Addr::new(10, 1, 0, 1)));
    m.attached(&p1, Vec::new()).unwrap();
    let p2 = m.attach("b", AttachRequest { name: Some("c1".into()), ..Default::default() }, ns(1)).unwrap();
    assert_eq!((p2.spec.ifname.as_str(), p2.spec.gateway), ("eth1", Ipv4Addr::UNSPECIFIED));
    // Another namespace starts at eth0 again.
    let p3 = m.attach("b", AttachRequest { name: Some("c2".into()), ..Default::default() }, ns(2)).unwrap();
    assert_eq!(p3.spec.ifname, "eth0");
}

#[test]
fn dns_views_follow_the_namespace_across_networks() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    m.create_network(net("b", "10.2.0.0/24"), &[]).unwrap();
    let e1 = attach(&mut m, "a", "c1", 1).unwrap();
    attach(&mut m, "b", "c1", 1).unwrap();
    attach(&mut m, "b", "c2", 2).unwrap();
    let (_, views) = m.dns_tables();
    let v1 = &views.iter().find(|(p, _)| *p == e1.port).unwrap().1;
    assert_eq!(v1.visible, ["a", "b"]);
    let recs = m.dns_records(Some("b")).unwrap();
    assert_eq!(recs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
}

#[test]
fn rename_moves_leases_and_static_macs() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    attach(&mut m, "a", "c1", 1).unwrap();
    m.add_static("a", Mac([2, 0, 0, 0, 0, 9]), "c1");
    m.update_endpoint("a", "c1", EndpointUpdate { name: Some("web".into()), ..Default::default() }).unwrap();
    assert!(m.ipam_gc().released.is_empty(), "the lease follows the new name");
    assert_eq!(m.port_of("a", "web").unwrap().1, m.endpoint_port("a", "web").unwrap());
    assert_eq!(m.snapshot().networks[0].static_macs.values().collect::<Vec<_>>(), ["web"]);
}

#[test]
fn publications_are_checked_for_overlaps_across_endpoints() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    attach(&mut m, "a", "c1", 1).unwrap();
    attach(&mut m, "a", "c2", 2).unwrap();
    let rule = |port, end| PublishRule {
        proto: Proto::Tcp,
        host_addr: Ipv4Addr::UNSPECIFIED,
        host_port: port,
        host_port_end: end,
        container_port: 80,
    };
    let t = m.check_publish("a", "c1", &rule(8080, Some(8089))).unwrap();
    assert_eq!(t.count, 10);
    m.add_publication("a", "c1", rule(8080, Some(8089)), (0..10).collect()).unwrap();
    assert_eq!(m.check_publish("a", "c2", &rule(8085, None)).unwrap_err().error.code, ErrorCode::PortInUse);
    assert_eq!(m.remove_publication(Proto::Tcp, Ipv4Addr::UNSPECIFIED, 8083).unwrap().len(), 10);
    assert!(m.check_publish("a", "c2", &rule(8085, None)).is_ok());
}

#[test]
fn peers_take_ports_and_carry_only_overlay_networks() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    m.create_network(NetworkCreate { overlay: true, ..net("ov", "10.9.0.0/24") }, &[]).unwrap();
    let key = b64(&[7; 32]);
    let add = |nets: &[&str]| PeerAdd { public_key: key.clone(), endpoint: None, networks: nets.iter().map(|s| s.to_string()).collect() };
    assert_eq!(m.add_peer(&add(&["a"])).unwrap_err().error.code, ErrorCode::InvalidRequest);
    let plan = m.add_peer(&add(&["ov"])).unwrap();
    assert_eq!(plan.networks[0].tag, overlay_tag("ov"));
    assert_eq!(m.begin_remove_network("ov", true).unwrap_err().error.code, ErrorCode::NetworkInUse);
    assert!(m.port_rows().iter().any(|r| r.kind == "tunnel" && r.id == plan.networks[0].port));
    assert!(m.remove_peer(&plan.canonical));
    assert!(!m.port_rows().iter().any(|r| r.kind == "tunnel"));
}

#[test]
fn announcements_are_checked_against_the_network() {
    let mut m = model();
    m.create_network(NetworkCreate { overlay: true, ..net("ov", "10.9.0.0/24") }, &[]).unwrap();
    let key = [7; 32];
    m.add_peer(&PeerAdd { public_key: b64(&key), endpoint: None, networks: vec!["ov".into()] }).unwrap();
    let name = |ip: [u8; 4]| crate::announce::RemoteName { name: "far".into(), aliases: vec![], v4: vec![ip.into()], v6: vec![] };
    let chunk = |g, n| crate::announce::Chunk { generation: g, index: 0, count: 1, entries: vec![n] };
    assert!(m.receive_announcement(&key, overlay_tag("ov"), chunk(1, name([10, 8, 0, 1]))).is_err(), "outside the subnet");
    assert!(m.receive_announcement(&[8; 32], overlay_tag("ov"), chunk(1, name([10, 9, 0, 200]))).is_err(), "not a peer");
    assert_eq!(m.receive_announcement(&key, overlay_tag("ov"), chunk(2, name([10, 9, 0, 200]))), Ok(true));
    assert_eq!(m.receive_announcement(&key, overlay_tag("ov"), chunk(3, name([10, 9, 0, 200]))), Ok(false));
    let (records, _) = m.dns_tables();
    assert!(format!("{records:?}").contains("far"));
    m.remove_peer(&b64(&key));
    let (records, _) = m.dns_tables();
    assert!(!format!("{records:?}").contains("far"), "a removed peer's names go with it");
}

#[test]
fn restore_brings_back_what_the_snapshot_holds() {
    let mut m = model();
    m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    attach(&mut m, "a", "c1", 1).unwrap();
    attach(&mut m, "a", "c2", 2).unwrap();
    let snap = m.snapshot();
    let mut r = model();
    r.restore_globals(snap.next_network, snap.ula);
    for n in &snap.networks {
        r.restore_network(n);
    }
    for n in &snap.networks {
        for e in &n.endpoints {
            let plan = r.restore_endpoint(&n.name, e.clone()).unwrap();
            r.attached(&plan, Vec::new()).unwrap();
        }
    }
    assert_eq!(r.snapshot(), snap);
}

// The property test: random operations against the model and a reference model of networks,
// endpoints and leases that knows nothing of pools, ports or effects.

#[derive(Debug, Clone)]
enum Op {
    Create { net: u8, subnet: u8 },
    Remove { net: u8, force: bool },
    Attach { net: u8, ep: u8, ip: Option<u8>, fail: bool },
    Detach { net: u8, ep: u8 },
    Rename { net: u8, ep: u8, to: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u8, 0..4u8).prop_map(|(net, subnet)| Op::Create { net, subnet }),
        (0..3u8, any::<bool>()).prop_map(|(net, force)| Op::Remove { net, force }),
        (0..3u8, 0..5u8, proptest::option::of(0..6u8), proptest::bool::weighted(0.2)).prop_map(|(net, ep, ip, fail)| Op::Attach {
            net,
            ep,
            ip,
            fail
        }),
        (0..3u8, 0..5u8).prop_map(|(net, ep)| Op::Detach { net, ep }),
        (0..3u8, 0..5u8, 0..5u8).prop_map(|(net, ep, to)| Op::Rename { net, ep, to }),
    ]
}

/// The reference: network → (subnet index, endpoint → address).
type Reference = BTreeMap<String, (u8, BTreeMap<String, Ipv4Addr>)>;

fn subnet(i: u8) -> String {
    // Index 3 overlaps index 0.
    if i == 3 {
        "10.0.0.0/24".into()
    } else {
        format!("10.0.{i}.0/29")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn the_model_agrees_with_a_reference(ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = model();
        let mut r: Reference = BTreeMap::new();
        for op in ops {
            let before = m.snapshot();
            let accepted = match &op {
                Op::Create { net, subnet: s } => {
                    let name = format!("n{net}");
                    let overlap = |o: u8| o == *s || (o.min(*s), o.max(*s)) == (0, 3);
                    let expect = !r.contains_key(&name) && !r.values().any(|(o, _)| overlap(*o));
                    let got = m.create_network(super::tests::net(&name, &subnet(*s)), &[]).is_ok();
                    prop_assert_eq!(got, expect, "{:?}", op);
                    if got {
                        r.insert(name, (*s, BTreeMap::new()));
                    }
                    got
                }
                Op::Remove { net, force } => {
                    let name = format!("n{net}");
                    let expect = r.get(&name).is_some_and(|(_, eps)| eps.is_empty() || *force);
                    let got = m.begin_remove_network(&name, *force).is_ok();
                    prop_assert_eq!(got, expect, "{:?}", op);
                    if got {
                        m.finish_remove_network(&name);
                        r.remove(&name);
                    }
                    got
                }
                Op::Attach { net, ep, ip, fail } => {
                    let (name, epn) = (format!("n{net}"), format!("e{ep}"));
                    let want_ip = ip.and_then(|h| r.get(&name).map(|(s, _)| Ipv4Addr::new(10, 0, if *s == 3 { 0 } else { *s }, h)));
                    let req = AttachRequest { name: Some(epn.clone()), ip: want_ip.map(|a| a.to_string()), ..Default::default() };
                    match m.attach(&name, req, ns(u64::from(*ep) + 1)) {
                        Ok(plan) => {
                            let (_, eps) = r.get_mut(&name).expect("the reference knows the network");
                            prop_assert!(!eps.contains_key(&epn));
                            prop_assert!(!eps.values().any(|a| *a == plan.ip), "address {} given twice", plan.ip);
                            if let Some(w) = want_ip { prop_assert_eq!(plan.ip, w); }
                            if *fail {
                                // An effect failed: the model must be back where it was.
                                m.abandon_attach(plan);
                                prop_assert_eq!(&m.snapshot(), &before);
                                false
                            } else {
                                m.attached(&plan, Vec::new()).unwrap();
                                eps.insert(epn, plan.ip);
                                true
                            }
                        }
                        Err(_) => {
                            // Refused only for a reason the reference sees.
                            let known = r.get(&name);
                            let taken = known.is_some_and(|(_, eps)| eps.contains_key(&epn) || want_ip.is_some_and(|w| eps.values().any(|a| *a == w)));
                            let bad_host = want_ip.is_some_and(|w| w.octets()[3] < 2);
                            let full = known.is_some_and(|(s, eps)| eps.len() >= if *s == 3 { 253 } else { 5 });
                            prop_assert!(known.is_none() || taken || bad_host || full, "{:?} refused", op);
                            false
                        }
                    }
                }
                Op::Detach { net, ep } => {
                    let (name, epn) = (format!("n{net}"), format!("e{ep}"));
                    let got = m.endpoint_port(&name, &epn).is_ok();
                    prop_assert_eq!(got, r.get(&name).is_some_and(|(_, eps)| eps.contains_key(&epn)));
                    if got {
                        m.forget(&name, &epn);
                        r.get_mut(&name).unwrap().1.remove(&epn);
                    }
                    got
                }
                Op::Rename { net, ep, to } => {
                    let (name, from, to) = (format!("n{net}"), format!("e{ep}"), format!("e{to}"));
                    let expect = r.get(&name).is_some_and(|(_, eps)| eps.contains_key(&from) && (from == to || !eps.contains_key(&to)));
                    let got = m.update_endpoint(&name, &from, EndpointUpdate { name: Some(to.clone()), ..Default::default() }).is_ok();
                    prop_assert_eq!(got, expect, "{:?}", op);
                    if got {
                        let eps = &mut r.get_mut(&name).unwrap().1;
                        let a = eps.remove(&from).unwrap();
                        eps.insert(to, a);
                    }
                    got
                }
            };
            if !accepted {
                prop_assert_eq!(&m.snapshot(), &before, "a refused {:?} changed the model", op);
            }
            // Invariants after every step.
            let snap = m.snapshot();
            let names: BTreeSet<&str> = snap.networks.iter().map(|n| n.name.as_str()).collect();
            prop_assert_eq!(names, r.keys().map(String::as_str).collect::<BTreeSet<_>>());
            for n in &snap.networks {
                let mine: BTreeMap<String, Ipv4Addr> = n.endpoints.iter().map(|e| (e.endpoint.name.clone(), e.endpoint.ip)).collect();
                prop_assert_eq!(&mine, &r[&n.name].1);
                prop_assert_eq!(n.pool.in_use() as usize, mine.len(), "one lease per endpoint");
            }
            let mut ports: Vec<u32> = m.port_rows().iter().map(|p| p.id.0).collect();
            let count = ports.len();
            ports.sort_unstable();
            ports.dedup();
            prop_assert_eq!(ports.len(), count, "port ids are unique");
            prop_assert!(m.ipam_gc().released.is_empty(), "no orphaned lease");
        }
    }
}

fn port_add(network: &str, interface: &str, vlan: Option<u32>, trunk: &[u32]) -> crate::api::PortAdd {
    crate::api::PortAdd { network: network.into(), interface: interface.into(), vlan, trunk: trunk.to_vec() }
}

#[test]
fn interface_ports_are_validated_first() {
    let mut m = model();
    m.create_network(NetworkCreate { vlan: Some(100), ..net("a", "10.1.0.0/24") }, &[]).unwrap();
    m.create_network(NetworkCreate { vlan: Some(200), ..net("b", "10.2.0.0/24") }, &[]).unwrap();
    m.create_network(net("c", "10.3.0.0/24"), &[]).unwrap();
    let trunk = m.add_ifport(&port_add("c", "veth1", None, &[100, 200]), true, None).unwrap();
    // c has no VLAN id on the trunk: it is the native network of untagged frames.
    let members: Vec<_> = trunk.members.iter().map(|mb| mb.vlan).collect();
    assert_eq!(members, vec![None, Some(100), Some(200)]);
    let before = m.snapshot();
    let code = |r: Result<IfPortPlan, ApiError>| r.map(|_| ()).unwrap_err().error.code;
    assert_eq!(code(m.add_ifport(&port_add("a", "veth2", None, &[]), false, None)), ErrorCode::InterfaceNotFound);
    assert_eq!(code(m.add_ifport(&port_add("a", "veth1", None, &[]), true, None)), ErrorCode::InterfaceInUse);
    for bad in [0, 4095, 70000] {
        assert_eq!(code(m.add_ifport(&port_add("a", "veth2", Some(bad), &[]), true, None)), ErrorCode::InvalidVlan, "{bad}");
    }
    assert_eq!(code(m.add_ifport(&port_add("a", "veth2", None, &[100, 100]), true, None)), ErrorCode::InvalidVlan);
    assert_eq!(code(m.add_ifport(&port_add("a", "veth2", None, &[300]), true, None)), ErrorCode::InvalidVlan);
    assert_eq!(code(m.add_ifport(&port_add("a", "veth2", Some(5), &[6]), true, None)), ErrorCode::InvalidRequest);
    assert_eq!(code(m.add_ifport(&port_add("x", "veth2", None, &[]), true, None)), ErrorCode::NetworkNotFound);
    assert_eq!(code(m.add_ifport(&port_add("a", "bad/name", None, &[]), true, None)), ErrorCode::InvalidName);
    let dup = m.create_network(NetworkCreate { vlan: Some(100), ..net("d", "10.4.0.0/24") }, &[]).map(|_| ()).unwrap_err();
    assert_eq!(dup.error.code, ErrorCode::InvalidVlan);
    assert_eq!(m.snapshot(), before, "a refused request changed the model");
    // A network carried by a port is not removed under it; the port goes first.
    assert_eq!(m.begin_remove_network("a", true).map(|_| ()).unwrap_err().error.code, ErrorCode::NetworkInUse);
    m.forget_ifport("veth1");
    assert!(m.begin_remove_network("c", false).is_ok());
}

#[test]
fn uplink_networks_answer_at_an_address_of_their_own() {
    let mut m = model();
    let req = NetworkCreate {
        gateway: Some("192.168.1.1".into()),
        ip_range: Some("192.168.1.128/25".into()),
        uplink: Some("eth9".into()),
        ..net("lan", "192.168.1.0/24")
    };
    let (plan, api) = m.create_network(req, &[]).unwrap();
    assert_eq!(api.gateway, "192.168.1.1".parse::<Ipv4Addr>().unwrap());
    let dns = api.dns_address.expect("a service address");
    assert!(dns.octets()[3] >= 128, "{dns} outside the range");
    assert_eq!(plan.gw.ip, dns, "the switch answers at its own address, not the router's");
    assert_eq!(m.ipam_gc().released, Vec::<String>::new(), "gc took the service address");
    let bad = NetworkCreate { uplink: Some("eth9".into()), ipv6: true, ..net("v6", "10.9.0.0/24") };
    assert_eq!(m.create_network(bad, &[]).map(|_| ()).unwrap_err().error.code, ErrorCode::InvalidRequest);
}

#[test]
fn dhcp_leases_are_ipam_leases() {
    use crate::dhcp::{Answer, Kind, Query};
    let mut m = model();
    let (plan, _) = m.create_network(net("a", "10.1.0.0/24"), &[]).unwrap();
    let ep = attach(&mut m, "a", "c1", 1).unwrap();
    let q = |kind, mac: Mac, requested: Option<&str>| Query {
        kind,
        xid: 7,
        mac,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        requested: requested.map(|r| r.parse().unwrap()),
        server_id: None,
        broadcast: false,
        giaddr: Ipv4Addr::UNSPECIFIED,
    };
    let vm = Mac([2, 0, 0, 0, 0, 9]);
    let (offer, changed) = m.dhcp(plan.gw_port, &q(Kind::Discover, vm, None));
    let (answer, lease) = offer.unwrap();
    assert!(changed && answer == Answer::Offer && lease.ip != ep.ip);
    assert_eq!(lease.server, plan.gw.ip);
    // The same client is offered the same address; a REQUEST for it is acked, another NAKed.
    assert_eq!(m.dhcp(plan.gw_port, &q(Kind::Discover, vm, None)).0.unwrap().1.ip, lease.ip);
    let ip = lease.ip.to_string();
    assert_eq!(m.dhcp(plan.gw_port, &q(Kind::Request, vm, Some(&ip))).0.unwrap().0, Answer::Ack);
    assert_eq!(m.dhcp(plan.gw_port, &q(Kind::Request, vm, Some("10.1.0.200"))).0.unwrap().0, Answer::Nak);
    // An attached container's MAC gets its own address.
    assert_eq!(m.dhcp(plan.gw_port, &q(Kind::Discover, ep.mac, None)).0.unwrap().1.ip, ep.ip);
    assert_eq!(m.dhcp_leases("a"), vec![(lease.ip, vm.to_string())]);
    // Release frees it; a decline keeps the address out of the pool.
    let mut rel = q(Kind::Release, vm, None);
    rel.ciaddr = lease.ip;
    assert!(m.dhcp(plan.gw_port, &rel).1);
    assert!(m.dhcp_leases("a").is_empty());
    let (offer, _) = m.dhcp(plan.gw_port, &q(Kind::Discover, vm, None));
    let declined = offer.unwrap().1.ip;
    assert!(m.dhcp(plan.gw_port, &q(Kind::Decline, vm, Some(&declined.to_string()))).1);
    let again = m.dhcp(plan.gw_port, &q(Kind::Discover, vm, None)).0.unwrap().1.ip;
    assert_ne!(again, declined, "a declined address was offered again");
}
