//! Runs the built `vswitchctl` against fake daemons: a Unix socket in a temp dir that answers one
//! canned HTTP response, and sockets with nobody behind them.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("vswitchctl-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("vswitchd.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves one connection: reads one request (head and Content-Length body), answers
/// `response` verbatim, closes. Joins to the request as received.
fn serve_once(socket: &Path, response: String) -> JoinHandle<String> {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        conn.write_all(response.as_bytes()).unwrap();
        conn.flush().unwrap();
        String::from_utf8(buf).unwrap()
    })
}

fn http(status: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

fn vswitchctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vswitchctl")).arg("--socket").arg(socket).args(args).env_remove("VSWITCH_SOCKET").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

const NOT_FOUND: &str = r#"{"error":{"code":"network_not_found","message":"network net9 not found"}}"#;

#[test]
fn daemon_error_exits_1_with_its_message() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("404 Not Found", NOT_FOUND));
    let out = vswitchctl(&dir.socket(), &["network", "inspect", "net9"]);
    let request = server.join().unwrap();

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "vswitchctl: network net9 not found (network_not_found)\n");
    assert_eq!(text(&out.stdout), "");
    assert!(request.starts_with("GET /v1/networks/net9 HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains("\r\nhost: localhost\r\n"), "{request}");
}

#[test]
fn daemon_error_with_json_also_prints_the_error_on_stdout() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("404 Not Found", NOT_FOUND));
    let out = vswitchctl(&dir.socket(), &["--json", "network", "rm", "net9"]);
    let request = server.join().unwrap();

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "vswitchctl: network net9 not found (network_not_found)\n");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::from_str::<serde_json::Value>(NOT_FOUND).unwrap());
    assert!(request.starts_with("DELETE /v1/networks/net9 HTTP/1.1\r\n"), "{request}");
}

#[test]
fn garbage_error_answer_exits_1() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("500 Internal Server Error", "boom"));
    let out = vswitchctl(&dir.socket(), &["port", "ls"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "vswitchctl: unexpected answer from vswitchd (500 Internal Server Error): boom\n");
}

#[test]
fn missing_socket_exits_3() {
    let dir = TempDir::new();
    let out = vswitchctl(&dir.socket(), &["network", "ls"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!("vswitchctl: cannot reach vswitchd at {}: no such file (is vswitchd running?)\n", dir.socket().display())
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn socket_from_the_environment() {
    let dir = TempDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_vswitchctl")).args(["fdb", "stats"]).env("VSWITCH_SOCKET", dir.socket()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains(&dir.socket().display().to_string()), "{out:?}");
}

#[test]
fn nobody_listening_exits_3() {
    let dir = TempDir::new();
    drop(UnixListener::bind(dir.socket()).unwrap()); // the file stays, the listener is gone
    let out = vswitchctl(&dir.socket(), &["network", "ls"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).ends_with(": connection refused (is vswitchd running?)\n"), "{out:?}");
}

#[test]
fn daemon_hanging_up_exits_3() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), String::new());
    let out = vswitchctl(&dir.socket(), &["network", "ls"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).starts_with("vswitchctl: lost vswitchd at "), "{out:?}");
}

