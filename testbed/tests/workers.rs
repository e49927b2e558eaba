//! Root integration tests of the datapath's worker threads (`--workers`): TAPs dealt over
//! threads, flows forwarded by the worker that reads them, replies picked up by the thread that
//! wrote the request, counters added up, MAC moves and detaches seen by every worker at once.

use std::time::Duration;

use serde_json::Value;
use testbed::{eventually, Daemon, Netns};

fn ip(ep: &Value) -> String {
    ep["ip"].as_str().expect("endpoint has an ip").to_string()
}

/// The `port ls` row of container `name`.
fn port(d: &Daemon, name: &str) -> Value {
    let ports = d.ctl_json(&["port", "ls"]);
    ports.as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or_else(|| panic!("no port {name}: {ports}"))
}

fn worker_of(d: &Daemon, name: &str) -> u64 {
    port(d, name)["worker"].as_u64().unwrap_or_else(|| panic!("port {name} names no worker"))
}

fn workers(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["workers"]).as_array().unwrap().clone()
}

/// Four containers over three threads; returns them with their endpoints, in attach order.
fn four_containers(d: &Daemon, subnet: &str, prefix: &str) -> Vec<(Netns, Value)> {
    d.network("n1", subnet);
    (0..4)
        .map(|i| {
            let ns = Netns::new(&format!("{prefix}{i}"));
            let ep = d.attach("n1", &ns);
            (ns, ep)
        })
        .collect()
}

#[test]
fn taps_are_dealt_over_workers_which_forward_their_flows() {
    let d = Daemon::start_with(&["--workers", "3"]);
    let cs = four_containers(&d, "10.74.0.0/24", "vt-w");
    let ws = workers(&d);
    assert_eq!(ws.len(), 3, "{ws:?}");
    let taps: Vec<u64> = ws.iter().map(|w| w["ports"].as_u64().unwrap()).collect();
    assert_eq!(taps.iter().sum::<u64>(), 4, "{ws:?}");
    assert!(taps.iter().all(|&n| n >= 1), "every thread reads a TAP: {ws:?}");
    let human = d.ctl_ok(&["workers"]);
    assert!(human.contains("FORWARDED") && human.contains("main"), "{human}");

    // Every pair talks, whichever threads read them.
    for (a, _) in &cs {
        for (_, eb) in &cs {
            if a.name != eb["name"].as_str().unwrap_or_default() {
                assert!(a.ping(&ip(eb), 1), "{} cannot ping {}\n{}", a.name, ip(eb), d.log());
            }
        }
    }

    // A bulk flow between two containers read by workers 1 and 2 is forwarded by those
    // workers themselves: only its first frames go through the main thread.
    let on = |w: u64| cs.iter().find(|(ns, _)| worker_of(&d, &ns.name) == w).unwrap_or_else(|| panic!("no TAP on worker {w}"));
    let ((src, _), (dst, edst)) = (on(1), on(2));
    let before = workers(&d);
    let mut server = dst.spawn(&["iperf3", "-s", "-1", "-B", &ip(edst)]);
    assert!(eventually(Duration::from_secs(5), || dst.exec_ok(&["ss", "-ltnH"]).contains(":5201")), "iperf3 server did not start");
    let out = src.exec_ok(&["iperf3", "-c", &ip(edst), "-t", "2", "-J"]);
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_str(&out).expect("iperf3 -J output");
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 1_000_000, "iperf3 moved only {bytes} bytes: {out}");
    let after = workers(&d);
    let delta = |w: usize, field: &str| after[w][field].as_u64().unwrap() - before[w][field].as_u64().unwrap();
    // The data is forwarded by worker 1, which reads the sender; the receiver's ACKs by worker
    // 2, or by worker 1 itself when it picked them up while worker 2 slept.
    let (fwd, handed) = (delta(1, "forwarded") + delta(2, "forwarded"), delta(1, "handed_over") + delta(2, "handed_over"));
    assert!(delta(1, "forwarded") >= 100 && handed * 10 < fwd, "workers forwarded {fwd}, handed over {handed}: {after:?}");
    for w in [1, 2] {
        assert_eq!(delta(w, "overload"), 0, "{after:?}");
    }

    // Counters of both ports include what the workers forwarded.
    let (ps, pd) = (port(&d, &src.name), port(&d, &dst.name));
    assert!(ps["rx_bytes"].as_u64().unwrap() >= bytes, "sender port {ps} vs {bytes} bytes");
    assert!(pd["tx_bytes"].as_u64().unwrap() >= bytes, "receiver port {pd} vs {bytes} bytes");
    assert!(pd["drops"].get("overload").is_none(), "{pd}");
}

