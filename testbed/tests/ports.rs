//! Interface ports: an existing interface of vswitchd's namespace on a network, as an uplink,
//! an access port or an 802.1Q trunk; checked with ping, busybox arping and tcpdump.
//!
//! The uplink is one end of a veth whose other end is in a "LAN" namespace. This kernel has no
//! 802.1Q (no VLAN subinterfaces, no VLAN-aware bridge), so the tagged LAN is a real VLAN
//! switch in user space, vde_switch (Debian vde2): its trunk port is a TAP moved into
//! vswitchd's namespace and made an interface port there; its access ports are TAPs named
//! `eth0.100`, `eth0.200` in the LAN host's namespace, untagged members of VLAN 100 and 200,
//! which stand for the VLAN subinterfaces of a LAN host.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testbed::{eventually, unique, Daemon, Lan, Netns};

fn port_rows<'a>(ports: &'a Value, ifname: &str) -> Vec<&'a Value> {
    ports.as_array().unwrap().iter().filter(|p| p["ifname"] == ifname && p["kind"] == "interface").collect()
}

fn counter(p: &Value, name: &str) -> u64 {
    p[name].as_u64().unwrap_or(0)
}

/// The code of a refused vswitchctl call (exit status 1, "... (code)" on stderr).
fn refused(d: &Daemon, args: &[&str]) -> String {
    let out = d.ctl(args);
    assert_eq!(out.status.code(), Some(1), "{args:?} should be refused: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn uplink_puts_containers_on_the_lan_and_survives_restart() {
    testbed::ensure_commands(&[("dig", "dnsutils")]);
    let mut d = Daemon::start();
    let lan = Lan::new("plan-");
    // The LAN's router.
    lan.ns.exec_ok(&["ip", "addr", "add", "192.168.77.1/24", "dev", "eth0"]);
    d.ctl_ok(&[
        "network",
        "create",
        "lan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        "192.168.77.1",
        "--ip-range",
        "192.168.77.128/25",
        "--uplink",
        &lan.host,
    ]);
    let net = d.ctl_json(&["network", "inspect", "lan"]);
    assert_eq!(net["uplink"], lan.host.as_str(), "{net}");
    assert_eq!(net["gateway"], "192.168.77.1", "{net}");
    let dns = net["dns_address"].as_str().expect("an uplink network has a DNS address of the switch").to_string();
    assert!(dns.starts_with("192.168.77.") && dns != "192.168.77.1", "{net}");

    let c1 = Netns::new("pc1-");
    let ep = d.ctl_json(&["attach", "lan", "--netns", &c1.path(), "--name", "web"]);
    let ip = ep["ip"].as_str().unwrap().to_string();
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(last >= 128, "address {ip} outside --ip-range");
    // The container's default route is the LAN's router.
    let routes = c1.exec_ok(&["ip", "route"]);
    assert!(routes.contains("default via 192.168.77.1"), "{routes}");

    assert!(c1.ping("192.168.77.1", 3), "container -> LAN host\n{}", d.log());
    assert!(lan.ns.ping(&ip, 3), "LAN host -> container\n{}", d.log());
    // The switch answers at its own address, ARP and ping from both sides, DNS for containers.
    assert!(c1.ping(&dns, 1) && lan.ns.ping(&dns, 1), "the switch's address {dns} does not answer");
    let answer = c1.dig(&[&format!("@{dns}"), "web"]);
    assert_eq!(answer, vec![ip.clone()], "vswitch DNS on the uplink network");

    let ports = d.ctl_json(&["port", "ls"]);
    let rows = port_rows(&ports, &lan.host);
    assert_eq!(rows.len(), 1, "{ports}");
    assert!(counter(rows[0], "rx_packets") >= 3 && counter(rows[0], "tx_packets") >= 3, "{}", rows[0]);

    // A planned stop and a kill -9: the uplink comes back with the network, traffic resumes.
    d.terminate();
    d.restart();
    assert!(eventually(Duration::from_secs(5), || lan.ns.ping(&ip, 1)), "no traffic after restart\n{}", d.log());
    d.kill9();
    d.restart();
    assert!(eventually(Duration::from_secs(5), || c1.ping("192.168.77.1", 1)), "no traffic after kill -9\n{}", d.log());
    assert_eq!(port_rows(&d.ctl_json(&["port", "ls"]), &lan.host).len(), 1);

    // The uplink goes with its network; the interface stays.
    assert!(refused(&d, &["port", "rm", &lan.host]).contains("network_in_use"));
    d.ctl_ok(&["network", "rm", "lan", "--force"]);
    assert!(lan.host_link_exists(), "removing the network deleted the interface");
    assert!(port_rows(&d.ctl_json(&["port", "ls"]), &lan.host).is_empty());
    assert!(!lan.ns.ping(&ip, 1), "the container is still reachable from the LAN");
}

/// A VLAN-aware LAN: vde_switch in the namespace `ns` with its trunk port (1) on the TAP
/// `trunk`, moved into vswitchd's (the root) namespace, tagged for every VLAN in `vlans`; and
/// for each VLAN id an access port whose TAP `eth0.ID` (in `ns`) has address `ADDR`. VLAN 0
/// names an untagged access port `eth0` (untagged frames on the trunk).
struct VdeLan {
    ns: Netns,
    trunk: String,
    dir: std::path::PathBuf,
}

impl VdeLan {
    fn new(prefix: &str, vlans: &[(u16, &str)]) -> VdeLan {
        testbed::ensure_commands(&[("vde_switch", "vde2")]);
        let ns = Netns::new(prefix);
        let trunk = unique("vt");
        let dir = std::env::temp_dir().join(unique("vswitch-vde-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rc = String::new();
        for (k, (vid, _)) in vlans.iter().enumerate() {
            let port = k + 2;
            if *vid != 0 {
                rc += &format!("vlan/create {vid}\nvlan/addport {vid} 1\n");
            }
            rc += &format!("port/create {port}\nport/setvlan {port} {vid}\n");
        }
        std::fs::write(dir.join("rc"), format!("port/create 1\n{rc}")).unwrap();
        let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
        let lan = VdeLan { ns, trunk, dir: dir.clone() };
        lan.ns.exec_ok(&["vde_switch", "-s", &p("sock"), "-M", &p("mgmt"), "-f", &p("rc"), "-d", "-p", &p("switch.pid")]);
        assert!(eventually(Duration::from_secs(5), || dir.join("sock").exists()), "vde_switch did not start");
        lan.ns.exec_ok(&["vde_plug2tap", "-s", &p("sock"), "-p", "1", "-d", "-P", &p("trunk.pid"), &lan.trunk]);
        for (k, (vid, addr)) in vlans.iter().enumerate() {
            let tap = if *vid == 0 { "eth0".to_string() } else { format!("eth0.{vid}") };
            let port = (k + 2).to_string();
            lan.ns.exec_ok(&["vde_plug2tap", "-s", &p("sock"), "-p", &port, "-d", "-P", &p(&format!("tap{k}.pid")), &tap]);
            assert!(eventually(Duration::from_secs(5), || lan.ns.links().contains(&tap)), "no TAP {tap}");
            lan.ns.exec_ok(&["ip", "addr", "add", addr, "dev", &tap]);
            lan.ns.exec_ok(&["ip", "link", "set", &tap, "up"]);
        }
        assert!(eventually(Duration::from_secs(5), || lan.ns.links().contains(&lan.trunk)), "no trunk TAP");
        let me = std::process::id().to_string();
        lan.ns.exec_ok(&["ip", "link", "set", &lan.trunk, "netns", &me]);
        testbed::run_ok("ip", &["link", "set", &lan.trunk, "up"]);
        lan
    }
}

impl Drop for VdeLan {
    fn drop(&mut self) {
        // Only the processes this LAN started, by the pids they wrote.
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Ok(pid) = std::fs::read_to_string(e.path()) {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                }
            }
        }
        let _ = Command::new("ip").args(["link", "del", &self.trunk]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn trunk_carries_two_networks_by_vlan_tag() {
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "v100", "--subnet", "10.201.100.0/24", "--vlan", "100"]);
    d.ctl_ok(&["network", "create", "v200", "--subnet", "10.201.200.0/24", "--vlan", "200"]);
    let lan =
        VdeLan::new("ptr-", &[(100, "10.201.100.250/24"), (200, "10.201.200.250/24"), (300, "10.201.44.250/24"), (0, "10.201.45.250/24")]);
    let out = d.ctl_ok(&["port", "add", "v100", "--interface", &lan.trunk, "--trunk", "100,200"]);
    assert!(out.contains("v100 (VLAN 100") && out.contains("v200 (VLAN 200"), "{out}");
    let (a, b) = (Netns::new("pa-"), Netns::new("pb-"));
    let ea = d.ctl_json(&["attach", "v100", "--netns", &a.path(), "--name", "a"]);
    let eb = d.ctl_json(&["attach", "v200", "--netns", &b.path(), "--name", "b"]);
    let (ip_a, ip_b) = (ea["ip"].as_str().unwrap().to_string(), eb["ip"].as_str().unwrap().to_string());
    let (mac_a, mac_b) = (ea["mac"].as_str().unwrap().to_string(), eb["mac"].as_str().unwrap().to_string());

    // tcpdump on the trunk, the wire between vswitch and the LAN's switch.
    let pcap = d.dir.join("trunk.pcap");
    let mut cap =
        Command::new("tcpdump").args(["-i", &lan.trunk, "-n", "-U", "--immediate-mode", "-w", pcap.to_str().unwrap()]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));

    // Each VLAN interface of the LAN host reaches its own network, both ways.
    assert!(lan.ns.ping(&ip_a, 2), "eth0.100 -> v100\n{}", d.log());
    assert!(lan.ns.ping(&ip_b, 2), "eth0.200 -> v200\n{}", d.log());
    assert!(a.ping("10.201.100.250", 2) && b.ping("10.201.200.250", 2), "containers -> their VLAN's LAN address");
    // And only its own: ARP for a container's address sent on the other VLAN gets no answer.
    let arping = |dev: &str, ip: &str| lan.ns.exec(&["busybox", "arping", "-c", "2", "-w", "2", "-I", dev, ip]).status.success();
    assert!(!arping("eth0.100", &ip_b), "VLAN 100 reached network v200");
    assert!(!arping("eth0.200", &ip_a), "VLAN 200 reached network v100");
    assert!(arping("eth0.200", &ip_b), "VLAN 200 does not reach v200");
    // A VLAN the trunk does not carry, and untagged frames (no native network): counted drops.
    let _ = lan.ns.exec(&["busybox", "arping", "-c", "2", "-w", "1", "-I", "eth0.300", "10.201.44.1"]);
    let _ = lan.ns.exec(&["busybox", "arping", "-c", "2", "-w", "1", "-I", "eth0", "10.201.45.1"]);
    assert!(!a.ping("10.201.200.250", 1), "v100 reached VLAN 200's address");

    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").args(["-INT", &cap.id().to_string()]).status();
    let _ = cap.wait();
    let text = testbed::run_ok("tcpdump", &["-r", pcap.to_str().unwrap(), "-n", "-e"]);
    let tagged = |vid: &str, ip: &str| text.lines().any(|l| l.contains(&format!("vlan {vid},")) && l.contains(ip));
    assert!(tagged("100", &ip_a) && tagged("200", &ip_b), "no tagged frames of the containers on the trunk:\n{text}");
    // Everything the containers sent left with their network's tag.
    let from = |mac: &str| text.lines().filter(|l| l.split_whitespace().nth(1) == Some(mac)).collect::<Vec<_>>();
    let (fa, fb) = (from(&mac_a), from(&mac_b));
    assert!(!fa.is_empty() && fa.iter().all(|l| l.contains("vlan 100,")), "v100 frames not tagged 100:\n{text}");
    assert!(!fb.is_empty() && fb.iter().all(|l| l.contains("vlan 200,")), "v200 frames not tagged 200:\n{text}");

    let ports = d.ctl_json(&["port", "ls"]);
    let rows = port_rows(&ports, &lan.trunk);
    assert_eq!(rows.len(), 2, "one row per network of the trunk: {ports}");
    let vlan_drops: u64 = rows.iter().map(|r| r["drops"]["vlan"].as_u64().unwrap_or(0)).sum();
    assert!(vlan_drops >= 4, "frames of VLAN 300 and untagged ones not counted: {ports}");

    // Removed: the interface stays, the LAN is cut off.
    d.ctl_ok(&["port", "rm", &lan.trunk]);
    assert!(Command::new("ip").args(["link", "show", &lan.trunk]).output().unwrap().status.success(), "port rm deleted the interface");
    assert!(!lan.ns.ping(&ip_a, 1), "still switched after port rm");
    assert!(port_rows(&d.ctl_json(&["port", "ls"]), &lan.trunk).is_empty());
}

#[test]
fn access_port_with_a_tag_and_bad_input() {
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "n1", "--subnet", "10.202.0.0/24"]);
    let lan = VdeLan::new("pbad-", &[(42, "10.202.0.200/24")]);
    d.ctl_ok(&["port", "add", "n1", "--interface", &lan.trunk, "--vlan", "42"]);
    // The LAN host on VLAN 42 reaches the network's gateway (the switch) and a container.
    let c = Netns::new("pc-");
    let ip = d.ctl_json(&["attach", "n1", "--netns", &c.path(), "--name", "c"])["ip"].as_str().unwrap().to_string();
    assert!(lan.ns.ping("10.202.0.1", 2) && lan.ns.ping(&ip, 2), "eth0.42 -> n1\n{}", d.log());

    let ports_before = d.ctl_json(&["port", "ls"]);
    let nets_before = d.ctl_json(&["network", "ls"]);
    let state_before = std::fs::read(d.dir.join("state/state.json")).unwrap();
    let missing = unique("nope");
    let other = Lan::new("pbad2-");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["port", "add", "n1", "--interface", &missing], "interface_not_found"),
        (vec!["port", "add", "n1", "--interface", &lan.trunk], "interface_in_use"),
        (vec!["port", "add", "n1", "--interface", &other.host, "--vlan", "4095"], "invalid_vlan"),
        (vec!["port", "add", "n1", "--interface", &other.host, "--vlan", "0"], "invalid_vlan"),
        (vec!["port", "add", "n1", "--interface", &other.host, "--trunk", "7,4095"], "invalid_vlan"),
        (vec!["port", "add", "n1", "--interface", &other.host, "--trunk", "77"], "invalid_vlan"),
        (vec!["port", "add", "nonet", "--interface", &other.host], "network_not_found"),
        (vec!["port", "add", "n1", "--interface", "bad/name"], "invalid_name"),
        (vec!["port", "rm", &other.host], "interface_not_found"),
        (vec!["network", "create", "n2", "--subnet", "10.203.0.0/24", "--uplink", &missing], "interface_not_found"),
        (vec!["network", "create", "n2", "--subnet", "10.203.0.0/24", "--uplink", &lan.trunk], "interface_in_use"),
        (vec!["network", "create", "n2", "--subnet", "10.203.0.0/24", "--vlan", "4095"], "invalid_vlan"),
    ];
    for (args, code) in cases {
        let err = refused(&d, &args);
        assert!(err.contains(code), "{args:?}: {err}");
    }
    let out = d.ctl(&["port", "add", "n1", "--interface", &other.host, "--vlan", "5", "--trunk", "6"]);
    assert_eq!(out.status.code(), Some(2), "--vlan with --trunk is a usage error");
    // Nothing changed: the same ports (counters aside), networks and state file.
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|p| (p["id"].clone(), p["name"].clone())).collect::<Vec<_>>();
    assert_eq!(ids(&d.ctl_json(&["port", "ls"])), ids(&ports_before));
    assert_eq!(d.ctl_json(&["network", "ls"]), nets_before);
    assert_eq!(std::fs::read(d.dir.join("state/state.json")).unwrap(), state_before, "a refused request changed the state file");
    assert!(lan.ns.ping(&ip, 1), "the good port stopped working");
}

