//! vswitch-cni driven directly, as a runtime does (environment + stdin): every verb for every
//! cniVersion it answers, and bad input, each with the spec's code and vswitchd's state
//! unchanged by whatever was refused.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use testbed::{Daemon, Netns};

struct Reply {
    code: Option<i32>,
    out: Value,
}

/// Runs the plugin with `env` and `stdin`.
fn plugin(env: &[(&str, &str)], stdin: &str) -> Reply {
    let mut child = Command::new(testbed::bin_dir().join("vswitch-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vswitch-cni runs");
    // A plugin that refuses before reading stdin closes it: that is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let out_json = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")) };
    Reply { code: out.status.code(), out: out_json }
}

fn conf(version: &str, network: &str, socket: &str, extra: Value) -> String {
    let mut c = json!({"cniVersion": version, "name": network, "type": "vswitch-cni", "network": network, "socket": socket});
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    c.to_string()
}

fn env<'a>(cmd: &'a str, cid: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("CNI_COMMAND", cmd), ("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/opt/cni/bin")]
}

fn error_code(r: &Reply) -> u64 {
    assert_ne!(r.code, Some(0), "expected an error: {}", r.out);
    r.out["code"].as_u64().unwrap_or_else(|| panic!("an error result has a code: {}", r.out))
}

fn state(d: &Daemon) -> Value {
    d.ctl_json(&["network", "inspect", "vsw"])
}

#[test]
fn every_verb_for_every_version() {
    let d = Daemon::start();
    d.network("vsw", "10.88.9.0/24");
    let sock = d.socket.display().to_string();
    let ns = Netns::new("cni-a");
    let netns = ns.path();
    // A container made by vswitchctl on the same network, which GC must never touch.
    let other = Netns::new("cni-o");
    d.attach("vsw", &other);

    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let cid = format!("c{i}0123456789abcdef");
        let extra = json!({"runtimeConfig": {"aliases": {"vsw": ["web", "www"]}}});
        let add = plugin(&env("ADD", &cid, &netns), &conf(version, "vsw", &sock, extra));
        assert_eq!(add.code, Some(0), "{version}: {}", add.out);
        assert_eq!(add.out["cniVersion"], *version);
        let ip = add.out["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.88.9.") && ip.ends_with("/24"), "{ip}");
        assert_eq!(add.out["ips"][0]["gateway"], "10.88.9.1");
        assert_eq!(add.out["interfaces"][0]["sandbox"], netns.as_str());
        assert_eq!(add.out["dns"]["nameservers"][0], "10.88.9.1");
        assert_eq!(add.out["routes"][0]["dst"], "0.0.0.0/0");
        // The layout of each version: 0.3.x and 0.4.0 name the IP version, 1.0.0 does not.
        assert_eq!(add.out["ips"][0].get("version").is_some(), version.starts_with("0."), "{version}: {}", add.out);
        let addr = ip.split('/').next().unwrap();
        assert!(ns.exec_ok(&["ip", "-br", "addr", "show", "eth0"]).contains(&ip));
        assert!(ns.ping("10.88.9.1", 1), "{version}: the gateway answers");
        // The name is the container id's first 12 characters, with the aliases in DNS.
        let rec = d.ctl_json(&["dns", "records", "vsw"]);
        let mine = rec.as_array().unwrap().iter().find(|r| r["ipv4"][0] == addr).unwrap_or_else(|| panic!("{rec}"));
        assert_eq!(mine["name"], &cid[..12]);
        assert_eq!(mine["aliases"], json!(["web", "www"]));

        // CHECK (from 0.4.0) with the ADD result as prevResult.
        let prev = json!({"prevResult": add.out});
        let check = plugin(&env("CHECK", &cid, &netns), &conf(version, "vsw", &sock, prev.clone()));
        if *version == "0.3.1" {
            assert_eq!(error_code(&check), 1, "CHECK needs 0.4.0: {}", check.out);
        } else {
            assert_eq!(check.code, Some(0), "{version}: {}", check.out);
        }
        // An ADD repeated by the runtime gets the same endpoint.
        let again = plugin(&env("ADD", &cid, &netns), &conf(version, "vsw", &sock, json!({})));
        assert_eq!(again.out["ips"][0]["address"], ip.as_str());
        assert_eq!(state(&d)["endpoints"], 2);

        // DEL, twice: the second finds nothing and succeeds too.
        for _ in 0..2 {
            let del = plugin(&env("DEL", &cid, &netns), &conf(version, "vsw", &sock, prev.clone()));
            assert_eq!(del.code, Some(0), "{version}: {}", del.out);
        }
        assert_eq!(state(&d)["endpoints"], 1, "only vswitchctl's endpoint is left");
        assert_eq!(state(&d)["usage"]["in_use"], 1, "the lease went with it");
        assert!(!ns.exec_ok(&["ip", "-br", "link"]).contains("eth0"), "the interface is gone");
    }

    // CHECK finds an interface that disappeared.
    let add = plugin(&env("ADD", "chk0123456789", &netns), &conf("1.1.0", "vsw", &sock, json!({})));
    assert_eq!(add.code, Some(0), "{}", add.out);
    ns.exec_ok(&["ip", "link", "set", "eth0", "name", "renamed"]);
    let check = plugin(&env("CHECK", "chk0123456789", &netns), &conf("1.1.0", "vsw", &sock, json!({"prevResult": add.out})));
    assert_eq!(error_code(&check), 100, "{}", check.out);
    assert!(check.out["details"].as_str().unwrap().contains("not_found"), "{}", check.out);
    ns.exec_ok(&["ip", "link", "set", "renamed", "name", "eth0"]);

    // GC: every endpoint of the plugin not in cni.dev/valid-attachments goes; vswitchctl's stays.
    let ns2 = Netns::new("cni-b");
    let keep = plugin(&env("ADD", "keep0123456789", &ns2.path()), &conf("1.1.0", "vsw", &sock, json!({})));
    assert_eq!(keep.code, Some(0));
    assert_eq!(state(&d)["endpoints"], 3);
    let valid = json!({"cni.dev/valid-attachments": [{"containerID": "keep0123456789", "ifname": "eth0"}]});
    let gc = plugin(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")], &conf("1.1.0", "vsw", &sock, valid));
    assert_eq!(gc.code, Some(0), "{}", gc.out);
    let names: Vec<String> =
        state(&d)["endpoint_list"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"keep01234567".to_string()) && names.contains(&other.name), "{names:?}");

    // STATUS: ready, or 50 for a network that is not there.
    let status = plugin(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0", "vsw", &sock, json!({})));
    assert_eq!(status.code, Some(0), "{}", status.out);
    let status = plugin(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0", "nowhere", &sock, json!({})));
    assert_eq!(error_code(&status), 50);

    // VERSION.
    let v = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(v.code, Some(0));
    for want in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(v.out["supportedVersions"].as_array().unwrap().iter().any(|s| s == want), "{}", v.out);
    }
}

