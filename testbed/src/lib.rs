//! Harness for the root integration tests: a vswitchd of the test's own, throwaway network
//! namespaces, and the real tools (ping, iperf3, tcpdump, curl) run inside them.
//!
//! Everything a test makes is undone by `Drop`, so a failing assertion still tears down.
//! The binaries come from the same `target/` directory as the test executable: build the
//! workspace first (`testbed/run-tests.sh` does).
#![forbid(unsafe_code)]

pub mod peers;
pub mod runtimes;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process: `PREFIX<pid>-<n>`, short enough for a netns.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}-{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed))
}

/// The directory holding `vswitchd` and `vswitchctl`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test: target/<profile>/deps/<test> -> target/<profile>; a binary of this crate (a
    // benchmark driver): target/<profile>/<bin> -> target/<profile>.
    let parent = exe.parent().expect("target dir");
    let dir = if parent.ends_with("deps") { parent.parent().expect("target dir") } else { parent }.to_path_buf();
    assert!(
        dir.join("vswitchd").exists() && dir.join("vswitchctl").exists(),
        "vswitchd/vswitchctl not built in {}: run `cargo build --workspace` first",
        dir.display()
    );
    dir
}

/// True when the suite runs with `VSWITCH_TEST_OFFLOADS=off`.
pub fn offloads_off() -> bool {
    std::env::var("VSWITCH_TEST_OFFLOADS").is_ok_and(|v| v == "off")
}

/// Fails the test unless it runs as root (the root tests need namespaces and TAPs).
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(String::from)));
    assert_eq!(uid.as_deref(), Some("0"), "root integration tests must run as root (testbed/run-tests.sh)");
}

/// For rootless tests: requires root (the test makes the user), then says whether this machine
/// lets unprivileged users make user namespaces (when not, prints why the test is skipped).
pub fn userns_allowed() -> bool {
    require_root();
    let sysctl = |name: &str| std::fs::read_to_string(format!("/proc/sys/{name}")).ok().map(|s| s.trim().to_string());
    if sysctl("kernel/unprivileged_userns_clone").as_deref() == Some("0") || sysctl("user/max_user_namespaces").as_deref() == Some("0") {
        println!("note: skipping rootless test: unprivileged user namespaces are disabled on this machine");
        return false;
    }
    true
}

