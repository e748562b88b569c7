use super::*;
use axum::body::Bytes;
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
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let done = runtime.spawn(serve(listener, app(), limits, 4096, metrics, async move {
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
    ok.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
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
    let done = server
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(3), &mut server.done).await });
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(StdStream::connect(server.addr).is_err(), "still accepting");
}
