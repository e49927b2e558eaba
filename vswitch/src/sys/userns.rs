//! Rootless wiring: the netns helper process.
//!
//! Entering a container's network namespace needs CAP_SYS_ADMIN in the user namespace that
//! owns it, and a multithreaded process may not join a user namespace at all. So a daemon
//! without privileges re-executes itself (`/proc/self/exe __netns-helper CONFIG`) with one end
//! of a `SOCK_SEQPACKET` socketpair. The helper, while still single-threaded:
//!
//! 1. makes a user namespace that maps only the daemon's uid and gid to 0 (`unshare`, then
//!    `setgroups` deny, `uid_map` "0 UID 1", `gid_map` "0 GID 1"), or joins one: a file given
//!    with `--userns` (e.g. `/proc/PID/ns/user` of a runtime's pause process) or, after a
//!    restart, the user namespace that owns a container namespace wired before
//!    (`NS_GET_USERNS`, walked up to the child of the daemon's own user namespace);
//! 2. `unshare(CLONE_NEWNET)`: a private home namespace owned by that user namespace;
//! 3. starts the ordinary [`NetnsWorker`] thread there and serves requests from the socket.
//!
//! It has every capability over namespaces its user namespace owns, so the containers'
//! namespaces must be made inside it (`nsenter -t PID -U --preserve-credentials -- unshare -n`).
//! The TAP fd goes back to the daemon with SCM_RIGHTS; the daemon, which owns the user
//! namespace, may then use ioctls such as TUNSETPERSIST on it itself.
//!
//! Messages are JSON, one per datagram, each request with an id that its reply repeats (a
//! reply that comes after its caller gave up is recognised and dropped, with its fd). The
//! helper exits when the socket closes, and is killed (PR_SET_PDEATHSIG) with the thread that
//! started it. A malformed request gets an error reply.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ffi;
use super::netns::{AttachSpec, Attached, LinkOp, NetnsRef, NetnsWorker, SysError};
use super::tap::Offloads;

/// The hidden first argument that makes vswitchd run as the helper.
pub const HELPER_ARG: &str = "__netns-helper";

/// Largest message either way (a request is a few hundred bytes).
pub(crate) const MAX_MSG: usize = 64 * 1024;

/// How long the daemon waits for the helper to come up, and for one reply.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`NetnsWorker::spawn_rootless`] starts its helper.
#[derive(Debug, Clone, Default)]
pub struct RootlessOptions {
    /// Join this user namespace (a file such as `/proc/PID/ns/user`) instead of making one.
    pub userns: Option<PathBuf>,
    /// Join the user namespace that owns this network namespace file (a restart: the
    /// containers wired before live in the user namespace of an earlier helper). Ignored
    /// when `userns` is given.
    pub userns_of_netns: Option<PathBuf>,
    /// The program to run as the helper; default `/proc/self/exe` (vswitchd, whose `main`
    /// hands [`HELPER_ARG`] to [`helper_main`]).
    pub exe: Option<PathBuf>,
    /// tracing filter for the helper's own log lines (stderr); default "info".
    pub log_level: Option<String>,
    /// How the helper writes them: as the daemon does.
    pub log_format: super::log::LogFormat,
}

/// What the helper gets on its command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HelperConfig {
    /// Its end of the socketpair.
    fd: i32,
    /// The daemon's pid: if the parent is already another process, the daemon is gone.
    parent: u32,
    userns: Option<PathBuf>,
    userns_of_netns: Option<PathBuf>,
    log_level: String,
    #[serde(default)]
    log_format: super::log::LogFormat,
}