/// A vswitchd started for one test, with its own socket and state directory.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    args: Vec<String>,
    /// Run inside this network namespace (a "host" of a multi-host testbed).
    netns: Option<String>,
    /// Run as this user, rootless (see [`Daemon::start_rootless`]).
    user: Option<User>,
    /// Enter `netns` with `nsenter --net` only (see [`Daemon::start_netns_only`]).
    netns_only: bool,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Daemon {
        require_root();
        let dir = std::env::temp_dir().join(unique("vswitch-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vswitchd.sock");
        let mut d = Daemon {
            child: None,
            dir,
            socket,
            args: args.iter().map(|a| a.to_string()).collect(),
            netns: None,
            user: None,
            netns_only: false,
        };
        d.spawn().unwrap_or_else(|e| panic!("{e}"));
        d
    }

    /// A vswitchd running inside the network namespace `host` (one host of a multi-host
    /// testbed); its control socket is on the shared filesystem as usual.
    pub fn start_in(host: &Netns, args: &[&str]) -> Daemon {
        require_root();
        let dir = std::env::temp_dir().join(unique("vswitch-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vswitchd.sock");
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut d = Daemon { child: None, dir, socket, args, netns: Some(host.name.clone()), user: None, netns_only: false };
        d.spawn().unwrap_or_else(|e| panic!("{e}"));
        d
    }

    /// A vswitchd inside the network namespace `host`, entered with `nsenter --net` only: it
    /// shares the host's mount namespace, so it sees what another process there mounts later
    /// (dockerd's sandboxes under its exec-root), which `ip netns exec`'s private mount
    /// namespace would not.
    pub fn start_netns_only(host: &Netns, args: &[&str]) -> Daemon {
        require_root();
        let dir = std::env::temp_dir().join(unique("vswitch-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vswitchd.sock");
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut d = Daemon { child: None, dir, socket, args, netns: Some(host.name.clone()), user: None, netns_only: true };
        d.spawn().unwrap_or_else(|e| panic!("{e}"));
        d
    }

    /// A vswitchd run rootless as `user` (made with [`User::system`]) through `setpriv`, with a
    /// private `XDG_RUNTIME_DIR` (`DIR/run`, 0700) and `XDG_DATA_HOME` (`DIR/data`) owned by
    /// the user, so the socket and the state are at their rootless defaults
    /// (`DIR/run/vswitch/vswitchd.sock`, `DIR/data/vswitch`). vswitchctl runs as the user too.
    pub fn start_rootless(user: &User, args: &[&str]) -> Daemon {
        Daemon::try_start_rootless(user, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::start_rootless`] inside the network namespace `host` (a "host" of a testbed
    /// with a loopback and neighbours of its own).
    pub fn start_rootless_in(host: &Netns, user: &User, args: &[&str]) -> Daemon {
        let mut d = Daemon::try_start_rootless_at(Some(host), user, args).unwrap_or_else(|e| panic!("{e}"));
        d.netns = Some(host.name.clone());
        d
    }

    /// [`Daemon::start_rootless`], with `Err` and the log when the daemon exits during start.
    pub fn try_start_rootless(user: &User, args: &[&str]) -> Result<Daemon, String> {
        Daemon::try_start_rootless_at(None, user, args)
    }

    fn try_start_rootless_at(host: Option<&Netns>, user: &User, args: &[&str]) -> Result<Daemon, String> {
        require_root();
        let dir = std::env::temp_dir().join(unique("vswitch-test-"));
        for sub in ["run", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        user.chown(&dir.join("run"));
        user.chown(&dir.join("data"));
        run_ok("chmod", &["0700", &dir.join("run").to_string_lossy()]);
        let socket = dir.join("run/vswitch/vswitchd.sock");
        let args = args.iter().map(|a| a.to_string()).collect();
        let netns = host.map(|h| h.name.clone());
        let mut d = Daemon { child: None, dir, socket, args, netns, user: Some(user.clone()), netns_only: false };
        d.spawn()?;
        Ok(d)
    }

    /// Rootless: the netns helper's pid from `vswitchctl version` (its `/proc/PID/ns/user`
    /// must own the containers' network namespaces).
    pub fn userns_pid(&self) -> u32 {
        let v = self.ctl_json(&["version"]);
        assert_eq!(v["rootless"], Value::Bool(true), "not rootless: {v}");
        v["userns_pid"].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or_else(|| panic!("no userns_pid: {v}"))
    }

    /// Starts vswitchd again on the same socket and state directory (after a kill or a stop).
    ///
    /// # Panics
    /// When it is still running or does not come up.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart needs a stopped daemon");
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// [`Daemon::restart`] with other arguments (e.g. without a `--userns` given at first).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// Starts vswitchd on this daemon's directory; `Err` with its log when it exits first.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.spawn()
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let _ = child.kill();
        let _ = child.wait();
    }

    fn spawn(&mut self) -> Result<(), String> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let args = args.as_slice();
        let (dir, socket) = (self.dir.clone(), self.socket.clone());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("vswitchd.log")).unwrap();
        // Never forward to the machine's own resolver: tests that forward start their own.
        let no_upstream: &[&str] = if args.contains(&"--dns-upstream") { &[] } else { &["--dns-upstream", "none"] };
        // VSWITCH_TEST_OFFLOADS=off runs every test with plain TAPs (no vnet header, no TSO).
        let offloads: &[&str] = if offloads_off() { &["--no-offloads"] } else { &[] };
        let mut cmd = match (&self.netns, &self.user) {
            (ns, Some(user)) => {
                // Rootless: as `user`, with the socket and state where the XDG variables put
                // them (no --socket, no --state-dir); inside `ns` when given.
                let mut c = match ns {
                    Some(ns) => {
                        let mut c = Command::new("ip");
                        c.args([
                            "netns",
                            "exec",
                            ns,
                            "setpriv",
                            "--reuid",
                            &user.uid.to_string(),
                            "--regid",
                            &user.gid.to_string(),
                            "--clear-groups",
                            "--",
                        ]);
                        c.arg(bin_dir().join("vswitchd"));
                        c
                    }
                    None => user.command(bin_dir().join("vswitchd")),
                };
                c.env("XDG_RUNTIME_DIR", self.dir.join("run")).env("XDG_DATA_HOME", self.dir.join("data"));
                c.env_remove("VSWITCH_SOCKET");
                c
            }
            (Some(ns), None) if self.netns_only => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(bin_dir().join("vswitchd"));
                c
            }
            (Some(ns), None) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin_dir().join("vswitchd"));
                c
            }
            (None, None) => Command::new(bin_dir().join("vswitchd")),
        };
        if self.user.is_none() {
            cmd.arg("--socket").arg(&socket).arg("--state-dir").arg(dir.join("state"));
        }
        let child = cmd
            .args(["--log-level", "debug"])
            .args(no_upstream)
            .args(offloads)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vswitchd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() || !self.answers() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("vswitchd exited during start ({status}): {}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("vswitchd did not come up: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// True when something accepts connections on the socket.
    fn answers(&self) -> bool {
        std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vswitchd.log")).unwrap_or_default()
    }

    /// Runs `vswitchctl --socket S ARGS...` (as the daemon's user when it runs rootless).
    pub fn ctl(&self, args: &[&str]) -> Output {
        let ctl = bin_dir().join("vswitchctl");
        let mut cmd = match &self.user {
            Some(user) => user.command(&ctl),
            None => Command::new(ctl),
        };
        cmd.arg("--socket").arg(&self.socket).args(args).output().expect("run vswitchctl")
    }

    /// Runs vswitchctl and returns stdout; panics with stderr and the daemon log on failure.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "vswitchctl {args:?} failed ({}): {}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `vswitchctl --json ARGS...`, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ctl_ok(&all)).expect("vswitchctl --json prints JSON")
    }

    /// A raw API call with curl over the Unix socket: (HTTP status, JSON body or Null).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "--unix-socket"]).arg(&self.socket);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        cmd.args(["-w", "\n%{http_code}", &format!("http://localhost{path}")]);
        let out = cmd.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = text.trim_end().rsplit_once('\n').unwrap_or(("", text.trim()));
        let status = status.trim().parse().unwrap_or_else(|_| panic!("curl gave no status: {text:?}"));
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon still running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("vswitchd did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates a network through vswitchctl.
    pub fn network(&self, name: &str, subnet: &str) {
        self.ctl_ok(&["network", "create", name, "--subnet", subnet]);
    }

    /// Attaches `ns` to `network` under the namespace's own name and points its resolv.conf
    /// at the network's gateway; returns the endpoint JSON.
    pub fn attach(&self, network: &str, ns: &Netns) -> Value {
        let ep = self.ctl_json(&["attach", network, "--netns", &ns.path(), "--name", &ns.name]);
        if !ns.has_resolver() {
            let gw = self.ctl_json(&["network", "inspect", network])["gateway"].as_str().unwrap().to_string();
            ns.set_resolver(&gw);
        }
        ep
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An unprivileged user for rootless tests.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// The system user `name`, made (`useradd --system`, no home, no login shell) if missing.
    pub fn system(name: &str) -> User {
        static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = MAKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = |flag: &str| {
            let out = Command::new("id").args([flag, name]).output().expect("run id");
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().ok()).flatten()
        };
        // Another test process may be adding it at the same moment (useradd locks
        // /etc/passwd): retry until the user exists.
        for _ in 0..50 {
            if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
                return User { name: name.to_string(), uid, gid };
            }
            let _ = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot create the user {name} (useradd)");
    }

    /// `setpriv --reuid UID --regid GID --clear-groups -- PROGRAM`: run as this user.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &self.uid.to_string(), "--regid", &self.gid.to_string(), "--clear-groups", "--"]);
        c.arg(program);
        c
    }

    /// Gives `path` to this user.
    pub fn chown(&self, path: &Path) {
        run_ok("chown", &[&format!("{}:{}", self.uid, self.gid), &path.to_string_lossy()]);
    }
}

/// A "container" of a rootless daemon: a process of `user` in a network namespace of its own
/// that belongs to the user namespace of the daemon's helper (`nsenter -t USERNS_PID -U
/// --preserve-credentials -- unshare -n sleep`). Killed on drop, which frees the namespace.
#[derive(Debug)]
pub struct UserContainer {
    pub name: String,
    user: User,
    child: Child,
}

impl UserContainer {
    /// A new container in the user namespace of process `userns_pid`.
    pub fn new(user: &User, userns_pid: u32, prefix: &str) -> UserContainer {
        UserContainer::start(user, userns_pid, prefix, &["-n"])
    }

    /// A new container with a user namespace of its own (mapping root to root) below the user
    /// namespace of process `userns_pid`, as a runtime that nests one would make.
    pub fn new_nested(user: &User, userns_pid: u32, prefix: &str) -> UserContainer {
        UserContainer::start(user, userns_pid, prefix, &["-U", "-r", "-n"])
    }

    fn start(user: &User, userns_pid: u32, prefix: &str, unshare: &[&str]) -> UserContainer {
        let mut cmd = user.command("nsenter");
        cmd.args(["-t", &userns_pid.to_string(), "-U", "--preserve-credentials", "--", "unshare"]);
        cmd.args(unshare).args(["sleep", "100000"]);
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn nsenter");
        let c = UserContainer { name: unique(prefix), user: user.clone(), child };
        // nsenter and unshare exec (no fork): the pid is the sleep's once its namespace differs.
        let ours = std::fs::read_link("/proc/self/ns/net").ok();
        let ready = eventually(Duration::from_secs(5), || {
            let ns = std::fs::read_link(format!("/proc/{}/ns/net", c.pid())).ok();
            ns.is_some() && ns != ours && std::fs::read_to_string(format!("/proc/{}/comm", c.pid())).is_ok_and(|s| s.trim() == "sleep")
        });
        assert!(ready, "container {} did not start in the user namespace of {userns_pid}", c.name);
        c.exec_ok(&["ip", "link", "set", "lo", "up"]);
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a command inside the container in the background, as the user.
    pub fn spawn(&self, cmd: &[&str]) -> Child {
        let mut c = self.user.command("nsenter");
        c.args(["-t", &self.pid().to_string(), "-U", "-n", "--preserve-credentials", "--"]).args(cmd);
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn nsenter")
    }

    /// Runs a command inside the container (its user and network namespaces), as the user.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut c = self.user.command("nsenter");
        c.args(["-t", &self.pid().to_string(), "-U", "-n", "--preserve-credentials", "--"]).args(cmd);
        c.output().expect("run nsenter")
    }

    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        stdout_of_success(self.exec(cmd), cmd, &self.name)
    }

    /// True when `ping -c COUNT` to `ip` gets every reply.
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        self.exec(&["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", ip]).status.success()
    }

    /// Names of the links inside the container.
    pub fn links(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.exec_ok(&["ip", "-j", "link", "show"])).unwrap();
        v.as_array().unwrap().iter().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
    }
}

impl Drop for UserContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway network namespace ("container"), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name]).args(cmd).output().expect("ip netns exec")
    }

    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        stdout_of_success(self.exec(cmd), cmd, &self.name)
    }

    /// Starts a command inside the namespace in the background.
    pub fn spawn(&self, cmd: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec (background)")
    }

    /// True when `ping -c COUNT` to `ip` gets every reply.
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        self.exec(&["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", ip]).status.success()
    }

    /// Writes `/etc/netns/NAME/resolv.conf`, which `ip netns exec` mounts over
    /// `/etc/resolv.conf`.
    pub fn set_resolver(&self, server: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), format!("nameserver {server}\noptions timeout:1 attempts:2\n")).unwrap();
    }

    fn has_resolver(&self) -> bool {
        PathBuf::from("/etc/netns").join(&self.name).join("resolv.conf").exists()
    }

    /// `dig +short` inside the namespace against its resolver; the answer lines.
    pub fn dig(&self, args: &[&str]) -> Vec<String> {
        let mut cmd = vec!["dig", "+short", "+tries=1", "+time=3"];
        cmd.extend_from_slice(args);
        let out = self.exec(&cmd);
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with(';')).map(String::from).collect()
    }

    /// Full `dig` output (for the status line).
    pub fn dig_full(&self, args: &[&str]) -> String {
        let mut cmd = vec!["dig", "+tries=1", "+time=3"];
        cmd.extend_from_slice(args);
        String::from_utf8_lossy(&self.exec(&cmd).stdout).to_string()
    }

    /// Names of the links inside the namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.exec_ok(&["ip", "-j", "link", "show"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().iter().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// A veth pair: `host` in vswitchd's (the root) namespace, `eth0` in the namespace `ns` (a
