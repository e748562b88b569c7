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
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a request body's stream ends with when it did not arrive within `body_timeout`.
#[derive(Debug, Clone)]
pub struct BodyTimedOut {
    limit: Duration,
}

impl BodyTimedOut {
    /// The error of a body that did not arrive within `limit`.
    pub fn new(limit: Duration) -> BodyTimedOut {
        BodyTimedOut { limit }
    }
}

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s (HTTP_BODY_TIMEOUT)",
            self.limit.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

/// The [`BodyTimedOut`] somewhere in `error`'s chain of sources, if there is one.
pub fn body_timed_out<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a BodyTimedOut> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(t) = e.downcast_ref::<BodyTimedOut>() {
            return Some(t);
        }
        current = e.source();
    }
    None
}

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
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets every
/// open connection finish its request in progress; `max_request_bytes` (`MAX_REQUEST_BYTES`)
/// is what a body of undeclared length takes from the body budget.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    max_request_bytes: usize,
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
    let metrics = crate::metrics::global();
    let _open = Open::new();
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
                    metrics.http_refused.with_label_values(&["header_timeout"]).inc();
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
struct Open;

impl Open {
    fn new() -> Open {
        crate::metrics::global().http_connections.inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::metrics::global().http_connections.dec();
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
            crate::metrics::global()
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
    let body = Body::new(TimedBody::new(body, shared.limits.body_timeout));
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

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// A request's headers did not arrive within `header_timeout`.
    Headers,
    /// The connection stayed idle for `keepalive_timeout`.
    Idle,
}

impl Expired {
    fn as_str(self) -> &'static str {
        match self {
            Expired::Headers => "headers not received in time (HTTP_HEADER_TIMEOUT)",
            Expired::Idle => "idle keep-alive connection (HTTP_KEEPALIVE_TIMEOUT)",
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in progress and no byte of the next one; closed at `until`.
    Idle { until: Instant },
    /// Receiving a request's headers; closed at `until`.
    Headers { until: Instant },
    /// Requests in progress (their bodies are timed by [`TimedBody`]).
    Busy { requests: usize },
}

/// Follows a connection's phase and says when it has to be closed.
struct Watchdog {
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

impl Watchdog {
    /// A fresh connection: its first request's headers are due within the header timeout.
    fn new(limits: &ServerLimits) -> Watchdog {
        Watchdog {
            phase: Mutex::new(Phase::Headers {
                until: Instant::now() + limits.header_timeout,
            }),
            changed: Notify::new(),
            header_timeout: limits.header_timeout,
            keepalive_timeout: limits.keepalive_timeout,
        }
    }

    /// Moves to the phase `f` makes of the current one, and wakes the watchdog.
    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        {
            let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
            *phase = f(*phase);
        }
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection is now receiving headers.
    fn received(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*phase, Phase::Idle { .. }) {
            *phase = Phase::Headers {
                until: Instant::now() + self.header_timeout,
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request's headers are in: it goes to the router.
    fn request_started(&self) {
        self.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
    }

    /// A request's answer has been sent (or dropped).
    fn request_finished(&self) {
        let until = Instant::now() + self.keepalive_timeout;
        self.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle { until },
        });
    }