// ---------------------------------------------------------------------------------------
// The messages.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestMsg {
    pub id: u64,
    pub req: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    Attach { spec: AttachSpec },
    Link { op: LinkOp, netns: NetnsRef, ifname: String },
    NetnsId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplyMsg {
    pub id: u64,
    pub reply: Reply,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Reply {
    /// The helper is up (id 0).
    Ready {
        pid: u32,
    },
    /// The helper could not set up its namespaces (id 0); it exits.
    Failed {
        message: String,
    },
    /// The TAP fd rides along as SCM_RIGHTS.
    Attached {
        ifindex: u32,
        offloads: WireOffloads,
        vnet_hdr_len: usize,
    },
    Done,
    NetnsId {
        dev: u64,
        ino: u64,
    },
    Error {
        error: WireError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireOffloads {
    vnet_hdr: bool,
    csum: bool,
    tso4: bool,
    tso6: bool,
    uso: bool,
}

impl From<Offloads> for WireOffloads {
    fn from(o: Offloads) -> Self {
        WireOffloads { vnet_hdr: o.vnet_hdr, csum: o.csum, tso4: o.tso4, tso6: o.tso6, uso: o.uso }
    }
}

impl From<WireOffloads> for Offloads {
    fn from(o: WireOffloads) -> Self {
        Offloads { vnet_hdr: o.vnet_hdr, csum: o.csum, tso4: o.tso4, tso6: o.tso6, uso: o.uso }
    }
}

/// A [`SysError`] on the wire: the variant and its text, so the API answers with the same
/// error code and message as with the in-process worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum WireError {
    NetnsNotFound { message: String },
    PermissionDenied { message: String },
    InvalidName { message: String },
    Exists { name: String },
    Io { op: String, errno: Option<i32>, message: String },
    Netlink { op: String, message: String },
}

impl From<&SysError> for WireError {
    fn from(e: &SysError) -> Self {
        match e {
            SysError::NetnsNotFound(m) => WireError::NetnsNotFound { message: m.clone() },
            SysError::PermissionDenied(m) => WireError::PermissionDenied { message: m.clone() },
            SysError::InvalidName(m) => WireError::InvalidName { message: m.clone() },
            SysError::Exists(n) => WireError::Exists { name: n.clone() },
            // Interface ports are opened in the daemon itself, never in the helper.
            SysError::NoInterface(n) => WireError::NetnsNotFound { message: format!("no interface {n:?}") },
            SysError::Io { op, source } => WireError::Io { op: op.to_string(), errno: source.raw_os_error(), message: source.to_string() },
            SysError::Netlink { op, message } => WireError::Netlink { op: op.to_string(), message: message.clone() },
        }
    }
}

impl From<WireError> for SysError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NetnsNotFound { message } => SysError::NetnsNotFound(message),
            WireError::PermissionDenied { message } => SysError::PermissionDenied(message),
            WireError::InvalidName { message } => SysError::InvalidName(message),
            WireError::Exists { name } => SysError::Exists(name),
            WireError::Io { op, errno, message } => {
                let source = match errno {
                    // The OS error renders exactly as it did in the helper.
                    Some(n) if io::Error::from_raw_os_error(n).to_string() == message => io::Error::from_raw_os_error(n),
                    _ => io::Error::other(message),
                };
                match static_op(&op) {
                    Some(op) => SysError::Io { op, source },
                    None => SysError::Io { op: "netns helper", source: io::Error::other(format!("{op}: {source}")) },
                }
            }
            WireError::Netlink { op, message } => match static_op(&op) {
                Some(op) => SysError::Netlink { op, message },
                None => SysError::Netlink { op: "netns helper", message: format!("{op}: {message}") },
            },
        }
    }
}

/// `SysError` names its operation with a `&'static str`; the few distinct names that come
/// back from the helper are kept (leaked once each, at most 256 of at most 200 bytes).
fn static_op(op: &str) -> Option<&'static str> {
    static OPS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut ops = OPS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = ops.iter().find(|s| **s == op) {
        return Some(s);
    }
    if ops.len() >= 256 || op.len() > 200 {
        return None;
    }
    let s: &'static str = Box::leak(op.to_owned().into_boxed_str());
    ops.push(s);
    Some(s)
}

fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_MSG {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("message of {} bytes is too large", bytes.len())));
    }
    Ok(bytes)
}

/// Decodes a request; on failure the id it carried (0 if none can be found) and why.
pub(crate) fn decode_request(bytes: &[u8], truncated: bool) -> Result<RequestMsg, (u64, String)> {
    let id_of = || {
        serde_json::from_slice::<serde_json::Value>(bytes).ok().and_then(|v| v.get("id").and_then(serde_json::Value::as_u64)).unwrap_or(0)
    };
    if truncated {
        return Err((0, format!("request longer than {MAX_MSG} bytes")));
    }
    serde_json::from_slice::<RequestMsg>(bytes).map_err(|e| (id_of(), format!("malformed request: {e}")))
}

pub(crate) fn decode_reply(bytes: &[u8]) -> Result<ReplyMsg, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed reply from the netns helper: {e}"))
}

// ---------------------------------------------------------------------------------------
// The daemon's side.

/// The daemon's handle on a running helper.
#[derive(Debug)]
pub(crate) struct Helper {
    conn: Mutex<Conn>,
    child: Mutex<Option<Child>>,
    pid: u32,
}

#[derive(Debug)]
struct Conn {
    /// `None` once the helper is known to be gone.
    sock: Option<OwnedFd>,
    next_id: u64,
    buf: Vec<u8>,
}

fn helper_gone(why: impl Into<String>) -> SysError {
    SysError::Io { op: "netns helper", source: io::Error::other(why.into()) }
}

