//! Root tests of link impairments inside the switch (`vswitchctl port impair`): a delay that
//! ping sees, a seeded loss that drops the same ICMP sequence numbers run after run, a rate
//! that holds iperf3, `--clear`, and ports next to an impaired one that stay as they were.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use testbed::{eventually, Daemon, Netns};

fn ip(ep: &Value) -> String {
    ep["ip"].as_str().expect("endpoint has an ip").to_string()
}

/// Each reply's RTT (ms) and sequence number of `ping -c COUNT -i INTERVAL` from `ns` to `to`.
fn ping_times(ns: &Netns, to: &str, count: u32, interval: &str) -> Vec<(u32, f64)> {
    let out = ns.exec(&["ping", "-n", "-c", &count.to_string(), "-i", interval, "-W", "2", to]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()?;
            let t = l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()?;
            Some((seq, t))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "no replies");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rtts(ns: &Netns, to: &str, count: u32) -> Vec<f64> {
    ping_times(ns, to, count, "0.05").into_iter().map(|(_, t)| t).collect()
}

/// The port of endpoint `name` as `port ls --json` shows it.
fn port(d: &Daemon, name: &str) -> Value {
    let ports = d.ctl_json(&["port", "ls"]);
    ports.as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or_else(|| panic!("no port {name}: {ports}"))
}

/// iperf3 from `client` to `server` for `secs`: what the receiver got, in bit/s.
fn iperf3(client: &Netns, server: &Netns, server_ip: &str, secs: u32) -> f64 {
    let mut srv = server.spawn(&["iperf3", "-s", "-1", "-B", server_ip]);
    assert!(eventually(Duration::from_secs(5), || server.exec_ok(&["ss", "-ltnH"]).contains(":5201")), "iperf3 server did not start");
    // The first second (slow start) is left out of the figures.
    let out = client.exec(&["iperf3", "-c", server_ip, "-t", &secs.to_string(), "-O", "1", "-J"]);
    let _ = srv.kill();
    let _ = srv.wait();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("iperf3 -J: {}", String::from_utf8_lossy(&out.stdout)));
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| panic!("no receiver figure: {v}"))
}

