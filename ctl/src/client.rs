//! One HTTP/1.1 request to vswitchd over its Unix socket (hyper 1 client connection on a
//! current-thread tokio runtime), and where the socket is.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::error::Failure;

/// The socket of a vswitchd running as root.
pub const SYSTEM_SOCKET: &str = "/run/vswitch/vswitchd.sock";

/// How long to wait for an answer. Attaching sets up a namespace and a TAP, which is quick;
/// this only keeps a wedged daemon from hanging the command forever.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A request to make: method, path (with query, already encoded) and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Vec<u8>>,
}

impl Call {
    pub fn get(path: String) -> Call {
        Call { method: Method::GET, path, body: None }
    }

    pub fn delete(path: String) -> Call {
        Call { method: Method::DELETE, path, body: None }
    }

    pub fn post<T: serde::Serialize>(path: String, body: &T) -> Call {
        Call::with_body(Method::POST, path, body)
    }

    pub fn put<T: serde::Serialize>(path: String, body: &T) -> Call {
        Call::with_body(Method::PUT, path, body)
    }

    pub fn patch<T: serde::Serialize>(path: String, body: &T) -> Call {
        Call::with_body(Method::PATCH, path, body)
    }

    fn with_body<T: serde::Serialize>(method: Method, path: String, body: &T) -> Call {
        // Serializing the API request types (strings, numbers, maps with string keys) cannot fail.
        let body = serde_json::to_vec(body).unwrap_or_default();
        Call { method, path, body: Some(body) }
    }
}

/// The daemon's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Where the socket came from, for the error hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketSource {
    Flag,
    Env,
    Default,
}

/// `--socket`, else `$VSWITCH_SOCKET`, else the default for this user.
pub fn resolve_socket(flag: Option<PathBuf>) -> (PathBuf, SocketSource) {
    if let Some(p) = flag {
        return (p, SocketSource::Flag);
    }
    if let Some(p) = std::env::var_os("VSWITCH_SOCKET").filter(|v| !v.is_empty()) {
        return (PathBuf::from(p), SocketSource::Env);
    }
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    (default_socket(effective_uid(), xdg.as_deref()), SocketSource::Default)
}

/// `/run/vswitch/vswitchd.sock` for root, `$XDG_RUNTIME_DIR/vswitch/vswitchd.sock` for
/// anyone else; without a usable `XDG_RUNTIME_DIR` (unset, empty or relative), the system
/// socket, which a daemon may share with a group.
pub fn default_socket(euid: Option<u32>, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    match (euid, xdg_runtime_dir) {
        (Some(0), _) => PathBuf::from(SYSTEM_SOCKET),
        (_, Some(dir)) if dir.is_absolute() => dir.join("vswitch").join("vswitchd.sock"),
        _ => PathBuf::from(SYSTEM_SOCKET),
    }
}

/// The effective uid, from `/proc/self/status` (no libc, no unsafe).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_euid(&status)
}

fn parse_euid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    // real, effective, saved set, filesystem
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Makes one request whose answer must be a success carrying a `T` (an empty answer reads as
/// JSON `null`, so `serde_json::Value` takes a 204).
///
/// # Errors
/// The daemon cannot be reached, refused the request, or answered something else than a `T`.
pub fn fetch<T: serde::de::DeserializeOwned>(socket: &Path, c: &Call) -> Result<T, Failure> {
    let reply = call(socket, c)?;
    if !reply.status.is_success() {
        return Err(Failure::from_error_reply(reply.status, &reply.body));
    }
    decode(&reply)
}

/// The answer's body as a `T` (empty: JSON `null`).
///
/// # Errors
/// `BadAnswer` when it is not one.
pub fn decode<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, Failure> {
    let body: &[u8] = if reply.body.iter().all(u8::is_ascii_whitespace) { b"null" } else { &reply.body };
    serde_json::from_slice(body)
        .map_err(|e| Failure::BadAnswer { status: reply.status, detail: format!("{e}: {}", crate::error::snippet(&reply.body)) })
}

/// Makes one request and waits for the whole answer.
pub fn call(socket: &Path, call: &Call) -> Result<Reply, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Failure::Local(format!("cannot start the I/O runtime: {e}")))?;
    rt.block_on(async {
        match tokio::time::timeout(TIMEOUT, send(socket, call)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transport { socket: socket.to_path_buf(), reason: format!("no answer within {}s", TIMEOUT.as_secs()) }),
        }
    })
}

