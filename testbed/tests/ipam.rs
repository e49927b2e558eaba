//! Address management through the daemon: automatic subnets that avoid host routes, ranges,
//! aux addresses, exhaustion, gc and prune, each error clear and nothing lost.

use testbed::{Daemon, Netns};

#[test]
fn automatic_subnets_skip_used_and_routed_ones() {
    // A pool whose first /24 the host routes (standing in for a VPN route): a blackhole route,
    // which carries no traffic at all, removed at the end.
    testbed::run_ok("ip", &["route", "add", "blackhole", "10.123.0.0/24"]);
    struct Del;
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["route", "del", "blackhole", "10.123.0.0/24"]).status();
        }
    }
    let _del = Del;
    let d = Daemon::start_with(&["--default-address-pool", "base=10.123.0.0/22,size=24"]);
    let a = d.ctl_json(&["network", "create", "a", "--ipv6"]);
    assert_eq!(a["subnet"], "10.123.1.0/24", "the routed 10.123.0.0/24 is skipped: {a}");
    assert!(a["subnet6"].as_str().unwrap().starts_with("fd"), "a ULA /64: {a}");
    let b = d.ctl_json(&["network", "create", "b"]);
    assert_eq!(b["subnet"], "10.123.2.0/24");
    d.ctl_json(&["network", "create", "c"]);
    let out = d.ctl(&["network", "create", "d"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pool_exhausted"), "{err}");
    // A freed subnet is found again.
    d.ctl_ok(&["network", "rm", "b"]);
    assert_eq!(d.ctl_json(&["network", "create", "d"])["subnet"], "10.123.2.0/24");
    // Two ULA networks never share a /64.
    let e = d.ctl_json(&["network", "create", "e", "--subnet", "10.124.0.0/24", "--ipv6"]);
    assert_ne!(e["subnet6"], a["subnet6"]);
}

#[test]
fn range_aux_exhaustion_gc_and_prune() {
    let d = Daemon::start();
    let n = d.ctl_json(&[
        "network",
        "create",
        "small",
        "--subnet",
        "10.125.0.0/24",
        "--ip-range",
        "10.125.0.8/30",
        "--aux-address",
        "10.125.0.9",
    ]);
    assert_eq!(n["ip_range"], "10.125.0.8/30", "{n}");
    let cs: Vec<Netns> = (0..4).map(|i| Netns::new(&format!("vi{i}-"))).collect();
    // The range holds .8-.11 less the aux .9: three addresses.
    let mut got = Vec::new();
    for c in &cs[..3] {
        got.push(d.attach("small", c)["ip"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ["10.125.0.8", "10.125.0.10", "10.125.0.11"]);
    let body = format!(r#"{{"netns":"{}","name":"x"}}"#, cs[3].path());
    let (status, v) = d.api("POST", "/v1/networks/small/endpoints", Some(&body));
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("pool_exhausted")), "{v}");
    // A static address outside the range but inside the subnet still works; the aux one does not.
    let body = format!(r#"{{"netns":"{}","name":"x","ip":"10.125.0.9"}}"#, cs[3].path());
    let (status, v) = d.api("POST", "/v1/networks/small/endpoints", Some(&body));
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("address_out_of_range")), "{v}");
    d.ctl_ok(&["attach", "small", "--netns", &cs[3].path(), "--name", "x", "--ip", "10.125.0.200"]);
    assert!(!cs[3].links().is_empty());
    // Nothing to collect; the usage figures count the subnet.
    assert!(d.ctl_ok(&["ipam", "gc"]).contains("nothing to do"));
    let detail = d.ctl_json(&["network", "inspect", "small"]);
    assert_eq!(detail["usage"]["in_use"], 4, "{detail}");
    // prune removes only empty networks.
    d.network("empty", "10.126.0.0/24");
    let pruned = d.ctl_json(&["network", "prune"]);
    assert_eq!(pruned["removed"], serde_json::json!(["empty"]), "{pruned}");
    assert_eq!(d.ctl_json(&["network", "ls"]).as_array().unwrap().len(), 1);
    assert!(cs[0].ping("10.125.0.11", 1), "traffic unaffected");
}

#[test]
fn gc_releases_orphaned_leases_from_the_state_file() {
    let mut d = Daemon::start();
    d.network("n1", "10.127.0.0/24");
    let c1 = Netns::new("vig-");
    d.attach("n1", &c1);
    assert!(d.terminate().success());
    // An orphan lease, as a hand edit or an older bug could leave it.
    let file = d.dir.join("state").join("state.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    v["networks"][0]["pool"]["used"].as_array_mut().unwrap().push(serde_json::json!({"addr": "10.127.0.99", "owner": "ghost"}));
    std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    d.restart();
    assert_eq!(d.ctl_json(&["network", "inspect", "n1"])["usage"]["in_use"], 2);
    let report = d.ctl_json(&["ipam", "gc"]);
    assert_eq!(report["released"], serde_json::json!(["n1 10.127.0.99"]), "{report}");
    let detail = d.ctl_json(&["network", "inspect", "n1"]);
    assert_eq!(detail["usage"]["in_use"], 1, "{detail}");
    assert_eq!(detail["endpoints"], 1, "the live endpoint keeps its lease");
}

#[test]
fn a_second_network_needs_no_ifname_and_a_failed_attach_costs_no_address() {
    let d = Daemon::start();
    d.network("front", "10.126.0.0/24");
    d.network("back", "10.126.1.0/24");
    let (c1, c2) = (Netns::new("if-a"), Netns::new("if-b"));
    let first = d.attach("front", &c1);
    assert_eq!(first["ifname"], "eth0");
    // The same container on a second network: the next free name, no --ifname needed.
    let second = d.ctl_json(&["attach", "back", "--netns", &c1.path(), "--name", "c1"]);
    assert_eq!(second["ifname"], "eth1", "{second}");
    assert_eq!(second["ip"], "10.126.1.2");
    let links = c1.exec_ok(&["ip", "-br", "link"]);
    assert!(links.contains("eth0") && links.contains("eth1"), "{links}");

    // An attach that fails in the namespace (its interface name is taken) leaves the
    // allocator as it was: the next attach gets the address the failed one would have had.
    let out = d.ctl(&["attach", "back", "--netns", &c1.path(), "--name", "dup", "--ifname", "eth0"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("endpoint_exists"));
    let third = d.ctl_json(&["attach", "back", "--netns", &c2.path(), "--name", "c2"]);
    assert_eq!(third["ip"], "10.126.1.3", "{third}");
    assert_eq!(d.ctl_json(&["network", "inspect", "back"])["usage"]["in_use"], 2);
    assert!(c2.ping("10.126.1.2", 1), "the second network switches");
}