impl Helper {
    pub(crate) fn spawn(opts: RootlessOptions) -> io::Result<Helper> {
        let exe = opts.exe.clone().unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let (ours, theirs) = ffi::seqpacket_pair()?;
        let cfg = HelperConfig {
            fd: theirs.as_raw_fd(),
            parent: std::process::id(),
            userns: opts.userns.clone(),
            userns_of_netns: if opts.userns.is_some() { None } else { opts.userns_of_netns.clone() },
            log_level: opts.log_level.clone().unwrap_or_else(|| "info".to_string()),
            log_format: opts.log_format,
        };
        let cfg_json = serde_json::to_string(&cfg).map_err(io::Error::other)?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(&exe);
        cmd.arg(HELPER_ARG).arg(cfg_json).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        // SAFETY: the closure runs in the child between fork and exec and calls only prctl
        // and fcntl, which are async-signal-safe; it allocates nothing (io::Error from an
        // errno does not allocate).
        unsafe {
            cmd.pre_exec(move || {
                // Dies with the thread that forks it (the daemon's main thread).
                ffi::set_pdeathsig(libc::SIGKILL)?;
                ffi::clear_cloexec_raw(theirs_raw)
            });
        }
        let mut child =
            cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("cannot start the netns helper {}: {e}", exe.display())))?;
        drop(theirs);
        let pid = child.id();
        match Self::wait_ready(ours.as_fd()) {
            Ok(()) => {}
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let mut msg = e.to_string();
                if let Some(s) = status.filter(|_| e.kind() == io::ErrorKind::UnexpectedEof) {
                    msg = format!("{msg} ({s}; its messages are above)");
                }
                return Err(io::Error::new(e.kind(), msg));
            }
        }
        ffi::set_rcvtimeo(ours.as_fd(), REPLY_TIMEOUT)?;
        tracing::info!(pid, userns = %format!("/proc/{pid}/ns/user"), "rootless: netns helper up");
        Ok(Helper { conn: Mutex::new(Conn { sock: Some(ours), next_id: 1, buf: vec![0; MAX_MSG] }), child: Mutex::new(Some(child)), pid })
    }

    fn wait_ready(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
        ffi::set_rcvtimeo(sock, START_TIMEOUT)?;
        let mut buf = vec![0u8; MAX_MSG];
        let r = ffi::recv_msg(sock, &mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                io::Error::new(io::ErrorKind::TimedOut, format!("the netns helper did not start within {START_TIMEOUT:?}"))
            }
            _ => e,
        })?;
        if r.len == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the netns helper exited during startup"));
        }
        match decode_reply(&buf[..r.len]).map_err(io::Error::other)? {
            ReplyMsg { id: 0, reply: Reply::Ready { .. } } => Ok(()),
            ReplyMsg { reply: Reply::Failed { message }, .. } => Err(io::Error::other(message)),
            other => Err(io::Error::other(format!("unexpected first message from the netns helper: {other:?}"))),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `req` and waits for its reply (and the fds that came with it).
    fn call(&self, req: Request) -> Result<(Reply, Vec<OwnedFd>), SysError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = &mut *conn;
        let id = conn.next_id;
        conn.next_id += 1;
        let bytes = encode(&RequestMsg { id, req }).map_err(|e| SysError::Io { op: "netns helper request", source: e })?;
        let Some(sock) = conn.sock.as_ref() else { return Err(helper_gone("the netns helper has exited")) };
        if let Err(e) = ffi::send_msg(sock.as_fd(), &bytes, None) {
            conn.sock = None;
            return Err(helper_gone(format!("the netns helper has exited ({e})")));
        }
        loop {
            let r = match ffi::recv_msg(sock.as_fd(), &mut conn.buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    // Its reply, if it ever comes, is recognised by its id and dropped.
                    return Err(helper_gone(format!("the netns helper did not answer within {REPLY_TIMEOUT:?}")));
                }
                Err(e) => return Err(SysError::Io { op: "netns helper receive", source: e }),
            };
            if r.len == 0 && !r.truncated {
                conn.sock = None;
                return Err(helper_gone("the netns helper has exited"));
            }
            if r.truncated {
                return Err(helper_gone("the netns helper sent a message that is too long"));
            }
            let msg = decode_reply(&conn.buf[..r.len]).map_err(helper_gone)?;
            match msg.id {
                // Late: its caller gave up. Dropping the fds closes a TAP nobody will use.
                i if i < id => continue,
                i if i == id => return Ok((msg.reply, r.fds)),
                i => return Err(helper_gone(format!("the netns helper answered request {i}, expected {id}"))),
            }
        }
    }

    pub(crate) fn attach(&self, spec: AttachSpec) -> Result<Attached, SysError> {
        match self.call(Request::Attach { spec })? {
            (Reply::Attached { ifindex, offloads, vnet_hdr_len }, mut fds) if fds.len() == 1 => {
                let fd = fds.pop().expect("one fd");
                Ok(Attached { fd, ifindex, offloads: offloads.into(), vnet_hdr_len })
            }
            (Reply::Attached { .. }, fds) => Err(helper_gone(format!("the netns helper sent {} fds with a TAP, expected 1", fds.len()))),
            (Reply::Error { error }, _) => Err(error.into()),
            (other, _) => Err(helper_gone(format!("unexpected reply to attach: {other:?}"))),
        }
    }

    /// Deletes or looks up an interface, in the helper.
    pub(crate) fn link(&self, op: LinkOp, netns: NetnsRef, ifname: &str) -> Result<(), SysError> {
        match self.call(Request::Link { op, netns, ifname: ifname.to_string() })? {
            (Reply::Done, _) => Ok(()),
            (Reply::Error { error }, _) => Err(error.into()),
            (other, _) => Err(helper_gone(format!("unexpected reply to {op:?}: {other:?}"))),
        }
    }

    pub(crate) fn netns_id(&self) -> io::Result<(u64, u64)> {
        match self.call(Request::NetnsId) {
            Ok((Reply::NetnsId { dev, ino }, _)) => Ok((dev, ino)),
            Ok((Reply::Error { error }, _)) => Err(io::Error::other(SysError::from(error).to_string())),
            Ok((other, _)) => Err(io::Error::other(format!("unexpected reply to netns_id: {other:?}"))),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the socket ends the helper's loop; give it a moment, then make sure.
        drop(self.conn.get_mut().unwrap_or_else(PoisonError::into_inner).sock.take());
        let Some(mut child) = self.child.get_mut().unwrap_or_else(PoisonError::into_inner).take() else { return };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The helper's side.

/// The helper process: call first thing in `main` when the first argument is
/// [`HELPER_ARG`], with the arguments after it, while the process is single-threaded.
pub fn helper_main(args: &[OsString]) -> ExitCode {
    let cfg = match args {
        [c] => c.to_str().and_then(|c| serde_json::from_str::<HelperConfig>(c).ok()),
        _ => None,
    };
    let Some(cfg) = cfg else {
        eprintln!("vswitchd {HELPER_ARG}: for vswitchd's own use (it starts it in rootless mode)");
        return ExitCode::from(2);
    };
    let sock = match ffi::adopt_inherited_socket(cfg.fd) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vswitchd netns helper: socket fd {}: {e}", cfg.fd);
            return ExitCode::from(2);
        }
    };
    // Set again (it already is, from before exec) and check for the race where the daemon
    // died before it was set: then the parent is someone else.
    if ffi::set_pdeathsig(libc::SIGKILL).is_err() || ffi::getppid() != cfg.parent {
        return ExitCode::FAILURE;
    }
    let _ = ffi::ignore_sigint();
    let fail = |message: String| {
        eprintln!("vswitchd netns helper: {message}");
        if let Ok(bytes) = encode(&ReplyMsg { id: 0, reply: Reply::Failed { message } }) {
            let _ = ffi::send_msg(sock.as_fd(), &bytes, None);
        }
        ExitCode::FAILURE
    };
    if let Err(message) = enter_namespaces(&cfg) {
        return fail(message);
    }
    // Only now may threads exist: the tracing subscriber and the worker thread.
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    super::log::init(filter, cfg.log_format);
    let worker = match NetnsWorker::spawn() {
        Ok(w) => w,
        Err(e) => return fail(format!("cannot start the netns thread: {e}")),
    };
    let ready = encode(&ReplyMsg { id: 0, reply: Reply::Ready { pid: std::process::id() } });
    if ready.and_then(|b| ffi::send_msg(sock.as_fd(), &b, None)).is_err() {
        return ExitCode::FAILURE;
    }
    tracing::debug!(pid = std::process::id(), "netns helper ready");
    serve(sock.as_fd(), &worker)
}

