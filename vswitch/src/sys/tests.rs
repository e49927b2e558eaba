//! Real-kernel tests: they need root (network namespaces, /dev/net/tun) and the `ip` tool,
//! and skip with a note otherwise. Each test works in its own `vsw-systest-<pid>-<tag>`
//! namespace, deleted again by a guard.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ffi;
use super::netns::validate_ifname;
use super::*;

fn can_run() -> bool {
    if ffi::geteuid() != 0 {
        println!("note: skipping sys test: needs root (network namespaces, /dev/net/tun)");
        return false;
    }
    if Command::new("ip").arg("-V").stdout(Stdio::null()).status().is_err() {
        println!("note: skipping sys test: the `ip` tool is not installed");
        return false;
    }
    true
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new(tag: &str) -> TestNetns {
        let name = format!("vsw-systest-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        TestNetns { name }
    }

    fn netns_ref(&self) -> NetnsRef {
        NetnsRef::Path(PathBuf::from(format!("/run/netns/{}", self.name)))
    }

    /// `ip -n NS -j ARGS...` parsed; `None` when ip fails (e.g. no such device).
    fn ip_json(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new("ip").args(["-n", &self.name, "-j"]).args(args).stderr(Stdio::null()).output().expect("run ip");
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("ip -j output is JSON"))
    }

    fn link_exists(&self, ifname: &str) -> bool {
        self.ip_json(&["link", "show", "dev", ifname]).and_then(|v| v.as_array().map(|a| !a.is_empty())).unwrap_or(false)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A process sitting in a namespace (for `NetnsRef::Pid`), killed on drop.
struct NsSleeper(Child);

impl NsSleeper {
    fn new(ns: &TestNetns) -> NsSleeper {
        let child = Command::new("ip").args(["netns", "exec", &ns.name, "sleep", "60"]).spawn().expect("spawn ip netns exec");
        let sleeper = NsSleeper(child);
        // `ip netns exec` does setns + exec in the same process; wait until it has moved.
        let want = super::netns::netns_id(&ns.netns_ref()).expect("stat netns");
        let pid = NetnsRef::Pid(sleeper.0.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while super::netns::netns_id(&pid).ok() != Some(want) {
            assert!(Instant::now() < deadline, "ip netns exec did not enter the namespace");
            std::thread::sleep(Duration::from_millis(5));
        }
        sleeper
    }
}

impl Drop for NsSleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spec(netns: NetnsRef, ifname: &str, vnet_hdr: bool) -> AttachSpec {
    AttachSpec {
        addr6: None,
        gateway6: None,
        disable_ipv6: false,
        persist: false,
        reuse: false,
        netns,
        ifname: ifname.to_string(),
        mtu: 1400,
        mac: [0x02, 0x42, 0xac, 0x11, 0x00, 0x02],
        addr: Ipv4Addr::new(10, 77, 0, 2),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 77, 0, 1),
        vnet_hdr,
        uso: true,
        gso_max_size: None,
        handover: false,
        find_by_mac: false,
    }
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Check the interface with `ip`: MAC, MTU, UP, address, ifindex, default route.
fn check_configured(ns: &TestNetns, s: &AttachSpec, a: &Attached) {
    let addr = ns.ip_json(&["addr", "show", "dev", &s.ifname]).expect("ip addr show");
    let link = &addr[0];
    assert_eq!(link["ifname"], s.ifname.as_str());
    assert_eq!(link["ifindex"].as_u64(), Some(u64::from(a.ifindex)));
    assert_eq!(link["mtu"].as_u64(), Some(u64::from(s.mtu)));
    assert_eq!(link["address"], mac_str(s.mac).as_str());
    let flags: Vec<&str> = link["flags"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(flags.contains(&"UP"), "link not up: {flags:?}");
    assert!(flags.contains(&"LOWER_UP"), "no carrier: {flags:?}");
    let has_addr = link["addr_info"].as_array().unwrap().iter().any(|ai| {
        ai["family"] == "inet" && ai["local"] == s.addr.to_string().as_str() && ai["prefixlen"].as_u64() == Some(u64::from(s.prefix_len))
    });
    assert!(has_addr, "address {}/{} missing: {}", s.addr, s.prefix_len, link["addr_info"]);

    let routes = ns.ip_json(&["route", "show", "default"]).expect("ip route show");
    let def = routes.as_array().unwrap().iter().find(|r| r["dst"] == "default").expect("no default route");
    assert_eq!(def["gateway"], s.gateway.to_string().as_str());
    assert_eq!(def["dev"], s.ifname.as_str());
}

#[test]
fn attach_configures_and_drop_detaches() {
    if !can_run() {
        return;
    }
    let worker = NetnsWorker::spawn().expect("spawn worker");
    for vnet_hdr in [true, false] {
        let ns = TestNetns::new(if vnet_hdr { "vnet" } else { "plain" });
        assert!(worker.netns_exists(&ns.netns_ref()));
        let s = spec(ns.netns_ref(), "eth0", vnet_hdr);
        let t = Instant::now();
        let a = worker.attach(s.clone()).expect("attach");
        let took = t.elapsed();
        println!("attach (vnet_hdr={vnet_hdr}) took {:?}; offloads {:?}; vnet_hdr_len {}", took, a.offloads.names(), a.vnet_hdr_len);

        let fl = ffi::get_fl(a.fd.as_fd()).unwrap();
        assert_ne!(fl & libc::O_NONBLOCK, 0, "TAP fd must be non-blocking");
        if vnet_hdr {
            assert_eq!(a.vnet_hdr_len, 12);
            assert!(a.offloads.vnet_hdr && a.offloads.csum, "{:?}", a.offloads);
            assert_eq!(a.offloads.names()[..2], ["vnet_hdr".to_string(), "csum".to_string()]);
        } else {
            assert_eq!(a.vnet_hdr_len, 0);
            assert_eq!(a.offloads, Offloads::default());
            assert!(a.offloads.names().is_empty());
        }
        check_configured(&ns, &s, &a);

        drop(a);
        assert!(!ns.link_exists("eth0"), "TAP must vanish when its fd is closed");
    }
}

#[test]
fn attach_by_pid() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new("pid");
    let sleeper = NsSleeper::new(&ns);
    let worker = NetnsWorker::spawn().expect("spawn worker");
    let pid_ref = NetnsRef::Pid(sleeper.0.id());
    assert!(worker.netns_exists(&pid_ref));
    let mut s = spec(pid_ref, "veth-pid0", true);
    // A /32 with a gateway outside it: needs an onlink route.
    s.prefix_len = 32;
    s.gateway = Ipv4Addr::new(169, 254, 1, 1);
    let a = worker.attach(s.clone()).expect("attach by pid");
    check_configured(&ns, &s, &a);
    drop(a);
    assert!(!ns.link_exists("veth-pid0"));
}

#[test]
fn attach_many_timing() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new("many");
    let worker = NetnsWorker::spawn().expect("spawn worker");
    let n = 32;
    let mut taps = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let mut s = spec(ns.netns_ref(), &format!("tap{i}"), true);
        s.addr = Ipv4Addr::new(10, 78, i as u8, 2);
        s.gateway = Ipv4Addr::UNSPECIFIED; // one netns can have only one default route
        s.mac[5] = i as u8;
        taps.push(worker.attach(s).expect("attach"));
    }
    let took = t.elapsed();
    println!("{n} attaches into one netns: {:?} total, {:?} each", took, took / n);
    let links = ns.ip_json(&["link", "show"]).unwrap();
    assert_eq!(links.as_array().unwrap().len(), n as usize + 1); // + lo
    let routes = ns.ip_json(&["route", "show", "default"]).unwrap();
    assert!(routes.as_array().unwrap().is_empty(), "gateway 0.0.0.0 must add no route");
    drop(taps);
    // The kernel deletes a closed TAP after RCU grace periods: on a busy machine that can take
    // a moment, so wait for it (bounded) rather than expect it at once.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let left = loop {
        let left = ns.ip_json(&["link", "show"]).unwrap().as_array().unwrap().len();
        if left == 1 || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(left, 1, "closed TAPs are removed");
}

#[test]
fn errors() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new("err");
    let worker = NetnsWorker::spawn().expect("spawn worker");
    let home = current_netns_id().unwrap();
    assert_eq!(worker.worker_netns_id().unwrap(), home);

    // Missing namespaces.
    let missing = NetnsRef::Path(PathBuf::from("/run/netns/vsw-systest-does-not-exist"));
    assert!(!worker.netns_exists(&missing));
    let e = worker.attach(spec(missing, "eth0", false)).unwrap_err();
    assert!(matches!(e, SysError::NetnsNotFound(_)), "{e}");
    println!("missing netns: {e}");
    let e = worker.attach(spec(NetnsRef::Pid(u32::MAX), "eth0", false)).unwrap_err();
    assert!(matches!(e, SysError::NetnsNotFound(_)), "{e}");
    let not_ns = NetnsRef::Path(PathBuf::from("/proc/self/status"));
    assert!(!worker.netns_exists(&not_ns));
    let e = worker.attach(spec(not_ns, "eth0", false)).unwrap_err();
    assert!(matches!(e, SysError::NetnsNotFound(_)), "{e}");
    println!("not a netns: {e}");
    assert_eq!(worker.worker_netns_id().unwrap(), home);

    // Invalid names never reach the kernel.
    for bad in ["", "a/b", "has space", "tab\tx", "0123456789abcdef", ".", "..", "tap%d", "a:b"] {
        let e = worker.attach(spec(ns.netns_ref(), bad, false)).unwrap_err();
        assert!(matches!(e, SysError::InvalidName(_)), "{bad:?}: {e}");
    }
    for good in ["eth0", "0123456789abcde", "veth-x_y.z"] {
        validate_ifname(good).unwrap();
    }
    println!("invalid name: {}", worker.attach(spec(ns.netns_ref(), "a b", false)).unwrap_err());

    // Duplicate names: our own TAP, and a non-TAP device (lo). Both fail after setns.
    let a = worker.attach(spec(ns.netns_ref(), "eth0", true)).expect("attach");
    for dup in ["eth0", "lo"] {
        let e = worker.attach(spec(ns.netns_ref(), dup, true)).unwrap_err();
        assert!(matches!(&e, SysError::Exists(n) if n == dup), "{dup}: {e}");
        assert_eq!(worker.worker_netns_id().unwrap(), home, "worker must be back home after an error");
    }
    println!("duplicate: {}", worker.attach(spec(ns.netns_ref(), "eth0", true)).unwrap_err());

    // A default route already exists (from eth0): netlink error, and the new TAP is gone.
    let mut s = spec(ns.netns_ref(), "eth1", false);
    s.addr = Ipv4Addr::new(10, 79, 0, 2);
    s.gateway = Ipv4Addr::new(10, 79, 0, 1);
    let e = worker.attach(s).unwrap_err();
    assert!(matches!(e, SysError::Netlink { .. }), "{e}");
    println!("second default route: {e}");
    assert!(!ns.link_exists("eth1"), "a failed attach must not leave the TAP behind");

    // The kernel rejects the MTU: the extended-ack text comes through.
    let mut s = spec(ns.netns_ref(), "eth2", false);
    s.mtu = 10;
    s.gateway = Ipv4Addr::UNSPECIFIED;
    let e = worker.attach(s).unwrap_err();
    assert!(matches!(e, SysError::Netlink { .. }), "{e}");
    println!("bad mtu: {e}");
    assert!(!ns.link_exists("eth2"));
    assert_eq!(worker.worker_netns_id().unwrap(), home);

    drop(a);
    assert!(!ns.link_exists("eth0"));
}

