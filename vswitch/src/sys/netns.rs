//! Network namespaces and the netns worker thread.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the *calling thread* only. Doing that on a
//! tokio or datapath thread would make whatever else runs there act in the container's
//! namespace, so all namespace hopping happens on one dedicated OS thread
//! ([`NetnsWorker`]) that does nothing else. Callers on any thread send it a request over a
//! channel and block for the reply.
//!
//! A daemon without privileges cannot `setns` into anything, so [`NetnsWorker::spawn_rootless`]
//! runs the same worker in a helper process that lives in a user namespace of its own (see
//! [`super::userns`]) and talks to it over a socket; the TAP fd comes back with SCM_RIGHTS.
//!
//! Inside the target namespace the worker only *opens* things: `/dev/net/tun` and a
//! NETLINK_ROUTE socket. Both stay bound to the namespace they were opened in, so it switches
//! back right away (a guard restores the home namespace on every path) and does the ioctls
//! and netlink requests from home.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use super::ffi;
use super::netlink::{LinkConfig, RtSocket};
use super::tap::{self, Offloads};

/// A network namespace, by namespace file or by a process inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetnsRef {
    /// A namespace file, e.g. `/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
    /// The namespace of process `PID`: `/proc/PID/ns/net`.
    Pid(u32),
}

impl NetnsRef {
    /// The namespace file to open.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Path(p) => p.clone(),
            NetnsRef::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsRef::Path(p) => write!(f, "{}", p.display()),
            NetnsRef::Pid(pid) => write!(f, "network namespace of pid {pid}"),
        }
    }
}

/// What [`NetnsWorker::attach`] creates and configures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachSpec {
    /// Where the TAP goes.
    pub netns: NetnsRef,
    /// Interface name inside the namespace, e.g. `eth0`: 1..=15 bytes; no '/', ':', '%',
    /// whitespace or control characters; not "." or "..".
    pub ifname: String,
    pub mtu: u32,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Default route via this address. `0.0.0.0` means: add no default route. A gateway
    /// outside `addr/prefix_len` gets an `onlink` route.
    pub gateway: Ipv4Addr,
    /// An IPv6 address and prefix length to add too (without duplicate address detection:
    /// the switch's IPAM already made it unique).
    pub addr6: Option<(std::net::Ipv6Addr, u8)>,
    /// With `addr6`: an IPv6 default route via this address.
    #[serde(default)]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Turn IPv6 off on the interface before it comes up (a network without IPv6: no
    /// link-local address, no router solicitations or MLD reports flooded to every port).
    pub disable_ipv6: bool,
    /// Open with IFF_VNET_HDR and enable the offloads the kernel accepts.
    pub vnet_hdr: bool,
    /// With `vnet_hdr`: also offer UDP segmentation offload (USO). Off on overlay networks,
    /// whose tunnel segments TCP super-frames only.
    pub uso: bool,
    /// With `vnet_hdr`: the largest TSO super-frame the container's kernel may build
    /// (IFLA_GSO_MAX_SIZE), best effort. Overlay networks ask for one whose segments fill one
    /// UDP GSO send of the tunnel.
    pub gso_max_size: Option<u32>,
    /// Make the TAP persistent: it outlives its fd (and a crash of the daemon) until
    /// [`super::set_persist`] turns that off.
    pub persist: bool,
    /// Reopen a TAP of that name left by an earlier run (or create it if it is gone) and
    /// re-apply the configuration, instead of failing because it exists.
    pub reuse: bool,
    /// Hand the TAP over instead of wiring it: set only its MAC and MTU (none on a reuse) and
    /// leave it down, without addresses or routes: a runtime moves it into the container and
    /// configures it there (dockerd's remote network drivers work that way).
    #[serde(default)]
    pub handover: bool,
    /// With `reuse`: the TAP may have been renamed since it was made (dockerd names it `eth0`,
    /// `eth1`, ... in the container): reopen the interface of the namespace that has `mac`.
    #[serde(default)]
    pub find_by_mac: bool,
}