/// Answers requests until the daemon closes the socket.
fn serve(sock: std::os::fd::BorrowedFd<'_>, worker: &NetnsWorker) -> ExitCode {
    let mut buf = vec![0u8; MAX_MSG];
    loop {
        let r = match ffi::recv_msg(sock, &mut buf) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vswitchd netns helper: receive: {e}");
                return ExitCode::FAILURE;
            }
        };
        if r.len == 0 && !r.truncated {
            return ExitCode::SUCCESS; // the daemon closed its end
        }
        drop(r.fds); // requests carry none
        let (id, reply, fd) = match decode_request(&buf[..r.len], r.truncated) {
            Ok(msg) => {
                let (reply, fd) = handle(worker, msg.req);
                (msg.id, reply, fd)
            }
            Err((id, message)) => {
                tracing::warn!("netns helper: {message}");
                (id, Reply::Error { error: WireError::Io { op: "netns helper".into(), errno: None, message } }, None)
            }
        };
        let sent = encode(&ReplyMsg { id, reply }).and_then(|b| ffi::send_msg(sock, &b, fd.as_ref().map(|f| f.as_fd())));
        match sent {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vswitchd netns helper: send: {e}");
                return ExitCode::FAILURE;
            }
        }
        // Our copy of a TAP fd closes here; the daemon holds its own.
    }
}

