//! Root integration tests: frames between real containers (network namespaces) through real
//! TAPs, checked with ping, iperf3 and tcpdump.

use std::time::Duration;

use serde_json::Value;
use testbed::{eventually, Daemon, Netns};

fn ip(ep: &Value) -> String {
    ep["ip"].as_str().expect("endpoint has an ip").to_string()
}

#[test]
fn ping_between_containers_and_to_gateway_and_macs_learned() {
    let d = Daemon::start();
    // The control socket is the daemon's alone: mode 0600.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&d.socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");
    d.network("n1", "10.70.0.0/24");
    let (c1, c2) = (Netns::new("vt-a"), Netns::new("vt-b"));
    let e1 = d.attach("n1", &c1);
    let e2 = d.attach("n1", &c2);
    assert_eq!(ip(&e1), "10.70.0.2");
    assert_eq!(ip(&e2), "10.70.0.3");

    // Inside the container: the TAP has the address, MTU and a default route via the gateway.
    let addr = c1.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.70.0.2/24"), "{addr}");
    let route = c1.exec_ok(&["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.70.0.1 dev eth0"), "{route}");

    assert!(c1.ping(&ip(&e2), 3), "c1 cannot ping c2\n{}", d.log());
    assert!(c2.ping(&ip(&e1), 2), "c2 cannot ping c1");
    assert!(c1.ping("10.70.0.1", 2), "c1 cannot ping its gateway");

    // Both containers' MACs are learned on their own ports.
    let fdb = d.ctl_json(&["fdb", "show", "n1"]);
    for (ep, name) in [(&e1, &c1.name), (&e2, &c2.name)] {
        let row = fdb.as_array().unwrap().iter().find(|r| r["mac"] == ep["mac"]);
        let row = row.unwrap_or_else(|| panic!("{} not learned: {fdb}", ep["mac"]));
        assert_eq!(row["port"].as_str(), Some(name.as_str()));
        assert_eq!(row["static"], false);
    }
    let human = d.ctl_ok(&["fdb", "show"]);
    assert!(human.contains(e1["mac"].as_str().unwrap()), "{human}");

    // Port counters moved, and the gateway port answered.
    let ports = d.ctl_json(&["port", "ls"]);
    let p1 = ports.as_array().unwrap().iter().find(|p| p["name"] == c1.name.as_str()).unwrap();
    assert!(p1["rx_packets"].as_u64().unwrap() >= 5, "{p1}");
    assert!(p1["tx_packets"].as_u64().unwrap() >= 5, "{p1}");
    let offloads: Vec<&str> = p1["offloads"].as_array().unwrap().iter().filter_map(|o| o.as_str()).collect();
    if testbed::offloads_off() {
        assert!(offloads.is_empty(), "--no-offloads: {p1}");
    } else {
        assert!(offloads.contains(&"vnet_hdr") && offloads.contains(&"tso4"), "{p1}");
    }
    let stats = d.ctl_json(&["fdb", "stats"]);
    assert!(stats["learned"].as_u64().unwrap() >= 3, "{stats}");
}

#[test]
fn networks_are_isolated() {
    let d = Daemon::start();
    d.network("blue", "10.71.1.0/24");
    d.network("red", "10.71.2.0/24");
    let (b1, b2, r1) = (Netns::new("vt-b1"), Netns::new("vt-b2"), Netns::new("vt-r1"));
    let eb1 = d.attach("blue", &b1);
    let eb2 = d.attach("blue", &b2);
    let er1 = d.attach("red", &r1);
    assert!(b1.ping(&ip(&eb2), 2));

    // Make b1 believe red's subnet is on its own link, so it ARPs for r1 directly: the
    // broadcast must stay inside blue. tcpdump in r1 must see nothing from b1.
    b1.exec_ok(&["ip", "route", "add", "10.71.2.0/24", "dev", "eth0"]);
    let mut cap = r1.spawn(&["tcpdump", "-i", "eth0", "-n", "-l", "-c", "1", "ether", "src", eb1["mac"].as_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!b1.ping(&ip(&er1), 2), "b1 reached r1 across networks");
    assert!(!b1.ping("10.71.2.1", 1), "b1 reached red's gateway");
    let _ = cap.kill();
    let out = cap.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.trim().is_empty(), "a frame from b1 crossed into red: {seen}");
    // Red's port never transmitted a frame from blue: only its own gateway talks to it.
    assert!(r1.ping("10.71.2.1", 1));
}