#[test]
fn priority_bits_stay_between_tagged_interface_ports() {
    testbed::ensure_commands(&[("python3", "python3")]);
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "v100", "--subnet", "10.204.0.0/24", "--vlan", "100"]);
    let (l1, l2) = (Lan::new("ppa-"), Lan::new("ppb-"));
    d.ctl_ok(&["port", "add", "v100", "--interface", &l1.host, "--vlan", "100"]);
    d.ctl_ok(&["port", "add", "v100", "--interface", &l2.host, "--vlan", "100"]);
    let pcap = d.dir.join("l2.pcap");
    let mut cap = l2.ns.spawn(&[
        "tcpdump",
        "-i",
        "eth0",
        "-n",
        "-e",
        "-U",
        "--immediate-mode",
        "-w",
        pcap.to_str().unwrap(),
        "ether",
        "src",
        "02:00:00:00:00:77",
    ]);
    std::thread::sleep(Duration::from_millis(700));
    // A broadcast frame on VLAN 100 with priority 5 (PCP), and one with priority 0, from l1.
    let py = r#"
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for pcp in (5, 0):
    tci = (pcp << 13) | 100
    s.send(b"\xff" * 6 + bytes.fromhex("020000000077") + b"\x81\x00" + tci.to_bytes(2, "big") + b"\x88\xb5" + bytes([pcp]) * 46)
"#;
    l1.ns.exec_ok(&["python3", "-c", py]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &cap.id().to_string()]).status();
    let _ = cap.wait();
    let text = l2.ns.exec_ok(&["tcpdump", "-r", pcap.to_str().unwrap(), "-n", "-e"]);
    assert!(text.contains("vlan 100, p 5,"), "priority 5 lost on the way:\n{text}\n{}", d.ctl_ok(&["port", "ls"]));
    assert!(text.contains("vlan 100, p 0,"), "the priority-0 frame is missing:\n{text}");
}