fn handle(worker: &NetnsWorker, req: Request) -> (Reply, Option<OwnedFd>) {
    let err = |e: &SysError| Reply::Error { error: e.into() };
    match req {
        Request::Attach { spec } => match worker.attach(spec) {
            Ok(a) => (Reply::Attached { ifindex: a.ifindex, offloads: a.offloads.into(), vnet_hdr_len: a.vnet_hdr_len }, Some(a.fd)),
            Err(e) => (err(&e), None),
        },
        Request::Link { op, netns, ifname } => match worker.link(op, netns, &ifname) {
            Ok(()) => (Reply::Done, None),
            Err(e) => (err(&e), None),
        },
        Request::NetnsId => match worker.worker_netns_id() {
            Ok((dev, ino)) => (Reply::NetnsId { dev, ino }, None),
            Err(e) => (err(&SysError::Io { op: "netns id", source: e }), None),
        },
    }
}

/// Step 1 and 2 of the module docs. Runs single-threaded.
fn enter_namespaces(cfg: &HelperConfig) -> Result<(), String> {
    let (uid, gid) = (ffi::geteuid(), ffi::getegid());
    if let Some(path) = &cfg.userns {
        join_userns_file(path, uid)?;
    } else if let Some(netns) = &cfg.userns_of_netns {
        match userns_owning(netns) {
            Ok(Some(userns)) => join_userns(userns.as_fd(), &format!("the user namespace that owns {}", netns.display()), uid)?,
            // Owned by our own user namespace (a daemon with privileges and plain netns):
            // nothing to rejoin.
            Ok(None) => create_userns(uid, gid)?,
            Err(e) => return Err(format!("cannot find the user namespace that owns {}: {e}", netns.display())),
        }
    } else {
        create_userns(uid, gid)?;
    }
    ffi::unshare(libc::CLONE_NEWNET).map_err(|e| {
        let mut m = format!("cannot make the helper's network namespace (unshare(CLONE_NEWNET)): {e}");
        if read_sysctl("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
            m.push_str(
                "; AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): \
                 give vswitchd an AppArmor profile with the `userns,` rule, or set the sysctl to 0",
            );
        }
        m
    })
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name)).ok().map(|s| s.trim().to_string())
}

/// `unshare(CLONE_NEWUSER)` with a map of just our uid and gid to 0.
fn create_userns(uid: u32, gid: u32) -> Result<(), String> {
    if let Err(e) = ffi::unshare(libc::CLONE_NEWUSER) {
        return Err(userns_refused(&e));
    }
    let write = |file: &str, text: &str| {
        std::fs::write(Path::new("/proc/self").join(file), text).map_err(|e| format!("cannot write {text:?} to /proc/self/{file}: {e}"))
    };
    // Writing gid_map without privileges needs setgroups off first (kernels since 3.19).
    if Path::new("/proc/self/setgroups").exists() {
        write("setgroups", "deny")?;
    }
    write("uid_map", &format!("0 {uid} 1\n"))?;
    write("gid_map", &format!("0 {gid} 1\n"))?;
    Ok(())
}

/// Why a user namespace could not be made, in the words of the knob that forbids it.
fn userns_refused(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            if read_sysctl("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
                "user namespaces are disabled: kernel.unprivileged_userns_clone=0 \
                 (as root: sysctl -w kernel.unprivileged_userns_clone=1)"
                    .to_string()
            } else {
                format!(
                    "unshare(CLONE_NEWUSER) was refused ({e}): unprivileged user namespaces are not allowed here \
                     (a seccomp filter, e.g. inside a container, or a security module)"
                )
            }
        }
        Some(libc::ENOSPC) => match read_sysctl("user/max_user_namespaces") {
            Some(n) if n == "0" => "user namespaces are disabled: user.max_user_namespaces=0 \
                                    (as root: sysctl -w user.max_user_namespaces=15000)"
                .to_string(),
            n => format!(
                "no user namespace left (user.max_user_namespaces={}, or the nesting limit of 32 is reached)",
                n.unwrap_or_else(|| "?".into())
            ),
        },
        Some(libc::EINVAL) => format!("unshare(CLONE_NEWUSER): {e} (a kernel without CONFIG_USER_NS?)"),
        _ => format!("unshare(CLONE_NEWUSER): {e}"),
    }
}

