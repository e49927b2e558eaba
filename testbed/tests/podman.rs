//! Rootful podman (CNI backend) on a vswitch network through the `vswitch-cni` plugin: two
//! containers ping each other by IP, by name and by alias through vswitch's DNS; `podman
//! inspect` shows vswitch's address; `--ip`, `--mac-address` and `-p` are honoured; `podman rm
//! -f` leaves no endpoint, lease or published port; a vswitchd restart under running containers
//! keeps them talking. The harness itself is checked against Debian's reference `bridge` and
//! `host-local` plugins (`cargo test -p testbed --test podman -- --ignored`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testbed::runtimes::{self, Podman, PodmanCli, IMAGE};
use testbed::{eventually, unique, Daemon};

const NET: &str = "vsw";
const SUBNET: &str = "10.88.7.0/24";

/// vswitchd (with egress, for published ports) holding the network `vsw`, and a podman whose
/// conflist `vsw` is vswitch's. Declare the podman after the daemon: it drops first, so the
/// plugin's DEL still reaches vswitchd.
fn setup() -> (Daemon, Podman) {
    let d = Daemon::start_with(&["--egress"]);
    d.network(NET, SUBNET);
    let p = Podman::new();
    p.add_conflist(NET, &runtimes::vswitch_conflist(NET, &d.socket));
    (d, p)
}

fn endpoints(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["network", "inspect", NET])["endpoint_list"].as_array().cloned().unwrap_or_default()
}

fn endpoint(d: &Daemon, name: &str) -> Value {
    endpoints(d).into_iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no endpoint {name} in {:?}", endpoints(d)))
}

fn gateway(d: &Daemon) -> String {
    d.ctl_json(&["network", "inspect", NET])["gateway"].as_str().unwrap().to_string()
}

