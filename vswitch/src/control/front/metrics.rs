//! `--metrics-listen ADDR:PORT`: a second, tiny HTTP server on TCP that serves `GET /metrics`
//! and nothing else (the rest of the API stays on the 0600 Unix socket).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::control::ops::metrics::CONTENT_TYPE;
use crate::control::Control;

/// Serves `/metrics` on `listener` for as long as the runtime runs.
pub async fn serve(listener: TcpListener, control: Arc<Control>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the metrics listener failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let control = control.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(handle(&control, &req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn handle<B>(control: &Control, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "only /metrics is served here\n".into(), "text/plain");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into(), "text/plain");
    }
    match control.metrics().await {
        Ok(body) => text(StatusCode::OK, body, CONTENT_TYPE),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", e.error.message), "text/plain"),
    }
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}