    /// Resolves when the connection is to be closed, with why.
    async fn expired(&self) -> Expired {
        loop {
            let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
            let (until, why) = match phase {
                Phase::Idle { until } => (until, Expired::Idle),
                Phase::Headers { until } => (until, Expired::Headers),
                Phase::Busy { .. } => {
                    self.changed.notified().await;
                    continue;
                }
            };
            if Instant::now() >= until {
                return why;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// Marks its connection busy while it lives.
struct Busy(Arc<Watchdog>);

impl Busy {
    fn start(watchdog: Arc<Watchdog>) -> Busy {
        watchdog.request_started();
        Busy(watchdog)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its connection busy until hyper has sent it (and drops it).
pub struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails with [`BodyTimedOut`] unless it ends by its deadline.
struct TimedBody<B> {
    inner: B,
    limit: Duration,
    deadline: Instant,
    /// Armed at the first wait for more of the body.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<B> TimedBody<B> {
    fn new(inner: B, limit: Duration) -> TimedBody<B> {
        TimedBody {
            inner,
            limit,
            deadline: Instant::now() + limit,
            timer: None,
            timed_out: false,
        }
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timed_out = true;
                crate::metrics::global()
                    .http_refused
                    .with_label_values(&["body_timeout"])
                    .inc();
                Poll::Ready(Some(Err(Box::new(BodyTimedOut { limit: this.limit }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that tells its watchdog when bytes arrive.
struct Watched {
    inner: TcpStream,
    watchdog: Arc<Watchdog>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watchdog.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::rejection::BytesRejection;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant as StdInstant;

    fn limits(header: f64, body: f64, keepalive: f64) -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_secs_f64(header),
            body_timeout: Duration::from_secs_f64(body),
            keepalive_timeout: Duration::from_secs_f64(keepalive),
            max_connections: 64,
            body_budget_bytes: 1 << 20,
        }
    }

    async fn echo(
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<axum::Json<serde_json::Value>, ApiError> {
        crate::body::json_body(&headers, body, 1 << 20).map(axum::Json)
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/hello",
                get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move {
                    format!("hello {}", addr.ip())
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    "slow done"
                }),
            )
            .route("/echo", post(echo))
    }

    /// A server on a loopback port, stopped by `stop`.
    struct Running {
        runtime: tokio::runtime::Runtime,
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<io::Result<()>>,
    }

    fn start(limits: ServerLimits) -> Running {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = runtime.spawn(serve(listener, app(), limits, 4096, async move {
            let _ = stopped.await;
        }));
        Running {
            runtime,
            addr,
            stop: Some(stop),
            done,
        }
    }

    impl Running {
        fn connect(&self) -> StdStream {
            let s = StdStream::connect(self.addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s
        }
    }

    /// Reads one response: status, head, body.
    fn response(s: &mut StdStream) -> (u16, String, String) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).expect("response head");
            assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&buf));
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let status = head[9..12].parse().expect("status");
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().expect("length"))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).expect("response body");
        (status, head, String::from_utf8_lossy(&body).to_string())
    }

    /// Whether the server has closed `s` (EOF or reset) within `within`.
    fn closed_within(s: &mut StdStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).expect("timeout");
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected bytes"),
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";

    #[test]
    fn slow_headers_are_cut_after_the_header_timeout() {
        let server = start(limits(0.3, 5.0, 5.0));
        // Nothing sent at all.
        let mut silent = server.connect();
        let t = StdInstant::now();
        assert!(closed_within(&mut silent, Duration::from_secs(3)));
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        // Headers trickling in.
        let mut slow = server.connect();
        let t = StdInstant::now();
        slow.write_all(b"GET /hello HTTP/1.1\r\n").expect("write");
        let mut cut = false;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(50));
            if slow.write_all(b"X-A: b\r\n").is_err() {
                cut = true;
                break;
            }
        }
        assert!(cut || closed_within(&mut slow, Duration::from_secs(3)));
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // Others are still served.
        let mut ok = server.connect();
        ok.write_all(HELLO).expect("write");
        let (status, _, body) = response(&mut ok);
        assert_eq!((status, body.as_str()), (200, "hello 127.0.0.1"));
    }

    #[test]
    fn idle_keep_alive_connections_close_after_the_keepalive_timeout() {
        let server = start(limits(0.3, 5.0, 1.0));
        let mut s = server.connect();
        s.write_all(HELLO).expect("write");
        assert_eq!(response(&mut s).0, 200);
        // Idle for longer than the header timeout: still open, and still served.
        assert!(!closed_within(&mut s, Duration::from_millis(600)));
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(HELLO).expect("write");
        assert_eq!(response(&mut s).0, 200);
        let t = StdInstant::now();
        assert!(closed_within(&mut s, Duration::from_secs(3)));
        let idle = t.elapsed();
        assert!(
            idle >= Duration::from_millis(900) && idle < Duration::from_millis(2000),
            "{idle:?}"
        );
    }

    #[test]
    fn a_body_not_received_in_time_is_a_408_and_closes_the_connection() {
        let server = start(limits(5.0, 0.4, 5.0));
        let mut s = server.connect();
        let t = StdInstant::now();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"a\": ")
            .expect("write");
        let (status, _, body) = response(&mut s);
        assert_eq!(status, 408, "{body}");
        assert!(body.contains("HTTP_BODY_TIMEOUT"), "{body}");
        assert!(body.contains("\"code\":408"), "{body}");
        assert!(
            t.elapsed() >= Duration::from_millis(350),
            "{:?}",
            t.elapsed()
        );
        assert!(closed_within(&mut s, Duration::from_secs(2)));
        // A body that arrives in time is read.
        let mut ok = server.connect();
        ok.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\": 1}")
            .expect("write");
        let (status, _, body) = response(&mut ok);
        assert_eq!((status, body.as_str()), (200, "{\"a\":1}"));
    }

