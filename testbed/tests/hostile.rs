//! What a hostile container or API client tries against vswitchd (issue 22): namespace paths
//! that are not namespaces, idle connections, log floods, ARP and neighbour spoofing, frames
//! nobody answers. Each test reproduces the attack and checks that the daemon stays correct
//! and responsive.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Daemon, Netns};

/// A FIFO, a regular file and a directory in `dir`, as `--netns` candidates.
fn not_namespaces(dir: &Path) -> Vec<(std::path::PathBuf, &'static str)> {
    let base = dir.join("notns");
    std::fs::create_dir_all(base.join("dir")).unwrap();
    let fifo = base.join("fifo");
    testbed::run_ok("mkfifo", &[&fifo.to_string_lossy()]);
    std::fs::write(base.join("file"), b"not a namespace").unwrap();
    vec![(fifo, "a fifo"), (base.join("file"), "a regular file"), (base.join("dir"), "a directory")]
}

/// `vswitchctl version` answers, and fast.
fn answers_quickly(d: &Daemon) {
    let t = Instant::now();
    d.ctl_ok(&["version"]);
    assert!(t.elapsed() < Duration::from_secs(1), "vswitchctl version took {:?}", t.elapsed());
}

#[test]
fn non_namespace_netns_paths_get_clear_errors_and_never_wedge() {
    let d = Daemon::start();
    d.network("n1", "10.93.0.0/24");
    let c1 = Netns::new("vh-a");
    for (path, kind) in not_namespaces(&d.dir) {
        let t = Instant::now();
        let out = d.ctl(&["attach", "n1", "--netns", &path.to_string_lossy(), "--name", "bad"]);
        assert!(t.elapsed() < Duration::from_secs(5), "attach of {kind} took {:?}", t.elapsed());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind}: {err}");
        assert!(err.contains("not a network namespace") && err.contains(kind), "{kind}: {err}");
        answers_quickly(&d);
    }
    // Nothing was left behind, and a real attach goes on.
    let eps = d.ctl_json(&["network", "inspect", "n1"])["endpoint_list"].as_array().unwrap().clone();
    assert!(eps.is_empty(), "a refused attach left an endpoint: {eps:?}");
    d.attach("n1", &c1);
    assert!(c1.ping("10.93.0.1", 1));
}

#[test]
fn restart_with_a_fifo_endpoint_in_the_state_file_comes_up() {
    let mut d = Daemon::start();
    d.network("n1", "10.93.1.0/24");
    let (c1, c2) = (Netns::new("vh-b"), Netns::new("vh-c"));
    d.attach("n1", &c1);
    d.attach("n1", &c2);
    d.kill9();
    // The state file now says c2's endpoint lives in a FIFO, still attaching, with the FIFO's
    // own device and inode recorded: what a crash during such an attach used to leave.
    let (fifo, _) = not_namespaces(&d.dir).remove(0);
    let meta = std::fs::metadata(&fifo).unwrap();
    let file = d.dir.join("state/state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let ep = state["networks"][0]["endpoints"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["endpoint"]["name"] == c2.name.as_str())
        .expect("c2 in the state file");
    ep["endpoint"]["netns"] = Value::from(fifo.to_string_lossy().to_string());
    ep["netns_id"] = serde_json::json!([meta.dev(), meta.ino()]);
    ep["phase"] = Value::from("attaching");
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();

    let t = Instant::now();
    d.try_restart().unwrap_or_else(|e| panic!("restart with a FIFO endpoint: {e}"));
    assert!(t.elapsed() < Duration::from_secs(10), "restart took {:?}", t.elapsed());
    answers_quickly(&d);
    let eps = d.ctl_json(&["network", "inspect", "n1"])["endpoint_list"].as_array().unwrap().clone();
    let names: Vec<&str> = eps.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, vec![c1.name.as_str()], "the FIFO endpoint is dropped, the other restored");
    assert!(d.log().contains(&format!("dropped endpoint {}", c2.name)), "{}", d.log());
    assert!(c1.ping("10.93.1.1", 1), "traffic of the other container resumes");
    // The dropped endpoint's address is free again: c2 attaches anew (once the TAP the
    // hand-edited file no longer names is gone).
    c2.exec_ok(&["ip", "link", "del", "eth0"]);
    d.attach("n1", &c2);
    assert!(c2.ping("10.93.1.1", 1));
}