#[test]
fn a_delay_on_one_port_shows_in_ping_and_clear_takes_it_away() {
    let d = Daemon::start();
    d.network("imp1", "10.121.1.0/24");
    let (c1, c2, c3) = (Netns::new("vt-ia"), Netns::new("vt-ib"), Netns::new("vt-ic"));
    d.attach("imp1", &c1);
    let (e2, e3) = (d.attach("imp1", &c2), d.attach("imp1", &c3));
    let (ip2, ip3) = (ip(&e2), ip(&e3));
    assert!(c1.ping(&ip2, 1) && c1.ping(&ip3, 1), "no ping before any impairment");
    let base = median(rtts(&c1, &ip2, 10));

    // Frames to c2 wait 20 ms: the echo requests, so each RTT is 20 ms more.
    let shown = d.ctl_ok(&["port", "impair", &c2.name, "--delay", "20ms"]);
    assert!(shown.contains("egress: delay 20ms"), "{shown}");
    let t = rtts(&c1, &ip2, 20);
    let (min, med) = (t.iter().copied().fold(f64::MAX, f64::min), median(t.clone()));
    eprintln!("RTT to c2: unimpaired {base:.3} ms; delayed min {min:.3} median {med:.3} ms ({t:?})");
    assert_eq!(t.len(), 20, "a delay loses nothing");
    assert!(min >= 20.0, "an RTT below the delay: {t:?}");
    assert!(med <= 22.0, "median RTT {med} ms above 22 ms: {t:?}");
    // The port next to it is untouched.
    let other = median(rtts(&c1, &ip3, 10));
    assert!(other < 5.0, "c3 got slower ({other} ms) though only c2 is impaired");
    assert!(port(&d, &c3.name).get("impair_egress").is_none());
    let p = port(&d, &c2.name);
    let c = &p["impair_egress"]["counters"];
    assert!(c["delayed"].as_u64().unwrap() >= 20, "{p}");
    assert_eq!(p["impair_egress"]["impairment"]["delay_us"], 20_000);
    assert!(p["impair_egress"]["impairment"]["seed"].is_u64(), "the seed in use is shown: {p}");
    assert!(p.get("impair_ingress").is_none());
    // The same counters in /metrics.
    let metrics = testbed::run_ok("curl", &["-sSf", "--unix-socket", d.socket.to_str().unwrap(), "http://localhost/metrics"]);
    let delayed =
        format!("vswitch_port_impair_frames_total{{network=\"imp1\",port=\"{}\",direction=\"egress\",outcome=\"delayed\"}}", c2.name);
    let line = metrics.lines().find(|l| l.starts_with(&delayed)).unwrap_or_else(|| panic!("no {delayed} in /metrics"));
    assert!(line.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= 20, "{line}");
    assert!(!metrics.contains(&format!("port=\"{}\",direction", c3.name)), "an unimpaired port has impairment series");

    // Live change to the other direction: the replies wait instead.
    d.ctl_ok(&["port", "impair", &c2.name, "--clear"]);
    d.ctl_ok(&["port", "impair", &c2.name, "--ingress", "--delay", "10ms", "--jitter", "2ms", "--distribution", "normal"]);
    let t = rtts(&c1, &ip2, 20);
    let (min, med) = (t.iter().copied().fold(f64::MAX, f64::min), median(t.clone()));
    eprintln!("RTT with 10±2 ms (normal) on c2's ingress: min {min:.3} median {med:.3} ms");
    assert!((2.0..=18.0).contains(&min) && (9.0..=12.5).contains(&med), "{t:?}");
    assert!(port(&d, &c2.name).get("impair_egress").is_none());

    d.ctl_ok(&["port", "impair", &c2.name, "--ingress", "--clear"]);
    let after = median(rtts(&c1, &ip2, 10));
    eprintln!("RTT to c2 after --clear: {after:.3} ms");
    assert!(after < 5.0, "--clear left {after} ms");
    let p = port(&d, &c2.name);
    assert!(p.get("impair_ingress").is_none() && p.get("impair_egress").is_none(), "{p}");
}

/// The sequence numbers of 300 pings (every 10 ms) that got no reply.
fn lost_seqs(from: &Netns, to: &str) -> BTreeSet<u32> {
    let got: BTreeSet<u32> = ping_times(from, to, 300, "0.01").into_iter().map(|(s, _)| s).collect();
    (1..=300).filter(|s| !got.contains(s)).collect()
}

