//! Root tests of `/metrics`: the text passes `promtool check metrics`, and a real Prometheus
//! server (Debian's, on loopback, started here) scrapes `--metrics-listen` and returns the
//! right counter after known traffic.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testbed::{ensure_commands, eventually, free_port, run_ok, Daemon, Netns};

/// `GET /metrics` on the control socket.
fn scrape_socket(d: &Daemon) -> String {
    run_ok("curl", &["-sSf", "--unix-socket", d.socket.to_str().unwrap(), "http://localhost/metrics"])
}

/// The value of the sample `name{labels...}` whose labels include every `want` pair.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, labels) = series.split_once('{').map_or((series, ""), |(n, rest)| (n, rest.trim_end_matches('}')));
        let ok = n == name && want.iter().all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        ok.then(|| value.parse().ok()).flatten()
    })
}

fn rx_packets(d: &Daemon, port: &str) -> u64 {
    let ports = d.ctl_json(&["port", "ls"]);
    ports.as_array().unwrap().iter().find(|p| p["name"] == port).map_or(0, |p| p["rx_packets"].as_u64().unwrap())
}

#[test]
fn metrics_on_the_socket_pass_promtool_and_match_port_counters() {
    ensure_commands(&[("promtool", "prometheus")]);
    let d = Daemon::start();
    d.network("m1", "10.72.0.0/24");
    let (c1, c2) = (Netns::new("vt-ma"), Netns::new("vt-mb"));
    d.attach("m1", &c1);
    let e2 = d.attach("m1", &c2);
    assert!(c1.ping(e2["ip"].as_str().unwrap(), 3));

    let text = scrape_socket(&d);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rx = sample(&text, "vswitch_port_rx_packets_total", &[("network", "m1"), ("port", &c1.name)]).expect("c1's rx_packets");
    assert!(rx >= 3.0, "{text}");
    assert_eq!(rx as u64, rx_packets(&d, &c1.name).min(rx as u64), "metrics never run ahead of port ls");
    for name in [
        "vswitch_fdb_entries",
        "vswitch_dns_queries_total",
        "vswitch_build_info",
        "vswitch_process_resident_memory_bytes",
        "vswitch_process_open_fds",
        "vswitch_dns_forward_duration_seconds_count",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
    }
    assert_eq!(sample(&text, "vswitch_network_endpoints", &[("network", "m1")]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "vswitch_network_addresses_in_use", &[("network", "m1")]), Some(2.0), "{text}");
    assert!(sample(&text, "vswitch_port_drops_total", &[("port", &c1.name), ("reason", "hairpin")]).is_some(), "{text}");
    // Bounded labels: never a MAC.
    let mac = e2["mac"].as_str().unwrap();
    assert!(!text.contains(mac), "a MAC in the labels:\n{text}");
    // Only GET.
    let (status, _) = d.api("POST", "/metrics", None);
    assert_eq!(status, 404);
}

/// Stops the Prometheus server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(prom: u16, q: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sS", "--get", "--data-urlencode", &format!("query={q}"), &format!("http://127.0.0.1:{prom}/api/v1/query")])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_tcp_listener_and_sees_the_pings() {
    ensure_commands(&[("prometheus", "prometheus")]);
    let port = free_port();
    let d = Daemon::start_with(&["--metrics-listen", &format!("127.0.0.1:{port}")]);
    d.network("m2", "10.72.1.0/24");
    let (c1, c2) = (Netns::new("vt-mc"), Netns::new("vt-md"));
    d.attach("m2", &c1);
    let e2 = d.attach("m2", &c2);

    // Only /metrics on TCP; the API stays on the socket.
    let tcp = run_ok("curl", &["-sSf", &format!("http://127.0.0.1:{port}/metrics")]);
    assert!(tcp.contains("vswitch_build_info"), "{tcp}");
    let code = run_ok("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}/v1/networks")]);
    assert_eq!(code, "404");

    let dir = d.dir.join("prometheus");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vswitch\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let prom = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _server = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let prom_log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(30), || query(prom, "up{job=\"vswitch\"}") == Some(1.0)),
        "prometheus never scraped vswitchd:\n{}",
        prom_log()
    );

    // 20 pings: 20 echo requests into the switch from c1 (plus ARP).
    let before = rx_packets(&d, &c1.name);
    assert!(c1.ping(e2["ip"].as_str().unwrap(), 20));
    let after = rx_packets(&d, &c1.name);
    assert!(after >= before + 20, "{before} -> {after}");
    let q = format!("vswitch_port_rx_packets_total{{network=\"m2\",port=\"{}\"}}", c1.name);
    let mut seen = None;
    let ok = eventually(Duration::from_secs(20), || {
        seen = query(prom, &q);
        // Nothing else talks on the network now: the counter stays where port ls saw it
        // (a late ARP may add one or two).
        seen.is_some_and(|v| v as u64 >= after && v as u64 <= after + 4)
    });
    assert!(ok, "prometheus says {seen:?} for {q}, port ls said {after}\n{}", prom_log());
}