/// Lines in the daemon's log.
fn log_lines(d: &Daemon) -> usize {
    d.log().lines().count()
}

/// Open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|r| r.count()).unwrap_or(0)
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The soft open-files limit of this test process, raised (with prlimit) to at least `want`.
fn raise_own_nofile(want: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    if nums[0] < want {
        let hard = nums[1].max(want);
        testbed::run_ok("prlimit", &["--pid", &std::process::id().to_string(), &format!("--nofile={want}:{hard}")]);
    }
}

fn open_idle(socket: &Path, n: usize) -> Vec<std::os::unix::net::UnixStream> {
    (0..n).map(|i| std::os::unix::net::UnixStream::connect(socket).unwrap_or_else(|e| panic!("connection {i}: {e}"))).collect()
}

#[test]
fn idle_connections_neither_spin_the_daemon_nor_lock_out_the_api() {
    raise_own_nofile(12_000);
    let d = Daemon::start();
    let pid = d.pid();
    let before = log_lines(&d);
    let t = Instant::now();
    let idle = open_idle(&d.socket, 10_000);
    eprintln!("10 000 idle connections opened in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    for _ in 0..3 {
        answers_quickly(&d);
    }
    std::thread::sleep(Duration::from_secs(2));
    let (cpu, secs) = (cpu_ticks(pid) - cpu0, t0.elapsed().as_secs_f64());
    assert!(cpu < 50, "the daemon used {cpu} ticks of CPU in {secs:.1} s while connections sat idle");
    let fds = fd_count(pid);
    assert!(fds < 256 + 100, "the daemon holds {fds} fds for idle connections");
    let lines = log_lines(&d) - before;
    assert!(lines < 20, "{lines} log lines for 10 000 idle connections:\n{}", d.log());

    // Now out of file descriptors: the daemon's limit just above what it holds. Accept fails
    // with EMFILE: it backs off, logs once a second, makes room, and still answers.
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let limit = fd_count(pid) + 40;
    testbed::run_ok("prlimit", &["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")]);
    let before = log_lines(&d);
    let idle = open_idle(&d.socket, 2_000);
    std::thread::sleep(Duration::from_millis(1000));
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    answers_quickly(&d);
    std::thread::sleep(Duration::from_secs(2));
    answers_quickly(&d);
    let cpu = cpu_ticks(pid) - cpu0;
    assert!(cpu < 50, "the daemon used {cpu} ticks of CPU in {:?} at its open-files limit", t0.elapsed());
    let lines = log_lines(&d) - before;
    assert!(lines < 20, "{lines} log lines at the open-files limit:\n{}", d.log());
    assert!(fd_count(pid) <= limit);
    drop(idle);
}

#[test]
fn slow_requests_time_out_and_the_prefix_needs_its_slash() {
    use std::io::{Read, Write};
    let d = Daemon::start();
    // A body declared and never sent: answered (and closed) within the body timeout.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(t.elapsed() < Duration::from_secs(15), "a body that never came held the connection {:?}", t.elapsed());
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // Headers never finished: closed within the header timeout.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(t.elapsed() < Duration::from_secs(15), "unfinished headers held the connection {:?}", t.elapsed());
    answers_quickly(&d);

    assert_eq!(d.api("GET", "/v1version", None).0, 404);
    assert_eq!(d.api("GET", "/v1/version", None).0, 200);
    assert_eq!(d.api("GET", "/v1", None).0, 404);
}