/// `podman run -d` of a busybox that sleeps, on `vsw`, with `extra` options; its name.
fn start(p: &Podman, d: &Daemon, prefix: &str, extra: &[&str]) -> String {
    let name = unique(prefix);
    let mut args = vec!["run", "-d", "--name", &name, "--network", NET, "--cap-add", "NET_RAW"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sleep", "100000"]);
    let out = p.run(&args);
    assert!(
        out.status.success(),
        "podman {args:?} failed ({}): {}{}\n--- vswitchd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    name
}

#[test]
fn podman_containers_talk_through_vswitch_and_leave_nothing_behind() {
    let (d, p) = setup();
    let gw = gateway(&d);
    let c1 = start(&p, &d, "pa", &[]);
    let c2 = start(&p, &d, "pb", &["--network-alias", "web"]);

    // podman inspect shows the address, prefix, gateway and MAC vswitch gave.
    for c in [&c1, &c2] {
        let ep = endpoint(&d, c);
        let (ip, prefix, got_gw, mac) = p.address(c, NET);
        assert_eq!(ip, ep["ip"].as_str().unwrap(), "podman inspect {c} vs endpoint {ep}");
        assert!(ip.starts_with("10.88.7."), "{ip}");
        assert_eq!((prefix, got_gw.as_str()), (24, gw.as_str()), "{c}");
        assert_eq!(mac.to_lowercase(), ep["mac"].as_str().unwrap().to_lowercase(), "{c}");
    }
    let ip2 = endpoint(&d, &c2)["ip"].as_str().unwrap().to_string();
    let ip1 = endpoint(&d, &c1)["ip"].as_str().unwrap().to_string();

    // resolv.conf names vswitch's DNS (the gateway), written by podman from the CNI result.
    let resolv = p.exec_ok(&c1, &["cat", "/etc/resolv.conf"]);
    assert!(resolv.lines().any(|l| l.split_whitespace().eq(["nameserver", gw.as_str()])), "resolv.conf: {resolv}");

    // By IP, both ways; by name and by alias through vswitch's DNS.
    assert!(p.ping(&c1, &ip2, 2), "{c1} -> {ip2}\n{}", d.log());
    assert!(p.ping(&c2, &ip1, 2), "{c2} -> {ip1}");
    for target in [c2.as_str(), "web"] {
        let ok = p.ping(&c1, target, 2);
        let looked = String::from_utf8_lossy(&p.exec(&c1, &["nslookup", target, &gw]).stdout).to_string();
        assert!(ok, "{c1} cannot ping {target} by name; nslookup: {looked}\n{:?}", d.ctl_json(&["dns", "records", NET]));
        assert!(looked.contains(&ip2), "{target} resolves to {ip2}: {looked}");
    }
    assert!(p.ping(&c2, &c1, 1), "{c2} -> {c1} by name");

    // --ip, --mac-address and -p: a server in the container sees the client's port, and the
    // address vswitch shows for a client on the host's loopback (the gateway, which stands for
    // the host: a container cannot take 127.0.0.1 as a source).
    let (ip3, mac3) = ("10.88.7.50", "02:42:0a:58:07:32");
    let c3 = unique("pc");
    p.run_ok(&[
        "run",
        "-d",
        "--name",
        &c3,
        "--network",
        NET,
        "--ip",
        ip3,
        "--mac-address",
        mac3,
        "-p",
        "127.0.0.1:18080:80",
        IMAGE,
        "sh",
        "-c",
        "while true; do echo hello-from-c3 | nc -l -p 80; done",
    ]);
    let e3 = endpoint(&d, &c3);
    assert_eq!((e3["ip"].as_str(), e3["mac"].as_str().map(str::to_lowercase).as_deref()), (Some(ip3), Some(mac3)), "{e3}");
    let link = p.exec_ok(&c3, &["ip", "addr", "show", "eth0"]);
    assert!(link.contains(mac3) && link.contains(&format!("{ip3}/24")), "{link}");
    assert_eq!(p.address(&c3, NET).0, ip3);
    let published = d.ctl_json(&["published"]);
    assert_eq!(published.as_array().map(Vec::len), Some(1), "{published}");
    assert!(eventually(Duration::from_secs(5), || p.exec_ok(&c3, &["netstat", "-tln"]).contains(":80 ")), "nc is not listening");
    // The connection stays open from the client's side (nc has sent its line and half-closed:
    // FIN_WAIT2) while netstat in the container shows its peer. (Debian's busybox nc has no -v
    // to print it.)
    let mut conn = TcpStream::connect("127.0.0.1:18080").expect("connect to the published port");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = conn.local_addr().unwrap().port();
    let mut got = [0u8; 64];
    let n = conn.read(&mut got).unwrap_or(0);
    let got = String::from_utf8_lossy(&got[..n]).to_string();
    assert!(got.contains("hello-from-c3"), "through the published port: {got:?}\n{}", d.log());
    conn.write_all(b"hi\n").unwrap();
    let peer = format!("{gw}:{port}");
    let mut netstat = String::new();
    let seen = eventually(Duration::from_secs(5), || {
        netstat = p.exec_ok(&c3, &["netstat", "-tn"]);
        netstat.lines().any(|l| l.split_whitespace().nth(4).is_some_and(|f| f.trim_start_matches("::ffff:") == peer))
    });
    assert!(seen, "the container does not see the client as {peer}: {netstat}");
    drop(conn);

    // podman rm -f: no endpoint, no lease, no published port left.
    p.run_ok(&["rm", "-f", "-t", "0", &c1, &c2, &c3]);
    let clean = eventually(Duration::from_secs(10), || {
        let n = d.ctl_json(&["network", "inspect", NET]);
        n["endpoints"] == 0 && n["usage"]["in_use"] == 0
    });
    assert!(clean, "left behind: {}\n{}", d.ctl_json(&["network", "inspect", NET]), d.log());
    assert_eq!(d.ctl_json(&["published"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn podman_containers_keep_talking_across_vswitchd_restarts() {
    let (mut d, p) = setup();
    let c1 = start(&p, &d, "pr", &[]);
    let c2 = start(&p, &d, "ps", &[]);
    let ip2 = endpoint(&d, &c2)["ip"].as_str().unwrap().to_string();
    assert!(p.ping(&c1, &ip2, 1), "before\n{}", d.log());

    // A crash, then a planned stop: the same addresses, traffic and names again.
    d.kill9();
    d.restart();
    assert!(eventually(Duration::from_secs(5), || p.ping(&c1, &ip2, 1)), "after kill -9 and restart\n{}", d.log());
    d.terminate();
    d.restart();
    assert!(eventually(Duration::from_secs(5), || p.ping(&c1, &ip2, 1)), "after a stop and restart\n{}", d.log());
    assert!(p.ping(&c2, &c1, 1), "by name after restart\n{}", d.log());
    assert_eq!(endpoint(&d, &c2)["ip"].as_str(), Some(ip2.as_str()));

    // DEL after the restarts still cleans up.
    p.run_ok(&["rm", "-f", "-t", "0", &c1, &c2]);
    let clean = eventually(Duration::from_secs(10), || d.ctl_json(&["network", "inspect", NET])["usage"]["in_use"] == 0);
    assert!(clean, "left behind: {}", d.ctl_json(&["network", "inspect", NET]));
}

/// A bridge made by the reference `bridge` plugin on the host, deleted on drop with the
/// host-local leases of its network.
struct RefBridge {
    bridge: String,
    network: String,
}

impl Drop for RefBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        let _ = std::fs::remove_dir_all(format!("/var/lib/cni/networks/{}", self.network));
    }
}

/// The harness against Debian's reference plugins: two podman containers on a `bridge` +
/// `host-local` conflist ping each other, and podman writes the result's `dns` into resolv.conf.
#[test]
#[ignore = "harness self-check with the reference CNI plugins (puts a bridge on the host)"]
fn podman_harness_with_reference_bridge_plugin() {
    let tag = std::process::id() % 100_000;
    let r = RefBridge { bridge: format!("vswtb{tag}"), network: format!("vswref{tag}") };
    let p = Podman::new();
    p.add_conflist(&r.network, &runtimes::bridge_conflist(&r.network, &r.bridge, "10.89.77.0/24", Some("10.89.77.1")));
    let mut names = Vec::new();
    for prefix in ["ra", "rb"] {
        let name = unique(prefix);
        p.run_ok(&["run", "-d", "--name", &name, "--network", &r.network, "--cap-add", "NET_RAW", IMAGE, "sleep", "100000"]);
        names.push(name);
    }
    let (ip1, prefix, gw, mac) = p.address(&names[0], &r.network);
    let (ip2, ..) = p.address(&names[1], &r.network);
    eprintln!("{}: {ip1}/{prefix} gw {gw} mac {mac}; {}: {ip2}", names[0], names[1]);
    assert!(ip1.starts_with("10.89.77.") && ip2.starts_with("10.89.77.") && prefix == 24 && gw == "10.89.77.1", "{ip1} {ip2} {gw}");
    assert!(p.ping(&names[0], &ip2, 2));
    assert!(p.ping(&names[1], &ip1, 2));
    let resolv = p.exec_ok(&names[0], &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.89.77.1"), "{resolv}");
    p.run_ok(&["rm", "-f", "-t", "0", &names[0], &names[1]]);
}
