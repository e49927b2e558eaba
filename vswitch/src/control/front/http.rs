//! HTTP/1.1 on the Unix socket: routing, body limits, JSON in and out.
//!
//! Requests become calls on [`crate::control::Control`]; this file knows HTTP and nothing about switching.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::Notify;

use crate::api::{self, ApiError, ErrorCode};
use crate::control::Control;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Binds the control socket at `path` with mode 0600, without a window where it is wider:
/// the socket is bound inside a fresh 0700 directory, narrowed, then renamed into place.
///
/// # Errors
/// When another daemon answers on `path`, or any filesystem step fails.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("another vswitchd is already listening on {}", path.display())));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp_dir = dir.join(format!(".vswitchd.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::create_dir(&tmp_dir)?;
    std::fs::set_permissions(&tmp_dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp_sock = tmp_dir.join("sock");
    let result = (|| {
        let listener = UnixListener::bind(&tmp_sock)?;
        std::fs::set_permissions(&tmp_sock, std::fs::Permissions::from_mode(0o600))?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(&tmp_sock, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&tmp_dir);
    result
}

/// Most control connections open at once. Past it the oldest idle one (no request in
/// progress) is closed for the newcomer, so idle clients never lock out a working one.
const MAX_CONNECTIONS: usize = 256;
/// A request head must arrive within this long; it is also how long a connection may sit idle
/// before or between requests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must arrive within this long of its head.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed accept (e.g. the open-files limit) the loop sleeps this long, doubling up to
/// `ACCEPT_BACKOFF_MAX` while it keeps failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// After the open-files limit stopped an accept, the connection cap stays at what fit for
/// this long.
const CAP_HOLD: Duration = Duration::from_secs(30);

/// One accepted connection, as the accept loop sees it.
#[derive(Debug, Default)]
struct Conn {
    /// Requests being handled on it right now (0: idle, may be closed for a newcomer).
    busy: AtomicUsize,
    /// Notified to close it.
    close: Notify,
}

/// The open connections, oldest first, and the current cap.
#[derive(Debug)]
struct Conns {
    live: BTreeMap<u64, Arc<Conn>>,
    next: u64,
    cap: usize,
    /// When the cap was last lowered below `MAX_CONNECTIONS`.
    lowered: Option<Instant>,
}

impl Conns {
    fn new() -> Conns {
        Conns { live: BTreeMap::new(), next: 0, cap: MAX_CONNECTIONS, lowered: None }
    }

    /// Closes the oldest idle connection; false when every one is busy.
    fn evict_idle(&mut self) -> bool {
        let Some(id) = self.live.iter().find(|(_, c)| c.busy.load(Ordering::Relaxed) == 0).map(|(id, _)| *id) else {
            return false;
        };
        if let Some(c) = self.live.remove(&id) {
            c.close.notify_one();
        }
        true
    }

    /// Room for one more: evicts an idle connection when at the cap; false when all are busy.
    fn admit(&mut self, now: Instant) -> Option<(u64, Arc<Conn>)> {
        if self.lowered.is_some_and(|t| now.duration_since(t) >= CAP_HOLD) {
            (self.cap, self.lowered) = (MAX_CONNECTIONS, None);
        }
        while self.live.len() >= self.cap {
            if !self.evict_idle() {
                return None;
            }
        }
        let id = self.next;
        self.next += 1;
        let conn = Arc::new(Conn::default());
        self.live.insert(id, conn.clone());
        Some((id, conn))
    }

    /// The process is out of file descriptors: hold no more connections than now, and free
    /// one for the next accept.
    fn out_of_fds(&mut self, now: Instant) {
        self.cap = self.live.len().saturating_sub(1).max(1);
        self.lowered = Some(now);
        self.evict_idle();
    }
}

/// At most one log line a second for an event that may repeat at any rate; the line carries
/// how many happened since the last one.
#[derive(Debug, Default)]
struct LogLimit {
    last: Option<Instant>,
    count: u64,
}

impl LogLimit {
    /// Counts one event; `Some(n)` when a line is due, covering `n` events.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// Serves connections until `shutdown` resolves; then removes the socket file.
///
/// Bounded: at most [`MAX_CONNECTIONS`] connections (the oldest idle one makes room for a new
/// one), a request head within [`HEADER_TIMEOUT`] (also the idle timeout), a body within
/// [`BODY_TIMEOUT`]; a failing accept backs off (10..100 ms) and logs at most once a second.
pub async fn serve(listener: UnixListener, path: PathBuf, control: Arc<Control>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let conns = Arc::new(Mutex::new(Conns::new()));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let (mut accept_log, mut full_log) = (LogLimit::default(), LogLimit::default());
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let now = Instant::now();
        let stream = match accepted {
            Ok((s, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                s
            }
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) {
                    lock(&conns).out_of_fds(now);
                }
                if let Some(n) = accept_log.hit(now) {
                    tracing::warn!(error = %e, failures = n, "accept on control socket failed; backing off");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Some((id, conn)) = lock(&conns).admit(now) else {
            // Every slot is handling a request: refuse the newcomer (closing it at once).
            if let Some(n) = full_log.hit(now) {
                tracing::warn!(refused = n, max = MAX_CONNECTIONS, "control socket: every connection is busy; refusing new ones");
            }
            continue;
        };
        let control = control.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            let busy = conn.clone();
            let svc = hyper::service::service_fn(move |req| {
                let control = control.clone();
                let busy = busy.clone();
                async move {
                    busy.busy.fetch_add(1, Ordering::Relaxed);
                    let _idle_again = Defer(|| {
                        busy.busy.fetch_sub(1, Ordering::Relaxed);
                    });
                    Ok::<_, Infallible>(handle(&control, req).await)
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                res = served => {
                    if let Err(e) = res {
                        tracing::trace!(error = %e, "control connection ended with an error");
                    }
                }
                _ = conn.close.notified() => {}
            }
            lock(&conns).live.remove(&id);
        });
    }
    let _ = std::fs::remove_file(&path);
}

fn lock(conns: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a closure when dropped (also when the future holding it is dropped mid-way).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

async fn handle(control: &Control, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let reply = if method == Method::GET && path == CAPTURE {
        capture(control, &query).await
    } else if method == Method::GET && path == LIVE_TRACE {
        live_trace(control, &query).await
    } else {
        route(control, req, &method, &path, &query).await.map(|r| r.map(BodyExt::boxed))
    };
    match reply {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.error.code.as_str(), message = %e.error.message, "request refused");
            json(StatusCode::from_u16(e.error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e).map(BodyExt::boxed)
        }
    }
}

/// `GET /v1/capture?target=…&count=…&snaplen=…`: pcapng, streamed (chunked) while it runs.
const CAPTURE: &str = "/v1/capture";
/// `GET /v1/trace/live?target=…&count=…`: JSON lines, one per frame, with its verdict.
const LIVE_TRACE: &str = "/v1/trace/live";

async fn capture(control: &Control, query: &str) -> Result<Response<BoxBody<Bytes, Infallible>>, ApiError> {
    let req = crate::control::ops::capture::CaptureRequest::from_query(query)?;
    let mut stream = control.capture(&req).await?;
    Ok(streaming(move |cx| stream.poll_chunk(cx), "application/vnd.tcpdump.pcapng"))
}

async fn live_trace(control: &Control, query: &str) -> Result<Response<BoxBody<Bytes, Infallible>>, ApiError> {
    let mut stream = control.live_trace(query).await?;
    Ok(streaming(move |cx| stream.poll_chunk(cx), "application/x-ndjson"))
}

/// A response whose body comes from `next` as it has something (chunked); hyper drops the body
/// when the client goes, which ends what feeds it.
fn streaming<F>(next: F, content_type: &'static str) -> Response<BoxBody<Bytes, Infallible>>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<Vec<u8>>> + Send + Sync + Unpin + 'static,
{
    let mut r = Response::new(BoxBody::new(ChunkBody(next)));
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

struct ChunkBody<F>(F);

impl<F> hyper::body::Body for ChunkBody<F>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<Vec<u8>>> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        (self.get_mut().0)(cx).map(|c| c.map(|b| Ok(hyper::body::Frame::data(Bytes::from(b)))))
    }
}

async fn route(control: &Control, req: Request<Incoming>, method: &Method, path: &str, query: &str) -> Reply {
    // Prometheus scrapes `/metrics`, outside the versioned API.
    if path == "/metrics" && method == Method::GET {
        return Ok(super::metrics::text(StatusCode::OK, control.metrics().await?, crate::control::ops::metrics::CONTENT_TYPE));
    }
    // "/v1/..." only: "/v1version" is not "/v1/version".
    let Some(rest) = path.strip_prefix(api::PREFIX).filter(|r| r.is_empty() || r.starts_with('/')) else {
        return Err(not_found(path));
    };
    // Path segments arrive percent-encoded (a base64 key's '=' as %3D, say).
    let decoded: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let force = query_flag(query, "force");
    match (method, segs.as_slice()) {
        (&Method::GET, ["version"]) => ok(&control.version()),
        (&Method::GET, ["networks"]) => ok(&control.networks().await),
        (&Method::POST, ["networks"]) => created(&super::cluster::create_network(control, body(req).await?).await?),
        (&Method::POST, ["networks", "prune"]) => ok(&control.prune_networks().await?),
        (&Method::POST, ["ipam", "gc"]) => ok(&control.ipam_gc().await?),
        (&Method::GET, ["tunnel", "key"]) => ok(&control.tunnel_key().await?),
        (&Method::POST, ["tunnel", "key"]) => ok(&control.new_tunnel_key().await?),
        (&Method::GET, ["tunnel", "peers"]) => ok(&control.peers().await?),
        (&Method::POST, ["tunnel", "peers"]) => created(&control.add_peer(body(req).await?).await?),
        (&Method::DELETE, ["tunnel", "peers", key]) => {
            control.remove_peer(key).await?;
            Ok(no_content())
        }
        (&Method::GET, ["networks", name]) => ok(&control.inspect_network(name).await?),
        (&Method::DELETE, ["networks", name]) => {
            super::cluster::remove_network(control, name, force).await?;
            Ok(no_content())
        }
        (&Method::POST, ["networks", name, "endpoints"]) => {
            control.check_cluster_attach(name).await?;
            created(&control.attach(name, body(req).await?).await?)
        }
        (&Method::GET, ["cluster"]) => ok(&super::cluster::cluster_of(control)?.status(control).await),
        (&Method::GET, ["cluster", "hosts"]) => ok(&super::cluster::cluster_of(control)?.hosts().await),
        (&Method::DELETE, ["networks", name, "endpoints", ep]) => {
            control.detach(name, ep).await?;
            Ok(no_content())
        }
        (&Method::GET, ["fdb"]) => ok(&control.fdb_show(query_value(query, "network")).await?),
        (&Method::POST, ["fdb"]) => created(&control.fdb_add(body(req).await?).await?),
        (&Method::POST, ["fdb", "flush"]) => ok(&control.fdb_flush(body(req).await?).await?),
        (&Method::GET, ["fdb", "stats"]) => ok(&control.fdb_stats().await?),
        (&Method::DELETE, ["fdb", net, mac]) => {
            control.fdb_del(net, mac).await?;
            Ok(no_content())
        }
        (&Method::GET, ["ports"]) => ok(&control.ports().await?),
        (&Method::POST, ["ports", "impair"]) => ok(&control.impair(body(req).await?).await?),
        (&Method::POST, ["ports"]) => created(&control.add_port(body(req).await?).await?),
        (&Method::GET, ["ports", "interfaces"]) => ok(&control.interface_ports().await),
        (&Method::DELETE, ["ports", interface]) => {
            control.remove_port(interface).await?;
            Ok(no_content())
        }
        (&Method::GET, ["workers"]) => ok(&control.workers().await?),
        (&Method::POST, ["networks", name, "endpoints", ep, "publish"]) => created(&control.publish(name, ep, body(req).await?).await?),
        (&Method::GET, ["publish"]) => ok(&control.publications().await),
        (&Method::DELETE, ["publish", proto, addr, port]) => {
            control.unpublish(proto, addr, port).await?;
            Ok(no_content())
        }
        (&Method::GET, ["egress"]) => ok(&control.egress_stats().await?),
        (&Method::GET, ["networks", name, "endpoints", ep, "check"]) => ok(&control.check_endpoint(name, ep).await?),
        (&Method::POST, ["trace"]) => ok(&control.trace(body(req).await?).await?),
        (&Method::PATCH, ["networks", name, "endpoints", ep]) => ok(&control.update_endpoint(name, ep, body(req).await?).await?),
        (&Method::GET, ["networks", name, "dns"]) => ok(&control.dns_upstreams(name).await?),
        (&Method::PUT, ["networks", name, "dns"]) => ok(&control.set_dns_upstreams(name, body(req).await?).await?),
        (&Method::GET, ["dns", "records"]) => ok(&control.dns_records(query_value(query, "network")).await?),
        (&Method::GET, ["dns", "stats"]) => ok(&control.dns_stats()),
        (_, ["version" | "networks" | "fdb" | "ports" | "dns" | "ipam" | "tunnel" | "publish" | "egress" | "capture" | "trace", ..])
            if known_path(&segs) =>
        {
            Err(ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {path}")))
        }
        _ => Err(not_found(path)),
    }
}

fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["version"]
            | ["networks"]
            | ["networks", _]
            | ["networks", _, "endpoints"]
            | ["networks", _, "endpoints", _]
            | ["fdb"]
            | ["fdb", "flush"]
            | ["fdb", "stats"]
            | ["fdb", _, _]
            | ["ports"]
            | ["ports", _]
            | ["workers"]
            | ["networks", _, "dns"]
            | ["dns", "records"]
            | ["dns", "stats"]
            | ["ipam", "gc"]
            | ["tunnel", "key"]
            | ["tunnel", "peers"]
            | ["tunnel", "peers", _]
            | ["networks", _, "endpoints", _, "publish"]
            | ["networks", _, "endpoints", _, "check"]
            | ["publish"]
            | ["publish", _, _, _]
            | ["egress"]
            | ["capture"]
            | ["trace"]
            | ["trace", "live"]
    )
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no such route: {path} (routes live under {}/)", api::PREFIX))
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect()).await.map_err(|_| {
        ApiError::new(ErrorCode::InvalidRequest, format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()))
    })?;
    let bytes = match collected {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("request body over {MAX_BODY} bytes")));
        }
        Err(e) => return Err(ApiError::new(ErrorCode::InvalidRequest, format!("could not read the request body: {e}"))),
    };
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("invalid request body: {e}")))
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn query_flag(query: &str, key: &str) -> bool {
    matches!(query_value(query, key), Some("true" | "1"))
}

