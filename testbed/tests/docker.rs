//! dockerd with vswitch as its network and IPAM driver (`vswitchd --docker-plugin`): a real
//! dockerd 20.10 from Debian, with its own data-root, exec-root and socket, in a network
//! namespace of the test's own that vswitchd shares (dockerd moves the TAPs vswitchd opened
//! there into its containers). A second namespace joined by a veth plays a client from
//! elsewhere for `-p`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use testbed::runtimes::{Docker, DOCKER_IMAGE as IMAGE};
use testbed::{eventually, unique, Daemon, Netns};

/// One test at a time: both share `/run/docker/plugins`, which the first one makes and the
/// last one removes.
static ONE: Mutex<()> = Mutex::new(());

/// A plugin name (and so a driver name) of this test: `/run/docker/plugins/NAME.sock`. Drop
/// removes the socket, and `/run/docker` when it was not there before.
struct Plugin {
    name: String,
    had_run_docker: bool,
    _one: MutexGuard<'static, ()>,
}

impl Plugin {
    fn new() -> Plugin {
        let one = ONE.lock().unwrap_or_else(PoisonError::into_inner);
        Plugin { name: unique("vswt").replace('-', "x"), had_run_docker: Path::new("/run/docker").exists(), _one: one }
    }

    fn socket(&self) -> String {
        format!("/run/docker/plugins/{}.sock", self.name)
    }

    fn arg(&self) -> String {
        format!("--docker-plugin={}", self.socket())
    }

    /// A raw plugin call with curl: (HTTP status, JSON body or Null).
    fn call(&self, method: &str, body: &str) -> (u16, Value) {
        let out = Command::new("curl")
            .args(["-sS", "-X", "POST", "--unix-socket", &self.socket(), "-H", "Content-Type: application/json"])
            .args(["--data-binary", body, "-w", "\n%{http_code}", &format!("http://plugin/{method}")])
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = text.trim_end().rsplit_once('\n').unwrap_or(("", text.trim()));
        (
            status.trim().parse().unwrap_or_else(|_| panic!("curl gave no status: {text:?}")),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        if !self.had_run_docker {
            let _ = std::fs::remove_dir("/run/docker/plugins");
            let _ = std::fs::remove_dir("/run/docker");
        }
    }
}

fn networks(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["network", "ls"]).as_array().cloned().unwrap_or_default()
}

fn endpoints(d: &Daemon, network: &str) -> Vec<Value> {
    d.ctl_json(&["network", "inspect", network])["endpoint_list"].as_array().cloned().unwrap_or_default()
}

