//! Two hosts (network namespaces joined by a veth underlay), each with its own vswitchd and
//! containers, sharing an overlay network through the encrypted tunnel: ping, iperf3 and DNS
//! names across hosts, and an underlay that carries only sealed UDP.

use std::time::Duration;

use serde_json::Value;
use testbed::{eventually, run_ok, Daemon, Netns};

struct Underlay {
    a: Netns,
    b: Netns,
}

/// Hosts A (10.201.0.1) and B (10.201.0.2) on a veth pair.
fn underlay() -> Underlay {
    let (a, b) = (Netns::new("vha-"), Netns::new("vhb-"));
    // No IPv6 chatter on the underlay: the capture below sees only what the switches send.
    for h in [&a, &b] {
        h.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
    }
    run_ok("ip", &["link", "add", "ulA", "netns", &a.name, "type", "veth", "peer", "name", "ulB", "netns", &b.name]);
    a.exec_ok(&["ip", "addr", "add", "10.201.0.1/24", "dev", "ulA"]);
    b.exec_ok(&["ip", "addr", "add", "10.201.0.2/24", "dev", "ulB"]);
    a.exec_ok(&["ip", "link", "set", "ulA", "up"]);
    b.exec_ok(&["ip", "link", "set", "ulB", "up"]);
    Underlay { a, b }
}

fn key(d: &Daemon) -> String {
    d.ctl_json(&["key", "show"])["public_key"].as_str().unwrap().to_string()
}