fn ok<T: Serialize>(v: &T) -> Reply {
    Ok(json(StatusCode::OK, v))
}

fn created<T: Serialize>(v: &T) -> Reply {
    Ok(json(StatusCode::CREATED, v))
}

fn no_content() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(query_value("network=a&x=1", "network"), Some("a"));
        assert_eq!(query_value("networks=a", "network"), None);
        assert!(query_flag("force=true", "force"));
        assert!(!query_flag("force=no", "force"));
    }

    #[test]
    fn connections_past_the_cap_close_the_oldest_idle_one() {
        let now = Instant::now();
        let mut c = Conns::new();
        let first: Vec<_> = (0..MAX_CONNECTIONS).map(|_| c.admit(now).unwrap()).collect();
        first[0].1.busy.store(1, Ordering::Relaxed); // a request in progress: never closed
        let (id, _) = c.admit(now).unwrap();
        assert_eq!(id, MAX_CONNECTIONS as u64);
        assert_eq!(c.live.len(), MAX_CONNECTIONS);
        assert!(c.live.contains_key(&0), "the busy one stays");
        assert!(!c.live.contains_key(&1), "the oldest idle one made room");
        // Its task is told to close (a permit is stored for notified()).
        let closed = first[1].1.close.notified();
        tokio::pin!(closed);
        assert!(closed.as_mut().enable());
        // Every connection busy: the newcomer is refused.
        for conn in c.live.values() {
            conn.busy.store(1, Ordering::Relaxed);
        }
        assert!(c.admit(now).is_none());
        assert_eq!(c.live.len(), MAX_CONNECTIONS);
    }

    #[test]
    fn running_out_of_fds_lowers_the_cap_for_a_while() {
        let now = Instant::now();
        let mut c = Conns::new();
        for _ in 0..10 {
            c.admit(now).unwrap();
        }
        c.out_of_fds(now);
        assert_eq!((c.cap, c.live.len()), (9, 9), "one closed, no more than that held");
        c.admit(now).unwrap();
        assert_eq!(c.live.len(), 9);
        c.admit(now + CAP_HOLD).unwrap();
        assert_eq!((c.cap, c.live.len()), (MAX_CONNECTIONS, 10), "the cap comes back");
    }

    #[test]
    fn log_limit_gives_one_line_a_second_with_the_count() {
        let t = Instant::now();
        let mut l = LogLimit::default();
        assert_eq!(l.hit(t), Some(1));
        for i in 0..1000 {
            assert_eq!(l.hit(t + Duration::from_micros(i)), None);
        }
        assert_eq!(l.hit(t + Duration::from_secs(1)), Some(1001));
    }
}
