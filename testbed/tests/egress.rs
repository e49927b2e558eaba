//! Root integration tests of egress NAT and published ports (the rootless daemon's way out),
//! with vswitchd running inside a "host" namespace that has a loopback of its own and a veth
//! to an "outside" namespace. Real curl, ping, UDP and TCP peers; nothing leaves the test's
//! namespaces.

use std::time::Duration;

use testbed::peers::{hosts, tcp_get, tcp_server, udp_ask, udp_server, wait_listening, Servers};
use testbed::{eventually, Daemon, Netns};

#[test]
fn containers_reach_out_through_the_gateway_within_the_policy() {
    let x = hosts(31);
    let d = Daemon::start_in(&x.h, &["--egress"]);
    d.ctl_ok(&["network", "create", "web", "--subnet", "10.94.0.0/24", "--host-loopback", "7001"]);
    d.ctl_ok(&["network", "create", "other", "--subnet", "10.94.1.0/24"]);
    d.ctl_ok(&["network", "create", "sealed", "--subnet", "10.94.2.0/24", "--internal"]);
    let (c1, c2, c3) = (Netns::new("vec1-"), Netns::new("vec2-"), Netns::new("vec3-"));
    d.attach("web", &c1);
    let e2 = d.attach("other", &c2);
    d.attach("sealed", &c3);
    let _servers = Servers(vec![
        tcp_server(&x.h, "127.0.0.1", 7001, "loop-allowed"),
        tcp_server(&x.h, "127.0.0.1", 7002, "loop-secret"),
        tcp_server(&x.o, &x.o_ip, 7003, "outside"),
        udp_server(&x.o, &x.o_ip, 7004, "udp-outside"),
        udp_server(&x.h, "127.0.0.1", 7001, "udp-loop"),
        tcp_server(&x.h, &x.h_ip, 7001, "host-own-listed"),
        tcp_server(&x.h, &x.h_ip, 7005, "host-own"),
    ]);
    wait_listening(&x.h, 7001);
    wait_listening(&x.h, 7002);
    wait_listening(&x.h, 7005);
    wait_listening(&x.o, 7003);
    wait_listening(&x.o, 7004);

    // TCP beyond the network: the outside server sees the host's address (NAT).
    let got = tcp_get(&c1, &x.o_ip, 7003);
    assert_eq!(got.split(':').next(), Some(format!("outside {}", x.h_ip).as_str()), "{got}\n{}", d.log());
    // The host's loopback at the gateway's address, on the listed port only.
    assert!(tcp_get(&c1, "10.94.0.1", 7001).starts_with("loop-allowed 127.0.0.1:"), "{}", d.log());
    assert!(tcp_get(&c1, "10.94.0.1", 7002).starts_with("ERR"), "an unlisted loopback port is refused");
    // The host's own address is the host too: listed ports only.
    assert!(tcp_get(&c1, &x.h_ip, 7001).starts_with("host-own-listed"), "{}", d.log());
    assert!(tcp_get(&c1, &x.h_ip, 7005).starts_with("ERR"), "an unlisted port of the host's own address is refused");
    // UDP both ways, to the outside and to the host's loopback.
    let u = udp_ask(&c1, &x.o_ip, 7004, "ping1");
    assert!(u.starts_with(&format!("udp-outside {}:", x.h_ip)) && u.ends_with("ping1"), "{u}");
    assert!(udp_ask(&c1, "10.94.0.1", 7001, "ping2").starts_with("udp-loop 127.0.0.1:"));
    // ICMP echo through an unprivileged ping socket.
    assert!(c1.ping(&x.o_ip, 2), "ping the outside\n{}", d.log());
    // Another network of this daemon is not reached through egress.
    assert!(tcp_get(&c1, e2["ip"].as_str().unwrap(), 7003).starts_with("ERR"));
    // An internal network reaches nothing.
    assert!(tcp_get(&c3, &x.o_ip, 7003).starts_with("ERR"));
    assert!(!c3.ping(&x.o_ip, 1));
    // A network without host_loopback cannot reach the host's loopback.
    assert!(tcp_get(&c2, "10.94.1.1", 7001).starts_with("ERR"));

    let s = d.ctl_json(&["egress"]);
    assert_eq!(s["enabled"], true, "{s}");
    assert!(s["tcp_opened"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["udp_opened"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["icmp_opened"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["denied"].as_u64().unwrap() >= 5, "{s}");
}

#[test]
fn published_ports_show_the_client_and_follow_the_endpoint() {
    let x = hosts(32);
    let mut d = Daemon::start_in(&x.h, &["--egress"]);
    d.ctl_ok(&["network", "create", "pub", "--subnet", "10.95.0.0/24"]);
    let c = Netns::new("vep-");
    let e = d.attach("pub", &c);
    let name = e["name"].as_str().unwrap().to_string();
    let mut servers = Servers(vec![tcp_server(&c, "0.0.0.0", 80, "web"), udp_server(&c, "0.0.0.0", 53, "dns")]);
    for p in [80, 81] {
        if p == 81 {
            servers.0.push(tcp_server(&c, "0.0.0.0", 81, "web81"));
        }
        wait_listening(&c, p);
    }
    // A range: host 8080-8081 → container 80-81; and one UDP port.
    d.ctl_ok(&["publish", "pub", &name, &format!("{}:8080-8081", x.h_ip), "80"]);
    d.ctl_ok(&["publish", "pub", &name, &format!("{}:5353", x.h_ip), "53/udp"]);
    let list = d.ctl_json(&["published"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // The container sees the client's own address, for TCP and UDP.
    let got = tcp_get(&x.o, &x.h_ip, 8080);
    assert!(got.starts_with(&format!("web {}:", x.o_ip)), "{got}\n{}", d.log());
    assert!(tcp_get(&x.o, &x.h_ip, 8081).starts_with(&format!("web81 {}:", x.o_ip)));
    let u = udp_ask(&x.o, &x.h_ip, 5353, "q");
    assert!(u.starts_with(&format!("dns {}:", x.o_ip)), "{u}");

    // Conflicts: the same port again (this daemon), and a port another program holds.
    let out = d.ctl(&["publish", "pub", &name, &format!("{}:8081", x.h_ip), "80"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("port_in_use"), "{out:?}");
    let _squatter = Servers(vec![tcp_server(&x.h, &x.h_ip, 8090, "squatter")]);
    wait_listening(&x.h, 8090);
    let out = d.ctl(&["publish", "pub", &name, &format!("{}:8090", x.h_ip), "80"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("port_in_use"), "{out:?}");
    let out = d.ctl(&["publish", "pub", &name, "192.0.2.77:8091", "80"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_address"), "an address the host lacks: {out:?}");
    let out = d.ctl(&["publish", "pub", "nosuch", &format!("{}:8092", x.h_ip), "80"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(d.ctl_json(&["published"]).as_array().unwrap().len(), 2, "refused rules change nothing");

    // Publications survive a crash of the daemon.
    d.kill9();
    d.restart();
    assert!(
        eventually(Duration::from_secs(5), || tcp_get(&x.o, &x.h_ip, 8080).starts_with(&format!("web {}:", x.o_ip))),
        "after restart\n{}",
        d.log()
    );
    // Unpublish one rule; detaching the endpoint removes the rest.
    d.ctl_ok(&["unpublish", &format!("{}:5353/udp", x.h_ip)]);
    assert_eq!(d.ctl_json(&["published"]).as_array().unwrap().len(), 1);
    d.ctl_ok(&["detach", "pub", &name]);
    assert!(d.ctl_json(&["published"]).as_array().unwrap().is_empty());
    assert!(tcp_get(&x.o, &x.h_ip, 8080).starts_with("ERR"), "the listener closed with the endpoint");
}

#[test]
fn a_container_flooding_connections_is_capped_and_others_are_unaffected() {
    let x = hosts(33);
    let d = Daemon::start_in(&x.h, &["--egress", "--egress-max-flows", "40"]);
    d.ctl_ok(&["network", "create", "busy", "--subnet", "10.96.0.0/24"]);
    let (noisy, calm) = (Netns::new("ven-"), Netns::new("vem-"));
    d.attach("busy", &noisy);
    d.attach("busy", &calm);
    let _servers = Servers(vec![tcp_server(&x.o, &x.o_ip, 7100, "outside")]);
    wait_listening(&x.o, 7100);
    // 300 connections held open at once (non-blocking connects, no waiting on each).
    let code = format!(
        "import socket,time\nss=[]\nfor i in range(300):\n s=socket.socket();s.setblocking(False)\n try: s.connect(('{}',7100))\n except BlockingIOError: pass\n ss.append(s)\ntime.sleep(4)",
        x.o_ip
    );
    let mut flood = Servers(vec![noisy.spawn(&["python3", "-c", &code])]);
    assert!(
        eventually(Duration::from_secs(10), || d.ctl_json(&["egress"])["over_limit"].as_u64().unwrap_or(0) > 0),
        "the cap is hit: {}",
        d.ctl_json(&["egress"])
    );
    let s = d.ctl_json(&["egress"]);
    assert!(s["tcp_flows"].as_u64().unwrap() <= 40, "{s}");
    // The other container still gets through while the flood holds its flows.
    assert!(tcp_get(&calm, &x.o_ip, 7100).starts_with("outside"), "{}", d.log());
    drop(flood.0.pop().map(|mut c| c.kill()));
    // Memory stays bounded: the daemon's RSS after the flood.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let rss_kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap();
    assert!(rss_kb < 256 * 1024, "RSS {rss_kb} KiB");
    // Flows end with their connections.
    assert!(
        eventually(Duration::from_secs(10), || d.ctl_json(&["egress"])["tcp_flows"].as_u64() == Some(0)),
        "{}",
        d.ctl_json(&["egress"])
    );
}