#[test]
fn overlay_across_two_hosts() {
    let u = underlay();
    let da = Daemon::start_in(&u.a, &["--listen", "10.201.0.1:51820"]);
    let db = Daemon::start_in(&u.b, &["--listen", "10.201.0.2:51820"]);
    let ov = da.ctl_json(&["network", "create", "ov", "--subnet", "10.92.0.0/24", "--ip-range", "10.92.0.0/25", "--overlay"]);
    assert_eq!(ov["mtu"], 1500 - 20 - 8 - 36 - 14, "overlay MTU leaves room for IPv4, UDP, the tunnel and Ethernet: {ov}");
    db.ctl_ok(&["network", "create", "ov", "--subnet", "10.92.0.0/24", "--ip-range", "10.92.0.128/25", "--overlay"]);
    let (a1, b1) = (Netns::new("vta-"), Netns::new("vtb-"));
    let ea = da.attach("ov", &a1);
    let eb = db.attach("ov", &b1);
    let (ipa, ipb) = (ea["ip"].as_str().unwrap().to_string(), eb["ip"].as_str().unwrap().to_string());
    assert_eq!(a1.exec_ok(&["cat", "/sys/class/net/eth0/mtu"]).trim(), "1422");
    if !testbed::offloads_off() {
        // TSO super-frames sized so that their sealed segments fill one UDP GSO send.
        let link = a1.exec_ok(&["ip", "-d", "link", "show", "eth0"]);
        assert!(link.contains(&format!("gso_max_size {} ", 44 * 1350 + 321)), "{link}");
    }

    // Not yet peers: nothing crosses.
    assert!(!a1.ping(&ipb, 1));
    da.ctl_ok(&["peer", "add", &key(&db), "--endpoint", "10.201.0.2:51820", "--network", "ov"]);
    db.ctl_ok(&["peer", "add", &key(&da), "--endpoint", "10.201.0.1:51820", "--network", "ov"]);
    assert!(eventually(Duration::from_secs(5), || a1.ping(&ipb, 1)), "ping across hosts\nA:{}\nB:{}", da.log(), db.log());
    assert!(b1.ping(&ipa, 2));

    // Names cross too: each host announces its endpoints to the peer, inside the tunnel.
    let resolved = eventually(Duration::from_secs(15), || a1.dig(&[&b1.name]) == vec![ipb.clone()]);
    assert!(resolved, "B's container resolves on A\n{}", da.log());
    assert_eq!(b1.dig(&[&a1.name]), vec![ipa.clone()]);
    assert!(a1.ping(&b1.name, 1), "ping by name across hosts");

    // The underlay carries only sealed UDP: a marker in ping payloads never shows in clear.
    let pcap = std::env::temp_dir().join(format!("{}.pcap", testbed::unique("vswitch-underlay-")));
    let mut cap = u.a.spawn(&["tcpdump", "-i", "ulA", "-n", "-U", "-w", pcap.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(700));
    // "VSWMARK!" as ping's fill pattern.
    a1.exec_ok(&["ping", "-c", "5", "-i", "0.2", "-p", "56535741524b2121", &ipb]);
    b1.exec_ok(&["bash", "-c", &format!("echo VSWMARK!VSWMARK! > /dev/udp/{ipa}/9")]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = cap.kill();
    let _ = cap.wait();
    let bytes = std::fs::read(&pcap).unwrap();
    let text = u.a.exec_ok(&["tcpdump", "-r", pcap.to_str().unwrap(), "-n"]);
    let _ = std::fs::remove_file(&pcap);
    assert!(text.lines().count() >= 10, "the capture saw the traffic: {text}");
    for line in text.lines() {
        let underlay_arp = line.contains("ARP") && line.contains("10.201.0.");
        assert!(underlay_arp || (line.contains("UDP") && line.contains(".51820")), "only tunnel datagrams on the underlay: {line}");
    }
    assert!(!bytes.windows(8).any(|w| w == b"VSWMARK!"), "the marker crossed the underlay in clear");

    // A TCP transfer across hosts completes.
    let mut server = b1.spawn(&["iperf3", "-s", "-1"]);
    assert!(eventually(Duration::from_secs(5), || b1.exec_ok(&["ss", "-ltnH"]).contains(":5201")));
    let out = a1.exec_ok(&["iperf3", "-c", &ipb, "-t", "2", "-J"]);
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_str(&out).unwrap();
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    eprintln!("iperf3 across the tunnel: {:.3} Gbit/s", v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9);
    assert!(bytes > 1_000_000, "iperf3 moved only {bytes} bytes");

    // With offloads, A's container hands over TCP super-frames that A cuts into segments for
    // the tunnel, and B merges the segments of each read into super-frames for its container.
    let (ports_a, ports_b) = (da.ctl_json(&["port", "ls"]), db.ctl_json(&["port", "ls"]));
    let sum = |ports: &Value, kind: &str, field: &str| -> u64 {
        ports.as_array().unwrap().iter().filter(|p| p["kind"] == kind).map(|p| p[field].as_u64().unwrap()).sum()
    };
    if testbed::offloads_off() {
        assert_eq!(sum(&ports_a, "tunnel", "segmented"), 0, "{ports_a}");
        assert_eq!(sum(&ports_b, "tap", "coalesced"), 0, "{ports_b}");
    } else {
        assert!(sum(&ports_a, "tunnel", "segmented") > 0, "A segments super-frames for the tunnel: {ports_a}");
        assert!(sum(&ports_b, "tap", "coalesced") > 0, "B coalesces segments for its TAP: {ports_b}");
    }
    for p in ports_a.as_array().unwrap().iter().chain(ports_b.as_array().unwrap()) {
        assert!(p["drops"].get("bad_offload").is_none(), "no malformed offload: {p}");
    }

    // Peers show a handshake and traffic; MACs behind the peer are learned against it.
    let peers = da.ctl_json(&["peer", "ls"]);
    let p = &peers[0];
    assert!(p["last_handshake_secs"].as_u64().is_some() && p["tx_bytes"].as_u64().unwrap() > 1_000_000, "{p}");
    let fdb = da.ctl_json(&["fdb", "show", "ov"]);
    let row = fdb.as_array().unwrap().iter().find(|r| r["mac"] == eb["mac"]).expect("B's container learned on A");
    assert!(row["port"].as_str().unwrap().starts_with("peer:"), "{row}");

    // Removing the peer cuts the network (and B's names) off again.
    da.ctl_ok(&["peer", "rm", &key(&db)]);
    assert!(!a1.ping(&ipb, 1));
    assert!(a1.dig(&[&b1.name]).is_empty(), "names of a removed peer are gone");
}

#[test]
fn peers_are_refused_when_they_make_no_sense() {
    let u = underlay();
    let d = Daemon::start_in(&u.a, &["--listen", "10.201.0.1:51820"]);
    d.network("plain", "10.93.0.0/24");
    d.ctl_ok(&["network", "create", "ov", "--subnet", "10.93.1.0/24", "--overlay"]);
    let own = key(&d);
    let other = "DhtpfylFuQH/k7UYfL5Rly/lg9Yuhm55ZwNZoEGWgVE=";
    for (args, what) in [
        (vec!["peer", "add", &own, "--network", "ov"], "own key"),
        (vec!["peer", "add", "bm90LWEta2V5", "--network", "ov"], "not 32 bytes"),
        (vec!["peer", "add", other, "--network", "plain"], "not an overlay network"),
        (vec!["peer", "add", other, "--network", "missing"], "unknown network"),
    ] {
        let out = d.ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
    }
    let out = d.ctl(&["network", "create", "big", "--subnet", "10.93.2.0/24", "--overlay", "--mtu", "1500"]);
    assert_eq!(out.status.code(), Some(1), "an overlay MTU that cannot fit the tunnel");
    d.ctl_ok(&["peer", "add", other, "--endpoint", "10.201.0.9:51820", "--network", "ov"]);
    let out = d.ctl(&["network", "rm", "ov"]);
    assert_eq!(out.status.code(), Some(1), "a network carried by a peer is not removed under it");
    assert_eq!(d.ctl_json(&["peer", "ls"]).as_array().unwrap().len(), 1);
    // A daemon without --listen says how to turn the tunnel on.
    let plain = Daemon::start();
    let out = plain.ctl(&["key", "show"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"), "{out:?}");
}
