//! Rootless podman (CNI backend) on a vswitch network: a user made by the test runs vswitchd
//! (rootless, joined to podman's user namespace with `--userns /proc/PAUSE/ns/user`) and rootless
//! podman, whose `vswitch-cni` plugin attaches each container to vswitchd. Two containers ping
//! each other by name through vswitch's DNS and fetch from a server on the host's loopback
//! through vswitchd's egress (`--host-loopback`); a vswitchd restart (kill -9, started again
//! without `--userns`) keeps them talking; `podman rm` leaves nothing behind.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;
use testbed::runtimes::{self, PodmanCli, RootlessPodman, SubidUser, IMAGE};
use testbed::{eventually, unique, Daemon};

const USER: &str = "vswitch-rlpod";
const NET: &str = "vswr";
const SUBNET: &str = "10.88.31.0/24";

/// A tiny HTTP server on the host's 127.0.0.1 (the test's own namespace): answers every
/// request with `body`. Returns its port; the thread lives until the test process exits.
fn loopback_http(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            // The whole request first: closing with unread bytes would send a RST.
            let (mut req, mut buf) = (Vec::new(), [0u8; 1024]);
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let resp = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = conn.write_all(resp.as_bytes());
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.read(&mut buf);
        }
    });
    port
}

fn endpoints(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["network", "inspect", NET])["endpoint_list"].as_array().cloned().unwrap_or_default()
}

fn start(p: &RootlessPodman, d: &Daemon, prefix: &str) -> String {
    let name = unique(prefix);
    let out = p.run(&["run", "-d", "--name", &name, "--network", NET, "--cap-add", "NET_RAW", IMAGE, "sleep", "100000"]);
    assert!(
        out.status.success(),
        "podman run {name} failed ({}): {}{}\n--- vswitchd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    name
}

#[test]
fn rootless_podman_containers_talk_by_name_and_reach_the_host_loopback_through_vswitchd() {
    testbed::require_root();
    // Dropped last: kills what still runs as the user, then removes it.
    let u = SubidUser::new(USER);
    let p = RootlessPodman::new(&u.user);
    let port = loopback_http("hello-from-host-loopback");
    let mut d = Daemon::start_rootless(&u.user, &["--userns", &p.userns()]);
    let hp = d.userns_pid();
    assert_eq!(
        std::fs::read_link(format!("/proc/{hp}/ns/user")).ok(),
        std::fs::read_link(p.userns()).ok(),
        "the helper did not join podman's user namespace"
    );
    d.ctl_ok(&["network", "create", NET, "--subnet", SUBNET, "--host-loopback", &port.to_string()]);
    p.add_conflist(NET, &runtimes::vswitch_conflist(NET, &d.socket));

    let c1 = start(&p, &d, "rpa");
    let c2 = start(&p, &d, "rpb");
    let eps = endpoints(&d);
    assert_eq!(eps.len(), 2, "{eps:?}");
    // The plugin named each namespace through podman's pause process: from vswitchd's mount
    // namespace, podman's CNI_NETNS path is an empty file.
    let pause_root = format!("/proc/{}/root/", p.pause_pid());
    for e in &eps {
        assert!(e["netns"].as_str().is_some_and(|n| n.starts_with(&pause_root)), "{e}");
        assert_eq!(e["owner"].as_str().map(|o| o.starts_with("cni/")), Some(true), "{e}");
    }
    let gw = d.ctl_json(&["network", "inspect", NET])["gateway"].as_str().unwrap().to_string();

    // By name both ways (vswitch's DNS at the gateway, from the CNI result's dns).
    assert!(p.ping(&c1, &c2, 2), "{c1} cannot ping {c2} by name\n{}", d.log());
    assert!(p.ping(&c2, &c1, 2), "{c2} cannot ping {c1} by name");
    // The host's loopback server at the gateway, through vswitchd's egress (no wget -T: Debian's
    // static busybox crashes with it).
    let url = format!("http://{gw}:{port}/");
    let got = p.exec(&c1, &["wget", "-q", "-O", "-", &url]);
    let body = String::from_utf8_lossy(&got.stdout).to_string();
    assert!(
        body.contains("hello-from-host-loopback"),
        "wget {url}: {body:?} {} {}\n{}",
        got.status,
        String::from_utf8_lossy(&got.stderr),
        d.log()
    );

    // kill -9, then vswitchd again *without* --userns: its helper rejoins the user namespace
    // owning the saved namespaces (podman's), and the containers keep talking.
    d.kill9();
    d.restart_with(&[]);
    assert_eq!(std::fs::read_link(format!("/proc/{}/ns/user", d.userns_pid())).ok(), std::fs::read_link(p.userns()).ok());
    assert!(eventually(Duration::from_secs(5), || p.ping(&c1, &c2, 1)), "after kill -9 and restart\n{}", d.log());
    let got = p.exec(&c2, &["wget", "-q", "-O", "-", &url]);
    assert!(String::from_utf8_lossy(&got.stdout).contains("hello-from-host-loopback"), "{got:?}\n{}", d.log());

    // podman rm: the plugin's DEL detaches both; no endpoint and no lease left.
    p.run_ok(&["rm", "-f", "-t", "0", &c1, &c2]);
    let clean = eventually(Duration::from_secs(10), || {
        let n = d.ctl_json(&["network", "inspect", NET]);
        n["endpoints"] == 0 && n["usage"]["in_use"] == 0
    });
    assert!(clean, "left behind: {}\n{}", d.ctl_json(&["network", "inspect", NET]), d.log());
    drop(d);
    drop(p);
}
