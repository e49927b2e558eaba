//! podman-rootless-bench: TCP throughput between a rootless podman container and the host's
//! loopback, through vswitch-cni (vswitchd's egress) against rootless podman's default network,
//! slirp4netns, in ONE run so the ratios can be compared. benches/cni-rootless-bench.sh builds
//! it and runs it; it prints a markdown table.
//!
//!   podman-rootless-bench [--duration SECONDS] [--rounds N]
//!
//! A user made for the run (subuids, removed at the end) runs rootless podman (CNI backend) and
//! vswitchd (`--userns` of podman's pause process, as the README says). An iperf3 server listens
//! on 127.0.0.1 of the host (this process's namespace). Each run is one
//! `podman run --rm --network NET localhost/bbperf iperf3 -c HOST -J [-R]`, so the container
//! starts fresh every time the same way for every network:
//!   vswitch-cni        a vswitch network (MTU 1500, and one with MTU 65520), `--host-loopback`:
//!                      the container dials the gateway, which egress maps to 127.0.0.1
//!   slirp4netns        `--network slirp4netns:allow_host_loopback=true` (podman's default for
//!                      rootless, MTU 65520) and the same with `mtu=1500`; the container dials
//!                      10.0.2.2
//! Rounds take turns (every network once per round, the order turning each round); medians.

use std::process::{Child, Command, ExitCode, Stdio};

use serde_json::Value;
use testbed::runtimes::{self, PodmanCli, RootlessPodman, SubidUser};
use testbed::Daemon;

const USER: &str = "vswitch-rlbench";
const PERF_IMAGE: &str = "localhost/bbperf:latest";
const PORT: &str = "15201";

struct Case {
    name: &'static str,
    mtu: u32,
    network: String,
    target: String,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One iperf3 run in a fresh container: Gbit/s received, or the reason it failed.
fn run(p: &RootlessPodman, case: &Case, secs: u32, reverse: bool) -> Result<f64, String> {
    let t = secs.to_string();
    let mut args = vec!["run", "--rm", "--network", &case.network, PERF_IMAGE, "iperf3", "-c", &case.target, "-p", PORT, "-t", &t, "-J"];
    if reverse {
        args.push("-R");
    }
    let out = p.run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)))?;
    json["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 1e9).ok_or_else(|| format!("no result: {}", json["error"]))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut secs, mut rounds) = (5u32, 3usize);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u32>().ok());
        match (a.as_str(), value) {
            ("--duration", Some(v)) if v > 0 => secs = v,
            ("--rounds", Some(v)) if v > 0 => rounds = v as usize,
            _ => {
                eprintln!("usage: podman-rootless-bench [--duration SECONDS] [--rounds N]");
                return ExitCode::from(2);
            }
        }
    }
    testbed::require_root();
    // Dropped last (declared first): kills what still runs as the user, then removes it.
    let u = SubidUser::new(USER);
    let p = RootlessPodman::new(&u.user);
    p.import_image_with(PERF_IMAGE, &["/usr/bin/iperf3"]);
    let server = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", PORT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Server)
        .expect("start iperf3 -s (Debian's iperf3)");
    let d = Daemon::start_rootless(&u.user, &["--userns", &p.userns()]);
    let mut cases = Vec::new();
    for (net, subnet, mtu) in [("vsbench", "10.88.41.0/24", 1500), ("vsbench9", "10.88.42.0/24", 65520)] {
        d.ctl_ok(&["network", "create", net, "--subnet", subnet, "--mtu", &mtu.to_string(), "--host-loopback", PORT]);
        p.add_conflist(net, &runtimes::vswitch_conflist(net, &d.socket));
        let gw = d.ctl_json(&["network", "inspect", net])["gateway"].as_str().expect("gateway").to_string();
        cases.push(Case { name: "vswitch-cni", mtu, network: net.to_string(), target: gw });
    }
    for mtu in [1500, 65520] {
        let network = format!("slirp4netns:allow_host_loopback=true,mtu={mtu}");
        cases.push(Case { name: "slirp4netns", mtu, network, target: "10.0.2.2".to_string() });
    }
    // Every case once untimed: the image is unpacked, podman's caches are warm.
    for c in &cases {
        if let Err(e) = run(&p, c, 1, false) {
            eprintln!("{} (MTU {}) does not work: {e}\n--- vswitchd log ---\n{}", c.name, c.mtu, d.log());
            // Returning (not exit): the server, the daemon, podman and the user go on drop.
            return ExitCode::FAILURE;
        }
    }
    // results[case][direction] = Gbit/s of each round
    let mut results = vec![[Vec::new(), Vec::new()]; cases.len()];
    for round in 0..rounds {
        for i in 0..cases.len() {
            let c = (i + round) % cases.len();
            for (dir, reverse) in [(0, false), (1, true)] {
                match run(&p, &cases[c], secs, reverse) {
                    Ok(g) => {
                        eprintln!(
                            "==> round {}/{rounds} {} MTU {} {}: {g:.3} Gbit/s",
                            round + 1,
                            cases[c].name,
                            cases[c].mtu,
                            ["c->h", "h->c"][dir]
                        );
                        results[c][dir].push(g);
                    }
                    Err(e) => eprintln!("==> round {}/{rounds} {} MTU {}: failed: {e}", round + 1, cases[c].name, cases[c].mtu),
                }
            }
        }
    }
    drop(server);
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |g| format!("{g:.3}"));
    println!("| MTU, direction | vswitch-cni Gbit/s | slirp4netns Gbit/s | vswitch-cni / slirp4netns |");
    println!("|---|---|---|---|");
    for mtu in [1500, 65520] {
        let of = |name: &str, dir: usize| {
            let c = cases.iter().position(|c| c.name == name && c.mtu == mtu).unwrap();
            median(results[c][dir].clone())
        };
        for (dir, label) in [(0, "container→host"), (1, "host→container")] {
            let (v, s) = (of("vswitch-cni", dir), of("slirp4netns", dir));
            let ratio = match (v, s) {
                (Some(v), Some(s)) if s > 0.0 => format!("**{:.2}×**", v / s),
                _ => "n/a".to_string(),
            };
            println!("| MTU {mtu}, {label} | {} | {} | {ratio} |", fmt(v), fmt(s));
        }
    }
    println!();
    println!("{rounds} rounds of {secs} s per cell (medians), each run a fresh `podman run --rm` container.");
    drop(d);
    drop(p);
    ExitCode::SUCCESS
}