#[test]
fn a_moved_mac_and_a_detach_reach_every_worker() {
    let d = Daemon::start_with(&["--workers", "3"]);
    let cs = four_containers(&d, "10.75.0.0/24", "vt-m");
    let by_worker = |w: u64| cs.iter().position(|(ns, _)| worker_of(&d, &ns.name) == w).unwrap();
    let (pinger, target) = (by_worker(1), by_worker(2));
    let mover = (0..4).find(|&i| i != pinger && i != target).unwrap();
    let (pns, _) = &cs[pinger];
    let (tns, tep) = &cs[target];
    let (mns, _) = &cs[mover];
    // The pinger's worker holds a grant for the target now.
    assert!(pns.ping(&ip(tep), 3), "{}", d.log());

    // The target's MAC shows up on another port: frames for it must follow at once, although
    // the pinger's worker had been forwarding them itself.
    // (The mover only takes the MAC: claiming the target's address too would be spoofing, which
    // the switch drops. So it does not answer; the frames are counted where they arrive.)
    let mac = tep["mac"].as_str().unwrap();
    tns.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    mns.exec_ok(&["ip", "link", "set", "eth0", "address", mac]);
    // Any frame from the mover teaches the switch where the MAC is now.
    let _ = mns.exec(&["ping", "-c", "1", "-W", "1", "10.75.0.1"]);
    let moved = eventually(Duration::from_secs(5), || {
        let fdb = d.ctl_json(&["fdb", "show", "n1"]);
        fdb.as_array().unwrap().iter().any(|r| r["mac"] == mac && r["port"] == mns.name.as_str())
    });
    assert!(moved, "MAC not moved: {}", d.ctl_ok(&["fdb", "show"]));
    let tx = |name: &str| port(&d, name)["tx_packets"].as_u64().unwrap();
    let to_mover = tx(&mns.name);
    let _ = pns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", &ip(tep)]);
    assert!(tx(&mns.name) >= to_mover + 3, "frames did not follow the moved MAC\n{}", d.log());

    // Detaching a TAP that a worker reads, while it floods another container, removes the
    // interface right away, and the others keep talking.
    let pid = by_worker(1);
    let (gone, _) = &cs[pid];
    let others: Vec<&(Netns, Value)> = cs.iter().enumerate().filter(|&(i, _)| i != pid && i != target).map(|(_, c)| c).collect();
    let mut flood = gone.spawn(&["ping", "-f", "-w", "3", &ip(&others[0].1)]);
    std::thread::sleep(Duration::from_millis(300));
    d.ctl_ok(&["detach", "n1", &gone.name]);
    assert!(!gone.links().contains(&"eth0".to_string()), "TAP still in {}: {:?}", gone.name, gone.links());
    let _ = flood.kill();
    let _ = flood.wait();
    assert!(others[0].0.ping(&ip(&others[1].1), 2), "{}", d.log());
    let ws = workers(&d);
    assert_eq!(ws.iter().map(|w| w["ports"].as_u64().unwrap()).sum::<u64>(), 3, "{ws:?}");
}

/// Round trips between two containers read by different threads: the thread that wrote the
/// request reads the reply itself while the other sleeps (both ways), the other is not woken
/// for it, and nothing arrives twice, out of order or not at all.
#[test]
fn replies_are_picked_up_by_the_thread_that_wrote_the_request() {
    let d = Daemon::start_with(&["--workers", "2"]);
    d.network("n1", "10.76.0.0/24");
    let a = Netns::new("vt-pa");
    let ea = d.attach("n1", &a);
    let b = Netns::new("vt-pb");
    let eb = d.attach("n1", &b);
    assert_ne!(worker_of(&d, &a.name), worker_of(&d, &b.name), "{:?}", workers(&d));
    let picked = |w: &[Value], k: usize| w[k]["picked_up"].as_u64().unwrap();
    let wakeups = |w: &[Value], k: usize| w[k]["wakeups"].as_u64().unwrap();
    for (from, dest, to, label) in [(&a, &b, &eb, "a -> b"), (&b, &a, &ea, "b -> a")] {
        assert!(from.ping(&ip(to), 1), "{}", d.log());
        let before = workers(&d);
        // 40 round trips 50 ms apart: both threads sleep between them.
        let out = from.exec(&["ping", "-c", "40", "-i", "0.05", "-W", "1", &ip(to)]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(" 0% packet loss") && !text.contains("DUP!"), "{label}: {text}");
        let seqs: Vec<u32> =
            text.lines().filter_map(|l| l.split("icmp_seq=").nth(1)).filter_map(|r| r.split_whitespace().next()?.parse().ok()).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<u32>>(), "{label}: replies out of order: {text}");
        let after = workers(&d);
        // The thread that reads the pinger wrote each request; the reply waited in the other
        // thread's TAP and most of the time that thread slept.
        let writer = worker_of(&d, &from.name) as usize;
        let n = picked(&after, writer) - picked(&before, writer);
        assert!(n >= 10, "{label}: thread {writer} picked up {n} replies of 40: {after:?}");
        // The picker switched the TAP off in its owner's epoll meanwhile, so the owner slept on
        // (without that it woke 28 times for 40 replies in a debug build).
        let owner = worker_of(&d, &dest.name) as usize;
        let woken = wakeups(&after, owner) - wakeups(&before, owner);
        assert!(woken <= n / 4, "{label}: thread {owner} woke {woken} times for {n} replies picked up: {after:?}");
    }
}

