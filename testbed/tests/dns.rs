//! Root tests of the gateway's DNS with real `dig` from container namespaces. Forwarding goes
//! only to upstreams these tests start themselves on loopback (dnsmasq, or a silent socket).

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{eventually, Daemon, Netns};

/// dnsmasq on 127.0.0.1:PORT answering `upstream.test` with 192.0.2.55 and nothing else.
struct Upstream {
    child: Child,
    port: u16,
}

impl Upstream {
    fn start() -> Upstream {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", &format!("--port={port}"), "--address=/upstream.test/192.0.2.55"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        let up = Upstream { child, port };
        let ready = eventually(Duration::from_secs(5), || {
            let out = Command::new("dig")
                .args(["+short", "+time=1", "+tries=1", "-p", &port.to_string(), "@127.0.0.1", "upstream.test"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("192.0.2.55")
        });
        assert!(ready, "dnsmasq did not come up on port {port}");
        up
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn names_aliases_ptr_and_isolation() {
    let d = Daemon::start();
    d.network("front", "10.82.1.0/24");
    d.network("back", "10.82.2.0/24");
    let (web, api, db) = (Netns::new("vd-w"), Netns::new("vd-a"), Netns::new("vd-d"));
    let eweb = d.ctl_json(&["attach", "front", "--netns", &web.path(), "--name", "web", "--alias", "www"]);
    web.set_resolver("10.82.1.1");
    let eapi = d.ctl_json(&["attach", "front", "--netns", &api.path(), "--name", "api", "--srv", "_http._tcp:8080:10:5"]);
    api.set_resolver("10.82.1.1");
    d.ctl_json(&["attach", "back", "--netns", &db.path(), "--name", "db"]);
    db.set_resolver("10.82.2.1");
    let (ip_web, ip_api) = (eweb["ip"].as_str().unwrap(), eapi["ip"].as_str().unwrap());

    assert_eq!(web.dig(&["api"]), vec![ip_api], "A by name\n{}", d.log());
    assert_eq!(web.dig(&["API.front"]), vec![ip_api], "name.network, any case");
    assert_eq!(api.dig(&["www"]), vec![ip_web], "alias");
    assert_eq!(api.dig(&["www.front."]), vec![ip_web], "alias.network FQDN");
    assert_eq!(web.dig(&["-x", ip_api]), vec!["api.front."], "PTR");
    // Over TCP too, answered by the switch's own TCP stack; several connections in a row.
    for _ in 0..5 {
        assert_eq!(web.dig(&["+tcp", "api"]), vec![ip_api], "dig +tcp\n{}", d.log());
    }
    assert_eq!(web.dig(&["+tcp", "-x", ip_web]), vec!["web.front."], "PTR over TCP");
    assert_eq!(web.dig(&["_http._tcp.api", "SRV"]), vec!["10 5 8080 api.front."], "SRV");
    let bad = d.ctl(&["endpoint", "srv", "front", "api", "http:80"]);
    assert_eq!(bad.status.code(), Some(1), "a malformed SRV is refused");
    assert!(web.dig(&["api", "AAAA"]).is_empty(), "no IPv6 address: NODATA");
    assert!(web.dig_full(&["api", "AAAA"]).contains("status: NOERROR"));
    // The name resolves for ping through the container's own resolver (glibc).
    assert!(web.ping("api", 1), "ping by name");
    // Another network's names are invisible: no upstream is set, so SERVFAIL, not an answer.
    assert!(web.dig(&["db"]).is_empty());
    assert!(web.dig(&["db.back"]).is_empty());
    assert!(db.dig(&["web"]).is_empty());
    // Queries are answered by the switch itself: nothing listens in any namespace.
    assert!(!web.exec_ok(&["ss", "-lunH"]).contains(":53"));
    let stats = d.ctl_json(&["dns", "stats"]);
    assert!(stats["answers"].as_u64().unwrap() >= 7, "{stats}");
    // With no upstream (--dns-upstream none) nothing is forwarded: those are failures.
    assert_eq!(stats["forwarded"], 0, "{stats}");
    assert!(stats["failures"].as_u64().unwrap() >= 3, "{stats}");

    // Rename and alias changes show at once.
    d.ctl_ok(&["endpoint", "rename", "front", "api", "api2"]);
    assert_eq!(web.dig(&["api2"]), vec![ip_api]);
    assert!(web.dig(&["api"]).is_empty());
    d.ctl_ok(&["endpoint", "alias", "front", "web", "portal"]);
    assert_eq!(api.dig(&["portal"]), vec![ip_web]);
    assert!(api.dig(&["www"]).is_empty());
    // Detach removes the name.
    d.ctl_ok(&["detach", "front", "api2"]);
    assert!(web.dig(&["api2"]).is_empty());
}

#[test]
fn container_on_two_networks_sees_both() {
    let d = Daemon::start();
    d.network("n1", "10.83.1.0/24");
    d.network("n2", "10.83.2.0/24");
    let (a, b, c) = (Netns::new("vd2-a"), Netns::new("vd2-b"), Netns::new("vd2-c"));
    d.attach("n1", &a);
    let eb = d.attach("n1", &b);
    d.ctl_ok(&["attach", "n2", "--netns", &b.path(), "--name", "b-on-n2", "--ifname", "eth1"]);
    let ec = d.attach("n2", &c);
    // b is on both networks: it resolves c (n2) and a's names; a (n1 only) does not see c.
    assert_eq!(b.dig(&[&c.name]), vec![ec["ip"].as_str().unwrap()]);
    assert_eq!(a.dig(&[&b.name]), vec![eb["ip"].as_str().unwrap()]);
    assert!(a.dig(&[&c.name]).is_empty());
}

#[test]
fn forwarding_internal_and_failover() {
    let up = Upstream::start();
    // First upstream: a socket that never answers; second: dnsmasq.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let d = Daemon::start_with(&["--dns-upstream", &up.addr(), "--dns-timeout-ms", "400"]);
    d.network("pub", "10.84.1.0/24");
    d.ctl_ok(&["network", "create", "priv", "--subnet", "10.84.2.0/24", "--internal"]);
    let (c1, c2) = (Netns::new("vd3-a"), Netns::new("vd3-b"));
    d.attach("pub", &c1);
    d.attach("priv", &c2);

    assert_eq!(c1.dig(&["upstream.test"]), vec!["192.0.2.55"], "forwarded\n{}", d.log());
    assert_eq!(c1.dig(&["+tcp", "upstream.test"]), vec!["192.0.2.55"], "forwarded, asked over TCP");
    // The internal network forwards nothing.
    let out = c2.dig_full(&["upstream.test"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    // Per-network upstreams: a silent one first, then dnsmasq: the answer comes after the timeout.
    d.ctl_ok(&["dns", "upstreams", "pub", &silent_addr, &up.addr()]);
    let t = Instant::now();
    assert_eq!(c1.dig(&["upstream.test"]), vec!["192.0.2.55"], "failover\n{}", d.log());
    assert!(t.elapsed() >= Duration::from_millis(350), "answered before the first upstream timed out");
    // Only the silent one: SERVFAIL after the timeout, counted.
    d.ctl_ok(&["dns", "upstreams", "pub", &silent_addr]);
    assert!(c1.dig_full(&["upstream.test"]).contains("status: SERVFAIL"));
    let stats = d.ctl_json(&["dns", "stats"]);
    assert!(stats["forward_answers"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["failures"].as_u64().unwrap() >= 1, "{stats}");
    drop(silent);
}

#[test]
fn garbage_queries_are_dropped_and_service_continues() {
    let d = Daemon::start();
    d.network("n1", "10.85.0.0/24");
    let (c1, c2) = (Netns::new("vd4-a"), Netns::new("vd4-b"));
    d.attach("n1", &c1);
    let e2 = d.attach("n1", &c2);
    let script = "import socket,os,struct\n\
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
        for i in range(2000):\n\
        \x20   s.sendto(os.urandom(i % 700), ('10.85.0.1', 53))\n\
        q=struct.pack('>HHHHHH',1,0x0100,40,0,0,0)+b'\\x01a\\x00\\x00\\x01\\x00\\x01'*40\n\
        s.sendto(q,('10.85.0.1',53))\n\
        s.sendto(b'\\x00\\x02\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\xc0\\x0c\\x00\\x01\\x00\\x01',('10.85.0.1',53))\n\
        s.sendto(b'x'*4000,('10.85.0.1',53))\n";
    c1.exec_ok(&["python3", "-c", script]);
    assert_eq!(c1.dig(&[&c2.name]), vec![e2["ip"].as_str().unwrap()], "still answering\n{}", d.log());
    let stats = d.ctl_json(&["dns", "stats"]);
    assert!(stats["dropped"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn records_change_1000_times_while_a_client_queries() {
    let d = Daemon::start();
    d.network("n1", "10.86.0.0/24");
    let (c1, c2, c3) = (Netns::new("vd5-a"), Netns::new("vd5-b"), Netns::new("vd5-c"));
    d.attach("n1", &c1);
    let e2 = d.attach("n1", &c2);
    d.attach("n1", &c3);
    let stop = std::env::temp_dir().join(testbed::unique("vswitch-dnsloop-stop-"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dnsloop.py");
    let client =
        c1.spawn(&["python3", script.to_str().unwrap(), "10.86.0.1", &c2.name, e2["ip"].as_str().unwrap(), stop.to_str().unwrap()]);
    for i in 0..1000 {
        let body = format!(r#"{{"aliases":["alias-{i}"]}}"#);
        let (status, v) = d.api("PATCH", &format!("/v1/networks/n1/endpoints/{}", c3.name), Some(&body));
        assert_eq!(status, 200, "{v}");
    }
    std::fs::write(&stop, b"").unwrap();
    let out = client.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&stop);
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert_eq!(n.len(), 4, "dnsloop printed {text:?} {}", String::from_utf8_lossy(&out.stderr));
    let (sent, answered, lost, wrong) = (n[0], n[1], n[2], n[3]);
    eprintln!("{sent} queries during 1000 record changes: {answered} answered, {lost} lost, {wrong} wrong");
    assert!(sent > 100, "the client hardly ran: {text}");
    assert_eq!((lost, wrong), (0, 0), "{text}");
    assert_eq!(
        c1.dig(&["alias-999"]),
        vec![d.ctl_json(&["network", "inspect", "n1"])["endpoint_list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == c3.name.as_str())
            .unwrap()["ip"]
            .as_str()
            .unwrap()]
    );
}

#[test]
fn dual_stack_ping6_aaaa_and_ptr6() {
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "ds", "--subnet", "10.87.0.0/24", "--subnet6", "fd00:87::/64"]);
    let (c1, c2) = (Netns::new("vd6-a"), Netns::new("vd6-b"));
    let e1 = d.attach("ds", &c1);
    let e2 = d.ctl_json(&["attach", "ds", "--netns", &c2.path(), "--name", &c2.name, "--ip6", "fd00:87::beef"]);
    c2.set_resolver("10.87.0.1");
    assert_eq!(e1["ip6"], "fd00:87::2");
    assert_eq!(e2["ip6"], "fd00:87::beef");
    let addrs = c2.exec_ok(&["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]);
    assert!(addrs.contains("fd00:87::beef/64"), "{addrs}");
    let ok = c1.exec(&["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "fd00:87::beef"]).status.success();
    assert!(ok, "ping6 between containers\n{}", d.log());
    // The gateway's IPv6 address is the default route, and it answers neighbour discovery
    // (the kernel resolves it before the first echo) and ping6.
    let gw6 = d.ctl_json(&["network", "inspect", "ds"])["gateway6"].as_str().unwrap_or("fd00:87::1").to_string();
    let route6 = c2.exec_ok(&["ip", "-6", "route", "show", "default"]);
    assert!(route6.contains(&format!("via {gw6} dev eth0")), "{route6}");
    let ok = c2.exec(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", &gw6]).status.success();
    assert!(ok, "ping6 to the gateway {gw6}\n{}", d.log());
    let neigh = c2.exec_ok(&["ip", "-6", "neigh", "show", &gw6]);
    assert!(neigh.contains("router"), "the gateway advertises itself as a router: {neigh}");
    // DNS asked at the gateway's IPv6 address.
    let aaaa = c1.exec_ok(&["dig", "+short", "+time=2", "+tries=1", &format!("@{gw6}"), &c2.name, "AAAA"]);
    assert_eq!(aaaa.trim(), "fd00:87::beef", "AAAA over IPv6\n{}", d.log());
    assert_eq!(c1.dig(&[&c2.name, "AAAA"]), vec!["fd00:87::beef"], "AAAA");
    assert_eq!(c1.dig(&[&c2.name, "A"]), vec![e2["ip"].as_str().unwrap()]);
    assert_eq!(c1.dig(&["-x", "fd00:87::beef"]), vec![format!("{}.ds.", c2.name)], "PTR for IPv6");
    // A taken IPv6 address, and an IPv6 address on a network without an IPv6 subnet.
    let c3 = Netns::new("vd6-c");
    let body = format!(r#"{{"netns":"{}","name":"x","ip6":"fd00:87::beef"}}"#, c3.path());
    let (status, v) = d.api("POST", "/v1/networks/ds/endpoints", Some(&body));
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("address_taken")), "{v}");
    d.network("v4only", "10.87.1.0/24");
    let body = format!(r#"{{"netns":"{}","name":"x","ip6":"fd00:87::9"}}"#, c3.path());
    let (status, v) = d.api("POST", "/v1/networks/v4only/endpoints", Some(&body));
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("address_out_of_range")), "{v}");
    // Neither failure leaked an address.
    let detail = d.ctl_json(&["network", "inspect", "ds"]);
    assert_eq!(detail["usage"]["in_use"], 2, "{detail}");
    assert!(!c3.links().contains(&"eth0".to_string()));
}