#[test]
fn capabilities_and_arguments_are_honoured() {
    let d = Daemon::start_with(&["--egress"]);
    d.network("vsw", "10.88.10.0/24");
    let sock = d.socket.display().to_string();
    let ns = Netns::new("cni-c");
    let extra = json!({"runtimeConfig": {
        "ips": ["10.88.10.77/24"],
        "mac": "02:aa:bb:cc:dd:ee",
        "portMappings": [{"hostPort": 18480, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]
    }});
    let path = ns.path();
    let mut e = env("ADD", "caps0123456789", &path);
    e.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=frontend"));
    let add = plugin(&e, &conf("1.0.0", "vsw", &sock, extra));
    assert_eq!(add.code, Some(0), "{}", add.out);
    assert_eq!(add.out["ips"][0]["address"], "10.88.10.77/24");
    assert_eq!(add.out["interfaces"][0]["mac"], "02:aa:bb:cc:dd:ee");
    let eps = state(&d)["endpoint_list"].clone();
    assert_eq!(eps[0]["name"], "frontend", "K8S_POD_NAME names the endpoint: {eps}");
    let published = d.ctl(&["published"]);
    assert!(String::from_utf8_lossy(&published.stdout).contains("127.0.0.1:18480"));
    // CNI_ARGS IP= when the runtime has no ips capability.
    let ns2 = Netns::new("cni-d");
    let path2 = ns2.path();
    let mut e = env("ADD", "args0123456789", &path2);
    e.push(("CNI_ARGS", "IgnoreUnknown=1;IP=10.88.10.88;MAC=02:00:00:00:00:42"));
    let add = plugin(&e, &conf("1.0.0", "vsw", &sock, json!({})));
    assert_eq!(add.out["ips"][0]["address"], "10.88.10.88/24", "{}", add.out);
    assert_eq!(add.out["interfaces"][0]["mac"], "02:00:00:00:00:42");
    // A port mapping that cannot be published takes the endpoint back: all or nothing.
    let before = state(&d);
    let ns3 = Netns::new("cni-e");
    let taken =
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 18480, "containerPort": 81, "protocol": "tcp", "hostIP": "127.0.0.1"}]}});
    let add = plugin(&env("ADD", "dup0123456789", &ns3.path()), &conf("1.0.0", "vsw", &sock, taken));
    assert_eq!(error_code(&add), 100);
    assert!(add.out["details"].as_str().unwrap().starts_with("port_in_use"), "{}", add.out);
    assert_eq!(state(&d)["endpoints"], before["endpoints"]);
    // DEL releases the publication with the endpoint.
    let del = plugin(&env("DEL", "caps0123456789", &ns.path()), &conf("1.0.0", "vsw", &sock, json!({})));
    assert_eq!(del.code, Some(0));
    assert!(!String::from_utf8_lossy(&d.ctl(&["published"]).stdout).contains("18480"));
}

