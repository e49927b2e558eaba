//! Rootless wiring: vswitchd run by an ordinary user (made by the test) wires containers that
//! belong to its helper's user namespace, survives kill -9 with the containers rewired in the
//! same user namespace, and refuses what it cannot wire with a clear error. Root starts the
//! test (to make the user and hand it directories); everything else runs as that user.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testbed::{eventually, Daemon, Netns, User, UserContainer};

const USER: &str = "vswitch-test";

fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(2)?.parse().ok()
}

fn ns_link(pid: u32, ns: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok()
}

fn attach(d: &Daemon, network: &str, c: &UserContainer) -> Value {
    d.ctl_json(&["attach", network, "--pid", &c.pid().to_string(), "--name", &c.name])
}

fn eth0(c: &UserContainer) -> bool {
    c.links().iter().any(|l| l == "eth0")
}

#[test]
fn user_attaches_pings_survives_kill9_and_detaches() {
    if !testbed::userns_allowed() {
        return;
    }
    let user = User::system(USER);
    let mut d = Daemon::start_rootless(&user, &[]);
    // The daemon and its helper run as the user, with the socket and state at the XDG defaults.
    assert_eq!(uid_of(d.pid()), Some(user.uid), "vswitchd does not run as {USER}");
    let hp = d.userns_pid();
    assert_eq!(uid_of(hp), Some(user.uid), "the helper does not run as {USER}");
    assert_ne!(ns_link(hp, "user"), ns_link(d.pid(), "user"), "the helper has no user namespace of its own");
    assert_ne!(ns_link(hp, "net"), ns_link(d.pid(), "net"), "the helper has no network namespace of its own");
    assert!(d.socket.starts_with(d.dir.join("run/vswitch")), "{}", d.socket.display());
    assert!(d.dir.join("data/vswitch").is_dir(), "state directory not under XDG_DATA_HOME");

    d.network("rl1", "10.93.0.0/24");
    let (c1, c2) = (UserContainer::new(&user, hp, "rl-a"), UserContainer::new(&user, hp, "rl-b"));
    let e1 = attach(&d, "rl1", &c1);
    let e2 = attach(&d, "rl1", &c2);
    let (ip1, ip2) = (e1["ip"].as_str().unwrap().to_string(), e2["ip"].as_str().unwrap().to_string());
    assert!(c1.ping(&ip2, 3), "c1 cannot ping c2\n{}", d.log());
    assert!(c2.ping(&ip1, 1), "c2 cannot ping c1");
    assert!(c1.ping("10.93.0.1", 1), "the gateway does not answer");
    // The helper also reached the container's sysctls: no IPv6 on a v4-only network.
    assert_eq!(c1.exec_ok(&["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]).trim(), "1");
    let eps = |d: &Daemon| d.ctl_json(&["network", "inspect", "rl1"])["endpoint_list"].clone();
    let before = eps(&d);

    // kill -9: the TAPs are persistent (TUNSETPERSIST by the unprivileged daemon), the helper
    // dies with the daemon (PR_SET_PDEATHSIG).
    d.kill9();
    assert!(eth0(&c1) && eth0(&c2), "the TAPs vanished with the daemon");
    assert!(eventually(Duration::from_secs(5), || uid_of(hp).is_none()), "the helper outlived the daemon");
    d.restart();
    let hp2 = d.userns_pid();
    assert_ne!(hp2, hp);
    // The new helper joined the user namespace the containers belong to, and rewired them.
    assert_eq!(ns_link(hp2, "user"), ns_link(c1.pid(), "user"), "the restarted helper is in another user namespace");
    assert!(eventually(Duration::from_secs(3), || c1.ping(&ip2, 1)), "no traffic after the restart\n{}", d.log());
    assert!(c2.ping(&ip1, 1));
    assert_eq!(eps(&d), before, "endpoints changed across the restart");
    // A container made after the restart is wired too.
    let c3 = UserContainer::new(&user, hp2, "rl-c");
    let e3 = attach(&d, "rl1", &c3);
    assert!(c3.ping(&ip1, 1), "a container made after the restart cannot reach c1");
    assert!(c1.ping(e3["ip"].as_str().unwrap(), 1));

    // Detach: the TAP leaves the container and traffic to it stops.
    d.ctl_ok(&["detach", "rl1", &c1.name]);
    assert!(!eth0(&c1), "eth0 still in c1 after detach");
    assert!(!c2.ping(&ip1, 1));
    assert!(c2.ping(e3["ip"].as_str().unwrap(), 1));

    // A planned stop removes the TAPs and the socket; the helper goes with the daemon.
    assert!(d.terminate().success(), "vswitchd did not stop cleanly\n{}", d.log());
    assert!(!eth0(&c2) && !eth0(&c3), "a planned stop left TAPs behind");
    assert!(!d.socket.exists(), "socket left behind");
    assert!(eventually(Duration::from_secs(5), || uid_of(hp2).is_none()), "the helper outlived the daemon");
}

#[test]
fn joins_a_given_user_namespace_and_refuses_foreign_namespaces() {
    if !testbed::userns_allowed() {
        return;
    }
    let user = User::system(USER);
    // A runtime's "pause" process: a user namespace of the user's own, mapping it to root.
    let mut pause = user.command("unshare");
    pause.args(["--user", "--map-root-user", "sleep", "100000"]);
    let mut pause = pause.spawn().expect("spawn unshare");
    let ppid = pause.id();
    let own_userns = ns_link(std::process::id(), "user");
    assert!(eventually(Duration::from_secs(5), || ns_link(ppid, "user").is_some_and(|u| Some(u) != own_userns)));
    let userns = format!("/proc/{ppid}/ns/user");

    let d = Daemon::start_rootless(&user, &["--userns", &userns]);
    let hp = d.userns_pid();
    assert_eq!(ns_link(hp, "user"), ns_link(ppid, "user"), "the helper did not join --userns");
    d.network("rl2", "10.93.1.0/24");
    let (c1, c2) = (UserContainer::new(&user, ppid, "rl2-a"), UserContainer::new(&user, ppid, "rl2-b"));
    attach(&d, "rl2", &c1);
    let e2 = attach(&d, "rl2", &c2);
    assert!(c1.ping(e2["ip"].as_str().unwrap(), 2), "no traffic in a joined user namespace\n{}", d.log());
    // A container with a user namespace of its own below the joined one is wired too.
    let nested = UserContainer::new_nested(&user, ppid, "rl2-n");
    assert_ne!(ns_link(nested.pid(), "user"), ns_link(ppid, "user"));
    let en = attach(&d, "rl2", &nested);
    assert!(nested.ping(e2["ip"].as_str().unwrap(), 1), "no traffic from a nested user namespace");
    assert!(c1.ping(en["ip"].as_str().unwrap(), 1));

    // A namespace of root's (the host's user namespace) cannot be wired: a clear refusal,
    // and nothing changes.
    let foreign = Netns::new("rl2-root");
    let out = d.ctl(&["attach", "rl2", "--netns", &foreign.path(), "--name", "foreign"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("permission_denied") && err.contains(&format!("/proc/{hp}/ns/user")), "{err}");
    assert!(foreign.links().iter().all(|l| l == "lo"), "a TAP was left in the foreign namespace");
    let out = d.ctl(&["attach", "rl2", "--pid", "1", "--name", "init"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission_denied"));
    assert_eq!(d.ctl_json(&["network", "inspect", "rl2"])["endpoints"], 3);

    drop(d);
    let _ = pause.kill();
    let _ = pause.wait();
}

#[test]
fn rootless_without_runtime_dir_or_with_a_bad_userns_fails_clearly() {
    if !testbed::userns_allowed() {
        return;
    }
    let user = User::system(USER);
    let vswitchd = testbed::bin_dir().join("vswitchd");
    let out = user.command(&vswitchd).env_remove("XDG_RUNTIME_DIR").env_remove("VSWITCH_SOCKET").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("XDG_RUNTIME_DIR is not set") && err.contains("--socket"), "{err}");

    // User namespaces disabled: shown below a user namespace of the user's whose limit is set
    // to 0 (the machine's own limit stays untouched).
    let dir = std::env::temp_dir().join(testbed::unique("vswitch-test-nouserns-"));
    std::fs::create_dir_all(&dir).unwrap();
    user.chown(&dir);
    // A copy the user can reach from inside its user namespace, where the checkout's
    // directories (owned by the unmapped root) count as "others" and may be 0700.
    let copy = dir.join("vswitchd");
    std::fs::copy(&vswitchd, &copy).unwrap();
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} --rootless --socket {d}/s --state-dir {d}/state",
        copy.display(),
        d = dir.display()
    );
    let out = user.command("unshare").args(["--user", "--map-root-user", "sh", "-c", &script]).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("user namespaces are disabled: user.max_user_namespaces=0"), "{err}");

    // --userns that is not a user namespace: the helper says so, the daemon stops.
    match Daemon::try_start_rootless(&user, &["--userns", "/proc/self/ns/net"]) {
        Ok(_) => panic!("started with a network namespace as --userns"),
        Err(log) => assert!(log.contains("is not a user namespace"), "{log}"),
    }
    // A user namespace the user does not own (root's pid 1 lives in the initial one, which the
    // user cannot enter with privileges).
    let mut root_userns = Command::new("unshare");
    root_userns.args(["--user", "sleep", "100000"]);
    let mut child = root_userns.spawn().unwrap();
    let path = format!("/proc/{}/ns/user", child.id());
    assert!(eventually(Duration::from_secs(5), || ns_link(child.id(), "user") != ns_link(std::process::id(), "user")));
    let res = Daemon::try_start_rootless(&user, &["--userns", &path]);
    let _ = child.kill();
    let _ = child.wait();
    match res {
        Ok(_) => panic!("joined a user namespace of root's"),
        Err(log) => assert!(log.contains("cannot join user namespace") || log.contains("Permission denied"), "{log}"),
    }
}