async fn send(socket: &Path, call: &Call) -> Result<Reply, Failure> {
    let transport = |e: hyper::Error| Failure::Transport { socket: socket.to_path_buf(), reason: hyper_reason(&e) };

    let stream = UnixStream::connect(socket).await.map_err(|e| connect_failure(socket, &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(transport)?;
    // Drives the connection; its error, if any, also fails the request below.
    let conn = tokio::spawn(conn);

    let mut req = Request::builder().method(call.method.clone()).uri(&call.path);
    let headers = req.headers_mut().ok_or_else(|| Failure::Local(format!("bad request path {:?}", call.path)))?;
    headers.insert(HOST, HeaderValue::from_static("localhost"));
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if call.body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let body = Full::new(Bytes::from(call.body.clone().unwrap_or_default()));
    let req = req.body(body).map_err(|e| Failure::Local(format!("bad request {:?}: {e}", call.path)))?;

    let resp = sender.send_request(req).await.map_err(transport)?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(transport)?.to_bytes();
    conn.abort();
    Ok(Reply { status, body })
}

/// Makes one request and hands each piece of a successful answer's body to `sink` as it
/// arrives, for as long as the daemon sends (no timeout: a capture runs until it is done).
///
/// # Errors
/// The daemon's refusal, a lost connection, or `sink`'s error.
pub fn stream(socket: &Path, call: &Call, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Failure::Local(format!("cannot start the I/O runtime: {e}")))?;
    rt.block_on(async {
        let transport = |e: hyper::Error| Failure::Transport { socket: socket.to_path_buf(), reason: hyper_reason(&e) };
        let stream = UnixStream::connect(socket).await.map_err(|e| connect_failure(socket, &e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(transport)?;
        let conn = tokio::spawn(conn);
        let req = Request::builder()
            .method(call.method.clone())
            .uri(&call.path)
            .header(HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|e| Failure::Local(format!("bad request {:?}: {e}", call.path)))?;
        let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| Failure::Transport { socket: socket.to_path_buf(), reason: format!("no answer within {}s", TIMEOUT.as_secs()) })?
            .map_err(transport)?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map_err(transport)?.to_bytes();
            return Err(Failure::from_error_reply(status, &bytes));
        }
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.map_err(transport)?.data_ref() {
                // A closed stdout (`| head`) ends the capture quietly.
                if let Err(e) = sink(data) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        break;
                    }
                    return Err(Failure::Local(format!("cannot write the capture: {}", io_reason(&e))));
                }
            }
        }
        conn.abort();
        Ok(())
    })
}

/// Counts the packets of a pcapng stream as it goes by, and reads the drops the switch noted
/// in its closing interface statistics.
#[derive(Default)]
pub struct PcapngSummary {
    pending: Vec<u8>,
    parser: Option<pcap_file::pcapng::PcapNgParser>,
    pub packets: u64,
    pub dropped: Option<u64>,
}

impl std::fmt::Debug for PcapngSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapngSummary").field("packets", &self.packets).field("dropped", &self.dropped).finish()
    }
}

impl PcapngSummary {
    pub fn feed(&mut self, chunk: &[u8]) {
        use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
        use pcap_file::pcapng::Block;
        self.pending.extend_from_slice(chunk);
        let mut rest: &[u8] = &self.pending;
        if self.parser.is_none() {
            match pcap_file::pcapng::PcapNgParser::new(rest) {
                Ok((r, p)) => {
                    rest = r;
                    self.parser = Some(p);
                }
                Err(_) => return,
            }
        }
        let Some(parser) = self.parser.as_mut() else { return };
        while let Ok((r, block)) = parser.next_block(rest) {
            match block {
                Block::EnhancedPacket(_) => self.packets += 1,
                Block::InterfaceStatistics(s) => {
                    for o in &s.options {
                        if let InterfaceStatisticsOption::IsbIfDrop(n) = o {
                            *self.dropped.get_or_insert(0) += n;
                        }
                    }
                }
                _ => {}
            }
            rest = r;
        }
        let used = self.pending.len() - rest.len();
        self.pending.drain(..used);
    }
}

