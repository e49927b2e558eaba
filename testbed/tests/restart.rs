//! State that survives: kill -9 and restart with nothing lost or leaked; planned stops;
//! namespaces that vanish while the daemon is down; a corrupt state file.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Daemon, Netns};

fn endpoints(d: &Daemon, network: &str) -> Vec<Value> {
    d.ctl_json(&["network", "inspect", network])["endpoint_list"].as_array().unwrap().clone()
}

fn eth0_count(ns: &Netns) -> usize {
    ns.links().iter().filter(|l| l.starts_with("eth")).count()
}

#[test]
fn kill9_during_traffic_then_restart_resumes_with_same_addresses() {
    let mut d = Daemon::start();
    d.ctl_ok(&["network", "create", "n1", "--subnet", "10.88.0.0/24", "--subnet6", "fd00:88::/64"]);
    let (c1, c2) = (Netns::new("vr-a"), Netns::new("vr-b"));
    let e1 = d.attach("n1", &c1);
    let e2 = d.attach("n1", &c2);
    let ip2 = e2["ip"].as_str().unwrap().to_string();
    let before = d.ctl_json(&["network", "ls"]);
    let eps_before = endpoints(&d, "n1");

    // Traffic running when the daemon dies: a ping every 0.1 s and an iperf3 transfer.
    let mut server = c2.spawn(&["iperf3", "-s", "-1"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut iperf = c1.spawn(&["iperf3", "-c", &ip2, "-t", "4"]);
    let ping = c1.spawn(&["ping", "-i", "0.1", "-w", "8", "-D", &ip2]);
    std::thread::sleep(Duration::from_millis(1000));
    d.kill9();
    // The TAPs are persistent: the containers keep their interfaces while the daemon is down.
    assert_eq!(eth0_count(&c1), 1, "the TAP vanished with the daemon");
    std::thread::sleep(Duration::from_millis(500));
    let restarted = Instant::now();
    d.restart();
    let up = restarted.elapsed();

    // The ping resumes: replies arrive again within a second or two of the restart.
    let resumed = testbed::eventually(Duration::from_secs(3), || c1.ping(&ip2, 1));
    assert!(resumed, "no traffic after restart\n{}", d.log());
    eprintln!("restart took {up:?}; traffic back within {:?}", restarted.elapsed());
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let replies = text.lines().filter(|l| l.contains("bytes from")).count();
    assert!(replies > 30, "too few replies across the restart: {text}");
    let _ = iperf.kill();
    let _ = iperf.wait();
    let _ = server.kill();
    let _ = server.wait();

    // The same networks and endpoints, with the same addresses and MACs.
    assert_eq!(d.ctl_json(&["network", "ls"]), before);
    let eps_after = endpoints(&d, "n1");
    let key = |v: &Vec<Value>| {
        v.iter().map(|e| (e["name"].to_string(), e["ip"].to_string(), e["ip6"].to_string(), e["mac"].to_string())).collect::<BTreeSet<_>>()
    };
    assert_eq!(key(&eps_before), key(&eps_after));
    assert_eq!(eth0_count(&c1), 1);
    assert!(c2.ping(e1["ip"].as_str().unwrap(), 1));
    assert_eq!(c1.dig(&[&c2.name]), vec![ip2.clone()], "DNS records restored");
}

#[test]
fn planned_stop_removes_taps_and_start_puts_them_back() {
    let mut d = Daemon::start();
    d.network("n1", "10.88.1.0/24");
    let (c1, c2, gone) = (Netns::new("vr2-a"), Netns::new("vr2-b"), Netns::new("vr2-x"));
    d.attach("n1", &c1);
    let e2 = d.attach("n1", &c2);
    let eg = d.attach("n1", &gone);
    d.ctl_ok(&["fdb", "add", "n1", "02:00:00:00:aa:01", &c2.name]);
    assert!(d.terminate().success());
    assert_eq!(eth0_count(&c1), 0, "a planned stop removes the TAPs");
    // A container disappears while the daemon is down.
    let gone_ip = eg["ip"].as_str().unwrap().to_string();
    drop(gone);
    d.restart();
    assert_eq!(eth0_count(&c1), 1, "the TAP is back\n{}", d.log());
    assert!(c1.ping(e2["ip"].as_str().unwrap(), 2), "traffic after restart\n{}", d.log());
    let eps = endpoints(&d, "n1");
    assert_eq!(eps.len(), 2, "the endpoint whose namespace is gone is dropped: {eps:?}");
    let detail = d.ctl_json(&["network", "inspect", "n1"]);
    assert_eq!(detail["usage"]["in_use"], 2, "its address is released: {detail}");
    assert!(d.log().contains("is gone"), "the drop is logged");
    let fdb = d.ctl_json(&["fdb", "show", "n1"]);
    assert!(fdb.as_array().unwrap().iter().any(|r| r["mac"] == "02:00:00:00:aa:01" && r["static"] == true), "static entry restored: {fdb}");
    // Its address can be handed out again (serially, so ask for it).
    let c3 = Netns::new("vr2-c");
    let e3 = d.ctl_json(&["attach", "n1", "--netns", &c3.path(), "--name", "c3", "--ip", &gone_ip]);
    assert_eq!(e3["ip"].as_str(), Some(gone_ip.as_str()));
}

#[test]
fn live_restore_keeps_taps_across_a_planned_stop() {
    let mut d = Daemon::start_with(&["--live-restore"]);
    d.network("n1", "10.88.2.0/24");
    let (c1, c2) = (Netns::new("vr3-a"), Netns::new("vr3-b"));
    d.attach("n1", &c1);
    let e2 = d.attach("n1", &c2);
    let idx_before = c1.exec_ok(&["cat", "/sys/class/net/eth0/ifindex"]);
    assert!(d.terminate().success());
    assert_eq!(eth0_count(&c1), 1, "--live-restore keeps the TAP");
    d.restart();
    assert_eq!(c1.exec_ok(&["cat", "/sys/class/net/eth0/ifindex"]), idx_before, "the same TAP was reopened");
    assert!(c1.ping(e2["ip"].as_str().unwrap(), 2), "traffic through the reopened TAP\n{}", d.log());
}

#[test]
fn corrupt_state_file_is_a_clear_error_and_never_overwritten() {
    let mut d = Daemon::start();
    d.network("n1", "10.88.3.0/24");
    assert!(d.terminate().success());
    let file = d.dir.join("state").join("state.json");
    let garbage = "{\"version\": 1, \"networks\": [tr";
    std::fs::write(&file, garbage).unwrap();
    let err = d.try_restart().expect_err("vswitchd must refuse a corrupt state file");
    assert!(err.contains("corrupt") && err.contains("state.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), garbage, "the file is never overwritten");
    // An inconsistent one (two networks with one name) is refused too.
    let text = r#"{"version":1,"next_network":1,"networks":[]}"#;
    std::fs::write(&file, text).unwrap();
    d.restart();
    assert_eq!(d.ctl_json(&["network", "ls"]), serde_json::json!([]));
}

#[test]
fn churn_with_kill9_leaks_nothing() {
    let mut d = Daemon::start();
    d.network("n1", "10.88.4.0/24");
    let pool: Vec<Netns> = (0..6).map(|i| Netns::new(&format!("vr5-{i}-"))).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for cycle in 0..100 {
        let ns = &pool[(next() % pool.len() as u64) as usize];
        let attached = endpoints(&d, "n1").iter().any(|e| e["name"] == ns.name.as_str());
        let args: Vec<String> = if attached {
            vec!["detach".into(), "n1".into(), ns.name.clone()]
        } else {
            vec!["attach".into(), "n1".into(), "--netns".into(), ns.path(), "--name".into(), ns.name.clone()]
        };
        if next() % 4 == 0 {
            // Kill at a random point during the request.
            let mut cmd = std::process::Command::new(testbed::bin_dir().join("vswitchctl"));
            cmd.arg("--socket").arg(&d.socket).args(&args);
            let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
            std::thread::sleep(Duration::from_micros(next() % 3000));
            d.kill9();
            let _ = child.wait();
            d.restart();
        } else {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            d.ctl_ok(&refs);
        }
        if cycle % 25 == 24 {
            d.kill9();
            d.restart();
        }
    }
    d.kill9();
    d.restart();
    // The API, the pool and the kernel agree.
    let eps = endpoints(&d, "n1");
    let names: BTreeSet<String> = eps.iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), eps.len(), "duplicate endpoints: {eps:?}");
    let ips: BTreeSet<String> = eps.iter().map(|e| e["ip"].as_str().unwrap().to_string()).collect();
    assert_eq!(ips.len(), eps.len(), "an address given twice: {eps:?}");
    let detail = d.ctl_json(&["network", "inspect", "n1"]);
    assert_eq!(detail["usage"]["in_use"].as_u64(), Some(eps.len() as u64), "leaked address: {detail}");
    for ns in &pool {
        let has_tap = eth0_count(ns) == 1;
        assert_eq!(has_tap, names.contains(&ns.name), "kernel and API disagree on {}: {:?}\n{}", ns.name, ns.links(), d.log());
        assert!(eth0_count(ns) <= 1);
    }
    // And everything still works.
    if eps.len() >= 2 {
        let a = pool.iter().find(|n| names.contains(&n.name)).unwrap();
        let other = eps.iter().find(|e| e["name"] != a.name.as_str()).unwrap();
        assert!(a.ping(other["ip"].as_str().unwrap(), 1));
    }
}