/// Field `k` (1-based, as in proc(5)) of /proc/PID/task/TID/stat for each of a daemon's threads
/// named `datapath*`.
fn datapath_field(d: &Daemon, k: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap().flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "TID (COMM) STATE ...": fields after the command name, which may hold spaces.
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        if !head.contains("(datapath") {
            continue;
        }
        out.push(rest.split_whitespace().nth(k - 3).and_then(|n| n.parse().ok()).expect("stat field"));
    }
    out
}

/// Nice values of a daemon's datapath threads.
fn datapath_nice(d: &Daemon) -> Vec<i64> {
    datapath_field(d, 19)
}

/// Scheduling policy (0 normal, 1 SCHED_FIFO) and real-time priority of each datapath thread.
fn datapath_policy(d: &Daemon) -> Vec<(i64, i64)> {
    datapath_field(d, 41).into_iter().zip(datapath_field(d, 40)).collect()
}

/// Busy loops, one per CPU, until dropped.
struct Burn(Vec<std::process::Child>);

impl Burn {
    fn start() -> Burn {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spawn = || std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("sh");
        Burn((0..cpus).map(|_| spawn()).collect())
    }
}

impl Drop for Burn {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `--datapath-realtime`: by default (auto) the datapath threads turn SCHED_FIFO while every
/// CPU is busy and back once they calm down; `always` keeps them SCHED_FIFO, `never` normal.
/// `vswitchctl workers` and the metrics say which policy they have.
#[test]
fn datapath_threads_go_realtime_while_the_cpus_are_busy() {
    let auto = Daemon::start_with(&["--workers", "2"]);
    let never = Daemon::start_with(&["--workers", "2", "--datapath-realtime", "never"]);
    let always = Daemon::start_with(&["--workers", "2", "--datapath-realtime", "always"]);
    let fifo = vec![(1, 1), (1, 1)];
    let normal = vec![(0, 0), (0, 0)];
    assert!(eventually(Duration::from_secs(5), || datapath_policy(&always) == fifo), "{:?}", datapath_policy(&always));
    {
        let _burn = Burn::start();
        assert!(eventually(Duration::from_secs(10), || datapath_policy(&auto) == fifo), "{:?} {}", datapath_policy(&auto), auto.log());
        assert!(workers(&auto).iter().all(|w| w["realtime"] == true), "{:?}", workers(&auto));
        let metrics = testbed::run_ok("curl", &["-sSf", "--unix-socket", auto.socket.to_str().unwrap(), "http://localhost/metrics"]);
        assert!(
            metrics.lines().any(|l| l.starts_with("vswitch_worker_realtime{") && l.contains("worker=\"1\"") && l.ends_with(" 1")),
            "{metrics}"
        );
        assert_eq!(datapath_policy(&never), normal);
    }
    // Back to normal after half a second of calm (other tests may keep the CPUs busy a while).
    assert!(eventually(Duration::from_secs(60), || datapath_policy(&auto) == normal), "{:?}", datapath_policy(&auto));
    assert!(workers(&auto).iter().all(|w| w["realtime"] == false), "{:?}", workers(&auto));
    assert_eq!(datapath_policy(&always), fifo);
    let out = std::process::Command::new(testbed::bin_dir().join("vswitchd")).args(["--datapath-realtime", "fifo"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--datapath-realtime"), "{out:?}");
}

/// The datapath threads run at --datapath-nice (-10: ahead of the containers' processes, as
/// the bridge's softirq), the daemon's other threads at 0; the default 0 leaves them alone, and
/// an out-of-range value is refused.
#[test]
fn datapath_threads_run_at_the_configured_nice() {
    let d = Daemon::start_with(&["--workers", "2", "--datapath-nice", "-10"]);
    assert_eq!(datapath_nice(&d), vec![-10, -10], "{}", d.log());
    let main = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
    assert_eq!(main.rsplit_once(") ").unwrap().1.split_whitespace().nth(16), Some("0"), "{main}");
    let plain = Daemon::start_with(&["--workers", "2"]);
    assert_eq!(datapath_nice(&plain), vec![0, 0]);
    let out = std::process::Command::new(testbed::bin_dir().join("vswitchd")).args(["--datapath-nice", "-21"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--datapath-nice"), "{out:?}");
}
