//! Root tests of `vswitchctl capture`: pcapng that tshark reads (addresses, direction, port
//! names), clear refusals, and a capture under iperf3 load that drops and counts instead of
//! slowing the flow.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{bin_dir, ensure_commands, eventually, run_ok, Daemon, Netns};

fn ip(ep: &Value) -> String {
    ep["ip"].as_str().expect("endpoint has an ip").to_string()
}

/// `vswitchctl capture ARGS...` running in the background, stderr kept.
fn capture(d: &Daemon, args: &[&str]) -> Child {
    Command::new(bin_dir().join("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("capture")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vswitchctl capture")
}

/// The value of an unlabelled sample in the daemon's `/metrics`.
fn metric(d: &Daemon, name: &str) -> u64 {
    let text = run_ok("curl", &["-sSf", "--unix-socket", d.socket.to_str().unwrap(), "http://localhost/metrics"]);
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_ping_captured_reads_back_in_tshark() {
    ensure_commands(&[("tshark", "tshark")]);
    let d = Daemon::start();
    d.network("cap1", "10.74.0.0/24");
    let (c1, c2) = (Netns::new("vt-ca"), Netns::new("vt-cb"));
    let e1 = d.attach("cap1", &c1);
    let e2 = d.attach("cap1", &c2);
    assert!(c1.ping(&ip(&e2), 1), "no ping before the capture");

    let file = d.dir.join("ping.pcapng");
    let mut cap = capture(&d, &[&format!("cap1/{}", c2.name), "-c", "6", "-w", file.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(5), || metric(&d, "vswitch_capture_sessions") == 1), "the capture never started");
    assert!(c1.ping(&ip(&e2), 5));
    let status = wait_exit(&mut cap, Duration::from_secs(10)).expect("capture -c 6 did not stop by itself");
    let out = cap.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "capture failed: {stderr}");
    assert!(stderr.contains("6 frames captured"), "{stderr}");
    assert!(stderr.contains("0 dropped"), "{stderr}");
    assert!(eventually(Duration::from_secs(5), || metric(&d, "vswitch_capture_sessions") == 0), "the session outlived its stream");

    let fields = run_ok(
        "tshark",
        &[
            "-r",
            file.to_str().unwrap(),
            "-Y",
            "icmp",
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.packet_flags_direction",
        ],
    );
    let (a, b) = (ip(&e1), ip(&e2));
    let iface = format!("cap1/{}", c2.name);
    // The request goes out to c2 (outbound, 2), the reply comes in from it (inbound, 1).
    let request = format!("{a},{b},8,{iface},0x00000002");
    let reply = format!("{b},{a},0,{iface},0x00000001");
    assert!(fields.lines().any(|l| l == request), "no echo request {request} in:\n{fields}");
    assert!(fields.lines().any(|l| l == reply), "no echo reply {reply} in:\n{fields}");
}

#[test]
fn a_filtered_capture_keeps_only_what_the_expression_passes() {
    ensure_commands(&[("tshark", "tshark")]);
    let d = Daemon::start();
    d.network("cap3", "10.74.2.0/24");
    let (c1, c2) = (Netns::new("vt-fa"), Netns::new("vt-fb"));
    let _e1 = d.attach("cap3", &c1);
    let e2 = d.attach("cap3", &c2);
    let file = d.dir.join("replies.pcapng");
    // Echo replies only, coming in from c2: not the requests, not ARP.
    let filter = "icmp[icmptype] == icmp-echoreply";
    let mut cap = capture(&d, &[&format!("cap3/{}", c2.name), "-c", "4", "--filter", filter, "-w", file.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(5), || metric(&d, "vswitch_capture_sessions") == 1), "the capture never started");
    // A flushed neighbour table: the ping starts with ARP, which the filter must leave out.
    run_ok("ip", &["netns", "exec", &c1.name, "ip", "neigh", "flush", "all"]);
    assert!(c1.ping(&ip(&e2), 4));
    let status = wait_exit(&mut cap, Duration::from_secs(10)).expect("capture -c 4 with a filter did not stop");
    let out = cap.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fields = run_ok("tshark", &["-r", file.to_str().unwrap(), "-T", "fields", "-e", "icmp.type", "-e", "arp.opcode"]);
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(lines, vec!["0\t"; 4], "not exactly 4 echo replies:\n{fields}");
    let filt = run_ok("tshark", &["-r", file.to_str().unwrap(), "-c", "1", "-T", "fields", "-e", "frame.interface_name"]);
    assert!(filt.contains("cap3/"), "{filt}");

    // A filter libpcap cannot compile: refused with its reason, nothing started.
    let out = d.ctl(&["capture", "cap3", "--filter", "tcp port", "-w", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("capture filter \"tcp port\"") && err.contains("invalid_request"), "{err}");
    assert_eq!(metric(&d, "vswitch_capture_sessions"), 0);
}

#[test]
fn bad_captures_are_refused_clearly() {
    let d = Daemon::start();
    d.network("cap2", "10.74.1.0/24");
    let out = d.ctl(&["capture", "nosuch", "-w", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing to capture named \"nosuch\"") && err.contains("not_found"), "{err}");
    for (query, says) in [
        ("target=cap2&count=0", "count must be at least 1"),
        ("target=cap2&snaplen=3", "snaplen must be"),
        ("count=3", "exactly one of"),
        ("target=cap2&bogus=1", "unknown capture parameter"),
    ] {
        let (status, body) = d.api("GET", &format!("/v1/capture?{query}"), None);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }
    let (status, _) = d.api("POST", "/v1/capture?target=cap2", None);
    assert_eq!(status, 405);
}

#[test]
fn a_capture_under_iperf3_load_drops_and_counts_and_never_stalls_the_flow() {
    let d = Daemon::start();
    d.network("cap3", "10.74.2.0/24");
    let (c1, c2) = (Netns::new("vt-cc"), Netns::new("vt-cd"));
    d.attach("cap3", &c1);
    let e2 = d.attach("cap3", &c2);
    let mut server = c2.spawn(&["iperf3", "-s", "-1", "-B", &ip(&e2)]);
    assert!(eventually(Duration::from_secs(5), || c2.exec_ok(&["ss", "-ltnH"]).contains(":5201")), "iperf3 server did not start");

    let frames = |d: &Daemon| {
        let ports = d.ctl_json(&["port", "ls"]);
        let p = ports.as_array().unwrap().iter().find(|p| p["name"] == c2.name.as_str()).cloned().unwrap();
        p["rx_packets"].as_u64().unwrap() + p["tx_packets"].as_u64().unwrap()
    };
    // Whole frames, written to /dev/null as fast as vswitchctl can: the switch moves more.
    let mut cap = capture(&d, &[&c2.name, "-w", "/dev/null"]);
    assert!(eventually(Duration::from_secs(5), || metric(&d, "vswitch_capture_sessions") == 1), "the capture never started");
    let (before, copied0, dropped0) = (frames(&d), metric(&d, "vswitch_capture_frames_total"), metric(&d, "vswitch_capture_dropped_total"));
    let out = c1.exec_ok(&["iperf3", "-c", &ip(&e2), "-t", "3", "-J"]);
    let (after, copied1, dropped1) = (frames(&d), metric(&d, "vswitch_capture_frames_total"), metric(&d, "vswitch_capture_dropped_total"));
    let _ = Command::new("kill").args(["-TERM", &cap.id().to_string()]).status();
    let _ = cap.wait();
    let _ = server.kill();
    let _ = server.wait();

    let v: Value = serde_json::from_str(&out).expect("iperf3 -J output");
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    let (copied, dropped) = (copied1 - copied0, dropped1 - dropped0);
    eprintln!("iperf3 under capture: {:.2} Gbit/s; {} frames, {copied} copied, {dropped} dropped", bps / 1e9, after - before);
    assert!(bytes > 10_000_000, "iperf3 moved only {bytes} bytes under capture: {out}");
    // Every frame the port moved was offered to the capture: copied, or dropped and counted.
    assert!(copied + dropped >= after - before, "{copied} copied + {dropped} dropped < {} frames", after - before);
    assert!(dropped > 0 || copied >= after - before, "neither all copied nor drops counted");
    assert!(eventually(Duration::from_secs(5), || metric(&d, "vswitch_capture_sessions") == 0), "the session outlived its client");
}

#[test]
fn a_capture_on_a_tunnel_peer_shows_the_inner_frames() {
    ensure_commands(&[("tshark", "tshark")]);
    // Hosts A and B (namespaces on a veth underlay), each with a vswitchd, sharing overlay "ov".
    let (ha, hb) = (Netns::new("vca-"), Netns::new("vcb-"));
    run_ok("ip", &["link", "add", "ucA", "netns", &ha.name, "type", "veth", "peer", "name", "ucB", "netns", &hb.name]);
    for (h, dev, ip) in [(&ha, "ucA", "10.202.0.1/24"), (&hb, "ucB", "10.202.0.2/24")] {
        h.exec_ok(&["ip", "addr", "add", ip, "dev", dev]);
        h.exec_ok(&["ip", "link", "set", dev, "up"]);
    }
    let da = Daemon::start_in(&ha, &["--listen", "10.202.0.1:51820"]);
    let db = Daemon::start_in(&hb, &["--listen", "10.202.0.2:51820"]);
    da.ctl_ok(&["network", "create", "ov", "--subnet", "10.93.0.0/24", "--ip-range", "10.93.0.0/25", "--overlay"]);
    db.ctl_ok(&["network", "create", "ov", "--subnet", "10.93.0.0/24", "--ip-range", "10.93.0.128/25", "--overlay"]);
    let (a1, b1) = (Netns::new("vtca-"), Netns::new("vtcb-"));
    let ea = da.attach("ov", &a1);
    let eb = db.attach("ov", &b1);
    let key = |d: &Daemon| d.ctl_json(&["key", "show"])["public_key"].as_str().unwrap().to_string();
    let (ka, kb) = (key(&da), key(&db));
    da.ctl_ok(&["peer", "add", &kb, "--endpoint", "10.202.0.2:51820", "--network", "ov"]);
    db.ctl_ok(&["peer", "add", &ka, "--endpoint", "10.202.0.1:51820", "--network", "ov"]);
    let (ipa, ipb) = (ip(&ea), ip(&eb));
    assert!(eventually(Duration::from_secs(5), || a1.ping(&ipb, 1)), "no ping across hosts\nA:{}\nB:{}", da.log(), db.log());

    let file = da.dir.join("peer.pcapng");
    let mut cap = capture(&da, &[&format!("peer:{}", &kb[..6]), "-c", "4", "-w", file.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(5), || metric(&da, "vswitch_capture_sessions") == 1), "the capture never started");
    assert!(a1.ping(&ipb, 3));
    assert!(wait_exit(&mut cap, Duration::from_secs(10)).is_some_and(|s| s.success()), "capture -c 4 did not finish");
    let fields = run_ok(
        "tshark",
        &[
            "-r",
            file.to_str().unwrap(),
            "-Y",
            "icmp",
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "frame.interface_name",
        ],
    );
    let iface = format!("ov/peer:{}", &kb[..8]);
    assert!(fields.lines().any(|l| l == format!("{ipa},{ipb},{iface}")), "no inner echo request on {iface}:\n{fields}");
    assert!(fields.lines().any(|l| l == format!("{ipb},{ipa},{iface}")), "no inner echo reply on {iface}:\n{fields}");
}