#[test]
fn persist() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new("persist");
    let worker = NetnsWorker::spawn().expect("spawn worker");
    let a = worker.attach(spec(ns.netns_ref(), "eth0", true)).expect("attach");
    set_persist(&a.fd, true).unwrap();
    drop(a);
    assert!(ns.link_exists("eth0"), "persistent TAP must survive its fd");
    let st = Command::new("ip").args(["-n", &ns.name, "link", "del", "eth0"]).status().unwrap();
    assert!(st.success());
}

#[test]
fn worker_drop_stops_thread() {
    let worker = NetnsWorker::spawn().expect("spawn worker");
    assert_eq!(worker.worker_netns_id().unwrap(), current_netns_id().unwrap());
    drop(worker); // joins; a hang here is the failure
}

#[test]
fn api_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<NetnsWorker>();
    send_sync::<SysError>();
    send_sync::<Attached>();
    send_sync::<AttachSpec>();
}

/// A FIFO, a regular file and a directory as a namespace path: refused at once with a message
/// naming what they are (a blocking open of the FIFO would wedge the caller forever), by
/// `netns_id` (what a restart checks), the worker's attach and delete, and `--userns`'s opener.
#[test]
fn non_namespace_paths_never_block() {
    let dir = std::env::temp_dir().join(format!("vsw-systest-{}-notns", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("dir")).unwrap();
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo").success());
    std::fs::write(dir.join("file"), b"not a namespace").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || {
        let worker = NetnsWorker::spawn().expect("spawn worker");
        for (name, kind) in [("fifo", "a fifo"), ("file", "a regular file"), ("dir", "a directory")] {
            let r = NetnsRef::Path(d.join(name));
            let e = netns::netns_id(&r).unwrap_err();
            assert!(e.to_string().contains(kind), "{name}: {e}");
            assert!(!worker.netns_exists(&r));
            let e = netns::open_ns_file(&d.join(name)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{name}: {e}");
            if ffi::geteuid() == 0 {
                let e = worker.attach(spec(r.clone(), "eth0", false)).unwrap_err();
                assert!(
                    matches!(&e, SysError::NetnsNotFound(m) if m.contains(kind) && m.contains("not a network namespace")),
                    "{name}: {e}"
                );
                worker.delete_link(r, "eth0").expect("nothing to delete is fine");
            }
        }
        // Another kind of namespace file is a namespace, but not a network one.
        let e = netns::netns_id(&NetnsRef::Path("/proc/self/ns/uts".into())).unwrap_err();
        assert!(e.to_string().contains("not a network namespace"), "{e}");
        let _ = tx.send(());
    });
    let done = rx.recv_timeout(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(done.is_ok(), "opening a non-namespace path blocked (or the checks failed)");
}