/// Sends `count` DNS queries for `a.b` whose EDNS option is cut short (hickory-proto warns about
/// each, dumping its bytes), from
/// inside `ns`, about 25 000 a second.
const MALFORMED_EDNS: &str = r#"
import socket, struct, sys, time
server, count = sys.argv[1], int(sys.argv[2])
# The option claims the whole OPT data (204 bytes) but only 200 follow its header.
opt = struct.pack(">HH", 10, 204) + b"x" * 200
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
sent = 0
while sent < count:
    q = struct.pack(">HHHHHH", sent & 0xffff, 0x0100, 1, 0, 0, 1) + b"\x01a\x01b\x00\x00\x01\x00\x01"
    q += b"\x00" + struct.pack(">HHIH", 41, 4096, 0, len(opt)) + opt
    try:
        s.sendto(q, (server, 53))
        sent += 1
    except OSError:
        time.sleep(0.0005)
    if sent % 32 == 0:
        time.sleep(0.001)  # paced, so the TAP's queue does not drop most of them
print(sent)
"#;

#[test]
fn malformed_edns_queries_do_not_flood_the_log() {
    let d = Daemon::start();
    d.network("n1", "10.93.2.0/24");
    let c1 = Netns::new("vh-d");
    d.attach("n1", &c1);
    let before = log_lines(&d);
    let queries0 = d.ctl_json(&["dns", "stats"])["queries"].as_u64().unwrap();
    c1.exec_ok(&["python3", "-c", MALFORMED_EDNS, "10.93.2.1", "100000"]);
    // Let the datapath drain what is queued.
    let mut last = 0;
    testbed::eventually(Duration::from_secs(10), || {
        let q = d.ctl_json(&["dns", "stats"])["queries"].as_u64().unwrap();
        std::mem::replace(&mut last, q) == q
    });
    let reached = last - queries0;
    let lines = log_lines(&d) - before;
    assert!(lines < 20, "{reached} malformed queries added {lines} log lines:\n{}", &d.log()[..d.log().len().min(4000)]);
    // (Most of them: the pacing keeps the TAP's queue from dropping many.)
    assert!(reached > 50_000, "only {reached} malformed queries reached the gateway");
    answers_quickly(&d);
}

/// Sends raw Ethernet frames (hex strings) out of `eth0` of the namespace it runs in.
const SEND_FRAMES: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    for h in sys.argv[1:]:
        s.send(bytes.fromhex(h))