fn ns_id(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let file = File::from(fd.try_clone()?);
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

fn own_userns_id() -> io::Result<(u64, u64)> {
    let m = std::fs::metadata("/proc/self/ns/user")?;
    Ok((m.dev(), m.ino()))
}

fn join_userns_file(path: &Path, uid: u32) -> Result<(), String> {
    let fd = super::netns::open_ns_file(path).map_err(|e| format!("--userns {}: {e}", path.display()))?;
    match ffi::ns_get_nstype(fd.as_fd()) {
        Ok(t) if t == libc::CLONE_NEWUSER => {}
        _ => return Err(format!("--userns {} is not a user namespace (expected e.g. /proc/PID/ns/user)", path.display())),
    }
    join_userns(fd.as_fd(), &path.display().to_string(), uid)
}

fn join_userns(fd: std::os::fd::BorrowedFd<'_>, what: &str, uid: u32) -> Result<(), String> {
    let owned = fd.try_clone_to_owned().map_err(|e| e.to_string())?;
    if ns_id(&owned).ok().is_some_and(|id| own_userns_id().ok() == Some(id)) {
        return Ok(()); // already in it
    }
    ffi::setns_user(fd).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "cannot join user namespace {what}: {e}; it must have been made by uid {uid} (vswitchd's user) \
             or be a descendant of one that was"
        ),
        _ => format!("cannot join user namespace {what}: {e}"),
    })
}

