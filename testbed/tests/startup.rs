//! What a newcomer hits at start (issue 14): a second vswitchd on the state directory or the
//! socket of a running one is refused before it touches anything, with one clear message; a
//! misspelled `--log-level` or `--workers 0` is refused; the log has no colour codes when it
//! is not a terminal; `--netns NAME` means `/run/netns/NAME`.

use std::path::Path;
use std::process::{Command, Output};

use testbed::{bin_dir, unique, Daemon, Netns, User};

/// vswitchd with `args` (and no upstream), to be refused at start: its output, after at most
/// 20 s (it must not come up).
fn vswitchd_refused(cmd: Command, args: &[&str]) -> Output {
    let mut cmd = cmd;
    cmd.args(["--dns-upstream", "none"]).args(args).env_remove("VSWITCH_SOCKET").env_remove("VSWITCH_WORKERS");
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn vswitchd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vswitchd {args:?} did not exit: it should have been refused at start");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn second_daemon_on_the_same_state_dir_is_refused() {
    let d = Daemon::start();
    d.network("lk1", "10.73.0.0/24");
    let state_dir = d.dir.join("state");
    let state = state_dir.join("state.json");
    let before = read(&state);
    let before_listing = std::fs::read_dir(&state_dir).unwrap().count();

    let other_sock = d.dir.join("other.sock");
    let out = vswitchd_refused(
        Command::new(bin_dir().join("vswitchd")),
        &["--socket", other_sock.to_str().unwrap(), "--state-dir", state_dir.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{out:?}");
    let expect = format!("another vswitchd (pid {}) holds the state directory {}", d.pid(), state_dir.display());
    assert!(err.contains(&expect), "{err}");
    assert_eq!(err.matches(&expect).count(), 1, "printed more than once: {err}");
    assert!(!other_sock.exists(), "the refused daemon made its socket");
    assert_eq!(read(&state), before, "state.json changed");
    assert_eq!(std::fs::read_dir(&state_dir).unwrap().count(), before_listing, "files appeared in the state directory");
    // The first daemon is untouched.
    assert_eq!(d.ctl_json(&["network", "ls"])[0]["name"], "lk1");
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let d = Daemon::start();
    d.network("lk2", "10.73.1.0/24");
    let state = d.dir.join("state/state.json");
    let before = read(&state);

    let other_state = d.dir.join("other-state");
    let out = vswitchd_refused(
        Command::new(bin_dir().join("vswitchd")),
        &["--socket", d.socket.to_str().unwrap(), "--state-dir", other_state.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{out:?}");
    let expect = format!("another vswitchd is already listening on {}", d.socket.display());
    assert_eq!(err.matches(&expect).count(), 1, "{err}");
    assert!(!other_state.exists(), "the refused daemon made its state directory");
    assert_eq!(read(&state), before, "state.json changed");
    assert_eq!(d.ctl_json(&["network", "ls"])[0]["name"], "lk2");
}

#[test]
fn second_rootless_daemon_of_a_user_is_refused() {
    if !testbed::userns_allowed() {
        return;
    }
    let user = User::system("vswitch-test");
    let d = Daemon::start_rootless(&user, &[]);
    d.ctl_ok(&["network", "create", "lk3", "--subnet", "10.73.2.0/24"]);
    let state_dir = d.dir.join("data/vswitch");
    let before = read(&state_dir.join("state.json"));

    // Same user, same XDG directories (so the same state directory), another socket.
    let mut cmd = user.command(bin_dir().join("vswitchd"));
    cmd.env("XDG_RUNTIME_DIR", d.dir.join("run")).env("XDG_DATA_HOME", d.dir.join("data"));
    let other_sock = d.dir.join("run/other.sock");
    let out = vswitchd_refused(cmd, &["--socket", other_sock.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{out:?}");
    let expect = format!("another vswitchd (pid {}) holds the state directory {}", d.pid(), state_dir.display());
    assert_eq!(err.matches(&expect).count(), 1, "{err}");
    assert_eq!(read(&state_dir.join("state.json")), before, "state.json changed");
    assert!(!other_sock.exists());
}

#[test]
fn misspelled_log_level_and_zero_workers_are_refused() {
    let dir = std::env::temp_dir().join(unique("vswitch-startup-"));
    let (sock, state) = (dir.join("s.sock"), dir.join("state"));
    let base = ["--socket", sock.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    for level in ["warning", "debugg", "vswitch=debugg,info", "vswitch"] {
        let out = vswitchd_refused(Command::new(bin_dir().join("vswitchd")), &[&base[..], &["--log-level", level]].concat());
        let err = stderr(&out);
        assert!(!out.status.success(), "--log-level {level}: {out:?}");
        assert!(err.contains("error, warn, info, debug, trace, off"), "--log-level {level}: {err}");
    }
    for workers in ["0", "65"] {
        let out = vswitchd_refused(Command::new(bin_dir().join("vswitchd")), &[&base[..], &["--workers", workers]].concat());
        assert!(!out.status.success(), "--workers {workers}: {out:?}");
        assert!(stderr(&out).contains("--workers"), "{out:?}");
        assert!(stderr(&out).contains("1..=64"), "{out:?}");
    }
    assert!(!dir.exists(), "a refused daemon made its directories");
    // Full filter directives still pass: this one gets as far as the socket of a running daemon.
    let d = Daemon::start();
    let out = vswitchd_refused(
        Command::new(bin_dir().join("vswitchd")),
        &["--socket", d.socket.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--log-level", "vswitch=trace,WARN"],
    );
    assert!(stderr(&out).contains("another vswitchd is already listening"), "{out:?}");
}

#[test]
fn log_to_a_file_has_no_colour_codes() {
    let d = Daemon::start();
    d.network("col", "10.73.3.0/24");
    let log = d.log();
    assert!(log.contains("vswitchd ready"), "{log}");
    assert!(!log.contains("\x1b["), "escape codes in a log that is no terminal: {log:?}");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let d = Daemon::start_with(&["--log-format", "json"]);
    d.network("lfj", "10.73.5.0/24");
    // An attach that fails logs a warning with fields of its own.
    let _ = d.ctl(&["attach", "lfj", "--netns", "/nonexistent/netns"]);
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log at all");
    let mut ready = false;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(), "{line}");
        ready |= v["message"].as_str().is_some_and(|m| m.contains("vswitchd ready"));
    }
    assert!(ready, "no `vswitchd ready` event: {log}");
    let out = vswitchd_refused(Command::new(bin_dir().join("vswitchd")), &["--log-format", "xml"]);
    assert!(!out.status.success() && stderr(&out).contains("text, json"), "{out:?}");
}

#[test]
fn bare_netns_name_is_under_run_netns() {
    let d = Daemon::start();
    d.network("bn", "10.73.4.0/24");
    let c = Netns::new("vbn");
    // The bare name, from a directory where no file of that name exists.
    let ctl = |args: &[&str]| {
        Command::new(bin_dir().join("vswitchctl")).arg("--socket").arg(&d.socket).args(args).current_dir("/").output().unwrap()
    };
    let out = ctl(&["--json", "attach", "bn", "--netns", &c.name]);
    assert!(out.status.success(), "{out:?}");
    let ep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ep["netns"], format!("/run/netns/{}", c.name));
    assert_eq!(ep["name"], c.name.as_str());
    assert!(c.links().iter().any(|l| l == "eth0"));

    let missing = unique("vbn-none");
    let out = ctl(&["attach", "bn", "--netns", &missing]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains(&format!("/run/netns/{missing}")), "{err}");
    assert!(!err.contains(&format!("//{missing}")), "{err}");
}