fn connect_failure(socket: &Path, e: &io::Error) -> Failure {
    use std::os::unix::fs::FileTypeExt;
    // Connecting to a file that is no socket (`--socket /etc/passwd`) is "connection refused":
    // name the real problem instead.
    if std::fs::metadata(socket).is_ok_and(|m| !m.file_type().is_socket()) {
        return Failure::NotASocket { socket: socket.to_path_buf() };
    }
    let socket = socket.to_path_buf();
    let reason = match e.kind() {
        io::ErrorKind::PermissionDenied => return Failure::PermissionDenied { socket },
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => io_reason(e),
    };
    Failure::Unreachable { socket, reason, hint: None }
}

/// An I/O error without the trailing ` (os error N)`, starting lower case.
pub fn io_reason(e: &io::Error) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.find(" (os error ") {
        s.truncate(i);
    }
    lower_first(s)
}

fn hyper_reason(e: &hyper::Error) -> String {
    // hyper's messages are terse ("connection closed before message completed"); add the
    // underlying I/O error when there is one.
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        match inner.downcast_ref::<io::Error>() {
            Some(io) => s.push_str(&io_reason(io)),
            None => s.push_str(&inner.to_string()),
        }
        src = inner.source();
    }
    s
}

fn lower_first(s: String) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if f.is_ascii_uppercase() => f.to_ascii_lowercase().to_string() + c.as_str(),
        _ => s,
    }
}

/// Percent-encodes a path segment or query value: everything but unreserved characters and
/// `:` (MACs stay readable). A segment of only dots is encoded too, so that it cannot turn into
/// a relative path step.
pub fn enc(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b == b'.') {
        return "%2E".repeat(s.len());
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_socket_by_user() {
        let xdg = Path::new("/run/user/1000");
        assert_eq!(default_socket(Some(0), Some(xdg)), Path::new(SYSTEM_SOCKET));
        assert_eq!(default_socket(Some(1000), Some(xdg)), Path::new("/run/user/1000/vswitch/vswitchd.sock"));
        assert_eq!(default_socket(Some(1000), None), Path::new(SYSTEM_SOCKET));
        assert_eq!(default_socket(Some(1000), Some(Path::new(""))), Path::new(SYSTEM_SOCKET));
        assert_eq!(default_socket(Some(1000), Some(Path::new("rel"))), Path::new(SYSTEM_SOCKET));
        assert_eq!(default_socket(None, Some(xdg)), Path::new("/run/user/1000/vswitch/vswitchd.sock"));
    }

    #[test]
    fn euid_from_proc_status() {
        let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Name:\tx\n"), None);
        // The real one parses.
        assert!(effective_uid().is_some());
    }

    #[test]
    fn encoding() {
        assert_eq!(enc("net-1_a.b"), "net-1_a.b");
        assert_eq!(enc("02:42:ac:11:00:02"), "02:42:ac:11:00:02");
        assert_eq!(enc("a b/c?d&e=f#%"), "a%20b%2Fc%3Fd%26e%3Df%23%25");
        assert_eq!(enc(".."), "%2E%2E");
        assert_eq!(enc("é"), "%C3%A9");
        assert_eq!(enc(""), "");
    }

    #[test]
    fn io_reasons_are_short() {
        let e = io::Error::from_raw_os_error(20); // ENOTDIR
        assert_eq!(io_reason(&e), "not a directory");
    }

    #[test]
    fn post_bodies_are_json() {
        let c = Call::post("/v1/fdb/flush".into(), &vswitch::api::FdbFlush::default());
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.body.as_deref(), Some(&b"{}"[..]));
        let c = Call::put("/v1/networks/n/dns".into(), &vswitch::api::DnsUpstreamsSet::default());
        assert_eq!((c.method, c.body.as_deref()), (Method::PUT, Some(&br#"{"upstreams":[]}"#[..])));
        let c = Call::patch("/v1/networks/n/endpoints/c1".into(), &vswitch::api::EndpointUpdate::default());
        assert_eq!((c.method, c.body.as_deref()), (Method::PATCH, Some(&b"{}"[..])));
    }
}
