//! A MAC-table flood: 100 000 distinct source MACs into one port leave the table within its
//! bounds, and two other containers keep talking during and after it.

use std::path::Path;

use testbed::{Daemon, Netns};

#[test]
fn mac_flood_stays_bounded_and_others_keep_talking() {
    // Storm control off: this is about the MAC table's bounds, so every source must reach it.
    let d = Daemon::start_with(&["--flood-rate", "0"]);
    d.network("n1", "10.79.0.0/24");
    let (attacker, c2, c3) = (Netns::new("vf-x"), Netns::new("vf-b"), Netns::new("vf-c"));
    d.attach("n1", &attacker);
    let e2 = d.attach("n1", &c2);
    let e3 = d.attach("n1", &c3);
    let (ip2, ip3) = (e2["ip"].as_str().unwrap().to_string(), e3["ip"].as_str().unwrap().to_string());
    assert!(c2.ping(&ip3, 1));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("flood.py");
    let flood = attacker.spawn(&["python3", script.to_str().unwrap(), "eth0", "100000"]);
    // Talk while the flood runs, then check the flood really ran to the end.
    let during = c2.ping(&ip3, 5);
    let out = flood.wait_with_output().unwrap();
    assert!(out.status.success(), "flood.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.starts_with("100000 "), "flood.py printed {printed}");
    assert!(during, "c2 could not reach c3 during the flood\n{}", d.log());
    assert!(c3.ping(&ip2, 3), "c3 could not reach c2 after the flood");

    let stats = d.ctl_json(&["fdb", "stats"]);
    let entries = stats["entries"].as_u64().unwrap();
    assert!(entries <= stats["max_entries"].as_u64().unwrap(), "{stats}");
    assert!(stats["port_limit"].as_u64().unwrap() > 0, "the per-port cap never engaged: {stats}");
    let fdb = d.ctl_json(&["fdb", "show", "n1"]);
    let from_attacker = fdb.as_array().unwrap().iter().filter(|r| r["port"] == attacker.name.as_str()).count() as u64;
    assert!(from_attacker <= stats["per_port_max"].as_u64().unwrap(), "attacker holds {from_attacker}: {stats}");
    for ep in [&e2, &e3] {
        assert!(fdb.as_array().unwrap().iter().any(|r| r["mac"] == ep["mac"]), "{} was pushed out", ep["mac"]);
    }
    let ports = d.ctl_json(&["port", "ls"]);
    let p = ports.as_array().unwrap().iter().find(|p| p["name"] == attacker.name.as_str()).unwrap();
    assert!(p["rx_packets"].as_u64().unwrap() >= 100_000, "{p}");
}

#[test]
fn flood_with_small_table_evicts_within_bounds() {
    // A table smaller than what the attacker plus the others need: the global bound holds too.
    let d = Daemon::start_with(&["--fdb-max-entries", "64", "--fdb-per-port-max", "64", "--flood-rate", "0"]);
    d.network("n1", "10.80.0.0/24");
    let (attacker, c2, c3) = (Netns::new("vg-x"), Netns::new("vg-b"), Netns::new("vg-c"));
    d.attach("n1", &attacker);
    let e2 = d.attach("n1", &c2);
    let e3 = d.attach("n1", &c3);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("flood.py");
    attacker.exec_ok(&["python3", script.to_str().unwrap(), "eth0", "20000"]);
    assert!(c2.ping(e3["ip"].as_str().unwrap(), 3), "c2 lost c3 after the flood\n{}", d.log());
    let stats = d.ctl_json(&["fdb", "stats"]);
    assert!(stats["entries"].as_u64().unwrap() <= 64, "{stats}");
    assert!(stats["evicted"].as_u64().unwrap() > 0, "a full table must evict: {stats}");
    assert!(c3.ping(e2["ip"].as_str().unwrap(), 1));
}

#[test]
fn flood_is_limited_by_storm_control_and_counted() {
    // The default --flood-rate (2000/s, burst 2000): 100 000 unknown-unicast frames from new
    // sources, sent as fast as the attacker can, reach the other containers only at that
    // rate; what the switch reads beyond it is counted as `storm`, and while it leaves the
    // attacker's TAP unread the attacker's own queue overflows.
    let d = Daemon::start();
    d.network("n1", "10.81.0.0/24");
    let (attacker, c2, c3) = (Netns::new("vs-x"), Netns::new("vs-b"), Netns::new("vs-c"));
    d.attach("n1", &attacker);
    let e2 = d.attach("n1", &c2);
    let e3 = d.attach("n1", &c3);
    let (ip2, ip3) = (e2["ip"].as_str().unwrap().to_string(), e3["ip"].as_str().unwrap().to_string());
    assert!(c2.ping(&ip3, 1));
    let tx_of = |name: &str| {
        let ports = d.ctl_json(&["port", "ls"]);
        ports.as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap()
    };
    let c2_before = tx_of(&c2.name)["tx_packets"].as_u64().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("flood.py");
    let flood = attacker.spawn(&["python3", script.to_str().unwrap(), "--blast", "eth0", "100000"]);
    let during = c2.ping(&ip3, 5);
    let out = flood.wait_with_output().unwrap();
    assert!(out.status.success(), "flood.py failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(during, "c2 could not reach c3 during the flood\n{}", d.log());
    assert!(c3.ping(&ip2, 3), "c3 could not reach c2 after the flood");

    let x = tx_of(&attacker.name);
    let storm = x["drops"]["storm"].as_u64().unwrap_or(0);
    let printed = String::from_utf8_lossy(&out.stdout);
    let kernel_drops: u64 = printed.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let rx = x["rx_packets"].as_u64().unwrap();
    assert!(storm > 0 && storm < rx, "storm {storm} of rx {rx}: {x}");
    assert!(rx + kernel_drops >= 90_000, "rx {rx} + dropped by the kernel {kernel_drops}: where did the flood go? {x}");
    // What reached c2 of the flood: at most the burst plus the rate over the flood's length
    // (a few seconds), plus the pings.
    let c2_got = tx_of(&c2.name)["tx_packets"].as_u64().unwrap() - c2_before;
    assert!(c2_got < 40_000, "c2 got {c2_got} frames of a 100 000-frame flood");
}
