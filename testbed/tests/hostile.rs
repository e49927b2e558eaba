//! What a hostile container or API client tries against vswitchd (issue 22): namespace paths
//! that are not namespaces, idle connections, log floods, ARP and neighbour spoofing, frames
//! nobody answers. Each test reproduces the attack and checks that the daemon stays correct
//! and responsive.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Daemon, Netns};

/// A FIFO, a regular file and a directory in `dir`, as `--netns` candidates.
fn not_namespaces(dir: &Path) -> Vec<(std::path::PathBuf, &'static str)> {
    let base = dir.join("notns");
    std::fs::create_dir_all(base.join("dir")).unwrap();
    let fifo = base.join("fifo");
    testbed::run_ok("mkfifo", &[&fifo.to_string_lossy()]);
    std::fs::write(base.join("file"), b"not a namespace").unwrap();
    vec![(fifo, "a fifo"), (base.join("file"), "a regular file"), (base.join("dir"), "a directory")]
}

/// `vswitchctl version` answers, and fast.
fn answers_quickly(d: &Daemon) {
    let t = Instant::now();
    d.ctl_ok(&["version"]);
    assert!(t.elapsed() < Duration::from_secs(1), "vswitchctl version took {:?}", t.elapsed());
}

#[test]
fn non_namespace_netns_paths_get_clear_errors_and_never_wedge() {
    let d = Daemon::start();
    d.network("n1", "10.93.0.0/24");
    let c1 = Netns::new("vh-a");
    for (path, kind) in not_namespaces(&d.dir) {
        let t = Instant::now();
        let out = d.ctl(&["attach", "n1", "--netns", &path.to_string_lossy(), "--name", "bad"]);
        assert!(t.elapsed() < Duration::from_secs(5), "attach of {kind} took {:?}", t.elapsed());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind}: {err}");
        assert!(err.contains("not a network namespace") && err.contains(kind), "{kind}: {err}");
        answers_quickly(&d);
    }
    // Nothing was left behind, and a real attach goes on.
    let eps = d.ctl_json(&["network", "inspect", "n1"])["endpoint_list"].as_array().unwrap().clone();
    assert!(eps.is_empty(), "a refused attach left an endpoint: {eps:?}");
    d.attach("n1", &c1);
    assert!(c1.ping("10.93.0.1", 1));
}

#[test]
fn restart_with_a_fifo_endpoint_in_the_state_file_comes_up() {
    let mut d = Daemon::start();
    d.network("n1", "10.93.1.0/24");
    let (c1, c2) = (Netns::new("vh-b"), Netns::new("vh-c"));
    d.attach("n1", &c1);
    d.attach("n1", &c2);
    d.kill9();
    // The state file now says c2's endpoint lives in a FIFO, still attaching, with the FIFO's
    // own device and inode recorded: what a crash during such an attach used to leave.
    let (fifo, _) = not_namespaces(&d.dir).remove(0);
    let meta = std::fs::metadata(&fifo).unwrap();
    let file = d.dir.join("state/state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let ep = state["networks"][0]["endpoints"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["endpoint"]["name"] == c2.name.as_str())
        .expect("c2 in the state file");
    ep["endpoint"]["netns"] = Value::from(fifo.to_string_lossy().to_string());
    ep["netns_id"] = serde_json::json!([meta.dev(), meta.ino()]);
    ep["phase"] = Value::from("attaching");
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();

    let t = Instant::now();
    d.try_restart().unwrap_or_else(|e| panic!("restart with a FIFO endpoint: {e}"));
    assert!(t.elapsed() < Duration::from_secs(10), "restart took {:?}", t.elapsed());
    answers_quickly(&d);
    let eps = d.ctl_json(&["network", "inspect", "n1"])["endpoint_list"].as_array().unwrap().clone();
    let names: Vec<&str> = eps.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, vec![c1.name.as_str()], "the FIFO endpoint is dropped, the other restored");
    assert!(d.log().contains(&format!("dropped endpoint {}", c2.name)), "{}", d.log());
    assert!(c1.ping("10.93.1.1", 1), "traffic of the other container resumes");
    // The dropped endpoint's address is free again: c2 attaches anew (once the TAP the
    // hand-edited file no longer names is gone).
    c2.exec_ok(&["ip", "link", "del", "eth0"]);
    d.attach("n1", &c2);
    assert!(c2.ping("10.93.1.1", 1));
}