/// An attached TAP. Dropping `fd` removes the interface (the TAP is not persistent).
#[derive(Debug)]
pub struct Attached {
    /// The TAP queue fd; O_NONBLOCK and O_CLOEXEC are set.
    pub fd: OwnedFd,
    /// The interface index inside the target namespace.
    pub ifindex: u32,
    /// What the kernel accepted.
    pub offloads: Offloads,
    /// 0 when vnet_hdr is off, else [`tap::VNET_HDR_LEN`] (12).
    pub vnet_hdr_len: usize,
}

/// Errors from namespace and interface setup.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("network namespace not found: {0}")]
    NetnsNotFound(String),
    #[error("permission denied: {0} ({hint})", hint = permission_hint())]
    PermissionDenied(String),
    #[error("invalid interface name: {0}")]
    InvalidName(String),
    #[error("interface {0:?} already exists in the target network namespace; choose another name or delete it")]
    Exists(String),
    #[error("no interface {0:?} in vswitchd's network namespace")]
    NoInterface(String),
    #[error("{op}: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error("netlink: {op} failed: {message}")]
    Netlink { op: &'static str, message: String },
}

/// The pid of this process's rootless netns helper (0: none, the daemon has privileges):
/// what a permission error advises depends on it.
static ROOTLESS_HELPER: AtomicU32 = AtomicU32::new(0);

