//! Cluster mode: a real 3-member etcd cluster and three vswitchd hosts, each in its own network
//! namespace on a shared underlay (a bridge in a hub namespace, where etcd runs). Networks
//! defined once, per-host address blocks, peers and names from etcd, a dead host's entries
//! going with its lease, restarts, etcd's leader killed, etcd stopped and back, bad input.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{ensure_commands, eventually, run_ok, unique, Daemon, Netns};

/// Client ports of the three members in the hub namespace (each test has its own hub).
const CLIENT_PORTS: [u16; 3] = [2379, 22379, 32379];
const HUB_IP: &str = "10.203.0.254";
/// The lease the daemons run with: a dead host is gone after this long.
const LEASE_SECS: u64 = 4;

/// etcd members in the hub namespace; killed on drop.
struct Etcd {
    hub_name: String,
    dir: std::path::PathBuf,
    members: Vec<Option<Child>>,
    token: String,
}

impl Etcd {
    fn start(hub: &Netns, n: usize) -> Etcd {
        let dir = std::env::temp_dir().join(unique("vswitch-etcd-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Etcd { hub_name: hub.name.clone(), dir, members: (0..n).map(|_| None).collect(), token: unique("tok") };
        for i in 0..n {
            e.start_member(i, "new");
        }
        let ok = eventually(Duration::from_secs(20), || e.ctl(&["endpoint", "health"]).0);
        assert!(ok, "etcd cluster did not come up: {}", e.logs());
        e
    }

    fn initial_cluster(&self) -> String {
        (0..self.members.len()).map(|i| format!("m{i}=http://{HUB_IP}:{}", CLIENT_PORTS[i] + 1)).collect::<Vec<_>>().join(",")
    }

    fn start_member(&mut self, i: usize, state: &str) {
        let (client, peer) = (CLIENT_PORTS[i], CLIENT_PORTS[i] + 1);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("m{i}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hub_name, "etcd"])
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("http://{HUB_IP}:{client}")])
            .args(["--advertise-client-urls", &format!("http://{HUB_IP}:{client}")])
            .args(["--listen-peer-urls", &format!("http://{HUB_IP}:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{HUB_IP}:{peer}")])
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--initial-cluster-state", state, "--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoints(&self) -> String {
        (0..self.members.len()).map(|i| format!("{HUB_IP}:{}", CLIENT_PORTS[i])).collect::<Vec<_>>().join(",")
    }

    fn url(&self) -> String {
        format!("etcd://{}", self.endpoints())
    }

    /// etcdctl against the live members: (success, stdout).
    fn ctl(&self, args: &[&str]) -> (bool, String) {
        let eps: Vec<String> = (0..self.members.len())
            .filter(|i| self.members[*i].is_some())
            .map(|i| format!("http://{HUB_IP}:{}", CLIENT_PORTS[i]))
            .collect();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.hub_name, "etcdctl", "--dial-timeout", "2s", "--command-timeout", "3s"])
            .arg(format!("--endpoints={}", eps.join(",")))
            .args(args)
            .output()
            .expect("etcdctl");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The index of the member that leads now.
    fn leader(&self) -> usize {
        let (ok, out) = self.ctl(&["endpoint", "status", "-w", "json"]);
        assert!(ok, "etcdctl endpoint status");
        let v: Value = serde_json::from_str(&out).unwrap();
        for s in v.as_array().unwrap() {
            if s["Status"]["leader"] == s["Status"]["header"]["member_id"] {
                let ep = s["Endpoint"].as_str().unwrap();
                return CLIENT_PORTS.iter().position(|p| ep.ends_with(&format!(":{p}"))).unwrap();
            }
        }
        panic!("no leader: {out}");
    }

    fn logs(&self) -> String {
        (0..self.members.len()).map(|i| std::fs::read_to_string(self.dir.join(format!("m{i}.log"))).unwrap_or_default()).collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The hub namespace with the underlay bridge, and hosts joined to it.
struct Underlay {
    hub: Netns,
    hosts: Vec<Netns>,
}

fn underlay(n: usize) -> Underlay {
    ensure_commands(&[("etcd", "etcd-server"), ("etcdctl", "etcd-client"), ("dig", "dnsutils")]);
    let hub = Netns::new("vcu-");
    hub.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    hub.exec_ok(&["ip", "addr", "add", &format!("{HUB_IP}/24"), "dev", "br0"]);
    hub.exec_ok(&["ip", "link", "set", "br0", "up"]);
    let mut hosts = Vec::new();
    for i in 0..n {
        let h = Netns::new(&format!("vch{i}-"));
        let (inner, outer) = (format!("ul{i}"), format!("p{i}"));
        run_ok("ip", &["link", "add", &inner, "netns", &h.name, "type", "veth", "peer", "name", &outer, "netns", &hub.name]);
        hub.exec_ok(&["ip", "link", "set", &outer, "master", "br0", "up"]);
        h.exec_ok(&["ip", "addr", "add", &format!("10.203.0.{}/24", i + 1), "dev", &inner]);
        h.exec_ok(&["ip", "link", "set", &inner, "up"]);
        hosts.push(h);
    }
    Underlay { hub, hosts }
}

fn host_args(i: usize, cluster: &str) -> Vec<String> {
    [
        "--listen",
        &format!("10.203.0.{}:51820", i + 1),
        "--cluster",
        cluster,
        "--host-name",
        &format!("h{i}"),
        "--cluster-lease-secs",
        &LEASE_SECS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_host(u: &Underlay, i: usize, cluster: &str) -> Daemon {
    let args = host_args(i, cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_in(&u.hosts[i], &args)
}

fn healthy(d: &Daemon) -> bool {
    d.ctl_json(&["cluster", "status"])["healthy"] == true
}

fn host_names(d: &Daemon) -> Vec<String> {
    let v = d.ctl_json(&["cluster", "hosts"]);
    let mut names: Vec<String> = v.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

fn peer_keys(d: &Daemon) -> Vec<String> {
    d.ctl_json(&["peer", "ls"]).as_array().unwrap().iter().map(|p| p["public_key"].as_str().unwrap().to_string()).collect()
}

fn key(d: &Daemon) -> String {
    d.ctl_json(&["key", "show"])["public_key"].as_str().unwrap().to_string()
}

fn logs(ds: &[&Daemon]) -> String {
    ds.iter().enumerate().map(|(i, d)| format!("--- h{i} ---\n{}\n", d.log())).collect()
}

/// Attaches `ns` to `network` on `d`; its address.
fn attach(d: &Daemon, network: &str, ns: &Netns) -> String {
    d.attach(network, ns)["ip"].as_str().unwrap().to_string()
}

#[test]
fn three_hosts_share_networks_addresses_and_names_through_etcd() {
    let u = underlay(3);
    let mut etcd = Etcd::start(&u.hub, 3);
    let url = etcd.url();
    let d0 = start_host(&u, 0, &url);
    let d1 = start_host(&u, 1, &url);
    let mut d2 = start_host(&u, 2, &url);
    let all = |d0: &Daemon, d1: &Daemon, d2: &Daemon| logs(&[d0, d1, d2]);
    for d in [&d0, &d1, &d2] {
        assert!(eventually(Duration::from_secs(10), || healthy(d)), "cluster healthy\n{}", all(&d0, &d1, &d2));
        assert!(eventually(Duration::from_secs(10), || host_names(d) == ["h0", "h1", "h2"]), "every host registered");
    }
    let status = d0.ctl_ok(&["cluster", "status"]);
    assert!(status.contains("healthy") && status.contains("h1") && status.contains("(this host)"), "{status}");

    // A network created on one host appears on all, same subnet, each with its own block.
    let ov = d0.ctl_json(&["network", "create", "ov", "--overlay", "--subnet", "10.93.0.0/24"]);
    assert_eq!(ov["subnet"], "10.93.0.0/24", "{ov}");
    let mut blocks = Vec::new();
    for d in [&d0, &d1, &d2] {
        let ok = eventually(Duration::from_secs(10), || {
            d.ctl_json(&["network", "ls"]).as_array().unwrap().iter().any(|n| n["name"] == "ov" && n["subnet"] == "10.93.0.0/24")
        });
        assert!(ok, "ov reached every host\n{}", all(&d0, &d1, &d2));
        let n = d.ctl_json(&["network", "inspect", "ov"]);
        blocks.push(n["ip_range"].as_str().unwrap().to_string());
    }
    blocks.sort();
    blocks.dedup();
    assert_eq!(blocks.len(), 3, "each host hands out from its own block: {blocks:?}");
    // Creating it again, anywhere, is refused with the cluster's answer.
    let again = d1.ctl(&["network", "create", "ov", "--overlay", "--subnet", "10.94.0.0/24"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("network_exists"), "{again:?}");

    // Containers on all three get distinct addresses with no --ip-range, and reach each other.
    let c: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("vcc{i}-"))).collect();
    let ips: Vec<String> = [&d0, &d1, &d2].iter().zip(&c).map(|(d, ns)| attach(d, "ov", ns)).collect();
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "distinct addresses: {ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.93.0.")), "{ips:?}");
    for (i, j) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        let ok = eventually(Duration::from_secs(10), || c[i].ping(&ips[j], 1));
        assert!(ok, "c{i} pings c{j} at {}\n{}", ips[j], all(&d0, &d1, &d2));
    }
    for (i, j) in [(0, 1), (0, 2), (1, 2), (2, 1)] {
        let ok = eventually(Duration::from_secs(10), || c[i].dig(&[&c[j].name]) == vec![ips[j].clone()]);
        assert!(ok, "c{i} resolves c{j}\n{}", all(&d0, &d1, &d2));
    }
    assert!(c[0].ping(&c[2].name, 1), "ping by name across hosts");
    // Names are in etcd, under each host's lease.
    let in_etcd =
        eventually(Duration::from_secs(5), || etcd.ctl(&["get", "/vswitch/names/ov/h1", "--print-value-only"]).1.contains(&c[1].name));
    assert!(in_etcd, "{:?}\n{}", etcd.ctl(&["get", "--prefix", "/vswitch/"]), all(&d0, &d1, &d2));

    // etcd's leader killed: the cluster keeps serving, an attach still works and its name
    // reaches the other hosts.
    let leader = etcd.leader();
    etcd.kill(leader);
    let c3 = Netns::new("vcc3-");
    let t = Instant::now();
    let mut ip3 = None;
    while ip3.is_none() && t.elapsed() < Duration::from_secs(10) {
        let out = d1.ctl(&["--json", "attach", "ov", "--netns", &c3.path(), "--name", &c3.name]);
        if out.status.success() {
            ip3 = Some(serde_json::from_slice::<Value>(&out.stdout).unwrap()["ip"].as_str().unwrap().to_string());
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let ip3 = ip3.unwrap_or_else(|| panic!("attach with the leader dead\n{}", all(&d0, &d1, &d2)));
    c3.set_resolver(ov["gateway"].as_str().unwrap());
    let ok = eventually(Duration::from_secs(10), || c[0].dig(&[&c3.name]) == vec![ip3.clone()]);
    assert!(ok, "c3 (attached with the leader dead) resolves on h0\n{}", all(&d0, &d1, &d2));
    assert!(c[0].ping(&ip3, 1));

    // One vswitchd killed: its names and peer entry go on the others within the lease time.
    let k2 = key(&d2);
    assert!(peer_keys(&d0).contains(&k2));
    d2.kill9();
    let gone = eventually(Duration::from_secs(LEASE_SECS + 4), || !peer_keys(&d0).contains(&k2) && !peer_keys(&d1).contains(&k2));
    assert!(gone, "h2's peer entries went with its lease\n{}", all(&d0, &d1, &d2));
    assert!(eventually(Duration::from_secs(3), || c[0].dig(&[&c[2].name]).is_empty()), "h2's names went too");
    assert_eq!(host_names(&d0), ["h0", "h1"]);
    // It restarts and rejoins, its container's address unchanged.
    d2.restart();
    let ep = d2.ctl_json(&["network", "inspect", "ov"])["endpoint_list"].as_array().unwrap()[0].clone();
    assert_eq!(ep["ip"], ips[2].as_str(), "same address after kill -9 and restart: {ep}");
    assert!(eventually(Duration::from_secs(10), || peer_keys(&d0).contains(&k2)), "h2 is a peer again\n{}", all(&d0, &d1, &d2));
    assert!(eventually(Duration::from_secs(10), || c[0].ping(&ips[2], 1)), "c0 reaches c2 again");
    assert!(eventually(Duration::from_secs(10), || c[1].dig(&[&c[2].name]) == vec![ips[2].clone()]), "c2's name is back");

    // etcd stopped entirely: traffic continues, an attach on the overlay network gets a clear
    // error, and everything is reconciled when etcd returns.
    for i in 0..3 {
        etcd.kill(i);
    }
    let c4 = Netns::new("vcc4-");
    // The store counts as gone once a renewal is missed (a few seconds at most).
    assert!(eventually(Duration::from_secs(8), || !healthy(&d0)), "h0 sees etcd gone\n{}", all(&d0, &d1, &d2));
    let out = d0.ctl(&["attach", "ov", "--netns", &c4.path(), "--name", &c4.name]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("cluster_unavailable") && msg.contains("etcd") && msg.contains("keep working"), "a clear error: {msg}");
    assert!(!c4.links().iter().any(|l| l == "eth0"), "nothing was attached");
    // Longer than the lease: nothing is taken down while the store is away.
    std::thread::sleep(Duration::from_secs(LEASE_SECS + 1));
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        assert!(c[i].ping(&ips[j], 2), "c{i} still reaches c{j} with etcd down");
    }
    assert_eq!(c[0].dig(&[&c[1].name]), vec![ips[1].clone()], "names stay with etcd down");
    // A non-cluster network still works.
    d0.ctl_ok(&["network", "create", "local1", "--subnet", "10.95.0.0/24"]);
    for i in 0..3 {
        etcd.start_member(i, "existing");
    }
    assert!(eventually(Duration::from_secs(20), || healthy(&d0)), "healthy again\n{}\n{}", all(&d0, &d1, &d2), etcd.logs());
    let ip4 = attach(&d0, "ov", &c4);
    assert!(eventually(Duration::from_secs(10), || c[2].dig(&[&c4.name]) == vec![ip4.clone()]), "c4 resolves on h2");
    assert!(eventually(Duration::from_secs(10), || c[2].ping(&ip4, 1)));
    assert_eq!(host_names(&d1), ["h0", "h1", "h2"]);
}

#[test]
fn bad_input_unreachable_store_malformed_values_and_racing_creates() {
    let u = underlay(2);
    // Nothing listens there: vswitchd starts, says so, and refuses cluster operations clearly.
    let lonely = Daemon::start_in(&u.hosts[0], &host_args(0, "etcd://10.203.0.254:1").iter().map(String::as_str).collect::<Vec<_>>());
    let st = lonely.ctl_json(&["cluster", "status"]);
    assert_eq!(st["healthy"], false, "{st}");
    assert!(st["endpoints"][0]["healthy"] == false && st["error"].is_string(), "{st}");
    let out = lonely.ctl(&["network", "create", "x", "--overlay", "--subnet", "10.96.0.0/24"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cluster_unavailable") && err.contains("10.203.0.254:1"), "{err}");
    lonely.ctl_ok(&["network", "create", "plain", "--subnet", "10.97.0.0/24"]);
    drop(lonely);

    // Bad command lines stop the daemon at start with a message.
    for (args, says) in [
        (vec!["--listen", "10.203.0.1:51820", "--cluster", "http://x:1"], "etcd://"),
        (vec!["--cluster", "etcd://10.203.0.254:2379"], "--listen"),
        (vec!["--listen", "10.203.0.1:51820", "--cluster", "etcd://a:1", "--host-name", "bad name"], "host"),
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &u.hosts[0].name])
            .arg(testbed::bin_dir().join("vswitchd"))
            .args(["--socket", "/nonexistent-dir/x.sock", "--state-dir", "/nonexistent-dir/state"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }
    // Cluster mode off: the cluster commands say how to turn it on.
    let plain = Daemon::start();
    let out = plain.ctl(&["cluster", "status"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--cluster"), "{out:?}");
    drop(plain);

    let etcd = Etcd::start(&u.hub, 1);
    let url = etcd.url();
    let d0 = start_host(&u, 0, &url);
    let d1 = start_host(&u, 1, &url);
    for d in [&d0, &d1] {
        assert!(eventually(Duration::from_secs(10), || host_names(d) == ["h0", "h1"]), "{}", logs(&[&d0, &d1]));
    }

    // Two hosts racing to create the same network with different subnets: one wins, the
    // other is told so, and both end up with the winner's network.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| d0.ctl(&["network", "create", "race", "--overlay", "--subnet", "10.98.0.0/24"]));
        let b = s.spawn(|| d1.ctl(&["network", "create", "race", "--overlay", "--subnet", "10.99.0.0/24"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() != b.status.success(), "exactly one create wins: {a:?} {b:?}");
    let loser = if a.status.success() { &b } else { &a };
    assert!(String::from_utf8_lossy(&loser.stderr).contains("network_exists"), "{loser:?}");
    let subnet_of = |d: &Daemon| d.ctl_json(&["network", "inspect", "race"])["subnet"].as_str().map(String::from);
    assert!(
        eventually(Duration::from_secs(10), || {
            let (s0, s1) = (d0.ctl(&["network", "inspect", "race"]), d1.ctl(&["network", "inspect", "race"]));
            s0.status.success() && s1.status.success() && subnet_of(&d0) == subnet_of(&d1)
        }),
        "one outcome on both hosts\n{}",
        logs(&[&d0, &d1])
    );

    // Traffic across the two hosts, so that we can see nothing is lost below.
    let (c0, c1) = (Netns::new("vcb0-"), Netns::new("vcb1-"));
    let (_ip0, ip1) = (attach(&d0, "race", &c0), attach(&d1, "race", &c1));
    assert!(eventually(Duration::from_secs(10), || c0.ping(&ip1, 1)), "{}", logs(&[&d0, &d1]));
    let k1 = key(&d1);

    // Malformed values: a network definition that is not JSON, a host with a bad key, and
    // garbage written over h1's own good record. Reported, ignored, nothing lost.
    assert!(etcd.ctl(&["put", "/vswitch/networks/junk", "not json"]).0);
    assert!(etcd.ctl(&["put", "/vswitch/hosts/evil", r#"{"name":"evil","public_key":"short","endpoint":"10.203.0.9:1","lease":0}"#]).0);
    assert!(etcd.ctl(&["put", "/vswitch/hosts/h1", "{garbage"]).0);
    assert!(etcd.ctl(&["put", "/vswitch/networks/race", r#"{"name":"race","overlay":true}"#]).0);
    let reported = eventually(Duration::from_secs(5), || {
        let p = d0.ctl_json(&["cluster", "status"])["problems"].to_string();
        p.contains("/vswitch/networks/junk") && p.contains("/vswitch/hosts/evil") && p.contains("/vswitch/networks/race")
    });
    assert!(reported, "malformed values are reported: {}", d0.ctl_ok(&["cluster", "status"]));
    assert!(peer_keys(&d0).contains(&k1), "h1 stays a peer of h0 (its last good record holds)");
    assert!(d0.ctl(&["network", "inspect", "race"]).status.success(), "the network stays");
    assert!(!d0.ctl_json(&["network", "ls"]).to_string().contains("junk"));
    assert!(c0.ping(&ip1, 2), "traffic goes on");
    // The malformed values are gone (a good value or a delete): the problems go too.
    assert!(etcd.ctl(&["del", "/vswitch/networks/junk"]).0);
    assert!(etcd.ctl(&["del", "/vswitch/hosts/evil"]).0);
    let cleared = eventually(Duration::from_secs(5), || {
        let p = d0.ctl_json(&["cluster", "status"])["problems"].to_string();
        !p.contains("/vswitch/networks/junk") && !p.contains("/vswitch/hosts/evil")
    });
    assert!(cleared, "{}", d0.ctl_ok(&["cluster", "status"]));
    // h1 put its own record back over the garbage (at once, so h0 may not even have seen it).
    let repaired = eventually(Duration::from_secs(5), || {
        etcd.ctl(&["get", "/vswitch/hosts/h1", "--print-value-only"]).1.contains(&k1)
            && !d0.ctl_json(&["cluster", "status"])["problems"].to_string().contains("/vswitch/hosts/h1")
    });
    assert!(repaired, "{}", d0.ctl_ok(&["cluster", "status"]));
    assert!(etcd.ctl(&["del", "/vswitch/networks/race"]).0);
    // The cluster removed the network: both hosts remove their copies (endpoints too).
    let removed = eventually(Duration::from_secs(10), || {
        !d0.ctl(&["network", "inspect", "race"]).status.success() && !d1.ctl(&["network", "inspect", "race"]).status.success()
    });
    assert!(removed, "a network deleted from the cluster goes everywhere\n{}", logs(&[&d0, &d1]));
}
