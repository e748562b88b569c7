//! The HTTP server's accept loop: hyper HTTP/1 connections over tokio sockets, as
//! `axum::serve` serves them, with the bounds of [`ServerLimits`]:
//!
//! - **Connections.** At most `max_connections` (`HTTP_MAX_CONNECTIONS`) are open at once: a
//!   slot is taken before `accept`, so further clients wait in the listen backlog until one
//!   closes.
//! - **Headers.** A request's headers must arrive within `header_timeout`
//!   (`HTTP_HEADER_TIMEOUT`), counted from the connection's accept for its first request and
//!   from the first byte of each later one; the connection is closed otherwise.
//! - **Idle keep-alive.** A connection with no request in progress and no byte of the next one
//!   is closed after `keepalive_timeout` (`HTTP_KEEPALIVE_TIMEOUT`). hyper's own
//!   `header_read_timeout` is not used: its clock starts as soon as a connection goes idle, so
//!   it would close every idle keep-alive connection after the header timeout instead. A
//!   watchdog per connection follows its phase (idle, receiving headers, busy) instead.
//! - **Bodies.** A request's body must arrive in full within `body_timeout`
//!   (`HTTP_BODY_TIMEOUT`) after its headers: reading it fails with [`BodyTimedOut`], which the
//!   API answers with a 408, and the connection is closed (the rest is never read).
//! - **Body budget.** Before a request goes to the router, its declared `Content-Length` (or
//!   `MAX_REQUEST_BYTES` for a chunked body) is taken from a budget of `body_budget_bytes`
//!   (`HTTP_BODY_BUDGET_BYTES`) shared by every connection, and given back when its answer is
//!   ready; a request that does not fit at once is answered 503 with `Retry-After`. Requests
//!   without a body take nothing.
//! - **Shutdown.** When the shutdown future resolves, no connection is accepted any more, idle
//!   connections are closed, requests in progress are answered (with `Connection: close`), and
//!   [`serve`] returns once every connection has closed.
//!
//! Each request carries `ConnectInfo<SocketAddr>` with the client's address, as with
//! `into_make_service_with_connect_info`.

use crate::api::{ApiError, ErrorKind};
use crate::config::ServerLimits;
use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod bodies;
#[cfg(test)]
mod tests;
mod watchdog;

use bodies::TimedBody;
pub use bodies::{body_timed_out, BodyTimedOut, Tracked};
use watchdog::{Busy, Expired, Watchdog, Watched};

/// What is shared by every connection.
struct Shared {
    router: Router,
    limits: ServerLimits,
    /// Bytes of request bodies that may be in flight.
    budget: Arc<Semaphore>,
    /// Its size: the most one request takes, so that a body larger than the budget still goes
    /// through alone.
    budget_total: usize,
    /// What a body of undeclared length (chunked) takes from the budget.
    max_request_bytes: usize,
    /// Where connections and refusals are counted.
    metrics: Arc<Metrics>,
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets every
/// open connection finish its request in progress; `max_request_bytes` (`MAX_REQUEST_BYTES`)
/// is what a body of undeclared length takes from the body budget.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    max_request_bytes: usize,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(cap));
    let budget = limits.body_budget_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        router,
        limits,
        budget: Arc::new(Semaphore::new(budget)),
        budget_total: budget,
        max_request_bytes,
        metrics,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A free slot first, so that clients beyond the cap wait in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        tokio::spawn(connection(
            stream,
            remote,
            shared.clone(),
            slot,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it closes.
    let _all = slots.acquire_many(cap as u32).await;
    Ok(())
}

/// Waits after a failed `accept`: not at all for a client's reset, a second for anything else
/// (out of file descriptors, as `axum::serve` does).
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Resolves when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection until it closes, a timeout of its watchdog closes it, or, after
/// shutdown, its request in progress is answered.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let _open = Open::new(&shared.metrics);
    let header_timeouts = shared
        .metrics
        .http_refused
        .with_label_values(&["header_timeout"]);
    let watchdog = Arc::new(Watchdog::new(&shared.limits));
    let io = TokioIo::new(Watched {
        inner: stream,
        watchdog: watchdog.clone(),
    });
    let conn_watchdog = watchdog.clone();
    let service = hyper::service::service_fn(move |request| {
        handle(shared.clone(), conn_watchdog.clone(), remote, request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Off on purpose: the watchdog times headers and idle keep-alive separately (see above).
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                break;
            }
            expired = watchdog.expired() => {
                if expired == Expired::Headers {
                    header_timeouts.inc();
                }
                tracing::debug!(%remote, reason = expired.as_str(), "closing connection");
                break;
            }
            _ = &mut stopping, if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Counts its connection in `ember_http_connections` while it lives.
struct Open(prometheus::IntGauge);

impl Open {
    fn new(metrics: &Metrics) -> Open {
        metrics.http_connections.inc();
        Open(metrics.http_connections.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One request: takes its body's share of the budget, hands it to the router with a body
/// that must arrive within `body_timeout`, and marks the connection busy until its answer has
/// been sent.
async fn handle(
    shared: Arc<Shared>,
    watchdog: Arc<Watchdog>,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    let busy = Busy::start(watchdog);
    let claim = body_claim(request.body(), shared.max_request_bytes).min(shared.budget_total);
    let permit = match take_budget(&shared.budget, claim) {
        Ok(permit) => permit,
        Err(()) => {
            shared
                .metrics
                .http_refused
                .with_label_values(&["body_budget"])
                .inc();
            tracing::warn!(
                %remote,
                method = %request.method(),
                path = request.uri().path(),
                bytes = claim,
                "request refused: the body budget (HTTP_BODY_BUDGET_BYTES) is taken"
            );
            let refused = over_budget(shared.limits.body_budget_bytes);
            return Ok(refused.map(|body| Tracked { body, _busy: busy }));
        }
    };
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(remote));
    let timed_out = shared
        .metrics
        .http_refused
        .with_label_values(&["body_timeout"]);
    let body = Body::new(TimedBody::new(body, shared.limits.body_timeout, timed_out));
    let response = match shared
        .router
        .clone()
        .oneshot(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    };
    drop(permit);
    Ok(response.map(|body| Tracked { body, _busy: busy }))
}

/// Bytes a request's body takes from the budget: none without a body, its declared length,
/// or `max_request_bytes` when the length is not declared (larger bodies are refused by the
/// router before more is read).
fn body_claim(body: &impl http_body::Body, max_request_bytes: usize) -> usize {
    if body.is_end_stream() {
        return 0;
    }
    match body.size_hint().exact() {
        Some(n) => usize::try_from(n).map_or(max_request_bytes, |n| n.min(max_request_bytes)),
        None => max_request_bytes,
    }
}

/// Takes `claim` bytes from `budget` if they are free now (`Err` otherwise); nothing for no
/// bytes.
fn take_budget(budget: &Arc<Semaphore>, claim: usize) -> Result<Option<OwnedSemaphorePermit>, ()> {
    if claim == 0 {
        return Ok(None);
    }
    let n = u32::try_from(claim).unwrap_or(u32::MAX);
    match budget.clone().try_acquire_many_owned(n) {
        Ok(permit) => Ok(Some(permit)),
        Err(_) => Err(()),
    }
}

/// The 503 of a request whose body does not fit in the budget now.
fn over_budget(budget_bytes: usize) -> Response<Body> {
    let mut response = ApiError::new(
        ErrorKind::Unavailable,
        format!(
            "the server is receiving too many request bodies at once (HTTP_BODY_BUDGET_BYTES = \
             {budget_bytes} bytes); retry shortly"
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