fn permission_hint() -> String {
    match ROOTLESS_HELPER.load(Ordering::Relaxed) {
        0 => "vswitchd needs CAP_SYS_ADMIN and CAP_NET_ADMIN; run it as root, or rootless with --rootless".to_string(),
        pid => format!(
            "rootless vswitchd wires only network namespaces owned by its user namespace /proc/{pid}/ns/user, \
             e.g. made with `nsenter -t {pid} -U --preserve-credentials -- unshare -n CMD`; /dev/net/tun must be mode 0666"
        ),
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> SysError {
    move |source| SysError::Io { op, source }
}

/// Check an interface name the way the kernel's `dev_valid_name()` does, and also reject
/// '%' (the kernel would treat it as a `%d` template and pick another name).
pub fn validate_ifname(name: &str) -> Result<(), SysError> {
    let bad = |why: &str| Err(SysError::InvalidName(format!("{name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return bad("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("is reserved");
    }
    for b in name.bytes() {
        // The kernel's isspace() also counts \v and 0xa0.
        if b.is_ascii_whitespace() || b == 0x0b || b == 0xa0 {
            return bad("contains whitespace");
        }
        if b.is_ascii_control() {
            return bad("contains a control character");
        }
        if matches!(b, b'/' | b':' | b'%') {
            return bad(&format!("contains {:?}", char::from(b)));
        }
    }
    Ok(())
}

/// `(st_dev, st_ino)` of the calling thread's network namespace: equal pairs mean the same
/// namespace.
pub fn current_netns_id() -> io::Result<(u64, u64)> {
    netns_id(&NetnsRef::Path(PathBuf::from("/proc/thread-self/ns/net")))
}

/// `(st_dev, st_ino)` of a network namespace file: opened without blocking and checked to be
/// a network namespace first (a FIFO, a regular file or a directory is an error, never a
/// hang).
pub fn netns_id(r: &NetnsRef) -> io::Result<(u64, u64)> {
    let fd = open_netns(r).map_err(|e| match e {
        SysError::Io { source, .. } => source,
        SysError::PermissionDenied(_) => io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()),
        SysError::NetnsNotFound(_) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        other => io::Error::other(other.to_string()),
    })?;
    let meta = File::from(fd).metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// The magic number of the namespace filesystem (`nsfs`): `/proc/PID/ns/*` and their bind
/// mounts such as `/run/netns/NAME`.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// What a file is, for "X is not a namespace" messages.
fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a fifo"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Opens a namespace file (of any namespace type) without ever blocking: only a regular file
/// is opened at all (a namespace file looks like one), with `O_NONBLOCK | O_NOCTTY |
/// O_CLOEXEC`, and it must then live on nsfs. A FIFO (whose open would wait for a writer
/// forever), a directory or a device is refused by `stat` before any open; a FIFO swapped in
/// between the two is opened non-blocking and refused by the filesystem check.
///
/// # Errors
/// `NotFound`, `PermissionDenied` as the kernel says; `InvalidInput` with a message naming
/// what the path is when it is not a namespace file.
pub(crate) fn open_ns_file(path: &std::path::Path) -> io::Result<OwnedFd> {
    open_ns_checked(path).map_err(|e| match e {
        NsOpenError::Io(e) => e,
        NsOpenError::NotNs(kind) => io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a namespace ({kind})", path.display())),
    })
}

enum NsOpenError {
    Io(io::Error),
    /// Not a namespace file; what it is instead ("a fifo").
    NotNs(&'static str),
}

fn open_ns_checked(path: &std::path::Path) -> Result<OwnedFd, NsOpenError> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(NsOpenError::Io)?;
    if !meta.file_type().is_file() {
        return Err(NsOpenError::NotNs(file_kind(meta.file_type())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(NsOpenError::Io)?;
    if ffi::fstatfs_type(file.as_fd()).map_err(NsOpenError::Io)? != NSFS_MAGIC {
        return Err(NsOpenError::NotNs(file.metadata().map(|m| file_kind(m.file_type())).unwrap_or("a file")));
    }
    Ok(OwnedFd::from(file))
}

/// Open a namespace file and check that it is a network namespace; never blocks (see
/// [`open_ns_file`]).
fn open_netns(r: &NetnsRef) -> Result<OwnedFd, SysError> {
    let path = r.path();
    let fd = open_ns_checked(&path).map_err(|e| match e {
        NsOpenError::NotNs(kind) => SysError::NetnsNotFound(format!("{r} is not a network namespace ({kind})")),
        NsOpenError::Io(e) => match e.kind() {
            io::ErrorKind::NotFound => SysError::NetnsNotFound(match r {
                NetnsRef::Path(p) => format!("{} does not exist", p.display()),
                NetnsRef::Pid(pid) => format!("process {pid} does not exist"),
            }),
            io::ErrorKind::PermissionDenied => SysError::PermissionDenied(format!("opening {}", path.display())),
            _ => SysError::Io { op: "open network namespace file", source: e },
        },
    })?;
    match ffi::ns_get_nstype(fd.as_fd()) {
        Ok(libc::CLONE_NEWNET) => Ok(fd),
        Ok(_) => Err(SysError::NetnsNotFound(format!("{r} is not a network namespace (another kind of namespace)"))),
        Err(e) => Err(SysError::NetnsNotFound(format!("{r} is not a network namespace ({e})"))),
    }
}

/// While alive, the calling thread is in another network namespace; dropping it switches
/// back to `home`.
struct NetnsGuard<'a> {
    home: BorrowedFd<'a>,
}

impl<'a> NetnsGuard<'a> {
    fn enter(home: BorrowedFd<'a>, target: BorrowedFd<'_>, r: &NetnsRef) -> Result<Self, SysError> {
        ffi::setns_net(target).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => SysError::PermissionDenied(format!("entering {r}")),
            Some(libc::EINVAL) => SysError::NetnsNotFound(format!("{r} is not a network namespace")),
            _ => SysError::Io { op: "setns", source: e },
        })?;
        Ok(NetnsGuard { home })
    }
}

impl Drop for NetnsGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = ffi::setns_net(self.home) {
            // Never seen in practice (we hold an fd to our own namespace). The worker keeps
            // working, since every request enters its target explicitly, but say so loudly.
            tracing::error!("netns worker: cannot return to its own network namespace: {e}");
        }
    }
}

enum Request {
    Attach(Box<AttachSpec>, Sender<Result<Attached, SysError>>),
    Link(LinkOp, NetnsRef, String, Sender<Result<(), SysError>>),
    NetnsId(Sender<io::Result<(u64, u64)>>),
}

/// A dedicated OS thread that does all `setns` work and nothing else, or (rootless) a helper
/// process in a user namespace that runs that thread. Dropping it stops the thread (after any
/// request in progress) or the helper.
#[derive(Debug)]
pub struct NetnsWorker {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Thread { tx: Option<Sender<Request>>, thread: Option<JoinHandle<()>> },
    Helper(super::userns::Helper),
}

const WORKER_GONE: &str = "the netns worker thread has exited";

impl NetnsWorker {
    /// Start the worker thread.
    pub fn spawn() -> io::Result<NetnsWorker> {
        let (tx, rx) = crossbeam_channel::unbounded::<Request>();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(1);
        let thread = std::thread::Builder::new().name("vswitch-netns".into()).spawn(move || {
            let home = match File::open("/proc/thread-self/ns/net") {
                Ok(f) => OwnedFd::from(f),
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            worker_loop(home.as_fd(), rx);
        })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NetnsWorker { inner: Inner::Thread { tx: Some(tx), thread: Some(thread) } }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(io::Error::new(e.kind(), format!("netns worker: open /proc/thread-self/ns/net: {e}")))
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("netns worker thread died during startup"))
            }
        }
    }

    /// Start the rootless worker: a helper process (vswitchd itself, re-executed) that makes or
    /// joins a user namespace and does the namespace work there; see [`super::userns`]. Call
    /// it from a thread that lives as long as the process (the main thread): the helper is
    /// killed when that thread exits.
    ///
    /// # Errors
    /// When the helper cannot start, with the reason (e.g. user namespaces disabled).
    pub fn spawn_rootless(opts: super::userns::RootlessOptions) -> io::Result<NetnsWorker> {
        let helper = super::userns::Helper::spawn(opts)?;
        ROOTLESS_HELPER.store(helper.pid(), Ordering::Relaxed);
        Ok(NetnsWorker { inner: Inner::Helper(helper) })
    }

    /// The pid of the rootless helper, whose user namespace (`/proc/PID/ns/user`) must own the
    /// network namespaces to attach; `None` for the in-process worker thread.
    pub fn userns_pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Thread { .. } => None,
            Inner::Helper(h) => Some(h.pid()),
        }
    }

    /// Create a TAP `spec.ifname` in `spec.netns` and configure MAC, MTU, up, address and
    /// default route. Blocks until done (typically well under a millisecond of kernel work).
    /// On any error nothing is left behind: the TAP vanishes with its fd.
    pub fn attach(&self, spec: AttachSpec) -> Result<Attached, SysError> {
        validate_ifname(&spec.ifname)?;
        if let Inner::Helper(h) = &self.inner {
            return h.attach(spec);
        }
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.request(Request::Attach(Box::new(spec), reply_tx))?;
        reply_rx.recv().map_err(|_| gone())?
    }

    /// Delete the interface `ifname` in `netns` (a persistent TAP left behind); an interface or
    /// a namespace that is already gone is fine.
    pub fn delete_link(&self, netns: NetnsRef, ifname: &str) -> Result<(), SysError> {
        self.link(LinkOp::Delete, netns, ifname)
    }

    /// Checks that the interface `ifname` exists in `netns`.
    ///
    /// # Errors
    /// `NetnsNotFound`, or `Io` ("find link", ENODEV) when the namespace has no such interface.
    pub fn find_link(&self, netns: NetnsRef, ifname: &str) -> Result<(), SysError> {
        self.link(LinkOp::Find, netns, ifname)
    }

    pub(crate) fn link(&self, op: LinkOp, netns: NetnsRef, ifname: &str) -> Result<(), SysError> {
        validate_ifname(ifname)?;
        if let Inner::Helper(h) = &self.inner {
            return h.link(op, netns, ifname);
        }
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.request(Request::Link(op, netns, ifname.to_string(), reply_tx))?;
        reply_rx.recv().map_err(|_| gone())?
    }

    /// Whether `r` names an existing network namespace (checked on the calling thread; no
    /// namespace switch needed).
    pub fn netns_exists(&self, r: &NetnsRef) -> bool {
        open_netns(r).is_ok()
    }

    /// `(st_dev, st_ino)` of the namespace the worker thread is in right now (between
    /// requests that is always the namespace it started in; the helper's own private one when
    /// rootless).
    pub fn worker_netns_id(&self) -> io::Result<(u64, u64)> {
        if let Inner::Helper(h) = &self.inner {
            return h.netns_id();
        }
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.request(Request::NetnsId(reply_tx)).map_err(|_| io::Error::other(WORKER_GONE))?;
        reply_rx.recv().map_err(|_| io::Error::other(WORKER_GONE))?
    }

    fn request(&self, req: Request) -> Result<(), SysError> {
        let Inner::Thread { tx: Some(tx), .. } = &self.inner else { return Err(gone()) };
        tx.send(req).map_err(|_| gone())
    }
}