#[test]
fn iperf3_tcp_transfer_completes() {
    let d = Daemon::start();
    d.network("n1", "10.72.0.0/24");
    let (c1, c2) = (Netns::new("vt-i1"), Netns::new("vt-i2"));
    d.attach("n1", &c1);
    let e2 = d.attach("n1", &c2);
    let mut server = c2.spawn(&["iperf3", "-s", "-1", "-B", &ip(&e2)]);
    let listening = eventually(Duration::from_secs(5), || c2.exec_ok(&["ss", "-ltnH"]).contains(":5201"));
    assert!(listening, "iperf3 server did not start");
    let out = c1.exec_ok(&["iperf3", "-c", &ip(&e2), "-t", "2", "-J"]);
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_str(&out).expect("iperf3 -J output");
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    eprintln!("iperf3 through vswitchd: {:.2} Gbit/s", bps / 1e9);
    assert!(bytes > 1_000_000, "iperf3 moved only {bytes} bytes: {out}");
}

#[test]
fn detach_removes_tap_and_releases_address() {
    let d = Daemon::start();
    d.network("n1", "10.73.0.0/29");
    let (c1, c2) = (Netns::new("vt-d1"), Netns::new("vt-d2"));
    let e1 = d.attach("n1", &c1);
    d.attach("n1", &c2);
    assert!(c1.links().contains(&"eth0".to_string()));
    d.ctl_ok(&["detach", "n1", &c1.name]);
    assert!(!c1.links().contains(&"eth0".to_string()), "TAP still in {}: {:?}", c1.name, c1.links());
    let detail = d.ctl_json(&["network", "inspect", "n1"]);
    assert_eq!(detail["endpoints"], 1, "{detail}");
    assert_eq!(detail["usage"]["in_use"], 1, "{detail}");
    // Re-attach with the released address explicitly: it is free again.
    let again = d.ctl_json(&["attach", "n1", "--netns", &c1.path(), "--name", "again", "--ip", &ip(&e1)]);
    assert_eq!(again["ip"], e1["ip"]);
    // Detaching something that is not there is a clear error.
    let out = d.ctl(&["detach", "n1", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
}

#[test]
fn sigterm_leaves_no_tap_and_no_socket() {
    let mut d = Daemon::start();
    d.network("n1", "10.74.0.0/24");
    let (c1, c2) = (Netns::new("vt-s1"), Netns::new("vt-s2"));
    d.attach("n1", &c1);
    d.attach("n1", &c2);
    let socket = d.socket.clone();
    let status = d.terminate();
    assert!(status.success(), "vswitchd exit status {status}: {}", d.log());
    for c in [&c1, &c2] {
        assert!(!c.links().contains(&"eth0".to_string()), "TAP left in {}", c.name);
    }
    assert!(!socket.exists(), "control socket left behind");
    // The daemon made no namespace of its own: only the test's two exist with our prefix.
    let left = testbed::run_ok("ip", &["netns", "list"]);
    assert!(!left.lines().any(|l| l.starts_with("vswitch")), "{left}");
}

#[test]
fn one_container_on_two_networks() {
    let d = Daemon::start();
    d.network("front", "10.76.1.0/24");
    d.network("back", "10.76.2.0/24");
    let (web, db, client) = (Netns::new("vt-w"), Netns::new("vt-db"), Netns::new("vt-cl"));
    let ec = d.attach("front", &client);
    d.attach("front", &web);
    d.ctl_ok(&["attach", "back", "--netns", &web.path(), "--name", "web-back", "--ifname", "eth1"]);
    let edb = d.attach("back", &db);
    // web reaches both sides; its default route stays on the first network.
    assert!(web.ping(ec["ip"].as_str().unwrap(), 1));
    assert!(web.ping(edb["ip"].as_str().unwrap(), 1));
    let route = web.exec_ok(&["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.76.1.1 dev eth0") && !route.contains("eth1"), "{route}");
    // client (front only) still cannot reach db: web is not a router and neither is the switch.
    assert!(!client.ping(edb["ip"].as_str().unwrap(), 1));
    // Attaching the daemon's own namespace is refused.
    let body = format!(r#"{{"pid":{},"name":"host"}}"#, d.pid());
    let (status, v) = d.api("POST", "/v1/networks/front/endpoints", Some(&body));
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
}
