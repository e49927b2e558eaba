//! containerd's `ctr run --cni` on a vswitch network through the `vswitch-cni` plugin: the
//! container gets its address from vswitch and pings a podman container on the same network.
//! The harness itself is checked against Debian's reference `bridge` and `host-local` plugins
//! (`cargo test -p testbed --test containerd -- --ignored`).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testbed::runtimes::{self, Containerd, Podman, PodmanCli, IMAGE};
use testbed::{eventually, unique, Daemon};

const NET: &str = "vsw";

fn endpoints(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["network", "inspect", NET])["endpoint_list"].as_array().cloned().unwrap_or_default()
}

#[test]
fn ctr_run_cni_gets_a_vswitch_address_and_pings_a_podman_container() {
    // Dropped in reverse: the runtimes (and their DELs) before the daemon.
    let d = Daemon::start();
    d.network(NET, "10.88.7.0/24");
    let conflist = runtimes::vswitch_conflist(NET, &d.socket);
    let p = Podman::new();
    p.add_conflist(NET, &conflist);
    let pc = unique("pp");
    p.run_ok(&["run", "-d", "--name", &pc, "--network", NET, "--cap-add", "NET_RAW", IMAGE, "sleep", "100000"]);
    let pip = p.address(&pc, NET).0;

    let mut c = Containerd::new();
    c.use_conflist(&conflist);
    let id = unique("ct");
    c.run_cni(&id, &["sleep", "100000"]).unwrap_or_else(|e| panic!("{e}\n--- vswitchd log ---\n{}", d.log()));
    let addr = c.address(&id, "eth0").unwrap_or_else(|| panic!("no address in {id}\n{}", d.log()));
    let cip = addr.split('/').next().unwrap().to_string();
    assert!(addr.starts_with("10.88.7.") && addr.ends_with("/24"), "{addr}");
    let eps = endpoints(&d);
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert!(eps.iter().any(|e| e["ip"] == cip.as_str()), "vswitch has no endpoint with {cip}: {eps:?}");

    assert!(c.ping(&id, &pip, 2), "ctr {id} -> podman {pip}\n{}", d.log());
    assert!(p.ping(&pc, &cip, 2), "podman {pc} -> ctr {cip}");

    // Removing the task (ctr's DEL) frees the endpoint and its lease.
    c.remove(&id);
    let gone = eventually(Duration::from_secs(10), || endpoints(&d).len() == 1);
    assert!(gone, "after ctr task delete: {:?}", endpoints(&d));
    assert_eq!(d.ctl_json(&["network", "inspect", NET])["usage"]["in_use"], 1);
}

/// The harness against Debian's reference plugins: `ctr run --cni` gets an address from a
/// `bridge` + `host-local` conflist and pings the bridge's gateway on the host.
#[test]
#[ignore = "harness self-check with the reference CNI plugins (puts a bridge on the host)"]
fn ctr_harness_with_reference_bridge_plugin() {
    let tag = std::process::id() % 100_000;
    let (bridge, network) = (format!("vswtc{tag}"), format!("vswrefc{tag}"));
    struct Undo(String, String);
    impl Drop for Undo {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
            let _ = std::fs::remove_dir_all(format!("/var/lib/cni/networks/{}", self.1));
        }
    }
    let _undo = Undo(bridge.clone(), network.clone());
    let mut c = Containerd::new();
    c.use_conflist(&runtimes::bridge_conflist(&network, &bridge, "10.89.78.0/24", None));
    let id = unique("cr");
    c.run_cni(&id, &["sleep", "100000"]).unwrap_or_else(|e| panic!("{e}"));
    let addr = c.address(&id, "eth0").expect("an address on eth0");
    eprintln!("{id}: {addr}");
    assert!(addr.starts_with("10.89.78.") && addr.ends_with("/24"), "{addr}");
    assert!(c.ping(&id, "10.89.78.1", 2), "ctr {id} cannot ping the bridge gateway");
    c.remove(&id);
    let leases = std::fs::read_dir(format!("/var/lib/cni/networks/{network}"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with("10.")).count())
        .unwrap_or(0);
    assert_eq!(leases, 0, "ctr task delete did not DEL (host-local lease left)");
}