fn gone() -> SysError {
    SysError::Io { op: "netns worker", source: io::Error::other(WORKER_GONE) }
}

impl Drop for NetnsWorker {
    fn drop(&mut self) {
        // The helper stops itself when its socket closes (its own Drop).
        if let Inner::Thread { tx, thread } = &mut self.inner {
            drop(tx.take()); // ends the worker's receive loop
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn worker_loop(home: BorrowedFd<'_>, rx: Receiver<Request>) {
    for req in rx {
        match req {
            Request::Attach(spec, reply) => {
                let res = catch_unwind(AssertUnwindSafe(|| attach_here(home, &spec)))
                    .unwrap_or_else(|_| Err(SysError::Io { op: "attach", source: io::Error::other("netns worker panicked") }));
                // If the caller has gone away, dropping the reply closes the TAP again.
                let _ = reply.send(res);
            }
            Request::Link(op, netns, ifname, reply) => {
                let res = catch_unwind(AssertUnwindSafe(|| link_here(home, op, &netns, &ifname)))
                    .unwrap_or_else(|_| Err(SysError::Io { op: op.name(), source: io::Error::other("netns worker panicked") }));
                let _ = reply.send(res);
            }
            Request::NetnsId(reply) => {
                let _ = reply.send(current_netns_id());
            }
        }
    }
}

/// What [`NetnsWorker`] does to an existing interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LinkOp {
    /// Delete it; an interface or a namespace already gone is fine.
    Delete,
    /// Check that it exists.
    Find,
}

impl LinkOp {
    fn name(self) -> &'static str {
        match self {
            LinkOp::Delete => "delete link",
            LinkOp::Find => "find link",
        }
    }
}

/// Deletes or looks up `ifname` in `netns`, on the worker thread.
fn link_here(home: BorrowedFd<'_>, op: LinkOp, netns: &NetnsRef, ifname: &str) -> Result<(), SysError> {
    let target = match open_netns(netns) {
        Ok(t) => t,
        Err(SysError::NetnsNotFound(_)) if op == LinkOp::Delete => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut rt = {
        let _inside = NetnsGuard::enter(home, target.as_fd(), netns)?;
        RtSocket::open().map_err(io_err("open netlink socket"))?
    };
    match (op, rt.ifindex(ifname)) {
        (LinkOp::Delete, Ok(index)) => rt.delete_link(index),
        (LinkOp::Delete, Err(_)) => Ok(()),
        (LinkOp::Find, found) => found.map(drop).map_err(io_err("find link")),
    }
}

/// The attach itself, on the worker thread. `home` is the worker's own namespace.
fn attach_here(home: BorrowedFd<'_>, spec: &AttachSpec) -> Result<Attached, SysError> {
    let start = Instant::now();
    let target = open_netns(&spec.netns)?;
    // One visit to the namespace: the TAP, the netlink socket and the IPv6 knob all belong to
    // the namespace they are made or opened in, and stay usable from home.
    let (tap, mut rt, ifname) = {
        let _inside = NetnsGuard::enter(home, target.as_fd(), &spec.netns)?;
        let tun = tap::open_tun().map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => SysError::PermissionDenied("opening /dev/net/tun".into()),
            _ => SysError::Io { op: "open /dev/net/tun", source: e },
        })?;
        let mut rt = RtSocket::open().map_err(io_err("open netlink socket"))?;
        let ifname = if spec.find_by_mac && spec.reuse {
            rt.link_by_mac(spec.mac)?.ok_or_else(|| SysError::Io {
                op: "find the TAP by its MAC",
                source: io::Error::new(io::ErrorKind::NotFound, format!("no interface of {} has MAC {}", spec.netns, mac_text(spec.mac))),
            })?
        } else {
            spec.ifname.clone()
        };
        let tap = tap::open(tun, &ifname, spec.vnet_hdr.then_some(spec.uso), !spec.reuse)?;
        if spec.disable_ipv6 && !spec.handover {
            // /proc/sys/net is the namespace of the thread that opens the file; a kernel
            // without IPv6 has no such file (nothing to turn off).
            let knob = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(knob) {
                use std::io::Write as _;
                let _ = f.write_all(b"1");
            }
        }
        (tap, rt, ifname)
        // _inside drops here: back in the home namespace.
    };
    drop(target);