#[test]
fn version_prints_the_client_even_without_a_daemon() {
    let dir = TempDir::new();
    let out = vswitchctl(&dir.socket(), &["version"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), format!("vswitchctl {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn permission_denied_exits_4() {
    use std::os::unix::fs::PermissionsExt;
    if is_root() {
        eprintln!("skipped: root ignores socket permissions");
        return;
    }
    let dir = TempDir::new();
    let _listener = UnixListener::bind(dir.socket()).unwrap();
    std::fs::set_permissions(dir.socket(), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = vswitchctl(&dir.socket(), &["network", "ls"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(text(&out.stderr).contains("permission denied"), "{out:?}");
    assert!(text(&out.stderr).contains("run as root"), "{out:?}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn usage_errors_exit_2_without_contacting_the_daemon() {
    let dir = TempDir::new();
    for args in [
        &["attach", "net1"][..],
        &["attach", "net1", "--netns", "/run/netns/c1", "--pid", "1"],
        &["fdb", "add", "net1", "02:42:ac:11:00", "c1"],
        &["network", "create", "net1", "--subnet", "10.0.0.0/8", "--label", "nokey"],
        &["bogus"],
        &["dns", "upstreams", "net1", "dns.google"],
        &["dns", "upstreams", "net1", "192.0.2.53:99999"],
        &["dns", "upstreams", "net1", "--default", "192.0.2.53"],
        &["endpoint", "rename", "net1", "c1"],
    ] {
        let out = vswitchctl(&dir.socket(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!text(&out.stderr).contains("panicked"), "{out:?}");
    }
}

#[test]
fn network_ls_renders_a_table() {
    let dir = TempDir::new();
    let body = r#"[{"name":"net1","id":1,"subnet":"10.89.0.0/24","gateway":"10.89.0.1",
        "gateway_mac":"02:56:00:00:00:01","mtu":1500,"internal":false,"labels":{},"endpoints":2}]"#;
    let server = serve_once(&dir.socket(), http("200 OK", body));
    let out = vswitchctl(&dir.socket(), &["network", "ls"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "NAME  SUBNET        GATEWAY     MTU  ENDPOINTS\nnet1  10.89.0.0/24  10.89.0.1  1500          2\n");
}

#[test]
fn attach_posts_the_request_and_prints_one_line() {
    let dir = TempDir::new();
    let body = r#"{"name":"c1","network":"net1","netns":"/run/netns/c1","ifname":"eth0",
        "mac":"02:42:0a:59:00:02","ip":"10.89.0.2","prefix_len":24,"port":3,"aliases":[]}"#;
    let server = serve_once(&dir.socket(), http("201 Created", body));
    let out = vswitchctl(&dir.socket(), &["attach", "net1", "--netns", "/run/netns/c1", "--alias", "web"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "attached c1 to net1: 10.89.0.2/24 02:42:0a:59:00:02\n");

    assert!(request.starts_with("POST /v1/networks/net1/endpoints HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains("\r\ncontent-type: application/json\r\n"), "{request}");
    let (_, sent) = request.split_once("\r\n\r\n").unwrap();
    let sent: serde_json::Value = serde_json::from_str(sent).unwrap();
    assert_eq!(sent, serde_json::json!({"netns": "/run/netns/c1", "aliases": ["web"]}));
}

#[test]
fn json_success_keeps_the_daemons_key_order() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("200 OK", r#"{"version":"0.1.0","api":"v1"}"#));
    let out = vswitchctl(&dir.socket(), &["version", "--json"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The daemon's fields where they were, the client's version after them.
    assert_eq!(
        text(&out.stdout),
        format!("{{\n  \"version\": \"0.1.0\",\n  \"api\": \"v1\",\n  \"client_version\": \"{}\"\n}}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn socket_that_is_no_socket_says_so() {
    let dir = TempDir::new();
    let file = dir.0.join("not-a-socket");
    std::fs::write(&file, "root:x:0:0\n").unwrap();
    for path in [file.as_path(), dir.0.as_path()] {
        let out = vswitchctl(path, &["network", "ls"]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "vswitchctl: {} is not a socket: --socket (or $VSWITCH_SOCKET) must name the control socket of vswitchd\n",
                path.display()
            )
        );
    }
}

#[test]
fn json_port_ls_is_in_the_tables_order() {
    let port = |id: u32, name: &str, kind: &str| {
        format!(
            r#"{{"id":{id},"network":"net1","name":"{name}","kind":"{kind}","ifname":"","mac":"02:00:00:00:00:0{id}","offloads":[],
               "rx_packets":0,"rx_bytes":0,"tx_packets":0,"tx_bytes":0,"segmented":0,"coalesced":0,"drops":{{}}}}"#
        )
    };
    let body = format!("[{},{},{}]", port(3, "c2", "tap"), port(1, "gateway", "gateway"), port(2, "c1", "tap"));
    let ids = |json: &str| -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v.as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect()
    };
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("200 OK", &body));
    let out = vswitchctl(&dir.socket(), &["--json", "port", "ls"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(ids(&text(&out.stdout)), [1, 2, 3]);

    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("200 OK", &body));
    let out = vswitchctl(&dir.socket(), &["port", "ls"]);
    server.join().unwrap();
    let table_ids: Vec<u64> = text(&out.stdout).lines().skip(1).map(|l| l.split_whitespace().next().unwrap().parse().unwrap()).collect();
    assert_eq!(table_ids, [1, 2, 3]);
}

#[test]
fn bare_netns_name_means_run_netns() {
    // Run where a file of that name exists: a bare name still means /run/netns/NAME.
    let dir = TempDir::new();
    std::fs::write(dir.0.join("c1"), "").unwrap();
    let server = serve_once(&dir.socket(), http("404 Not Found", r#"{"error":{"code":"netns_not_found","message":"no such netns"}}"#));
    let out = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .arg("--socket")
        .arg(dir.socket())
        .args(["attach", "net1", "--netns", "c1"])
        .current_dir(&dir.0)
        .env_remove("VSWITCH_SOCKET")
        .output()
        .unwrap();
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(sent_body(&request), serde_json::json!({"netns": "/run/netns/c1"}));

    // A relative path (with a '/') is made absolute in the current directory.
    let server = {
        let _ = std::fs::remove_file(dir.socket());
        serve_once(&dir.socket(), http("404 Not Found", r#"{"error":{"code":"netns_not_found","message":"no such netns"}}"#))
    };
    Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .arg("--socket")
        .arg(dir.socket())
        .args(["attach", "net1", "--netns", "./c1"])
        .current_dir(&dir.0)
        .env_remove("VSWITCH_SOCKET")
        .output()
        .unwrap();
    let request = server.join().unwrap();
    assert_eq!(sent_body(&request), serde_json::json!({"netns": dir.0.join("c1").to_str().unwrap()}));
}

#[test]
fn no_content_answers_print_a_confirmation() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string());
    let out = vswitchctl(&dir.socket(), &["fdb", "del", "net1", "02:42:AC:11:00:02"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "deleted entry 02:42:ac:11:00:02 on net1\n");
    assert!(request.starts_with("DELETE /v1/fdb/net1/02:42:ac:11:00:02 HTTP/1.1\r\n"), "{request}");
}

/// The JSON body of a request as received.
fn sent_body(request: &str) -> serde_json::Value {
    let (_, sent) = request.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(sent).unwrap()
}

const ENDPOINT_C2: &str = r#"{"name":"c2","network":"net1","netns":"/run/netns/c1","ifname":"eth0",
    "mac":"02:42:0a:59:00:02","ip":"10.89.0.2","prefix_len":24,"port":3,"aliases":["web","www"]}"#;

#[test]
fn endpoint_rename_patches_the_endpoint() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("200 OK", ENDPOINT_C2));
    let out = vswitchctl(&dir.socket(), &["endpoint", "rename", "net1", "c1", "c2"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "renamed c1 to c2 on net1\n");
    assert!(request.starts_with("PATCH /v1/networks/net1/endpoints/c1 HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains("\r\ncontent-type: application/json\r\n"), "{request}");
    assert_eq!(sent_body(&request), serde_json::json!({"name": "c2"}));
}

#[test]
fn endpoint_alias_replaces_or_clears() {
    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("200 OK", ENDPOINT_C2));
    let out = vswitchctl(&dir.socket(), &["endpoint", "alias", "net1", "c2", "web", "www"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "set the aliases of c2 on net1: web, www\n");
    assert!(request.starts_with("PATCH /v1/networks/net1/endpoints/c2 HTTP/1.1\r\n"), "{request}");
    assert_eq!(sent_body(&request), serde_json::json!({"aliases": ["web", "www"]}));

    let dir = TempDir::new();
    let server = serve_once(&dir.socket(), http("200 OK", &ENDPOINT_C2.replace(r#"["web","www"]"#, "[]")));
    let out = vswitchctl(&dir.socket(), &["endpoint", "alias", "net1", "c2"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "cleared the aliases of c2 on net1\n");
    assert_eq!(sent_body(&request), serde_json::json!({"aliases": []}));
}

#[test]
fn endpoint_rename_conflict_exits_1() {
    let dir = TempDir::new();
    let err = r#"{"error":{"code":"endpoint_exists","message":"endpoint c2 already exists on network net1"}}"#;
    let server = serve_once(&dir.socket(), http("409 Conflict", err));
    let out = vswitchctl(&dir.socket(), &["endpoint", "rename", "net1", "c1", "c2"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "vswitchctl: endpoint c2 already exists on network net1 (endpoint_exists)\n");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn dns_records_renders_a_table() {
    let dir = TempDir::new();
    let body = r#"[{"network":"net1","name":"web","aliases":["www"],"ipv4":["10.89.0.3"]},
        {"network":"net1","name":"db","aliases":[],"ipv4":["10.89.0.2"]}]"#;
    let server = serve_once(&dir.socket(), http("200 OK", body));
    let out = vswitchctl(&dir.socket(), &["dns", "records", "net1"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "NETWORK  NAME  ALIASES  IPV4\nnet1     db    -        10.89.0.2\nnet1     web   www      10.89.0.3\n");
    assert!(request.starts_with("GET /v1/dns/records?network=net1 HTTP/1.1\r\n"), "{request}");
}

#[test]
fn dns_upstreams_shows_without_addresses() {
    let dir = TempDir::new();
    let body = r#"{"network":"net1","upstreams":[],"effective":[],"internal":false}"#;
    let server = serve_once(&dir.socket(), http("200 OK", body));
    let out = vswitchctl(&dir.socket(), &["dns", "upstreams", "net1"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "network:    net1\nupstreams:  (defaults)\neffective:  none: unknown names get SERVFAIL\n");
    assert!(request.starts_with("GET /v1/networks/net1/dns HTTP/1.1\r\n"), "{request}");
}

#[test]
fn dns_upstreams_puts_addresses_or_the_defaults() {
    let dir = TempDir::new();
    let body = r#"{"network":"net1","upstreams":["192.0.2.53:53","[2001:db8::53]:5353"],
        "effective":["192.0.2.53:53","[2001:db8::53]:5353"],"internal":false}"#;
    let server = serve_once(&dir.socket(), http("200 OK", body));
    let out = vswitchctl(&dir.socket(), &["dns", "upstreams", "net1", "192.0.2.53", "[2001:db8::53]:5353"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "network:    net1\n\
         upstreams:  192.0.2.53:53, [2001:db8::53]:5353\n\
         effective:  192.0.2.53:53, [2001:db8::53]:5353\n"
    );
    assert!(request.starts_with("PUT /v1/networks/net1/dns HTTP/1.1\r\n"), "{request}");
    assert_eq!(sent_body(&request), serde_json::json!({"upstreams": ["192.0.2.53", "[2001:db8::53]:5353"]}));

    let dir = TempDir::new();
    let body = r#"{"network":"net1","upstreams":[],"effective":[],"internal":true}"#;
    let server = serve_once(&dir.socket(), http("200 OK", body));
    let out = vswitchctl(&dir.socket(), &["dns", "upstreams", "net1", "--default", "--json"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "{\n  \"network\": \"net1\",\n  \"upstreams\": [],\n  \"effective\": [],\n  \"internal\": true\n}\n");
    assert!(request.starts_with("PUT /v1/networks/net1/dns HTTP/1.1\r\n"), "{request}");
    assert_eq!(sent_body(&request), serde_json::json!({"upstreams": []}));
}

#[test]
fn dns_stats_prints_counters() {
    let dir = TempDir::new();
    let body = r#"{"queries":7,"answers":5,"forwarded":2,"forward_answers":1,"failures":1,"dropped":0}"#;
    let server = serve_once(&dir.socket(), http("200 OK", body));
    let out = vswitchctl(&dir.socket(), &["dns", "stats"]);
    let request = server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "queries:          7\nanswers:          5\nforwarded:        2\nforward_answers:  1\nfailures:         1\ndropped:          0\n"
    );
    assert!(request.starts_with("GET /v1/dns/stats HTTP/1.1\r\n"), "{request}");
}