#[test]
fn bad_input_gets_the_spec_codes_and_changes_nothing() {
    let mut d = Daemon::start();
    d.network("vsw", "10.88.11.0/24");
    let sock = d.socket.display().to_string();
    let ns = Netns::new("cni-f");
    let netns = ns.path();
    let before = state(&d);
    let good = conf("1.0.0", "vsw", &sock, json!({}));

    // Malformed stdin: 6 (failed to decode).
    assert_eq!(error_code(&plugin(&env("ADD", "bad0123456789", &netns), "{not json")), 6);
    // Missing variables: 4.
    assert_eq!(error_code(&plugin(&[("CNI_COMMAND", "ADD"), ("CNI_NETNS", netns.as_str())], &good)), 4);
    // An unknown command: 4.
    assert_eq!(error_code(&plugin(&env("FROB", "bad0123456789", &netns), &good)), 4);
    // An unknown network: 7 (invalid configuration).
    let r = plugin(&env("ADD", "bad0123456789", &netns), &conf("1.0.0", "nowhere", &sock, json!({})));
    assert_eq!(error_code(&r), 7, "{}", r.out);
    // A netns path that is not a namespace: 8 (regular file) or an error naming it.
    let file = d.dir.join("not-a-netns");
    std::fs::write(&file, b"x").unwrap();
    let r = plugin(&env("ADD", "bad0123456789", &file.display().to_string()), &good);
    let code = error_code(&r);
    assert!(code == 8 || code == 100, "{}", r.out);
    // A version it does not speak: 1.
    assert_eq!(error_code(&plugin(&env("ADD", "bad0123456789", &netns), &conf("0.2.0", "vsw", &sock, json!({})))), 1);
    assert_eq!(state(&d), before, "nothing changed in vswitchd");
    assert!(!ns.exec_ok(&["ip", "-br", "link"]).contains("eth0"));

    // vswitchd down: 11 (try again later) for ADD and DEL, 50 for STATUS.
    d.terminate();
    assert_eq!(error_code(&plugin(&env("ADD", "bad0123456789", &netns), &good)), 11);
    assert_eq!(error_code(&plugin(&env("DEL", "bad0123456789", &netns), &good)), 11);
    assert_eq!(error_code(&plugin(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0", "vsw", &sock, json!({})))), 50);
}

#[test]
fn del_works_after_the_namespace_or_the_daemon_went_away() {
    let mut d = Daemon::start();
    d.network("vsw", "10.88.12.0/24");
    let sock = d.socket.display().to_string();
    let ns = Netns::new("cni-g");
    let netns = ns.path();
    let good = conf("1.0.0", "vsw", &sock, json!({}));
    assert_eq!(plugin(&env("ADD", "gone0123456789", &netns), &good).code, Some(0));
    // vswitchd restarts in between (killed, then started again): DEL finds the endpoint by its owner.
    d.kill9();
    d.restart();
    assert_eq!(plugin(&env("DEL", "gone0123456789", &netns), &good).code, Some(0));
    assert_eq!(state(&d)["endpoints"], 0);
    // The namespace is gone (containerd sends DEL with an empty CNI_NETNS).
    assert_eq!(plugin(&env("ADD", "gone0123456789", &netns), &good).code, Some(0));
    drop(ns);
    let r = plugin(&env("DEL", "gone0123456789", ""), &good);
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert_eq!(state(&d)["endpoints"], 0);
    assert_eq!(state(&d)["usage"]["in_use"], 0);
}