    if spec.persist {
        tap::set_persist(&tap.fd, true).map_err(io_err("make the TAP persistent (TUNSETPERSIST)"))?;
    }
    let configured = rt.ifindex(&ifname).map_err(io_err("look up ifindex (SIOCGIFINDEX)")).and_then(|ifindex| {
        if spec.handover {
            // A handed-over TAP that is reopened is configured already (by its runtime).
            if !spec.reuse {
                rt.set_mac_mtu(ifindex, spec.mac, spec.mtu)?;
            }
            return Ok(ifindex);
        }
        rt.configure_link(&LinkConfig {
            ifindex,
            mac: spec.mac,
            mtu: spec.mtu,
            addr: spec.addr,
            prefix_len: spec.prefix_len,
            gateway: (!spec.gateway.is_unspecified()).then_some(spec.gateway),
            addr6: spec.addr6,
            gateway6: spec.gateway6.filter(|_| spec.addr6.is_some()),
            replace: spec.reuse,
        })?;
        Ok(ifindex)
    });
    let ifindex = match configured {
        Ok(i) => i,
        Err(e) => {
            // Leave nothing behind: a persistent TAP (made so here, or reopened after a
            // restart) would outlive its fd.
            let _ = tap::set_persist(&tap.fd, false);
            return Err(e);
        }
    };
    if let Some(size) = spec.gso_max_size.filter(|_| tap.offloads.tso4 || tap.offloads.tso6) {
        if let Err(e) = rt.set_gso_max_size(ifindex, size) {
            tracing::warn!(%ifname, size, error = %e, "cannot limit the TAP's GSO size; super-frames may take two tunnel sends");
        }
    }
    tracing::debug!(
        netns = %spec.netns,
        %ifname,
        ifindex,
        offloads = ?tap.offloads.names(),
        elapsed_us = start.elapsed().as_micros() as u64,
        "attached TAP"
    );
    Ok(Attached { fd: tap.fd, ifindex, offloads: tap.offloads, vnet_hdr_len: tap.vnet_hdr_len })
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
