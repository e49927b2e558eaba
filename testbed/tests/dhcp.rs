//! The DHCP server on the gateway, for clients behind interface ports: busybox udhcpc (Debian
//! busybox-static) and ISC dhclient (isc-dhcp-client) in namespaces joined by a veth, getting
//! an address, router, DNS server and MTU, renewing, releasing, keeping the lease across a
//! vswitchd restart; a rogue server (busybox udhcpd) on another port not believed; truncated and
//! looping messages counted as drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;
use testbed::{eventually, Daemon, Lan};

/// A client script that appends one line per event (`EVENT ip=.. router=.. dns=.. mtu=..`) to
/// `events` and configures the address as the client says.
fn script(dir: &Path, name: &str, events: &Path, body: &str) -> PathBuf {
    let path = dir.join(name);
    let log = format!(
        "echo \"$1 $reason ip=$ip$new_ip_address router=$router$new_routers dns=$dns$new_domain_name_servers mtu=$mtu$new_interface_mtu\" >> {}",
        events.display()
    );
    std::fs::write(&path, format!("#!/bin/sh\n{log}\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn events(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

fn wait_event(path: &Path, what: &str, n: usize) -> Option<String> {
    let mut found = None;
    eventually(Duration::from_secs(15), || {
        let ev = events(path);
        let hits: Vec<&String> = ev.iter().filter(|l| l.starts_with(what) || l.contains(&format!(" {what} "))).collect();
        found = hits.get(n.saturating_sub(1)).map(|s| s.to_string());
        hits.len() >= n
    });
    found
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).unwrap_or("")
}

fn leases(d: &Daemon, net: &str) -> Vec<Value> {
    d.ctl_json(&["network", "inspect", net])["dhcp_leases"].as_array().cloned().unwrap_or_default()
}

fn mac_of(lan: &Lan) -> String {
    let v: Value = serde_json::from_str(&lan.ns.exec_ok(&["ip", "-j", "link", "show", "eth0"])).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// A client or server process of the test, killed (and reaped) when dropped, so a failing
/// assertion leaves nothing running.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn udhcpc(lan: &Lan, script: &Path) -> Bg {
    Bg(lan.ns.spawn(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-f",
        "-R",
        "-t",
        "8",
        "-T",
        "1",
        "-A",
        "1",
        "-O",
        "mtu",
        "-s",
        script.to_str().unwrap(),
    ]))
}

fn signal(child: &Bg, sig: &str) {
    let _ = Command::new("kill").args([sig, &child.0.id().to_string()]).status();
}

#[test]
fn udhcpc_and_dhclient_get_address_router_dns_mtu_renew_and_release() {
    testbed::ensure_commands(&[("dhclient", "isc-dhcp-client"), ("busybox", "busybox-static")]);
    let mut d = Daemon::start();
    d.ctl_ok(&["network", "create", "dh", "--subnet", "10.210.0.0/24", "--mtu", "1400"]);
    let (vm1, vm2) = (Lan::new("dvm1-"), Lan::new("dvm2-"));
    d.ctl_ok(&["port", "add", "dh", "--interface", &vm1.host]);
    d.ctl_ok(&["port", "add", "dh", "--interface", &vm2.host]);
    let configure = r#"case "$1" in bound|renew) ip addr flush dev $interface; ip addr add $ip/$mask dev $interface;; deconfig) ip addr flush dev $interface;; esac"#;

    // busybox udhcpc: bound with our address, router, DNS server and MTU.
    let ev1 = d.dir.join("udhcpc.events");
    let s1 = script(&d.dir, "udhcpc.sh", &ev1, configure);
    let mut client = udhcpc(&vm1, &s1);
    let bound = wait_event(&ev1, "bound", 1).unwrap_or_else(|| panic!("udhcpc got no lease: {:?}\n{}", events(&ev1), d.log()));
    let ip = field(&bound, "ip").to_string();
    assert!(ip.starts_with("10.210.0.") && ip != "10.210.0.1", "{bound}");
    assert_eq!((field(&bound, "router"), field(&bound, "dns"), field(&bound, "mtu")), ("10.210.0.1", "10.210.0.1", "1400"), "{bound}");
    assert!(eventually(Duration::from_secs(3), || vm1.ns.ping("10.210.0.1", 1)), "the leased address does not work");
    let mac1 = mac_of(&vm1);
    assert!(leases(&d, "dh").iter().any(|l| l["ip"] == ip.as_str() && l["mac"] == mac1.as_str()), "lease not in inspect");

    // Renew (SIGUSR1): the same address.
    signal(&client, "-USR1");
    let renew = wait_event(&ev1, "renew", 1).unwrap_or_else(|| panic!("no renew: {:?}", events(&ev1)));
    assert_eq!(field(&renew, "ip"), ip, "{renew}");

    // The lease survives a restart of vswitchd: a renewal after it gets the same address.
    d.terminate();
    d.restart();
    assert!(leases(&d, "dh").iter().any(|l| l["ip"] == ip.as_str()), "lease lost across the restart");
    signal(&client, "-USR1");
    let renew = wait_event(&ev1, "renew", 2).unwrap_or_else(|| panic!("no renew after restart: {:?}\n{}", events(&ev1), d.log()));
    assert_eq!(field(&renew, "ip"), ip, "{renew}");

    // Release (udhcpc -R releases on exit): the lease goes back to the pool. (The renew's
    // script flushed and re-added the address: wait until it is back, or the RELEASE has no
    // source to leave from.)
    assert!(eventually(Duration::from_secs(3), || vm1.ns.ping("10.210.0.1", 1)), "the renewed address does not work");
    signal(&client, "-TERM");
    let _ = client.0.wait();
    assert!(
        eventually(Duration::from_secs(5), || leases(&d, "dh").is_empty()),
        "released lease still held: {:?} {}",
        leases(&d, "dh"),
        d.ctl_ok(&["port", "ls"])
    );

    // ISC dhclient: bound, then a second run (INIT-REBOOT from its lease file) keeps the
    // address, then -r releases it.
    let ev2 = d.dir.join("dhclient.events");
    let s2 = script(
        &d.dir,
        "dhclient.sh",
        &ev2,
        r#"case "$reason" in BOUND|RENEW|REBOOT) ip addr flush dev $interface; ip addr add $new_ip_address/24 dev $interface;; RELEASE|EXPIRE) ip addr flush dev $interface;; esac"#,
    );
    let conf = d.dir.join("dhclient.conf");
    std::fs::write(&conf, "request subnet-mask, routers, domain-name-servers, interface-mtu;\ntimeout 15;\n").unwrap();
    let lease_file = d.dir.join("dhclient.leases");
    let pid_file = d.dir.join("dhclient.pid");
    let args = |first: &[&'static str]| {
        let mut a: Vec<String> = first.iter().map(|s| s.to_string()).collect();
        for (o, v) in [("-cf", &conf), ("-sf", &s2), ("-lf", &lease_file), ("-pf", &pid_file)] {
            a.extend([o.to_string(), v.to_str().unwrap().to_string()]);
        }
        a.push("eth0".into());
        a
    };
    // In the foreground (-d), so that the test owns the process.
    let dhclient = || {
        let a = args(&["dhclient", "-1", "-d"]);
        Bg(vm2.ns.spawn(&a.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let first = dhclient();
    let bound = wait_event(&ev2, "BOUND", 1).unwrap_or_else(|| panic!("dhclient got no lease: {:?}", events(&ev2)));
    let ip2 = field(&bound, "ip").to_string();
    assert!(ip2.starts_with("10.210.0.") && ip2 != "10.210.0.1", "{bound}");
    assert_eq!((field(&bound, "router"), field(&bound, "dns"), field(&bound, "mtu")), ("10.210.0.1", "10.210.0.1", "1400"), "{bound}");
    assert!(eventually(Duration::from_secs(3), || vm2.ns.ping("10.210.0.1", 1)), "dhclient's address does not work");
    drop(first);
    let second = dhclient();
    let rebooted =
        eventually(Duration::from_secs(15), || events(&ev2).iter().filter(|l| l.contains("REBOOT") || l.contains("BOUND")).count() >= 2);
    assert!(rebooted, "no second lease: {:?}", events(&ev2));
    let rebound = events(&ev2).into_iter().filter(|l| l.contains("REBOOT") || l.contains("BOUND")).nth(1).unwrap();
    assert_eq!(field(&rebound, "ip"), ip2, "{rebound}");
    drop(second);
    let a = args(&["timeout", "30", "dhclient", "-r"]);
    let rel = vm2.ns.exec(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(rel.status.success(), "dhclient -r: {}", String::from_utf8_lossy(&rel.stderr));
    assert!(eventually(Duration::from_secs(5), || leases(&d, "dh").is_empty()), "dhclient's release not applied: {:?}", leases(&d, "dh"));
}

#[test]
fn rogue_server_is_not_believed_and_bad_messages_are_counted() {
    testbed::ensure_commands(&[("busybox", "busybox-static"), ("python3", "python3")]);
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "dh", "--subnet", "10.211.0.0/24"]);
    let (vm, rogue) = (Lan::new("dcl-"), Lan::new("drg-"));
    d.ctl_ok(&["port", "add", "dh", "--interface", &vm.host]);
    d.ctl_ok(&["port", "add", "dh", "--interface", &rogue.host]);

    // A second DHCP server, behind another port, handing out another subnet, and answering
    // fast (it is a plain server on the same segment).
    rogue.ns.exec_ok(&["ip", "addr", "add", "10.211.0.254/24", "dev", "eth0"]);
    let conf = d.dir.join("udhcpd.conf");
    let leases_file = d.dir.join("udhcpd.leases");
    std::fs::write(
        &conf,
        format!(
            "start 10.99.0.100\nend 10.99.0.200\ninterface eth0\nlease_file {}\npidfile {}\nopt router 10.99.0.1\nopt subnet 255.255.255.0\nopt dns 10.99.0.1\n",
            leases_file.display(),
            d.dir.join("udhcpd.pid").display()
        ),
    )
    .unwrap();
    std::fs::write(&leases_file, "").unwrap();
    let server = Bg(rogue.ns.spawn(&["busybox", "udhcpd", "-f", "-a", "10", conf.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(500));

    // What reaches the client: tcpdump on its side of the link.
    let pcap = d.dir.join("client.pcap");
    let cap =
        Bg(vm.ns.spawn(&["tcpdump", "-i", "eth0", "-n", "-U", "--immediate-mode", "-w", pcap.to_str().unwrap(), "udp", "port", "67"]));
    std::thread::sleep(Duration::from_millis(700));
    let ev = d.dir.join("events");
    let s = script(&d.dir, "udhcpc.sh", &ev, "");
    let mut client = udhcpc(&vm, &s);
    let bound = wait_event(&ev, "bound", 1).unwrap_or_else(|| panic!("no lease: {:?}\n{}", events(&ev), d.log()));
    assert!(field(&bound, "ip").starts_with("10.211.0."), "the client believed the rogue server: {bound}");
    assert_eq!(field(&bound, "router"), "10.211.0.1", "{bound}");
    let snooped = || {
        let ports = d.ctl_json(&["port", "ls"]);
        ports
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["ifname"] == rogue.host.as_str())
            .map(|p| p["drops"]["dhcp_snoop"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    // Its offers reach the switch and stop there.
    assert!(eventually(Duration::from_secs(5), || snooped() >= 1), "the rogue server's replies were not dropped");
    signal(&client, "-TERM");
    let _ = client.0.wait();
    drop(server);
    signal(&cap, "-INT");
    let mut cap = cap;
    let _ = cap.0.wait();
    let mut capped = String::new();
    if let Some(mut e) = cap.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut capped);
    }
    let seen = vm.ns.exec_ok(&["tcpdump", "-r", pcap.to_str().unwrap(), "-n"]);
    assert!(seen.contains("10.211.0.1.67 >"), "the switch's replies are not in the capture ({capped}):\n{seen}");
    assert!(!seen.contains("10.211.0.254.67 >"), "a rogue reply reached the client:\n{seen}");

    // Truncated and looping (option overload) messages: counted drops, no lease, nothing else.
    let before = d.ctl_json(&["network", "inspect", "dh"]);
    vm.ns.exec_ok(&["ip", "addr", "add", "10.211.0.250/24", "dev", "eth0"]);
    let py = r#"
import socket
fixed = bytes([1, 1, 6, 0]) + b"\x12\x34\x56\x78" + bytes(20) + bytes.fromhex("020000000009") + bytes(10 + 192)
cookie = bytes([99, 130, 83, 99])
msgs = [fixed[:100], fixed + cookie + bytes([53, 1, 1, 12, 200, 65]), fixed + cookie + bytes([53, 1, 1, 52, 1, 3, 255])]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 68))
for m in msgs:
    s.sendto(m, ("255.255.255.255", 67))
"#;
    vm.ns.exec_ok(&["python3", "-c", py]);
    let drops = || {
        let ports = d.ctl_json(&["port", "ls"]);
        ports
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["ifname"] == vm.host.as_str())
            .map(|p| p["drops"]["dhcp_malformed"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(eventually(Duration::from_secs(3), || drops() >= 3), "truncated/looping messages not counted: {}", drops());
    assert_eq!(d.ctl_json(&["network", "inspect", "dh"]), before, "a bad message changed the network");
    assert!(vm.ns.ping("10.211.0.1", 1), "the gateway stopped answering");
}