"#;

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A broadcast ARP reply from `mac`: "`ip` is at `mac`".
fn arp_reply(mac: &[u8], ip: std::net::Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(mac);
    f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend(mac);
    f.extend(ip.octets());
    f.extend([0xff; 6]);
    f.extend(ip.octets());
    f
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An unsolicited neighbour advertisement (override) from `mac` at `src` to all nodes:
/// "`target` is at `mac`", with a valid checksum.
fn neighbour_advert(mac: &[u8], src: std::net::Ipv6Addr, target: std::net::Ipv6Addr) -> Vec<u8> {
    let dst: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend(target.octets());
    icmp.extend([2, 1]); // target link-layer address option
    icmp.extend(mac);
    let mut pseudo = Vec::new();
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.extend((icmp.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, 58]);
    pseudo.extend(&icmp);
    icmp[2..4].copy_from_slice(&csum(&pseudo).to_be_bytes());
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend(mac);
    f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend((icmp.len() as u16).to_be_bytes());
    f.extend([58, 255]);
    f.extend(src.octets());
    f.extend(dst.octets());
    f.extend(icmp);
    f
}

/// The link-layer address `ns` has for `ip` (`None`: no entry).
fn neighbour(ns: &Netns, ip: &str) -> Option<String> {
    let v: Value = serde_json::from_str(&ns.exec_ok(&["ip", "-j", "neigh", "show", ip])).unwrap();
    v.as_array()?.first()?.get("lladdr")?.as_str().map(String::from)
}

fn port_drops(d: &Daemon, name: &str) -> Value {
    let ports = d.ctl_json(&["port", "ls"]);
    let p = ports.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no port {name}: {ports}"));
    p["drops"].clone()
}

#[test]
fn spoofed_arp_and_neighbour_adverts_reach_no_one_and_are_counted() {
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "n1", "--subnet", "10.93.4.0/24", "--subnet6", "fd00:93:4::/64"]);
    let net = d.ctl_json(&["network", "inspect", "n1"]);
    let gw_mac = net["gateway_mac"].as_str().unwrap().to_string();
    let gw6 = net["gateway6"].as_str().unwrap().to_string();
    let (attacker, victim) = (Netns::new("vh-e"), Netns::new("vh-f"));
    let ea = d.attach("n1", &attacker);
    let ev = d.attach("n1", &victim);
    let bad_mac = mac_bytes(ea["mac"].as_str().unwrap());
    // The victim knows the gateway, over IPv4 and IPv6, and the attacker.
    assert!(victim.ping("10.93.4.1", 1));
    assert!(victim.exec(&["ping", "-6", "-c", "1", "-W", "2", &gw6]).status.success(), "ping6 to the gateway");
    assert!(victim.ping(ea["ip"].as_str().unwrap(), 1));
    assert_eq!(neighbour(&victim, "10.93.4.1").as_deref(), Some(gw_mac.as_str()));
    assert_eq!(neighbour(&victim, &gw6).as_deref(), Some(gw_mac.as_str()));
    // Past the kernel's locktime (1 s), an ARP reply would replace the entry.
    std::thread::sleep(Duration::from_millis(1200));

    let own6: std::net::Ipv6Addr = ea["ip6"].as_str().unwrap().parse().unwrap();
    let frames = [
        arp_reply(&bad_mac, "10.93.4.1".parse().unwrap()),
        arp_reply(&bad_mac, ev["ip"].as_str().unwrap().parse().unwrap()),
        neighbour_advert(&bad_mac, own6, gw6.parse().unwrap()),
    ];
    let args: Vec<String> = frames.iter().map(|f| hex(f)).collect();
    let mut cmd = vec!["python3", "-c", SEND_FRAMES];
    cmd.extend(args.iter().map(String::as_str));
    attacker.exec_ok(&cmd);
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(neighbour(&victim, "10.93.4.1").as_deref(), Some(gw_mac.as_str()), "the victim believed the ARP spoof");
    assert_eq!(neighbour(&victim, &gw6).as_deref(), Some(gw_mac.as_str()), "the victim believed the NA spoof");
    let drops = port_drops(&d, &attacker.name);
    assert_eq!(drops["arp_spoof"], 6, "{drops}");
    assert_eq!(drops["nd_spoof"], 3, "{drops}");
    // Ordinary neighbour traffic still works both ways.
    assert!(victim.ping(ea["ip"].as_str().unwrap(), 1));
    assert!(attacker.exec(&["ping", "-6", "-c", "1", "-W", "2", ev["ip6"].as_str().unwrap()]).status.success());
    assert!(port_drops(&d, &victim.name).get("arp_spoof").is_none());
}

#[test]
fn frames_to_the_gateway_that_it_does_not_handle_are_counted() {
    let d = Daemon::start();
    d.network("n1", "10.93.5.0/24");
    let gw_mac = mac_bytes(d.ctl_json(&["network", "inspect", "n1"])["gateway_mac"].as_str().unwrap());
    let c1 = Netns::new("vh-g");
    let e1 = d.attach("n1", &c1);
    let mac = mac_bytes(e1["mac"].as_str().unwrap());
    // Two non-IP EtherTypes (an IPX-ish 0x8137 and LLDP 0x88cc) to the gateway's MAC.
    let mut frames = Vec::new();
    for ethertype in [[0x81, 0x37], [0x88, 0xcc]] {
        let mut f = gw_mac.clone();
        f.extend(&mac);
        f.extend(ethertype);
        f.extend([0u8; 46]);
        frames.push(hex(&f));
    }
    let mut cmd = vec!["python3", "-c", SEND_FRAMES];
    cmd.extend(frames.iter().map(String::as_str));
    c1.exec_ok(&cmd);
    std::thread::sleep(Duration::from_millis(300));
    let drops = port_drops(&d, &c1.name);
    assert_eq!(drops["unsupported"], 6, "{drops}");
}
