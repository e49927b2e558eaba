//! Rootless egress: an ordinary user's vswitchd (in a "host" namespace of the test's, with a
//! loopback and a neighbour of its own) gives its containers the host's loopback server, the
//! outside world and published ports that show the client's address, with no host interface,
//! no privileges and nothing left behind.

use std::time::Duration;

use testbed::peers::{hosts, tcp_get, tcp_server, udp_ask, udp_server, wait_listening, Servers};
use testbed::{eventually, Daemon, User, UserContainer};

#[test]
fn user_containers_reach_the_host_and_are_reached_through_published_ports() {
    testbed::require_root();
    let x = hosts(41);
    let user = User::system("vswitch-test");
    // Unprivileged ping sockets for the user's egress pings, in the host namespace only.
    x.h.exec_ok(&["sysctl", "-qw", &format!("net.ipv4.ping_group_range={} {}", user.gid, user.gid)]);
    let mut d = Daemon::start_rootless_in(&x.h, &user, &[]);
    let v = d.ctl_json(&["version"]);
    assert_eq!(v["rootless"], true, "{v}");
    let hp = d.userns_pid();
    d.ctl_ok(&["network", "create", "rl", "--subnet", "10.98.0.0/24", "--host-loopback", "7301"]);
    let net = d.ctl_json(&["network", "inspect", "rl"]);
    assert_eq!(net["egress"], true, "egress is on by default when rootless: {net}");
    let (c1, c2) = (UserContainer::new(&user, hp, "rle-a"), UserContainer::new(&user, hp, "rle-b"));
    let e1 = d.ctl_json(&["attach", "rl", "--pid", &c1.pid().to_string(), "--name", &c1.name]);
    let e2 = d.ctl_json(&["attach", "rl", "--pid", &c2.pid().to_string(), "--name", &c2.name]);
    let ip2 = e2["ip"].as_str().unwrap().to_string();
    assert!(c1.ping(&ip2, 2), "c1 cannot ping c2\n{}", d.log());
    let _ = e1;

    // The host's loopback at the gateway's address (a server of the host, port listed).
    let _servers = Servers(vec![
        tcp_server(&x.h, "127.0.0.1", 7301, "host-loop"),
        tcp_server(&x.o, &x.o_ip, 7302, "outside"),
        udp_server(&x.o, &x.o_ip, 7303, "udp-outside"),
    ]);
    wait_listening(&x.h, 7301);
    wait_listening(&x.o, 7302);
    wait_listening(&x.o, 7303);
    let got = tcp_get(&c1, "10.98.0.1", 7301);
    assert!(got.starts_with("host-loop 127.0.0.1:"), "{got}\n{}", d.log());
    // Beyond the host: TCP, UDP and ping, all from the unprivileged daemon's own sockets.
    assert!(tcp_get(&c1, &x.o_ip, 7302).starts_with(&format!("outside {}:", x.h_ip)));
    assert!(udp_ask(&c1, &x.o_ip, 7303, "x").starts_with(&format!("udp-outside {}:", x.h_ip)));
    assert!(c1.ping(&x.o_ip, 2), "ping through a ping socket\n{}", d.log());

    // A published port: the container sees the outside client's own address; a client on the
    // host's loopback appears as the gateway (the container cannot take 127.0.0.1 as a source).
    let _web = Servers(vec![tcp_server(&c2, "0.0.0.0", 8080, "c2")]);
    wait_listening(&c2, 8080);
    let name2 = c2.name.clone();
    d.ctl_ok(&["publish", "rl", &name2, &format!("{}:18080", x.h_ip), "8080"]);
    d.ctl_ok(&["publish", "rl", &name2, "127.0.0.1:18081", "8080"]);
    let got = tcp_get(&x.o, &x.h_ip, 18080);
    assert!(got.starts_with(&format!("c2 {}:", x.o_ip)), "{got}\n{}", d.log());
    assert!(tcp_get(&x.h, "127.0.0.1", 18081).starts_with("c2 10.98.0.1:"));
    // A client on the host itself, at the host's address, is seen with that address.
    assert!(tcp_get(&x.h, &x.h_ip, 18080).starts_with(&format!("c2 {}:", x.h_ip)));
    // The same port again is a conflict.
    let out = d.ctl(&["publish", "rl", &name2, &format!("{}:18080", x.h_ip), "8080"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("port_in_use"), "{out:?}");
    // A port the user may not bind is a clear error, and changes nothing.
    let out = d.ctl(&["publish", "rl", &name2, &format!("{}:80", x.h_ip), "8080"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission_denied"), "{out:?}");
    assert_eq!(d.ctl_json(&["published"]).as_array().unwrap().len(), 2);

    // Clean up: detaching removes the publications; a stop removes every TAP.
    d.ctl_ok(&["detach", "rl", &name2]);
    assert!(tcp_get(&x.o, &x.h_ip, 18080).starts_with("ERR"));
    assert!(d.terminate().success(), "{}", d.log());
    assert!(eventually(Duration::from_secs(5), || !c1.links().contains(&"eth0".to_string())), "c1's TAP left behind");
}
