//! Root tests of `vswitchctl up FILE` / `down FILE`: the 3-tier example is built, its commands
//! run, its impaired link shows in ping, a second `up` changes nothing, `down` leaves no
//! namespace, endpoint, network or process; and `down` cleans up after vswitchd was killed
//! in the middle of an `up`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testbed::{bin_dir, ensure_commands, eventually, unique, Daemon};

/// The example file with its name (and so its namespaces) made unique to this test.
fn example(d: &Daemon, file: &str, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies").join(file);
    let text = std::fs::read_to_string(&src).unwrap();
    let first = text.lines().find(|l| l.starts_with("name = ")).unwrap().to_string();
    let out = d.dir.join(file);
    std::fs::write(&out, text.replacen(&first, &format!("name = \"{name}\""), 1)).unwrap();
    out
}

fn namespaces_of(topo: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&format!("{topo}-"))).collect())
        .unwrap_or_default()
}

fn in_ns(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().unwrap()
}

fn record(d: &Daemon, topo: &str) -> Option<Value> {
    let p = d.socket.parent().unwrap().join("topology").join(format!("{topo}.json"));
    std::fs::read(p).ok().map(|b| serde_json::from_slice(&b).unwrap())
}

/// Removes whatever a failed test left (namespaces of this topology), so nothing leaks.
struct Sweep(String);
impl Drop for Sweep {
    fn drop(&mut self) {
        for ns in namespaces_of(&self.0) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

#[test]
fn up_builds_the_example_a_second_up_changes_nothing_and_down_removes_it() {
    ensure_commands(&[("curl", "curl"), ("python3", "python3")]);
    let d = Daemon::start();
    let topo = unique("tw");
    let _sweep = Sweep(topo.clone());
    let file = example(&d, "web3.toml", &topo);
    let f = file.to_str().unwrap();

    let out = d.ctl_ok(&["up", f]);
    eprintln!("{out}");
    assert!(out.contains("created network web3-front") && out.contains(&format!("made namespace {topo}-db")), "{out}");
    let mut ns = namespaces_of(&topo);
    ns.sort();
    assert_eq!(ns, [format!("{topo}-client"), format!("{topo}-db"), format!("{topo}-web")]);
    // The web tier's command runs and the client reaches it.
    let client = format!("{topo}-client");
    assert!(
        eventually(Duration::from_secs(10), || {
            String::from_utf8_lossy(&in_ns(&client, &["curl", "-s", "-m", "2", "http://10.150.1.20:8080/"]).stdout)
                .contains("hello from web")
        }),
        "the web command does not answer the client"
    );
    // The database's link is impaired both ways: 5 ms each way (jitter 1 ms).
    let ping = in_ns(&format!("{topo}-web"), &["ping", "-n", "-c", "5", "-i", "0.1", "10.150.2.30"]);
    let text = String::from_utf8_lossy(&ping.stdout).to_string();
    let times: Vec<f64> = text.lines().filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    assert!(times.len() >= 3 && times.iter().all(|&t| t >= 8.0), "RTT web -> db without the link's delay: {text}");
    let ports = d.ctl_json(&["port", "ls"]);
    let db = ports.as_array().unwrap().iter().find(|p| p["name"] == "db").unwrap();
    assert_eq!(db["impair_egress"]["impairment"]["delay_us"], 5000, "{db}");
    assert_eq!(db["impair_ingress"]["impairment"]["rate_bps"], 100_000_000u64, "{db}");
    let pid = record(&d, &topo).unwrap()["pids"]["web"].as_u64().unwrap();

    let again = d.ctl_ok(&["up", f]);
    assert!(again.contains("nothing changed"), "a second up changed something: {again}");
    // A changed address is refused, not ignored; a changed impairment is applied live.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("10.150.1.10", "10.150.1.11")).unwrap();
    let out = d.ctl(&["up", f]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not changed in place"), "{out:?}");
    std::fs::write(&file, text.replace("delay = \"5ms\"", "delay = \"7ms\"")).unwrap();
    let changed = d.ctl_ok(&["up", f]);
    assert!(changed.contains("impaired web3-back/db ingress") && changed.contains("2 change(s)"), "{changed}");
    std::fs::write(&file, &text).unwrap();
    assert!(d.ctl_ok(&["up", f]).contains("2 change(s)"));
    assert!(d.ctl_ok(&["up", f]).contains("nothing changed"));
    assert_eq!(record(&d, &topo).unwrap()["pids"]["web"].as_u64(), Some(pid), "the command was started again");

    let out = d.ctl_ok(&["down", f]);
    eprintln!("{out}");
    assert!(namespaces_of(&topo).is_empty(), "namespaces left: {:?}", namespaces_of(&topo));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || eventually(Duration::from_secs(3), || !Path::new(&format!("/proc/{pid}")).exists())
    );
    let nets = d.ctl_json(&["network", "ls"]);
    assert!(nets.as_array().unwrap().iter().all(|n| n["labels"]["vswitch.topology"].is_null()), "networks left: {nets}");
    let ports = d.ctl_json(&["port", "ls"]);
    assert!(ports.as_array().unwrap().iter().all(|p| p["kind"] != "tap"), "endpoints left: {ports}");
    assert!(record(&d, &topo).is_none(), "the record outlived down");
    assert!(d.ctl_ok(&["down", f]).contains("nothing to take down"));
}

#[test]
fn down_cleans_up_after_vswitchd_is_killed_in_the_middle_of_up() {
    let mut d = Daemon::start();
    let topo = unique("tk");
    let _sweep = Sweep(topo.clone());
    // Many containers, so that `up` is still at work when the daemon dies.
    let mut text = format!("name = \"{topo}\"\n[[networks]]\nname = \"big\"\nsubnet = \"10.151.0.0/24\"\n");
    for i in 0..40 {
        text.push_str(&format!("[[containers]]\nname = \"c{i}\"\nrun = \"sleep 600\"\n[[containers.links]]\nnetwork = \"big\"\n"));
    }
    let file = d.dir.join("big.toml");
    std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();

    let mut up = Command::new(bin_dir().join("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["up", f])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || namespaces_of(&topo).len() >= 3), "up made no namespace");
    d.kill9();
    let status = up.wait().unwrap();
    let made = namespaces_of(&topo).len();
    eprintln!("up ended with {status} after making {made} namespaces");
    assert!(!status.success(), "up finished before the daemon was killed: the test proves nothing");

    d.restart();
    let out = d.ctl_ok(&["down", f]);
    eprintln!("{out}");
    assert!(namespaces_of(&topo).is_empty(), "namespaces left: {:?}", namespaces_of(&topo));
    let ports = d.ctl_json(&["port", "ls"]);
    assert!(ports.as_array().unwrap().iter().all(|p| p["kind"] != "tap"), "endpoints left: {ports}");
    let nets = d.ctl_json(&["network", "ls"]);
    assert!(nets.as_array().unwrap().is_empty(), "networks left: {nets}");
    assert!(record(&d, &topo).is_none());
    // No TAP of the topology is left in the daemon's own namespace either (TAPs live in the
    // containers' namespaces, which are gone).
    let links = String::from_utf8_lossy(&Command::new("ip").args(["-o", "link"]).output().unwrap().stdout).to_string();
    assert!(!links.contains(&topo), "{links}");
}