/// The vswitch network labelled with this Docker network's id.
fn vswitch_network(d: &Daemon, docker: &Docker, name: &str) -> String {
    let id = docker.inspect(name, "{{.Id}}");
    let found = networks(d).into_iter().find(|n| n["labels"]["docker.network.id"] == id.as_str());
    found
        .and_then(|n| n["name"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no vswitch network for {name} ({id}): {:?}", networks(d)))
}

/// Runs `docker run -d --name NAME ARGS... bb:latest CMD...`.
fn run(docker: &Docker, name: &str, args: &[&str], cmd: &[&str]) {
    let mut all = vec!["run", "-d", "--name", name];
    all.extend_from_slice(args);
    all.push(IMAGE);
    all.extend_from_slice(cmd);
    docker.run_ok(&all);
}

#[test]
fn docker_containers_switch_publish_and_survive_restarts() {
    let host = Netns::new("dkh");
    let client = Netns::new("dkc");
    host.exec_ok(&["ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &client.name]);
    host.exec_ok(&["ip", "addr", "add", "192.168.77.1/24", "dev", "veth0"]);
    host.exec_ok(&["ip", "link", "set", "veth0", "up"]);
    client.exec_ok(&["ip", "addr", "add", "192.168.77.2/24", "dev", "veth1"]);
    client.exec_ok(&["ip", "link", "set", "veth1", "up"]);
    let plugin = Plugin::new();
    let mut d = Daemon::start_netns_only(&host, &["--egress", &plugin.arg()]);
    let mut docker = Docker::new(&host.name);
    let drv = plugin.name.as_str();

    // A network made by Docker through both drivers: vswitch shows it, labelled.
    docker.run_ok(&["network", "create", "-d", drv, "--ipam-driver", drv, "--subnet", "10.77.0.0/24", "n1"]);
    let n1 = vswitch_network(&d, &docker, "n1");
    assert_eq!(d.ctl_json(&["network", "inspect", &n1])["subnet"], "10.77.0.0/24");

    // Two containers: one with --ip and --mac-address.
    let (c1, c2) = (unique("dc"), unique("dc"));
    run(&docker, &c1, &["--network", "n1"], &["sleep", "100000"]);
    run(&docker, &c2, &["--network", "n1", "--ip", "10.77.0.50", "--mac-address", "02:42:aa:bb:cc:dd"], &["sleep", "100000"]);
    let link = docker.exec_ok(&c2, &["ip", "addr", "show", "eth0"]);
    assert!(link.contains("02:42:aa:bb:cc:dd") && link.contains("10.77.0.50/24"), "{link}");
    let eps = endpoints(&d, &n1);
    assert_eq!(eps.len(), 2, "{eps:?}");
    let sandbox = docker.inspect(&c2, "{{.NetworkSettings.SandboxKey}}");
    let e2 = eps.iter().find(|e| e["ip"] == "10.77.0.50").unwrap_or_else(|| panic!("no endpoint with 10.77.0.50: {eps:?}"));
    assert_eq!(e2["mac"], "02:42:aa:bb:cc:dd", "{e2}");
    assert_eq!(e2["netns"], sandbox.as_str(), "the endpoint shows its container's sandbox: {e2}");
    let ip1 = docker.inspect(&c1, "{{.NetworkSettings.Networks.n1.IPAddress}}");
    assert!(ip1.starts_with("10.77.0."), "{ip1}");
    assert!(docker.ping(&c1, "10.77.0.50", 2), "{c1} -> 10.77.0.50\n{}", d.log());
    assert!(docker.ping(&c1, &c2, 2), "{c1} -> {c2} by name");
    assert!(docker.ping(&c2, &c1, 1), "{c2} -> {c1} by name");

    // A second vswitch network, named by -o vswitch.network: connect adds eth1, disconnect
    // takes it away again.
    docker.run_ok(&["network", "create", "-d", drv, "--ipam-driver", drv, "--subnet", "10.78.0.0/24", "-o", "vswitch.network=back", "n2"]);
    assert_eq!(vswitch_network(&d, &docker, "n2"), "back");
    let c3 = unique("dc");
    run(&docker, &c3, &["--network", "n2"], &["sleep", "100000"]);
    docker.run_ok(&["network", "connect", "n2", &c1]);
    let eth1 = docker.exec_ok(&c1, &["ip", "-4", "addr", "show", "eth1"]);
    assert!(eth1.contains("10.78.0."), "{eth1}");
    assert!(docker.ping(&c1, &c3, 2), "{c1} -> {c3} over the second network");
    assert_eq!(endpoints(&d, "back").len(), 2);
    docker.run_ok(&["network", "disconnect", "n2", &c1]);
    assert!(!docker.exec_ok(&c1, &["ip", "link"]).contains("eth1"), "eth1 still in {c1}");
    assert_eq!(endpoints(&d, "back").len(), 1, "{:?}", endpoints(&d, "back"));
    assert!(docker.ping(&c1, &c2, 1), "{c1} -> {c2} after the disconnect");

    // -p: a client in another namespace reaches the container through vswitchd's listener,
    // and the container sees the client's own address.
    let web = unique("dw");
    run(&docker, &web, &["--network", "n1", "-p", "18080:80"], &["sh", "-c", "while true; do echo hello-from-web | nc -l -p 80; done"]);
    let published = d.ctl_json(&["published"]);
    assert_eq!(published.as_array().map(Vec::len), Some(1), "{published}");
    assert!(eventually(Duration::from_secs(5), || docker.exec_ok(&web, &["netstat", "-tln"]).contains(":80 ")), "nc is not listening");
    let mut conn = Command::new("ip")
        .args(["netns", "exec", &client.name, "busybox", "nc", "192.168.77.1", "18080"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nc in the client namespace");
    let mut netstat = String::new();
    let seen = eventually(Duration::from_secs(5), || {
        netstat = docker.exec_ok(&web, &["netstat", "-tn"]);
        netstat.lines().any(|l| l.split_whitespace().nth(4).is_some_and(|f| f.trim_start_matches("::ffff:").starts_with("192.168.77.2:")))
    });
    drop(conn.stdin.take());
    let out = conn.wait_with_output().expect("nc output");
    assert!(seen, "the container does not see the client 192.168.77.2: {netstat}\n{}", d.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-from-web"), "through the published port: {out:?}");

    // vswitchd killed with -9 under running containers: the TAPs stay, the restart finds them
    // in their sandboxes, traffic resumes.
    d.kill9();
    d.restart();
    assert_eq!(endpoints(&d, &n1).len(), 3, "after the restart: {:?}\n{}", endpoints(&d, &n1), d.log());
    assert!(eventually(Duration::from_secs(10), || docker.ping(&c1, &c2, 1)), "{c1} -> {c2} after kill -9\n{}", d.log());
    assert!(docker.ping(&c2, "10.77.0.1", 1), "the gateway after kill -9");

    // dockerd restarts (its containers stop with it): no CreateNetwork replay, the networks
    // are still there and new containers join them.
    docker.restart();
    let c4 = unique("dc");
    run(&docker, &c4, &["--network", "n1"], &["sleep", "100000"]);
    docker.run_ok(&["start", &c2]);
    assert!(eventually(Duration::from_secs(10), || docker.ping(&c4, &c2, 1)), "{c4} -> {c2} after the dockerd restart\n{}", d.log());

    // rm -f and network rm leave nothing behind: no endpoint, lease, publication or TAP.
    let all: Vec<String> = docker.run_ok(&["ps", "-aq"]).split_whitespace().map(String::from).collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(all.iter().map(String::as_str));
    docker.run_ok(&rm);
    let empty = eventually(Duration::from_secs(10), || endpoints(&d, &n1).is_empty() && endpoints(&d, "back").is_empty());
    assert!(empty, "endpoints left after rm -f: {:?} {:?}", endpoints(&d, &n1), endpoints(&d, "back"));
    assert_eq!(d.ctl_json(&["network", "inspect", &n1])["usage"]["in_use"], 0);
    docker.run_ok(&["network", "rm", "n1", "n2"]);
    assert!(networks(&d).is_empty(), "{:?}", networks(&d));
    assert_eq!(d.ctl_json(&["published"]).as_array().map(Vec::len), Some(0));
    let taps: Vec<String> = host.links().into_iter().filter(|l| l.starts_with("vsw")).collect();
    assert!(taps.is_empty(), "TAPs left in vswitchd's namespace: {taps:?}");
}

#[test]
fn docker_bad_input_is_refused_clearly_and_changes_nothing() {
    let host = Netns::new("dkh");
    let plugin = Plugin::new();
    let d = Daemon::start_netns_only(&host, &["--egress", &plugin.arg()]);
    d.network("taken", "10.79.0.0/24");
    let before = d.ctl_json(&["network", "ls"]);

    // Straight at the socket: malformed JSON, unknown ids, an unknown call.
    let (status, v) = plugin.call("NetworkDriver.CreateNetwork", "{not json");
    assert_eq!(status, 400, "{v}");
    assert!(v["Err"].as_str().is_some_and(|e| e.contains("malformed request")), "{v}");
    let (status, v) = plugin.call("NetworkDriver.Join", r#"{"NetworkID":"abc","EndpointID":"def","SandboxKey":"/x"}"#);
    assert_ne!(status, 200);
    assert!(v["Err"].as_str().is_some_and(|e| e.contains("no vswitch network stands for Docker network abc")), "{v}");
    let (status, v) = plugin.call("NetworkDriver.DeleteEndpoint", r#"{"NetworkID":"abc","EndpointID":"def"}"#);
    assert_ne!(status, 200);
    assert!(v["Err"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let (status, v) = plugin.call("IpamDriver.RequestAddress", r#"{"PoolID":"elsewhere/10.0.0.0/8","Address":""}"#);
    assert_ne!(status, 200);
    assert!(v["Err"].as_str().is_some_and(|e| e.contains("unknown pool id")), "{v}");
    let (status, v) = plugin.call("NetworkDriver.AllocateNetwork", "{}");
    assert_eq!(status, 404, "{v}");
    assert!(v["Err"].as_str().is_some_and(|e| e.contains("does not implement")), "{v}");
    let (status, v) = plugin.call("Plugin.Activate", "");
    assert_eq!((status, v["Implements"].clone()), (200, serde_json::json!(["NetworkDriver", "IpamDriver"])));
    assert_eq!(d.ctl_json(&["network", "ls"]), before, "a refused call changed vswitch");

    // Through docker: a pool overlapping a vswitch network, a bad option, a network bound to
    // one whose subnet differs. Docker prints our message; vswitch is as it was.
    let docker = Docker::new(&host.name);
    let drv = plugin.name.as_str();
    let out = docker.run(&["network", "create", "-d", drv, "--ipam-driver", drv, "--subnet", "10.79.0.0/16", "bad1"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("overlaps subnet 10.79.0.0/24 of vswitch network taken"), "{err}");
    let out = docker.run(&[
        "network",
        "create",
        "-d",
        drv,
        "--ipam-driver",
        drv,
        "--subnet",
        "10.80.0.0/24",
        "-o",
        "vswitch.overlay=maybe",
        "bad2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("vswitch.overlay"), "{err}");
    let out = docker.run(&["network", "create", "-d", drv, "--subnet", "10.81.0.0/24", "-o", "vswitch.network=taken", "bad3"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("has subnet 10.79.0.0/24"), "{err}");
    assert_eq!(d.ctl_json(&["network", "ls"]), before, "a refused docker network create changed vswitch");
    let listed = docker.run_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!listed.contains("bad"), "{listed}");

    // --internal and -o vswitch.overlay reach the vswitch network.
    docker.run_ok(&[
        "network",
        "create",
        "--internal",
        "-d",
        drv,
        "--ipam-driver",
        drv,
        "--subnet",
        "10.82.0.0/24",
        "-o",
        "vswitch.overlay=true",
        "int",
    ]);
    let int = vswitch_network(&d, &docker, "int");
    let v = d.ctl_json(&["network", "inspect", &int]);
    assert_eq!((v["internal"].as_bool(), v["overlay"].as_bool(), v["egress"].as_bool()), (Some(true), Some(true), Some(false)), "{v}");
    docker.run_ok(&["network", "rm", "int"]);

    // Binding the existing network by name with its own subnet works (Docker's default IPAM),
    // and network rm unbinds it without removing it.
    docker.run_ok(&["network", "create", "-d", drv, "--subnet", "10.79.0.0/24", "-o", "vswitch.network=taken", "good"]);
    let id = docker.inspect("good", "{{.Id}}");
    assert_eq!(d.ctl_json(&["network", "inspect", "taken"])["labels"]["docker.network.id"], id.as_str());
    let c = unique("dc");
    docker.run_ok(&["run", "-d", "--name", &c, "--network", "good", IMAGE, "sleep", "100000"]);
    assert!(docker.ping(&c, "10.79.0.1", 1), "the gateway of the bound network\n{}", d.log());
    docker.run_ok(&["rm", "-f", &c]);
    docker.run_ok(&["network", "rm", "good"]);
    assert_eq!(d.ctl_json(&["network", "ls"]), before, "network rm of a bound network must leave it as it was");
}
