//! Real container runtimes for the CNI tests: rootful podman (CNI backend) and containerd's
//! `ctr run --cni`, each with state of its own so a test never touches the machine's podman or
//! containerd, and everything it made is removed on drop.
//!
//! The packages install from Debian on first use ([`install`], once per test process). No image
//! registry is reachable: the image is `localhost/bb:latest`, a busybox-static rootfs built
//! locally (`../shared/RUNTIMES.md` has the recipe and the gotchas this follows: runc, not crun;
//! explicit ulimits; the cgroupfs manager; `network_backend = "cni"`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::{bin_dir, eventually, unique, User};

/// The local busybox image, in every [`Podman`] and [`Containerd`] made here.
pub const IMAGE: &str = "localhost/bb:latest";

/// The Debian packages the runtime tests use (busybox-static, not busybox: the image needs a
/// static binary).
const PACKAGES: &[&str] =
    &["podman", "runc", "conmon", "containernetworking-plugins", "containerd", "busybox-static", "uidmap", "slirp4netns"];

/// Installs podman, runc, conmon, the reference CNI plugins, containerd, busybox-static,
/// uidmap and slirp4netns (rootless podman's "rootless-netns" needs it) from Debian when any is missing: once per test process; later calls return at once.
///
/// # Panics
/// When apt-get fails (the message has its output).
pub fn install() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = DONE.get_or_init(|| apt_install(PACKAGES)) {
        panic!("{e}");
    }
}

/// Installs docker.io (dockerd 20.10, its containerd and runc) and busybox-static from Debian
/// when missing: once per test process.
///
/// # Panics
/// When apt-get fails (the message has its output).
pub fn install_docker() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = DONE.get_or_init(|| apt_install(&["docker.io", "busybox-static"])) {
        panic!("{e}");
    }
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    let out = Command::new("dpkg-query").args(["-W", "-f", "${Package} ${Status}\\n"]).args(packages).output();
    let listed = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let installed =
        |p: &str| listed.lines().any(|l| l.starts_with(&format!("{p} ")) && l.ends_with(" installed") && !l.ends_with("not-installed"));
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing {}", missing.join(" "));
    let apt = |args: &[&str]| -> Result<(), String> {
        // DPkg::Lock::Timeout waits for another apt-get or dpkg; the lists lock is retried.
        for _ in 0..100 {
            let out = Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["-o", "DPkg::Lock::Timeout=300"])
                .args(args)
                .output()
                .map_err(|e| format!("cannot run apt-get: {e}"))?;
            if out.status.success() {
                return Ok(());
            }
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if !err.contains("Could not get lock") && !err.contains("Unable to lock") {
                return Err(format!("apt-get {args:?} failed: {err}"));
            }
            std::thread::sleep(Duration::from_secs(3));
        }
        Err(format!("apt-get {args:?}: the apt lock stayed taken"))
    };
    apt(&["-qq", "update"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

/// The `vswitch-cni` plugin next to vswitchd and vswitchctl, if it is built.
pub fn vswitch_cni() -> Option<PathBuf> {
    let p = bin_dir().join("vswitch-cni");
    p.exists().then_some(p)
}

/// A containers.conf for a podman of the tests: CNI backend with `plugins` first, conflists in
/// `dir/cni`, runc, cgroupfs, explicit ulimits, no port reservation (vswitchd binds published
/// ports itself), plus `engine_extra` lines under `[engine]`.
fn containers_conf(plugins: &Path, dir: &Path, engine_extra: &str) -> String {
    format!(
        r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}", "/usr/lib/cni"]
network_config_dir = "{d}/cni"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
enable_port_reservation = false
{engine_extra}"#,
        plugins = plugins.display(),
        d = dir.display()
    )
}

/// The conflist of a vswitch network, as `vswitchctl cni conflist NETWORK --socket SOCK` prints it.
pub fn vswitch_conflist(network: &str, socket: &Path) -> String {
    let out = Command::new(bin_dir().join("vswitchctl"))
        .args(["cni", "conflist", network, "--socket"])
        .arg(socket)
        .output()
        .expect("run vswitchctl");
    assert!(out.status.success(), "vswitchctl cni conflist: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("vswitchctl cni conflist printed no JSON ({e}): {text}"));
    v.to_string()
}

/// A conflist for Debian's reference plugins: `bridge` (on the bridge `BRIDGE`, the gateway
/// on it, no masquerade) with `host-local` addresses from `subnet`, and `dns` naming
/// `nameserver` in the result when given.
pub fn bridge_conflist(name: &str, bridge: &str, subnet: &str, nameserver: Option<&str>) -> String {
    let mut plugin = serde_json::json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}
    });
    if let Some(ns) = nameserver {
        plugin["dns"] = serde_json::json!({"nameservers": [ns]});
    }
    serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}).to_string()
}

