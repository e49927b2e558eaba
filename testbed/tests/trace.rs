//! Root tests of `vswitchctl trace`: each printed decision for a frame to a learned MAC, to an
//! unknown MAC (the flood set), across networks, to the gateway's DNS and to a published port;
//! and a trace changes nothing.

use serde_json::Value;
use testbed::{free_port, Daemon, Netns};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// The step named `name` of a trace: (result, detail).
fn step<'a>(t: &'a Value, name: &str) -> (&'a str, &'a str) {
    let st = t["steps"].as_array().unwrap().iter().find(|st| st["step"] == name);
    let st = st.unwrap_or_else(|| panic!("no {name} step in {t:#}"));
    (s(st, "result"), s(st, "detail"))
}

fn trace(d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["trace"];
    all.extend_from_slice(args);
    d.ctl_json(&all)
}

#[test]
fn trace_shows_each_decision_and_changes_nothing() {
    let d = Daemon::start_with(&["--egress"]);
    d.network("t1", "10.75.1.0/24");
    d.network("t2", "10.75.2.0/24");
    let (c1, c2, c3) = (Netns::new("vt-ta"), Netns::new("vt-tb"), Netns::new("vt-tc"));
    let e1 = d.attach("t1", &c1);
    let e2 = d.attach("t1", &c2);
    let e3 = d.attach("t2", &c3);
    let (n1, n2) = (c1.name.as_str(), c2.name.as_str());
    let (ip2, ip3) = (s(&e2, "ip").to_string(), s(&e3, "ip").to_string());
    assert!(c1.ping(&ip2, 1));
    let before = (d.ctl_json(&["fdb", "stats"]), d.ctl_json(&["port", "ls"]));

    // To a learned MAC: already learned, a hit on c2, out of its TAP.
    let t = trace(&d, &["t1", "--in", n1, "--dst-ip", &ip2]);
    assert_eq!(s(&t, "verdict"), "forward", "{t:#}");
    assert!(s(&t, "frame").contains(&format!("{} → {ip2} ICMP echo request", s(&e1, "ip"))), "{t:#}");
    assert_eq!(step(&t, "network").0, "t1");
    assert_eq!(step(&t, "learning").0, "already learned", "{t:#}");
    let (r, detail) = step(&t, "lookup");
    assert_eq!(r, "hit");
    assert!(detail.contains(&format!("is on t1/{n2}")), "{detail}");
    assert_eq!(step(&t, "output").1, format!("written to t1/{n2}'s TAP"));
    // The human form says the same.
    let human = d.ctl_ok(&["trace", "t1", "--in", n1, "--dst-ip", &ip2]);
    assert!(human.contains("lookup") && human.contains(&format!("is on t1/{n2}")) && human.contains("verdict forward"), "{human}");

    // To an unknown MAC: a miss, flooded to every other port of t1 and none of t2.
    let t = trace(&d, &["t1", "--in", n1, "--dst-mac", "02:00:00:00:00:99", "--dst-ip", "10.75.1.99"]);
    assert_eq!(s(&t, "verdict"), "flood", "{t:#}");
    assert_eq!(step(&t, "lookup").0, "miss");
    let (count, set) = step(&t, "flood");
    assert_eq!(count, "2 ports");
    assert!(set.contains(&format!("t1/{n2}")) && set.contains("t1/gateway") && !set.contains("t2/"), "{set}");

    // Across networks: c3's address is routed to t1's gateway, and egress refuses it.
    let t = trace(&d, &["t1", "--in", n1, "--dst-ip", &ip3]);
    assert_eq!(s(&t, "verdict"), "refused", "{t:#}");
    let (r, detail) = step(&t, "egress");
    assert_eq!(r, "refused");
    assert!(detail.contains(&format!("{ip3} is in a network of this daemon")), "{detail}");
    assert!(s(&t, "drop_reason").contains("network of this daemon"), "{t:#}");
    // And c3's MAC on t1 is unknown there: flooded within t1 only, never to c3.
    let t = trace(&d, &["t1", "--in", n1, "--dst-mac", s(&e3, "mac"), "--dst-ip", &ip3]);
    assert_eq!(step(&t, "lookup").0, "miss");
    assert!(!step(&t, "flood").1.contains(c3.name.as_str()), "{t:#}");
    // A forged source is dropped before learning, with its reason.
    let t = trace(&d, &["t1", "--in", n1, "--src-mac", "ff:ff:ff:ff:ff:ff", "--dst-ip", &ip2]);
    assert_eq!((s(&t, "verdict"), s(&t, "drop_reason")), ("drop", "bad_source"), "{t:#}");

    // The gateway's DNS answers c2's name; ARP for the gateway is answered too.
    let gw = "10.75.1.1";
    let t = trace(&d, &["t1", "--in", n1, "--dst-ip", gw, "--dport", "53", "--name", n2]);
    assert_eq!(s(&t, "verdict"), "gateway", "{t:#}");
    let (r, detail) = step(&t, "dns");
    assert_eq!(r, "answered");
    assert!(detail.contains("1 record(s)"), "{detail}");
    let t = trace(&d, &["t1", "--in", n1, "--dst-ip", gw, "--dport", "53", "--name", "nosuch-name.invalid"]);
    assert_eq!(step(&t, "dns").0, "forwarded", "{t:#}");
    let t = trace(&d, &["t1", "--in", n1, "--proto", "arp", "--dst-ip", gw]);
    let (r, detail) = step(&t, "gateway");
    assert_eq!(r, "answered");
    assert!(detail.contains(&format!("ARP reply: {gw} is-at")), "{detail}");

    // A published port: refused from a container at the gateway (not listed in
    // --host-loopback); c2's replies from its container port go back to the client.
    let host_port = free_port().to_string();
    d.ctl_ok(&["publish", "t1", n2, &format!("127.0.0.1:{host_port}"), "80"]);
    let t = trace(&d, &["t1", "--in", n1, "--dst-ip", gw, "--proto", "tcp", "--dport", &host_port]);
    assert_eq!(s(&t, "verdict"), "refused", "{t:#}");
    let detail = step(&t, "egress").1;
    assert!(detail.contains(&format!("published port 127.0.0.1:{host_port}/tcp → {ip2}:80")), "{detail}");
    let t = trace(&d, &["t1", "--in", n2, "--dst-ip", "192.0.2.7", "--proto", "tcp", "--sport", "80", "--dport", "5555"]);
    assert_eq!(s(&t, "verdict"), "egress", "{t:#}");
    assert!(step(&t, "egress").1.contains("container side of published port"), "{t:#}");
    let t = trace(&d, &["t1", "--in", n1, "--dst-ip", "192.0.2.7", "--proto", "tcp", "--dport", "443"]);
    assert_eq!((s(&t, "verdict"), step(&t, "egress").0), ("egress", "allowed"), "{t:#}");

    // Nothing was learned, counted or sent by the traces.
    let after = (d.ctl_json(&["fdb", "stats"]), d.ctl_json(&["port", "ls"]));
    assert_eq!(before.0["learned"], after.0["learned"]);
    assert_eq!(before.0["entries"], after.0["entries"]);
    let rx = |ports: &Value, name: &str| ports.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["rx_packets"].clone();
    assert_eq!(rx(&before.1, n1), rx(&after.1, n1));
    assert_eq!(rx(&before.1, "gateway"), rx(&after.1, "gateway"));
}

