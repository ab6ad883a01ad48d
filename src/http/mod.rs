//! The HTTP service: router, shared state, error mapping, rate limiting, background workers.

pub mod auth;
pub mod bsre;
pub mod documents;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod public;

use crate::workflow::Workflow;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub wf: Arc<Workflow>,
    pub metrics: PrometheusHandle,
    pub limiter: Arc<RateLimiter>,
}

/// A token bucket per client address for the public endpoints.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<IpAddr>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, trusted_proxies: Vec<IpAddr>) -> Self {
        RateLimiter {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::default(),
            trusted_proxies,
        }
    }

    /// The client a request counts against. Behind a reverse proxy every request comes from
    /// the proxy, so when `peer` is a trusted proxy the client is the rightmost address in
    /// `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the address it
    /// received the request from; anything left of that was written by the client and proves
    /// nothing). From any other peer the header is ignored: it could say anything.
    ///
    /// The hops are read from the right, one at a time: a hop that does not parse ends the
    /// walk there (it was not written by a trusted proxy), so a client cannot shake off its
    /// own address by prefixing junk. Addresses compare in canonical form, so a proxy seen as
    /// `::ffff:10.0.0.2` on a dual-stack socket is the configured `10.0.0.2`.
    fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.contains(&ip.to_canonical());
        if !trusted(&peer) {
            return peer;
        }
        let mut hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        while let Some(hop) = hops.pop() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if trusted(&ip) => client = ip,
                Ok(ip) => return ip.to_canonical(),
                Err(_) => break,
            }
        }
        client.to_canonical()
    }

    /// The bucket of a client: its IPv4 address, or the /64 of its IPv6 address (one host
    /// usually holds a whole /64, and could otherwise take a fresh allowance per address).
    fn bucket(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
            v4 => v4,
        }
    }

    fn allow(&self, ip: IpAddr) -> bool {
        let ip = Self::bucket(ip);
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        if b.len() > 100_000 {
            b.clear();
        }
        let now = Instant::now();
        let (tokens, last) = b.entry(ip).or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0)
            .min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn rate_limit(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if st
        .limiter
        .allow(st.limiter.client(addr.ip(), req.headers()))
    {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address; slow down",
        )
        .into_response()
    }
}

/// Count requests and latencies; turn bare framework errors (404, 405, 413…) into JSON.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    metrics::counter!("segel_http_requests_total", "method" => method, "status" => status.as_u16().to_string()).increment(1);
    metrics::histogram!("segel_http_request_seconds").record(start.elapsed().as_secs_f64());
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "method not allowed on this route")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload_too_large", "the request body exceeds the limit")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "wrong Content-Type for this route",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => {
                ("invalid_body", "the request body could not be read")
            }
            s if s.is_server_error() => ("internal", "internal error"),
            _ => ("bad_request", "the request could not be read"),
        };
        return close_if_unread(ApiError::new(status, code, message).into_response());
    }
    close_if_unread(resp)
}

/// A 413 is answered before the rest of the upload is read, so the connection cannot carry
/// another request: say so (`Connection: close`, RFC 9110 §7.6.1), so that clients open a new
/// one instead of reusing it and failing mid-request.
fn close_if_unread(mut resp: Response) -> Response {
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// The process-wide Prometheus recorder (installed once even when tests start many apps).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let public = Router::new()
        .route("/api/v1/verify", post(public::verify))
        .route("/api/v1/public/{code}", get(public::record_json))
        .route("/v/{code}", get(public::record_page))
        .route("/v/{code}/check", post(public::record_check))
        .route("/api/v2/verify/pdf", post(bsre::verify))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    Router::new()
        .route("/api/v1/documents", post(documents::submit))
        .route("/api/v1/documents/{id}", get(documents::get))
        .route("/api/v1/documents/{id}/file", get(documents::file))
        .route("/api/v1/documents/{id}/cancel", post(documents::cancel))
        .route("/api/v1/documents/{id}/revoke", post(documents::revoke))
        .route(
            "/api/v1/documents/{id}/steps/{n}/approve",
            post(documents::approve),
        )
        .route(
            "/api/v1/documents/{id}/steps/{n}/reject",
            post(documents::reject),
        )
        .route("/api/v1/inbox", get(documents::inbox))
        .route("/api/v1/inbox/{id}/file", get(documents::official_file))
        .route("/api/v1/approvals/batch", post(documents::approve_batch))
        .route("/api/v1/login", post(documents::login))
        .route("/api/v1/seal", post(documents::seal))
        .route("/api/v1/seal/batch", post(documents::seal_batch))
        .route("/api/v1/seal/batch/{id}", get(documents::seal_batch_status))
        .route("/api/v1/audit", get(ops::audit))
        .route("/api/v2/sign/pdf", post(bsre::sign))
        .route("/crl/{name}", get(public::crl))
        .route("/tsa", post(public::tsa))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(public)
        .merge(openapi::routes())
        .layer(DefaultBodyLimit::max(state.wf.cfg.max_body_bytes))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Deliver due webhooks every half second until the process ends.
pub fn spawn_webhook_worker(wf: Arc<Workflow>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            match wf.deliver_due_webhooks(&client).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook delivery"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let inner: IpAddr = "10.0.0.3".parse().unwrap();
        let limiter = RateLimiter::new(10, vec![proxy, inner]);
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // One proxy; a client that wrote its own header first gains nothing by it.
        let h = forwarded(&["198.51.100.1, 203.0.113.7"]);
        assert_eq!(limiter.client(proxy, &h), client);
        // Two trusted proxies, the header split over two lines.
        let h = forwarded(&["203.0.113.7", "10.0.0.3"]);
        assert_eq!(limiter.client(proxy, &h), client);
        // No header, or one that does not parse: the proxy itself.
        assert_eq!(limiter.client(proxy, &HeaderMap::new()), proxy);
        assert_eq!(limiter.client(proxy, &forwarded(&["unknown"])), proxy);
        // Junk written by the client before the address the proxy appended changes nothing.
        let h = forwarded(&["junk, 203.0.113.7"]);
        assert_eq!(limiter.client(proxy, &h), client);
        let h = forwarded(&["junk", "203.0.113.7"]);
        assert_eq!(limiter.client(proxy, &h), client);
        // A dual-stack socket reports the proxy as an IPv4-mapped IPv6 address.
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(limiter.client(mapped, &forwarded(&["203.0.113.7"])), client);
        // From anyone else the header is ignored.
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            limiter.client(stranger, &forwarded(&["203.0.113.7"])),
            stranger
        );
        // IPv6 clients share a bucket per /64; IPv4 ones have their own.
        let a: IpAddr = "2001:db8:1:2::a".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::b".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::a".parse().unwrap();
        assert_eq!(RateLimiter::bucket(a), RateLimiter::bucket(b));
        assert_ne!(RateLimiter::bucket(a), RateLimiter::bucket(other));
        let one = RateLimiter::new(1, vec![]);
        assert!(one.allow(a));
        assert!(!one.allow(b), "same /64, same allowance");
        assert!(one.allow(other));
        assert!(one.allow("203.0.113.7".parse().unwrap()));
        assert!(one.allow("203.0.113.8".parse().unwrap()));
        // With no trusted proxies configured, never read.
        let plain = RateLimiter::new(10, vec![]);
        assert_eq!(plain.client(proxy, &forwarded(&["203.0.113.7"])), proxy);
    }
}