#[test]
fn a_seeded_loss_drops_the_same_sequence_numbers_every_run() {
    let d = Daemon::start();
    d.network("imp2", "10.121.2.0/24");
    let (c1, c2) = (Netns::new("vt-id"), Netns::new("vt-ie"));
    let e1 = d.attach("imp2", &c1);
    let e2 = d.attach("imp2", &c2);
    // Permanent neighbours: no ARP mixes into the frames c2's port sees, only the pings.
    for (ns, peer) in [(&c1, &e2), (&c2, &e1)] {
        let mac = peer["mac"].as_str().unwrap();
        ns.exec_ok(&["ip", "neigh", "replace", &ip(peer), "lladdr", mac, "dev", "eth0", "nud", "permanent"]);
    }
    let to = ip(&e2);
    assert!(c1.ping(&to, 1));

    let mut runs = Vec::new();
    for _ in 0..2 {
        d.ctl_ok(&["port", "impair", &format!("imp2/{}", c2.name), "--loss", "10%", "--seed", "7"]);
        let lost = lost_seqs(&c1, &to);
        let counted = port(&d, &c2.name)["impair_egress"]["counters"]["dropped_loss"].as_u64().unwrap();
        d.ctl_ok(&["port", "impair", &c2.name, "--clear"]);
        eprintln!("lost {} of 300: {lost:?}", lost.len());
        assert_eq!(counted, lost.len() as u64, "the switch counted every loss, and only those");
        assert!((12..=50).contains(&lost.len()), "10 % of 300 is about 30, not {}", lost.len());
        runs.push(lost);
    }
    assert_eq!(runs[0], runs[1], "the same seed dropped other sequence numbers");

    d.ctl_ok(&["port", "impair", &c2.name, "--loss", "10%", "--seed", "8"]);
    let other = lost_seqs(&c1, &to);
    assert_ne!(other, runs[0], "another seed dropped the same ones");
    d.ctl_ok(&["port", "impair", &c2.name, "--clear"]);
    assert!(lost_seqs(&c1, &to).is_empty(), "loss after --clear");

    // Every request sent twice: c2 answers each twice, and ping says so.
    d.ctl_ok(&["port", "impair", &c2.name, "--duplicate", "100%"]);
    let out = c1.exec(&["ping", "-n", "-c", "5", "-i", "0.2", &to]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // ping stops at its fifth reply, which may come before the fifth copy.
    assert!(text.lines().filter(|l| l.contains("DUP!")).count() >= 4, "{text}");
    assert_eq!(port(&d, &c2.name)["impair_egress"]["counters"]["duplicated"], 5);
    // Bursty loss through the CLI: Gilbert's model, shown with its parameters.
    let shown = d.ctl_ok(&["port", "impair", &c2.name, "--loss", "20%", "--loss-burst", "4", "--seed", "3"]);
    assert!(shown.contains("gilbert-elliott") && shown.contains("r=25.0000%"), "{shown}");
    let lost = lost_seqs(&c1, &to);
    let bursts = lost.iter().filter(|s| !lost.contains(&(**s - 1))).count();
    eprintln!("bursty: lost {} of 300 in {bursts} bursts", lost.len());
    assert!((30..=100).contains(&lost.len()) && lost.len() as f64 / bursts as f64 >= 2.0, "not bursty: {lost:?}");
}

#[test]
fn a_rate_holds_iperf3_and_leaves_the_neighbour_alone() {
    let d = Daemon::start();
    d.network("imp3", "10.121.3.0/24");
    let (c1, c2, c3) = (Netns::new("vt-if"), Netns::new("vt-ig"), Netns::new("vt-ih"));
    d.attach("imp3", &c1);
    let (e2, e3) = (d.attach("imp3", &c2), d.attach("imp3", &c3));
    let (ip2, ip3) = (ip(&e2), ip(&e3));

    d.ctl_ok(&["port", "impair", &c2.name, "--rate", "50mbit"]);
    let limited = iperf3(&c1, &c2, &ip2, 6);
    let neighbour = iperf3(&c1, &c3, &ip3, 3);
    eprintln!("iperf3 to c2 at --rate 50mbit: {:.2} Mbit/s; to c3 (unimpaired): {:.1} Mbit/s", limited / 1e6, neighbour / 1e6);
    // The rate counts Ethernet frames as the wire carries them (a super-frame as its segments),
    // so TCP's payload through 50 Mbit/s is at most 50 × 1448 / 1514 = 47.82 Mbit/s (MSS 1448:
    // 66 bytes of Ethernet, IP and TCP headers with timestamps per segment). That is 4.4 % under
    // 50, which leaves TCP 0.6 % of room against "within 5 % of 50": judged against the
    // goodput such a link carries instead, within 5 %.
    let goodput = 50e6 * 1448.0 / 1514.0;
    assert!((limited / goodput - 1.0).abs() <= 0.05, "{:.2} Mbit/s is not within 5 % of {:.2}", limited / 1e6, goodput / 1e6);
    assert!(neighbour > 200e6, "the unimpaired neighbour ran at only {:.1} Mbit/s", neighbour / 1e6);
    let p = port(&d, &c2.name);
    assert!(p["impair_egress"]["counters"]["delayed"].as_u64().unwrap() > 0, "{p}");

    d.ctl_ok(&["port", "impair", &c2.name, "--clear"]);
    let cleared = iperf3(&c1, &c2, &ip2, 3);
    eprintln!("iperf3 to c2 after --clear: {:.1} Mbit/s", cleared / 1e6);
    assert!(cleared > 200e6, "--clear left {:.1} Mbit/s", cleared / 1e6);
}

#[test]
fn bad_values_are_refused_and_change_nothing() {
    let d = Daemon::start();
    d.network("imp4", "10.121.4.0/24");
    let c1 = Netns::new("vt-ii");
    d.attach("imp4", &c1);
    let refused = |args: &[&str], code: i32, says: &str| {
        let mut all = vec!["port", "impair"];
        all.extend_from_slice(args);
        let out = d.ctl(&all);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err:?} does not say {says:?}");
    };
    let n = c1.name.as_str();
    refused(&[n, "--loss", "120%"], 2, "from 0 to 100");
    refused(&[n, "--delay", "20"], 2, "unit");
    refused(&[n, "--rate", "100mbps"], 2, "mbit");
    refused(&[n], 2, "--clear");
    refused(&[n, "--reorder", "5%"], 1, "give a delay too");
    refused(&[n, "--queue", "0", "--delay", "1ms"], 1, "queue");
    refused(&["nobody", "--delay", "1ms"], 1, "endpoint_not_found");
    refused(&["gateway", "--delay", "1ms"], 1, "endpoint_not_found");
    // The API refuses unknown fields and bad values with the field named.
    let (status, body) = d.api(
        "POST",
        "/v1/ports/impair",
        Some(&format!(r#"{{"target":"{n}","impairment":{{"loss":{{"model":"random","percent":-3}}}}}}"#)),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("loss"), "{body}");
    let (status, _) = d.api("POST", "/v1/ports/impair", Some(&format!(r#"{{"target":"{n}","impairment":{{"delay":"1ms"}}}}"#)));
    assert_eq!(status, 400);
    assert!(port(&d, n).get("impair_egress").is_none(), "a refused request changed the port");
}

/// Rootless: the same datapath code; the daemon and its containers run as an ordinary user.
#[test]
fn rootless_a_delay_shows_in_ping_and_clears() {
    use testbed::{User, UserContainer};
    if !testbed::userns_allowed() {
        return;
    }
    let user = User::system("vswitch-test");
    let d = Daemon::start_rootless(&user, &[]);
    d.network("rimp", "10.121.5.0/24");
    let hp = d.userns_pid();
    let (c1, c2) = (UserContainer::new(&user, hp, "vr-ia"), UserContainer::new(&user, hp, "vr-ib"));
    let attach = |c: &UserContainer| d.ctl_json(&["attach", "rimp", "--pid", &c.pid().to_string(), "--name", &c.name]);
    attach(&c1);
    let to = ip(&attach(&c2));
    assert!(c1.ping(&to, 1), "no rootless ping before any impairment");
    let times = |c: &UserContainer| -> Vec<f64> {
        let out = c.exec(&["ping", "-n", "-c", "10", "-i", "0.05", "-W", "2", &to]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect()
    };
    d.ctl_ok(&["port", "impair", &c2.name, "--delay", "20ms"]);
    let t = times(&c1);
    eprintln!("rootless RTT with 20 ms on c2: {t:?}");
    assert_eq!(t.len(), 10);
    assert!(t.iter().all(|&x| x >= 20.0) && median(t.clone()) <= 22.0, "{t:?}");
    d.ctl_ok(&["port", "impair", &c2.name, "--clear"]);
    let after = median(times(&c1));
    assert!(after < 5.0, "--clear left {after} ms");
}
