//! Bad API requests get a 4xx JSON error with a stable code and a clear message, and the state
//! that was good stays good (the containers keep talking afterwards).

use serde_json::Value;
use testbed::{Daemon, Netns};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("not an ApiError: {v}"))
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[test]
fn bad_requests_are_refused_and_state_survives() {
    let d = Daemon::start();
    d.network("good", "10.75.0.0/24");
    let (c1, c2) = (Netns::new("ve-a"), Netns::new("ve-b"));
    let e1 = d.attach("good", &c1);
    let e2 = d.attach("good", &c2);
    let ip2 = e2["ip"].as_str().unwrap();
    assert!(c1.ping(ip2, 1));

    let cases: Vec<(&str, &str, String, String, u16, &str)> = vec![
        (
            "unknown field",
            "POST",
            "/v1/networks".into(),
            r#"{"name":"x","subnet":"10.76.0.0/24","color":"red"}"#.into(),
            400,
            "invalid_request",
        ),
        ("not json", "POST", "/v1/networks".into(), "{name:".into(), 400, "invalid_request"),
        ("bad cidr", "POST", "/v1/networks".into(), r#"{"name":"x","subnet":"10.76.0.0/33"}"#.into(), 400, "invalid_subnet"),
        ("cidr garbage", "POST", "/v1/networks".into(), r#"{"name":"x","subnet":"banana"}"#.into(), 400, "invalid_subnet"),
        ("duplicate name", "POST", "/v1/networks".into(), r#"{"name":"good","subnet":"10.77.0.0/24"}"#.into(), 409, "network_exists"),
        (
            "overlapping subnet",
            "POST",
            "/v1/networks".into(),
            r#"{"name":"other","subnet":"10.75.0.128/25"}"#.into(),
            409,
            "subnet_overlap",
        ),
        ("bad name", "POST", "/v1/networks".into(), r#"{"name":"a b","subnet":"10.78.0.0/24"}"#.into(), 400, "invalid_name"),
        (
            "missing netns",
            "POST",
            "/v1/networks/good/endpoints".into(),
            r#"{"netns":"/run/netns/does-not-exist-vswitch"}"#.into(),
            404,
            "netns_not_found",
        ),
        (
            "address outside subnet",
            "POST",
            "/v1/networks/good/endpoints".into(),
            format!(r#"{{"netns":"{}","name":"z","ip":"10.99.0.5"}}"#, c1.path()),
            400,
            "address_out_of_range",
        ),
        (
            "address taken",
            "POST",
            "/v1/networks/good/endpoints".into(),
            format!(r#"{{"netns":"{}","name":"z","ip":"{ip2}"}}"#, c1.path()),
            409,
            "address_taken",
        ),
        (
            "gateway address",
            "POST",
            "/v1/networks/good/endpoints".into(),
            format!(r#"{{"netns":"{}","name":"z","ip":"10.75.0.1"}}"#, c1.path()),
            400,
            "address_out_of_range",
        ),
        (
            "duplicate endpoint",
            "POST",
            "/v1/networks/good/endpoints".into(),
            format!(r#"{{"netns":"{}","name":"{}"}}"#, c1.path(), c1.name),
            409,
            "endpoint_exists",
        ),
        (
            "same ifname twice in a netns",
            "POST",
            "/v1/networks/good/endpoints".into(),
            format!(r#"{{"netns":"{}","name":"second","ifname":"eth0"}}"#, c1.path()),
            409,
            "endpoint_exists",
        ),
        (
            "netns and pid",
            "POST",
            "/v1/networks/good/endpoints".into(),
            format!(r#"{{"netns":"{}","pid":1}}"#, c1.path()),
            400,
            "invalid_request",
        ),
        (
            "unknown network",
            "POST",
            "/v1/networks/nope/endpoints".into(),
            format!(r#"{{"netns":"{}"}}"#, c1.path()),
            404,
            "network_not_found",
        ),
        (
            "multicast mac",
            "POST",
            "/v1/fdb".into(),
            r#"{"network":"good","mac":"01:00:5e:00:00:01","port":"x"}"#.into(),
            400,
            "invalid_address",
        ),
        ("in use", "DELETE", "/v1/networks/good".into(), String::new(), 409, "network_in_use"),
        ("no route", "GET", "/v1/nothing".into(), String::new(), 404, "not_found"),
        ("wrong method", "PUT", "/v1/networks".into(), String::new(), 405, "method_not_allowed"),
    ];
    for (what, method, path, body, status, want) in &cases {
        let body = (!body.is_empty()).then_some(body.as_str());
        let (got_status, v) = d.api(method, path, body);
        assert_eq!((got_status, code(&v)), (*status, *want), "{what}: {v}");
        assert!(!message(&v).is_empty(), "{what}: empty message");
    }
    let (_, v) = d.api("POST", "/v1/networks", Some(r#"{"name":"x","subnet":"10.76.0.0/24","color":"red"}"#));
    assert!(message(&v).contains("color"), "the message names the unknown field: {v}");

    // Nothing that was good was lost.
    let nets = d.ctl_json(&["network", "ls"]);
    assert_eq!(nets.as_array().unwrap().len(), 1, "{nets}");
    let detail = d.ctl_json(&["network", "inspect", "good"]);
    assert_eq!(detail["endpoints"], 2, "{detail}");
    assert_eq!(detail["usage"]["in_use"], 2, "{detail}");
    assert!(c1.ping(ip2, 2), "traffic broke after bad requests");
    assert!(c2.ping(e1["ip"].as_str().unwrap(), 1));
    assert_eq!(c1.links().iter().filter(|l| l.as_str() == "eth0").count(), 1);
}

#[test]
fn vswitchctl_errors_have_exit_codes() {
    let d = Daemon::start();
    let out = d.ctl(&["network", "inspect", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    // Refused by the daemon: a gateway outside the subnet.
    let out = d.ctl(&["network", "create", "x", "--subnet", "10.81.0.0/24", "--gateway", "10.82.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_subnet"), "{out:?}");
    // Refused before it leaves vswitchctl: not a CIDR at all.
    let out = d.ctl(&["network", "create", "x", "--subnet", "300.1.1.0/24"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("300.1.1.0/24"), "{out:?}");
    let out = d.ctl(&["fdb", "add", "x", "not-a-mac", "p"]);
    assert_eq!(out.status.code(), Some(2));
    // A daemon that is not running.
    let out = std::process::Command::new(testbed::bin_dir().join("vswitchctl"))
        .args(["--socket", "/tmp/vswitch-no-such-daemon.sock", "network", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vswitchd"));
}
