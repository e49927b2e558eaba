//! HTTP/1.1 on the Unix socket: routing, body limits, JSON in and out.
//!
//! Requests become calls on [`crate::control::Control`]; this file knows HTTP and nothing about switching.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixListener;

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

/// Serves connections until `shutdown` resolves; then removes the socket file.
pub async fn serve(listener: UnixListener, path: PathBuf, control: Arc<Control>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept on control socket failed");
                        continue;
                    }
                };
                let control = control.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let control = control.clone();
                        async move { Ok::<_, Infallible>(handle(&control, req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                        tracing::debug!(error = %e, "control connection ended with an error");
                    }
                });
            }
        }
    }
    let _ = std::fs::remove_file(&path);
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
    let Some(rest) = path.strip_prefix(api::PREFIX) else {
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
        (&Method::POST, ["networks"]) => created(&control.create_network(body(req).await?).await?),
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
            control.remove_network(name, force).await?;
            Ok(no_content())
        }
        (&Method::POST, ["networks", name, "endpoints"]) => created(&control.attach(name, body(req).await?).await?),
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
        (&Method::GET, ["workers"]) => ok(&control.workers().await?),
        (&Method::POST, ["networks", name, "endpoints", ep, "publish"]) => created(&control.publish(name, ep, body(req).await?).await?),
        (&Method::GET, ["publish"]) => ok(&control.publications().await),
        (&Method::DELETE, ["publish", proto, addr, port]) => {
            control.unpublish(proto, addr, port).await?;
            Ok(no_content())
        }
        (&Method::GET, ["egress"]) => ok(&control.egress_stats().await?),
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
            | ["workers"]
            | ["networks", _, "dns"]
            | ["dns", "records"]
            | ["dns", "stats"]
            | ["ipam", "gc"]
            | ["tunnel", "key"]
            | ["tunnel", "peers"]
            | ["tunnel", "peers", _]
            | ["networks", _, "endpoints", _, "publish"]
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
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
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
}