#[test]
fn bad_trace_specs_are_clear_errors() {
    let d = Daemon::start();
    d.network("t3", "10.75.3.0/24");
    let c = Netns::new("vt-td");
    d.attach("t3", &c);
    let out = d.ctl(&["trace", "t3", "--in", &c.name]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("say where the frame goes") && err.contains("invalid_request"), "{err}");
    for (body, says) in [
        (r#"{"network":"t3","in_port":"nobody","dst_ip":"10.75.3.9"}"#, "no endpoint nobody"),
        (r#"{"network":"nope","in_port":"x","dst_ip":"10.75.3.9"}"#, "nope"),
        (r#"{"network":"t3","in_port":"x","dst_ip":"not-an-ip"}"#, "invalid request body"),
        (r#"{"network":"t3","in_port":"x","bogus":1}"#, "unknown field"),
    ] {
        let (status, v) = d.api("POST", "/v1/trace", Some(body));
        assert!(status == 400 || status == 404, "{body}: {status} {v}");
        assert!(v["error"]["message"].as_str().unwrap_or_default().contains(says), "{body}: {v}");
    }
    let (status, _) = d.api("GET", "/v1/trace", None);
    assert_eq!(status, 405);
}

#[test]
fn live_trace_shows_the_verdicts_of_real_frames() {
    let d = Daemon::start();
    d.network("t4", "10.75.4.0/24");
    let (c1, c2) = (Netns::new("vt-te"), Netns::new("vt-tf"));
    let e1 = d.attach("t4", &c1);
    let e2 = d.attach("t4", &c2);
    let target = format!("t4/{}", c2.name);
    let child = std::process::Command::new(testbed::bin_dir().join("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "trace", "--live", &target, "-c", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sessions = || {
        let text = testbed::run_ok("curl", &["-sSf", "--unix-socket", d.socket.to_str().unwrap(), "http://localhost/metrics"]);
        text.lines().any(|l| l == "vswitch_capture_sessions 1")
    };
    assert!(testbed::eventually(std::time::Duration::from_secs(5), sessions), "the live trace never started");
    assert!(c1.ping(s(&e2, "ip"), 5));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l["port"] == target.as_str()), "{lines:?}");
    let reply = format!("IPv4 {} → {} ICMP echo reply", s(&e2, "ip"), s(&e1, "ip"));
    let forward = format!("forward t4/{}", c1.name);
    assert!(
        lines.iter().any(|l| s(l, "frame").ends_with(&reply) && l["verdict"] == forward.as_str()),
        "no {reply} → {forward} in {lines:?}"
    );
    let (status, _) = d.api("GET", "/v1/trace/live?target=t4&count=999999999", None);
    assert_eq!(status, 400);
}