/// The user namespace that owns the network namespace `netns`, walked up to the one just
/// below our own; `None` when our own user namespace owns it.
fn userns_owning(netns: &Path) -> io::Result<Option<OwnedFd>> {
    let own = own_userns_id()?;
    let fd = super::netns::open_ns_file(netns)?;
    if ffi::ns_get_nstype(fd.as_fd())? != libc::CLONE_NEWNET {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a network namespace"));
    }
    let mut cur = ffi::ns_get_userns(fd.as_fd())?;
    for _ in 0..40 {
        if ns_id(&cur)? == own {
            return Ok(None);
        }
        match ffi::ns_get_parent(cur.as_fd()) {
            Ok(parent) if ns_id(&parent)? == own => return Ok(Some(cur)),
            Ok(parent) => cur = parent,
            // The parent lies outside our view: `cur` is as high as we can see.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(Some(cur)),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("user namespaces nested too deep"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn spec() -> AttachSpec {
        AttachSpec {
            netns: NetnsRef::Pid(4242),
            ifname: "eth0".into(),
            mtu: 1500,
            mac: [2, 0x42, 10, 89, 0, 2],
            addr: Ipv4Addr::new(10, 89, 0, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 89, 0, 1),
            addr6: Some(("fd00::2".parse::<Ipv6Addr>().unwrap(), 64)),
            gateway6: Some("fd00::1".parse::<Ipv6Addr>().unwrap()),
            disable_ipv6: false,
            vnet_hdr: true,
            persist: false,
            uso: true,
            gso_max_size: None,
            reuse: true,
            handover: false,
            find_by_mac: false,
        }
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Attach { spec: spec() },
            Request::Attach { spec: AttachSpec { netns: NetnsRef::Path("/run/netns/c 1".into()), addr6: None, ..spec() } },
            Request::Link { op: LinkOp::Delete, netns: NetnsRef::Path("/proc/1/ns/net".into()), ifname: "eth1".into() },
            Request::NetnsId,
        ];
        for (i, req) in reqs.into_iter().enumerate() {
            let msg = RequestMsg { id: i as u64 + 7, req };
            let bytes = encode(&msg).unwrap();
            assert_eq!(decode_request(&bytes, false).unwrap(), msg);
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Ready { pid: 12 },
            Reply::Failed { message: "user namespaces are disabled".into() },
            Reply::Attached {
                ifindex: 3,
                offloads: Offloads { vnet_hdr: true, csum: true, tso4: true, tso6: false, uso: true }.into(),
                vnet_hdr_len: 12,
            },
            Reply::Done,
            Reply::NetnsId { dev: 4, ino: 4026531840 },
            Reply::Error { error: WireError::Exists { name: "eth0".into() } },
        ];
        for reply in replies {
            let msg = ReplyMsg { id: u64::MAX, reply };
            assert_eq!(decode_reply(&encode(&msg).unwrap()).unwrap(), msg);
        }
    }

    /// Every variant comes back as the same variant with the same text (so the same API
    /// error code and message).
    #[test]
    fn sys_errors_cross_intact() {
        let errors = [
            SysError::NetnsNotFound("process 9 does not exist".into()),
            SysError::PermissionDenied("entering network namespace of pid 9".into()),
            SysError::InvalidName("\"a/b\" contains '/'".into()),
            SysError::Exists("eth0".into()),
            SysError::Io { op: "open /dev/net/tun", source: io::Error::from_raw_os_error(libc::ENOENT) },
            SysError::Io { op: "a custom op", source: io::Error::other("the worker panicked") },
            SysError::Netlink { op: "add default route", message: "File exists (os error 17)".into() },
        ];
        for e in errors {
            let wire = WireError::from(&e);
            let json = serde_json::to_string(&wire).unwrap();
            let back: SysError = serde_json::from_str::<WireError>(&json).unwrap().into();
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e), "{json}");
            assert_eq!(back.to_string(), e.to_string(), "{json}");
            if let (SysError::Io { source: a, .. }, SysError::Io { source: b, .. }) = (&back, &e) {
                assert_eq!(a.raw_os_error(), b.raw_os_error());
            }
        }
    }

    #[test]
    fn unknown_ops_beyond_the_bound_keep_their_text() {
        let long = "x".repeat(300);
        let e: SysError = WireError::Netlink { op: long.clone(), message: "boom".into() }.into();
        assert_eq!(e.to_string(), format!("netlink: netns helper failed: {long}: boom"));
    }

    #[test]
    fn malformed_requests_are_errors_with_their_id() {
        assert_eq!(decode_request(b"", false).unwrap_err().0, 0);
        assert_eq!(decode_request(b"\xff\x00garbage", false).unwrap_err().0, 0);
        assert_eq!(decode_request(br#"{"id":5,"req":"launch_missiles"}"#, false).unwrap_err().0, 5);
        assert_eq!(decode_request(br#"{"id":6,"req":{"attach":{"spec":{}}}}"#, false).unwrap_err().0, 6);
        // Unknown fields are refused, not ignored.
        assert!(decode_request(br#"{"id":7,"req":"netns_id","extra":1}"#, false).is_err());
        let ok = br#"{"id":8,"req":"netns_id"}"#;
        assert_eq!(decode_request(ok, false).unwrap(), RequestMsg { id: 8, req: Request::NetnsId });
        assert_eq!(decode_request(ok, true).unwrap_err().0, 0, "a truncated message is never acted on");
        // An interface name with a NUL or of 300 bytes decodes, and the worker refuses it.
        let bad = RequestMsg { id: 9, req: Request::Link { op: LinkOp::Delete, netns: NetnsRef::Pid(1), ifname: "e\0".repeat(150) } };
        assert_eq!(decode_request(&encode(&bad).unwrap(), false).unwrap(), bad);
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(decode_reply(b"{}").is_err());
        assert!(decode_reply(br#"{"id":1,"reply":{"attached":{"ifindex":-1}}}"#).is_err());
        assert!(decode_reply(br#"{"id":1,"reply":{"error":{"error":{"kind":"nope"}}}}"#).is_err());
    }

    #[test]
    fn helper_config_refuses_bad_arguments() {
        assert_eq!(helper_main(&[]), ExitCode::from(2));
        assert_eq!(helper_main(&["{not json".into()]), ExitCode::from(2));
        // fd 0 is a standard stream, never adopted.
        let cfg = HelperConfig {
            fd: 0,
            parent: 1,
            userns: None,
            userns_of_netns: None,
            log_level: "info".into(),
            log_format: Default::default(),
        };
        assert_eq!(helper_main(&[serde_json::to_string(&cfg).unwrap().into()]), ExitCode::from(2));
    }

    fn send_json(sock: &OwnedFd, bytes: &[u8]) -> ReplyMsg {
        ffi::send_msg(sock.as_fd(), bytes, None).unwrap();
        let mut buf = vec![0u8; MAX_MSG];
        let r = ffi::recv_msg(sock.as_fd(), &mut buf).unwrap();
        decode_reply(&buf[..r.len]).unwrap()
    }

    /// The helper's loop (with an in-process worker, which needs no privileges to start):
    /// garbage gets an error reply carrying its id, requests get answers, bad names come back
    /// as `InvalidName`, and closing the socket ends the loop.
    #[test]
    fn serve_answers_garbage_with_errors_and_stops_at_eof() {
        let (daemon, helper) = ffi::seqpacket_pair().unwrap();
        let served = std::thread::spawn(move || {
            let worker = NetnsWorker::spawn().unwrap();
            serve(helper.as_fd(), &worker)
        });
        for (bytes, id) in [(&b"\x00\xffnot json"[..], 0), (br#"{"id":41,"req":"reboot"}"#, 41), (br#"{"id":42}"#, 42)] {
            let reply = send_json(&daemon, bytes);
            assert_eq!(reply.id, id);
            assert!(matches!(reply.reply, Reply::Error { error: WireError::Io { .. } }), "{reply:?}");
        }
        let req = RequestMsg { id: 43, req: Request::NetnsId };
        let reply = send_json(&daemon, &encode(&req).unwrap());
        let own = crate::sys::current_netns_id().unwrap();
        assert_eq!(reply, ReplyMsg { id: 43, reply: Reply::NetnsId { dev: own.0, ino: own.1 } });
        let req = RequestMsg { id: 44, req: Request::Link { op: LinkOp::Delete, netns: NetnsRef::Pid(1), ifname: "a/b".into() } };
        let reply = send_json(&daemon, &encode(&req).unwrap());
        assert!(matches!(reply.reply, Reply::Error { error: WireError::InvalidName { .. } }), "{reply:?}");
        // A request longer than the helper's buffer is refused, not half-read.
        ffi::send_msg(daemon.as_fd(), &vec![b' '; MAX_MSG + 1], None).unwrap();
        let mut buf = vec![0u8; MAX_MSG];
        let r = ffi::recv_msg(daemon.as_fd(), &mut buf).unwrap();
        assert!(matches!(decode_reply(&buf[..r.len]).unwrap().reply, Reply::Error { .. }));
        drop(daemon);
        assert_eq!(served.join().unwrap(), ExitCode::SUCCESS);
    }

    /// The daemon's side: a reply that arrives after its caller gave up is dropped together
    /// with its fd, and the caller gets its own reply; a helper that goes away is an error.
    #[test]
    fn call_skips_late_replies_and_reports_a_gone_helper() {
        let (daemon, helper) = ffi::seqpacket_pair().unwrap();
        let h =
            Helper { conn: Mutex::new(Conn { sock: Some(daemon), next_id: 5, buf: vec![0; MAX_MSG] }), child: Mutex::new(None), pid: 0 };
        let fake = std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_MSG];
            let r = ffi::recv_msg(helper.as_fd(), &mut buf).unwrap();
            let req = decode_request(&buf[..r.len], false).unwrap();
            assert_eq!(req, RequestMsg { id: 5, req: Request::NetnsId });
            // A late answer to request 4, with an fd, then the answer to 5.
            let stale = File::open("/proc/self/status").unwrap();
            let late = ReplyMsg { id: 4, reply: Reply::Attached { ifindex: 9, offloads: Offloads::default().into(), vnet_hdr_len: 0 } };
            ffi::send_msg(helper.as_fd(), &encode(&late).unwrap(), Some(stale.as_fd())).unwrap();
            let ok = ReplyMsg { id: 5, reply: Reply::NetnsId { dev: 1, ino: 2 } };
            ffi::send_msg(helper.as_fd(), &encode(&ok).unwrap(), None).unwrap();
            // Then it dies.
        });
        assert_eq!(h.netns_id().unwrap(), (1, 2));
        fake.join().unwrap();
        let err = h.attach(spec()).unwrap_err();
        assert!(err.to_string().contains("netns helper has exited"), "{err}");
        assert!(h.link(LinkOp::Delete, NetnsRef::Pid(1), "eth0").unwrap_err().to_string().contains("has exited"));
    }

    /// Messages and fds across a real socketpair: what `call` and `serve` rely on.
    #[test]
    fn seqpacket_carries_messages_and_fds() {
        let (a, b) = ffi::seqpacket_pair().unwrap();
        let file = File::open("/proc/self/status").unwrap();
        ffi::send_msg(a.as_fd(), b"hello", Some(file.as_fd())).unwrap();
        ffi::send_msg(a.as_fd(), b"second", None).unwrap();
        let mut buf = vec![0u8; 64];
        let r = ffi::recv_msg(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..r.len], r.fds.len(), r.truncated), (&b"hello"[..], 1, false));
        let got = File::from(r.fds.into_iter().next().unwrap());
        assert_eq!(got.metadata().unwrap().ino(), file.metadata().unwrap().ino());
        let mut small = [0u8; 3];
        let r = ffi::recv_msg(b.as_fd(), &mut small).unwrap();
        assert!(r.truncated, "a message longer than the buffer is flagged");
        drop(a);
        assert_eq!(ffi::recv_msg(b.as_fd(), &mut buf).unwrap().len, 0, "end of stream");
    }
}