    #[test]
    fn bodies_beyond_the_budget_are_refused_at_once() {
        let mut l = limits(5.0, 1.5, 5.0);
        l.body_budget_bytes = 1000;
        let server = start(l);
        // Holds 900 bytes of the budget while it stalls.
        let mut holder = server.connect();
        holder
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 900\r\n\r\n{")
            .expect("write");
        std::thread::sleep(Duration::from_millis(200));
        let mut refused = server.connect();
        refused
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\n")
            .expect("write");
        let (status, head, body) = response(&mut refused);
        assert_eq!(status, 503, "{body}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
        assert!(body.contains("HTTP_BODY_BUDGET_BYTES"), "{body}");
        // A chunked body takes MAX_REQUEST_BYTES (here more than the budget: all of it).
        let mut chunked = server.connect();
        chunked
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            .expect("write");
        assert_eq!(response(&mut chunked).0, 503);
        // Requests without a body take nothing.
        let mut get = server.connect();
        get.write_all(HELLO).expect("write");
        assert_eq!(response(&mut get).0, 200);
        // Once the stalled body has timed out, its share is free again.
        assert_eq!(response(&mut holder).0, 408);
        let mut ok = server.connect();
        ok.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            .expect("write");
        assert_eq!(response(&mut ok).0, 200);
    }

    #[test]
    fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let mut l = limits(5.0, 5.0, 5.0);
        l.max_connections = 2;
        let server = start(l);
        let first = server.connect();
        let mut second = server.connect();
        second.write_all(HELLO).expect("write");
        assert_eq!(response(&mut second).0, 200);
        let mut third = server.connect();
        third.write_all(HELLO).expect("write");
        third
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        let waited = third.read(&mut byte);
        assert!(
            matches!(&waited, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
            "the third connection was served: {waited:?}"
        );
        drop(first);
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let (status, _, _) = response(&mut third);
        assert_eq!(status, 200);
    }

    #[test]
    fn shutdown_answers_requests_in_progress_and_closes_idle_connections() {
        let mut server = start(limits(5.0, 5.0, 30.0));
        let mut idle = server.connect();
        idle.write_all(HELLO).expect("write");
        assert_eq!(response(&mut idle).0, 200);
        let mut busy = server.connect();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        std::thread::sleep(Duration::from_millis(200));
        let t = StdInstant::now();
        if let Some(stop) = server.stop.take() {
            let _ = stop.send(());
        }
        assert!(closed_within(&mut idle, Duration::from_secs(2)));
        let (status, head, body) = response(&mut busy);
        assert_eq!((status, body.as_str()), (200, "slow done"));
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let done = server.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(3), &mut server.done).await
        });
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        assert!(StdStream::connect(server.addr).is_err(), "still accepting");
    }
}