/// Writes the busybox rootfs of the RUNTIMES.md recipe under `dir` and tars it to `dir/bb.tar`.
fn busybox_tar(dir: &Path) -> PathBuf {
    rootfs_tar(dir, &[])
}

/// [`busybox_tar`] plus the host's `programs`, each with the shared libraries `ldd` names for it,
/// at their own paths (a dynamically linked tool such as iperf3 inside the busybox image).
fn rootfs_tar(dir: &Path, programs: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy /bin/busybox (busybox-static)");
    let applets =
        ["sh", "ping", "ip", "sleep", "cat", "nslookup", "wget", "ifconfig", "route", "udhcpc", "nc", "netstat", "true", "hostname"];
    for a in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    for program in programs {
        let ldd = crate::run_ok("ldd", &[program]);
        // "libx.so.1 => /lib/.../libx.so.1 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let libs = ldd.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')));
        for file in std::iter::once(*program).chain(libs) {
            let to = root.join(file.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(file, &to).unwrap_or_else(|e| panic!("copy {file}: {e}"));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tar = dir.join("bb.tar");
    crate::run_ok("tar", &["-C", &root.to_string_lossy(), "-cf", &tar.to_string_lossy(), "."]);
    let _ = std::fs::remove_dir_all(&root);
    tar
}

/// Pids of the processes named `comm` whose command line mentions `needle`.
fn pids_of(comm: &str, needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

fn kill_pids(pids: &[u32]) {
    for pid in pids {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
    }
}

/// Unmounts everything mounted below `dir` (deepest first), so it can be removed.
fn unmount_below(dir: &Path) {
    let prefix = dir.to_string_lossy().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount").args(["-l", m]).stderr(Stdio::null()).status();
    }
}

/// What the tests do with a podman, rootful ([`Podman`]) or rootless ([`RootlessPodman`]):
/// everything goes through its [`PodmanCli::command`], which carries its configuration.
pub trait PodmanCli {
    /// `podman` with this podman's configuration in the environment (and user).
    fn command(&self) -> Command;

    /// Runs `podman ARGS...`.
    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run podman")
    }

    /// Runs `podman ARGS...` and returns stdout; panics with its output on failure.
    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `podman exec CONTAINER CMD...`.
    fn exec(&self, container: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", container];
        args.extend_from_slice(cmd);
        self.run(&args)
    }

    /// `podman exec CONTAINER CMD...`, its stdout; panics on failure.
    fn exec_ok(&self, container: &str, cmd: &[&str]) -> String {
        let mut args = vec!["exec", container];
        args.extend_from_slice(cmd);
        self.run_ok(&args)
    }

    /// True when `ping -c COUNT TARGET` inside the container gets every reply.
    fn ping(&self, container: &str, target: &str, count: u32) -> bool {
        self.exec(container, &["ping", "-c", &count.to_string(), "-W", "1", target]).status.success()
    }
}

/// Rootful podman with the CNI backend and state of its own: `containers.conf`, `storage.conf`
/// (vfs), the graph and run roots, the engine's tmp dir and file locks, and the conflists all
/// live in a private directory. `enable_port_reservation = false`: rootful podman otherwise
/// binds every `-p` host port itself (held by conmon) *after* the CNI ADD, which fails with
/// "address already in use" once vswitch-cni has published the port (vswitchd listens on it). The busybox image is imported on creation. Drop removes every
/// container (`podman rm -af -t 0`), kills any conmon left behind, and removes the directory.
#[derive(Debug)]
pub struct Podman {
    pub dir: PathBuf,
}

impl PodmanCli for Podman {
    /// `podman` with this podman's configuration in the environment.
    fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            .stdin(Stdio::null());
        c
    }
}

impl Podman {
    /// A podman with the reference plugins (`/usr/lib/cni`) and, ahead of them, the directory
    /// holding vswitchd (where `vswitch-cni` is built).
    pub fn new() -> Podman {
        crate::require_root();
        install();
        let dir = std::env::temp_dir().join(unique("vswitch-podman-"));
        for sub in ["cni", "graph", "run", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let p = Podman { dir };
        let d = p.dir.to_string_lossy();
        let conf = containers_conf(&bin_dir(), &p.dir, &format!("tmp_dir = \"{d}/tmp\"\nlock_type = \"file\"\n"));
        std::fs::write(p.dir.join("containers.conf"), conf).unwrap();
        let storage = format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/graph\"\nrunroot = \"{d}/run\"\n");
        std::fs::write(p.dir.join("storage.conf"), storage).unwrap();
        let tar = busybox_tar(&p.dir);
        p.run_ok(&["import", "--change", r#"CMD ["/bin/sh"]"#, &tar.to_string_lossy(), IMAGE]);
        let _ = std::fs::remove_file(tar);
        p
    }

    /// Writes the conflist `NAME.conflist` into this podman's network config directory.
    pub fn add_conflist(&self, name: &str, json: &str) {
        std::fs::write(self.dir.join("cni").join(format!("{name}.conflist")), json).unwrap();
    }

    /// `podman inspect CONTAINER`, the container's object.
    pub fn inspect(&self, container: &str) -> Value {
        let v: Value = serde_json::from_str(&self.run_ok(&["inspect", container])).expect("podman inspect prints JSON");
        v[0].clone()
    }

    /// The container's address, prefix length, gateway and MAC on `network`, as podman
    /// reports them (`NetworkSettings.Networks.NETWORK`).
    pub fn address(&self, container: &str, network: &str) -> (String, u64, String, String) {
        let v = self.inspect(container);
        let n = &v["NetworkSettings"]["Networks"][network];
        let s = |k: &str| n[k].as_str().unwrap_or_default().to_string();
        (s("IPAddress"), n["IPPrefixLen"].as_u64().unwrap_or(0), s("Gateway"), s("MacAddress"))
    }

    /// Builds an OCI archive of the busybox image at `path` (for `ctr image import`).
    pub fn save_oci(&self, path: &Path) {
        self.run_ok(&["save", "--format", "oci-archive", "-o", &path.to_string_lossy(), IMAGE]);
    }
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "-af", "-t", "0"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        // conmon keeps running until its container's cleanup finished; one stuck there would
        // hold our directory: conmon's arguments name it (the bundle under the graph root).
        let dir = self.dir.to_string_lossy().to_string();
        eventually(Duration::from_secs(5), || pids_of("conmon", &dir).is_empty());
        kill_pids(&pids_of("conmon", &dir));
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `ctr --cni` conflist may be in /etc/cni/net.d at a time in this process.
static CTR_CNI: Mutex<()> = Mutex::new(());

/// A containerd of the test's own (root, state, gRPC socket and config in a private directory;
/// CRI plugin disabled), driven with `ctr`. The busybox image is imported on creation.
///
/// `ctr run --cni` reads only the alphabetically first conflist in `/etc/cni/net.d` and plugins
/// from `/opt/cni/bin` (and `/usr/lib/cni` on Debian), with no flag to change either:
/// [`Containerd::use_conflist`] writes `00-vswitch-test-PID.conflist` there and links
/// `vswitch-cni` into `/opt/cni/bin`; both go on drop. Drop also kills and deletes every task
/// and container, stops containerd and its shims, and removes the directory.
#[derive(Debug)]
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The ctr namespace the containers are made in.
    pub namespace: String,
    child: Option<std::process::Child>,
    conflist: Option<PathBuf>,
    /// What [`Containerd::use_conflist`] made under /opt/cni (directories, the link), in order.
    made: Vec<PathBuf>,
    /// The foreground `ctr run` of each container, by id.
    runs: Mutex<Vec<(String, std::process::Child)>>,
}

impl Containerd {
    pub fn new() -> Containerd {
        crate::require_root();
        install();
        let dir = std::env::temp_dir().join(unique("vswitch-ctrd-"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let d = dir.to_string_lossy();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = ""
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd {
            dir,
            socket,
            namespace: "vswitch-test".into(),
            child: Some(child),
            conflist: None,
            made: Vec::new(),
            runs: Mutex::new(Vec::new()),
        };
        let up = eventually(Duration::from_secs(20), || c.socket.exists() && c.ctr(&["version"]).status.success());
        assert!(up, "containerd did not come up: {}", c.log());
        // The image: the busybox rootfs through a throwaway podman (oci-archive), then imported.
        let archive = c.dir.join("bb-oci.tar");
        {
            let p = Podman::new();
            p.save_oci(&archive);
        }
        c.ctr_ok(&["image", "import", &archive.to_string_lossy()]);
        let _ = std::fs::remove_file(&archive);
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCK --namespace NS ARGS...`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}\n--- containerd log (tail) ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log().lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Makes `json` the conflist `ctr run --cni` uses: `/etc/cni/net.d/00-vswitch-test-PID.conflist`,
    /// and, when its first plugin is `vswitch-cni`, a link to it in `/opt/cni/bin`. Both are
    /// removed on drop. Panics when another `00-` conflist would come first.
    pub fn use_conflist(&mut self, json: &str) {
        let _one = CTR_CNI.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = Path::new("/etc/cni/net.d");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("00-vswitch-test-{}.conflist", std::process::id()));
        std::fs::write(&path, json).unwrap();
        self.conflist = Some(path.clone());
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".conflist") || n.ends_with(".conf") || n.ends_with(".json"))
            .collect();
        names.sort();
        assert_eq!(
            names.first().map(String::as_str),
            path.file_name().and_then(|n| n.to_str()),
            "another conflist in {} comes first",
            dir.display()
        );

        let v: Value = serde_json::from_str(json).expect("conflist JSON");
        if v["plugins"][0]["type"] == "vswitch-cni" {
            let plugin = vswitch_cni().expect("vswitch-cni is built");
            let bin = Path::new("/opt/cni/bin");
            for dir in ["/opt/cni", "/opt/cni/bin"] {
                if !Path::new(dir).exists() {
                    std::fs::create_dir(dir).unwrap();
                    self.made.push(dir.into());
                }
            }
            let link = bin.join("vswitch-cni");
            match std::fs::read_link(&link) {
                Ok(to) if to == plugin => {}
                _ => {
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(&plugin, &link).unwrap();
                    self.made.push(link);
                }
            }
        }
    }

    /// `ctr run --cni --rm IMAGE ID CMD...` on the conflist of [`Containerd::use_conflist`],
    /// in the background; returns once its task runs, `Err` with ctr's output when it fails.
    ///
    /// Not `-d`: ctr calls the plugin's DEL (with an empty CNI_NETNS) only from a foreground
    /// `ctr run` whose task exited; `ctr task delete` never does. [`Containerd::remove`] kills
    /// the task and waits for that ctr to finish.
    pub fn run_cni(&self, id: &str, cmd: &[&str]) -> Result<(), String> {
        let log_path = self.dir.join(format!("ctr-run-{id}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace, "run", "--cni", "--rm", IMAGE, id])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ctr run");
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.push((id.to_string(), child));
        let child = &mut runs.last_mut().unwrap().1;
        let mut exited = None;
        let running = eventually(Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            let out = self.ctr(&["task", "ls"]);
            String::from_utf8_lossy(&out.stdout).lines().any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"))
        });
        let output = || std::fs::read_to_string(&log_path).unwrap_or_default();
        match (running, exited) {
            (true, None) => Ok(()),
            (_, Some(status)) => Err(format!("ctr run --cni {id} exited ({status}): {}", output())),
            (false, None) => Err(format!("ctr run --cni {id}: no running task after 30 s: {}", output())),
        }
    }

    /// `ctr task exec` in the container.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Output {
        let exec_id = unique("x");
        let mut args = vec!["task", "exec", "--exec-id", &exec_id, id];
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    pub fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let out = self.exec(id, cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {id} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The container's IPv4 address on `ifname` (with its prefix: `10.88.7.5/24`), if any.
    pub fn address(&self, id: &str, ifname: &str) -> Option<String> {
        let out = self.exec_ok(id, &["ip", "-4", "-o", "addr", "show", "dev", ifname]);
        out.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(String::from)
    }

    /// True when `ping -c COUNT TARGET` inside the container gets every reply.
    pub fn ping(&self, id: &str, target: &str, count: u32) -> bool {
        self.exec(id, &["ping", "-c", &count.to_string(), "-W", "1", target]).status.success()
    }

    /// Kills the container's task; its `ctr run` then calls the plugin's DEL and removes the
    /// container (`--rm`). Waits up to 10 s for that, then deletes what is left by force.
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let run = {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            runs.iter().position(|(i, _)| i == id).map(|k| runs.remove(k).1)
        };
        if let Some(mut child) = run {
            if !eventually(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some()) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = self.ctr(&["task", "delete", "-f", id]);
        let _ = self.ctr(&["container", "delete", id]);
    }
}

impl Default for Containerd {
    fn default() -> Self {
        Containerd::new()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids: Vec<String> = self.runs.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.remove(&id);
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            if !eventually(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some()) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        // Shims outlive containerd; theirs name our socket in their arguments.
        let sock = self.socket.to_string_lossy().to_string();
        kill_pids(&pids_of("containerd-shim", &sock));
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(c) = self.conflist.take() {
            let _ = std::fs::remove_file(c);
        }
        for p in self.made.iter().rev() {
            let _ = if p.is_dir() { std::fs::remove_dir(p) } else { std::fs::remove_file(p) };
        }
    }
}

/// An ordinary user with subordinate uid and gid ranges (`useradd --create-home`, which gives
/// them), as rootless podman needs; made if missing. Drop kills every process still running
/// as the user (by pid) and removes the user with its home.
#[derive(Debug)]
pub struct SubidUser {
    pub user: User,
}

impl SubidUser {
    pub fn new(name: &str) -> SubidUser {
        crate::require_root();
        let id = |flag: &str| {
            let out = Command::new("id").args([flag, name]).output().expect("run id");
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().ok()).flatten()
        };
        if id("-u").is_none() {
            crate::run_ok("useradd", &["--create-home", "--shell", "/usr/sbin/nologin", name]);
        }
        let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else { panic!("no user {name} after useradd") };
        let has_range = |file: &str| std::fs::read_to_string(file).is_ok_and(|t| t.lines().any(|l| l.starts_with(&format!("{name}:"))));
        assert!(has_range("/etc/subuid") && has_range("/etc/subgid"), "{name} has no subordinate ids in /etc/subuid, /etc/subgid");
        SubidUser { user: User { name: name.to_string(), uid, gid } }
    }

    /// Pids of the processes running as this user.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
        let uid = self.user.uid.to_string();
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                    s.lines().find(|l| l.starts_with("Uid:")).is_some_and(|l| l.split_whitespace().nth(1) == Some(uid.as_str()))
                })
            })
            .collect()
    }
}

impl Drop for SubidUser {
    fn drop(&mut self) {
        // Everything the user still runs was started by the test (podman's pause process,
        // slirp4netns, conmon): killed by pid before the user goes.
        kill_pids(&self.pids());
        eventually(Duration::from_secs(5), || self.pids().is_empty());
        let _ = Command::new("userdel").args(["--remove", &self.user.name]).stderr(Stdio::null()).status();
    }
}

/// Rootless podman (CNI backend) run by `user`, with state of its own: `XDG_RUNTIME_DIR`
/// (`DIR/run`, so the netns files are `DIR/run/netns/netns-ID` and the pause pid is in
/// `DIR/run/libpod/tmp/pause.pid`), `containers.conf`, `storage.conf` (vfs, graph and run roots
/// in `DIR`) and the conflists (`DIR/cni`), all owned by the user. Creation imports the busybox
/// image and starts podman's pause process (`podman unshare true`), whose user namespace
/// is the one vswitchd must join ([`RootlessPodman::userns`]). Drop removes every container,
/// kills what podman left running for this directory (pause, slirp4netns, conmon) and
/// removes the directory.
#[derive(Debug)]
pub struct RootlessPodman {
    pub user: User,
    pub dir: PathBuf,
}

impl PodmanCli for RootlessPodman {
    /// `podman` as the user, with this podman's configuration in the environment.
    fn command(&self) -> Command {
        let mut c = self.user.command("podman");
        let home = format!("/home/{}", self.user.name);
        c.env("HOME", home)
            .env("USER", &self.user.name)
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }
}

impl RootlessPodman {
    pub fn new(user: &User) -> RootlessPodman {
        crate::require_root();
        install();
        let dir = std::env::temp_dir().join(unique("vswitch-rlpod-"));
        for sub in ["cni", "graph", "run", "plugins"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // The plugin is copied where the user can reach it: the checkout (and its target
        // directory) may sit under a directory only root can enter, e.g. a `mktemp -d` clone.
        let plugin = vswitch_cni().expect("vswitch-cni is built");
        std::fs::copy(&plugin, dir.join("plugins/vswitch-cni")).unwrap();
        let p = RootlessPodman { user: user.clone(), dir };
        let d = p.dir.to_string_lossy();
        let conf = containers_conf(&p.dir.join("plugins"), &p.dir, "");
        std::fs::write(p.dir.join("containers.conf"), conf).unwrap();
        let storage = format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/graph\"\nrunroot = \"{d}/run/containers\"\n");
        std::fs::write(p.dir.join("storage.conf"), storage).unwrap();
        let tar = busybox_tar(&p.dir);
        crate::run_ok("chown", &["-R", &format!("{}:{}", user.uid, user.gid), &d]);
        crate::run_ok("chmod", &["0700", &p.dir.join("run").to_string_lossy()]);
        p.run_ok(&["import", "--change", r#"CMD ["/bin/sh"]"#, &tar.to_string_lossy(), IMAGE]);
        let _ = std::fs::remove_file(tar);
        p.run_ok(&["unshare", "true"]);
        p
    }

    /// The pid of podman's pause process (it holds podman's user namespace and the mount
    /// namespace where the containers' netns files are mounted).
    pub fn pause_pid(&self) -> u32 {
        let f = self.dir.join("run/libpod/tmp/pause.pid");
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        text.trim().parse().unwrap_or_else(|_| panic!("{}: {text:?}", f.display()))
    }

    /// `/proc/PAUSE/ns/user`: podman's user namespace, for `vswitchd --userns`.
    pub fn userns(&self) -> String {
        format!("/proc/{}/ns/user", self.pause_pid())
    }

    /// Imports the busybox image plus the host's `programs` (with their libraries) as `image`.
    pub fn import_image_with(&self, image: &str, programs: &[&str]) {
        let tar = rootfs_tar(&self.dir, programs);
        self.user.chown(&tar);
        self.run_ok(&["import", "--change", r#"CMD ["/bin/sh"]"#, &tar.to_string_lossy(), image]);
        let _ = std::fs::remove_file(tar);
        // The pause process again, if the import's podman let it go.
        self.run_ok(&["unshare", "true"]);
    }

    /// Writes the conflist `NAME.conflist` into this podman's network config directory.
    pub fn add_conflist(&self, name: &str, json: &str) {
        let path = self.dir.join("cni").join(format!("{name}.conflist"));
        std::fs::write(&path, json).unwrap();
        self.user.chown(&path);
    }

    /// Removes every container (`podman rm -af -t 0`).
    pub fn remove_all(&self) {
        let _ = self.command().args(["rm", "-af", "-t", "0"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl Drop for RootlessPodman {
    fn drop(&mut self) {
        self.remove_all();
        let dir = self.dir.to_string_lossy().to_string();
        eventually(Duration::from_secs(5), || pids_of("conmon", &dir).is_empty());
        kill_pids(&pids_of("conmon", &dir));
        // slirp4netns of the rootless-netns names its netns file under our run directory.
        kill_pids(&pids_of("slirp4netns", &dir));
        if let Ok(text) = std::fs::read_to_string(self.dir.join("run/libpod/tmp/pause.pid")) {
            let pause = text.trim().parse::<u32>().ok();
            // Still podman's pause process (not a pid reused since).
            if let Some(pid) =
                pause.filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "podman pause"))
            {
                kill_pids(&[pid]);
            }
        }
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One dockerd at a time in a test process: dockerd shares `/etc/docker/key.json` and
/// `/run/docker/plugins` with any other.
static DOCKERD: Mutex<()> = Mutex::new(());

/// The image dockerd runs in the tests (the busybox rootfs, imported).
pub const DOCKER_IMAGE: &str = "bb:latest";

/// A dockerd of the test's own, in the network namespace `netns` (entered with `nsenter
/// --net` only: `ip netns exec` would remount /sys and hide the cgroup hierarchies dockerd
/// needs), with its own data-root, exec-root, pidfile and API socket, `--iptables=false
/// --ip6tables=false --bridge=none`: nothing it makes lands in the host's namespace or
/// firewall. The busybox image is imported as `bb:latest`. `/usr/bin/docker` (Engine API
/// 1.41) talks to it with a config directory of its own.
///
/// Drop removes every container, stops dockerd (and the containerd it started), unmounts what
/// it left under its directory and removes it, and `/etc/docker/key.json` and
/// `/run/docker/plugins` when dockerd made them.
#[derive(Debug)]
pub struct Docker {
    pub dir: PathBuf,
    pub socket: PathBuf,
    netns: String,
    child: Option<std::process::Child>,
    /// What existed before: removed on drop only when dockerd made it.
    had_key: bool,
    had_run_docker: bool,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Docker {
    /// A dockerd inside the network namespace named `netns` (under /run/netns).
    pub fn new(netns: &str) -> Docker {
        crate::require_root();
        install_docker();
        let one = DOCKERD.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = std::env::temp_dir().join(unique("vswitch-dockerd-"));
        std::fs::create_dir_all(dir.join("cli")).unwrap();
        let mut d = Docker {
            socket: dir.join("docker.sock"),
            dir,
            netns: netns.to_string(),
            child: None,
            had_key: Path::new("/etc/docker/key.json").exists(),
            had_run_docker: Path::new("/run/docker").exists(),
            _one: one,
        };
        d.start();
        let tar = busybox_tar(&d.dir);
        d.run_ok(&["import", "--change", r#"CMD ["/bin/sh"]"#, &tar.to_string_lossy(), DOCKER_IMAGE]);
        let _ = std::fs::remove_file(tar);
        d
    }

    /// Starts dockerd (again) and waits until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "dockerd is running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dockerd.log")).unwrap();
        let d = self.dir.to_string_lossy().to_string();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("dockerd")
            .args(["--data-root", &format!("{d}/data"), "--exec-root", &format!("{d}/exec"), "--pidfile", &format!("{d}/docker.pid")])
            .args(["-H", &format!("unix://{d}/docker.sock"), "--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        let up = eventually(Duration::from_secs(60), || self.socket.exists() && self.run(&["info"]).status.success());
        assert!(up, "dockerd did not come up: {}", self.log());
    }

    /// Stops dockerd (SIGTERM; its containers stop with it) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let stopped = eventually(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Stops and starts dockerd.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker -H unix://SOCK ARGS...`.
    pub fn command(&self) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_CONFIG", self.dir.join("cli")).arg("-H").arg(format!("unix://{}", self.socket.display())).stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run docker")
    }

    /// Runs `docker ARGS...`, its stdout (trimmed); panics with its output on failure.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker exec CONTAINER CMD...`.
    pub fn exec(&self, container: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", container];
        args.extend_from_slice(cmd);
        self.run(&args)
    }

    pub fn exec_ok(&self, container: &str, cmd: &[&str]) -> String {
        let mut args = vec!["exec", container];
        args.extend_from_slice(cmd);
        self.run_ok(&args)
    }

    /// True when `ping -c COUNT TARGET` inside the container gets every reply.
    pub fn ping(&self, container: &str, target: &str, count: u32) -> bool {
        self.exec(container, &["ping", "-c", &count.to_string(), "-W", "1", target]).status.success()
    }

    /// `docker inspect -f FORMAT OBJECT`.
    pub fn inspect(&self, object: &str, format: &str) -> String {
        self.run_ok(&["inspect", "-f", format, object])
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.run(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.command().args(["rm", "-f", id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            }
        }
        self.stop();
        // The containerd dockerd started (and its shims) name our directory.
        let dir = self.dir.to_string_lossy().to_string();
        eventually(Duration::from_secs(5), || pids_of("containerd", &dir).is_empty());
        kill_pids(&pids_of("containerd", &dir));
        kill_pids(&pids_of("containerd-shim", &dir));
        kill_pids(&pids_of("containerd-shim-runc-v2", &dir));
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        if !self.had_key {
            let _ = std::fs::remove_file("/etc/docker/key.json");
        }
        if !self.had_run_docker {
            let _ = std::fs::remove_dir("/run/docker/plugins");
            let _ = std::fs::remove_dir("/run/docker");
        }
    }
}