/// "LAN" or a VM behind an interface port). Deleted on drop.
#[derive(Debug)]
pub struct Lan {
    pub host: String,
    pub ns: Netns,
}

impl Lan {
    pub fn new(prefix: &str) -> Lan {
        let ns = Netns::new(prefix);
        let host = unique("vp");
        run_ok("ip", &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        run_ok("ip", &["link", "set", &host, "up"]);
        ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        Lan { host, ns }
    }

    pub fn host_link_exists(&self) -> bool {
        Command::new("ip").args(["link", "show", &self.host]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host]).output();
    }
}

/// The stdout of a command that ran in `place`; panics with its output when it failed.
fn stdout_of_success(out: Output, cmd: &[&str], place: &str) -> String {
    assert!(
        out.status.success(),
        "{cmd:?} in {place} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a host command and panics with its output on failure.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Retries `f` for up to `timeout`; true as soon as it returns true.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes sure each `(command, Debian package)` is there, installing the missing packages in
/// one `apt-get` run (waiting up to 5 minutes for another apt's lock; wireshark's setuid
/// question preseeded to "no").
pub fn ensure_commands(wanted: &[(&str, &str)]) {
    let have =
        |c: &str| Command::new("sh").args(["-c", &format!("command -v {c}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    let need: Vec<&str> = wanted.iter().filter(|(c, _)| !have(c)).map(|&(_, p)| p).collect();
    if need.is_empty() {
        return;
    }
    eprintln!("==> installing {} for this test", need.join(" "));
    let script = format!(
        "echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections; \
         apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends {}",
        need.join(" ")
    );
    // DPkg::Lock::Timeout waits for dpkg's lock only; the lists and archive locks (another
    // `apt-get update` or download, e.g. a test running beside this one) are waited for here,
    // by retrying while apt says it could not get a lock (as testbed/lib.sh's tb_apt does).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = Command::new("sh").args(["-c", &script]).output().expect("run apt-get");
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let locked =
            ["Could not get lock", "Unable to lock directory", "Unable to acquire the dpkg frontend lock"].iter().any(|m| err.contains(m));
        assert!(locked && Instant::now() < deadline, "apt-get install {need:?} failed: {err}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}
