//! The HTTP server's bounds against the real binary: slow headers are cut after
//! `HTTP_HEADER_TIMEOUT`, stalled bodies are answered 408 after `HTTP_BODY_TIMEOUT` and their
//! memory is given back, connections beyond `HTTP_MAX_CONNECTIONS` wait for a free slot, idle
//! keep-alive connections close after `HTTP_KEEPALIVE_TIMEOUT`; the raw API key is accepted on
//! the RunPod routes only; made-up methods share one metrics label.

use ember_e2e::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn serve_tiny(extra: &[(&str, &str)]) -> Server {
    serve_fixtures("optimum", &["tiny-bert-cls"], extra)
}

/// `host:port` of the server.
fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(addr(server)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// Reads one response: status, head and body.
fn response(s: &mut TcpStream) -> (u16, String, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "connection ended mid-head ({other:?}): {}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head[9..12].parse().expect("status code");
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("response body");
    (status, head, String::from_utf8_lossy(&body).to_string())
}

/// Whether the server closes `s` (end of stream or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("read timeout");
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent unexpected bytes"),
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: ember\r\n\r\n";

fn embeds(server: &Server) {
    server.assert_embeds_reference("tiny-bert-cls", 0.9999);
}

#[test]
fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let server = serve_tiny(&[
        ("HTTP_HEADER_TIMEOUT", "1"),
        ("HTTP_KEEPALIVE_TIMEOUT", "2.5"),
    ]);
    // Headers sent a line every 200 ms never finish: cut after about 1 s.
    let mut slow = connect(&server);
    let started = Instant::now();
    slow.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: ember\r\n")
        .expect("write");
    let mut cut = false;
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        if slow
            .write_all(format!("X-Slow-{i}: yes\r\n").as_bytes())
            .is_err()
        {
            cut = true;
            break;
        }
    }
    assert!(cut || closed_within(&mut slow, Duration::from_secs(3)));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "slow headers cut after {took:?} (HTTP_HEADER_TIMEOUT=1)"
    );

    // An idle keep-alive connection outlives the header timeout, and closes after 2.5 s.
    let mut idle = connect(&server);
    idle.write_all(HEALTH).expect("write");
    assert_eq!(response(&mut idle).0, 200);
    let idle_since = Instant::now();
    assert!(
        !closed_within(&mut idle, Duration::from_millis(1500)),
        "closed before HTTP_KEEPALIVE_TIMEOUT"
    );
    assert!(closed_within(&mut idle, Duration::from_secs(3)));
    let idle_for = idle_since.elapsed();
    assert!(
        idle_for >= Duration::from_millis(2300) && idle_for < Duration::from_millis(4000),
        "idle connection closed after {idle_for:?} (HTTP_KEEPALIVE_TIMEOUT=2.5)"
    );
    embeds(&server);
}

/// The pid of the process listening on the server's port (from /proc: its socket's inode).
fn server_pid(server: &Server) -> u32 {
    let port: u16 = addr(server)
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let inode = tcp
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port && f.get(3)? == &"0A")
                .then(|| f.get(9).map(|s| s.to_string()))
                .flatten()
        })
        .expect("the listening socket");
    let wanted = format!("socket:[{inode}]");
    for proc_dir in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = proc_dir.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == wanted) {
                return pid;
            }
        }
    }
    panic!("no process holds {wanted}");
}

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// `n` connections that declare a 4 MiB body, send 1 MiB of it and stall; each must be
/// answered 408 naming HTTP_BODY_TIMEOUT within the timeout (2 s) and some slack. Returns the
/// resident memory while they stall.
fn stall_bodies(server: &Server, pid: u32, n: usize) -> f64 {
    let declared = 4 << 20;
    let sent = vec![b' '; 1 << 20];
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = connect(server);
            let head = format!(
                "POST /v1/embeddings HTTP/1.1\r\nHost: ember\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).expect("write head");
            s.write_all(&sent).expect("write part of the body");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let stalled = rss_mib(pid);
    for s in &mut conns {
        let (status, _, body) = response(s);
        assert_eq!(status, 408, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(v["error"]["code"], 408, "{body}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("HTTP_BODY_TIMEOUT"), "{body}");
        assert!(
            closed_within(s, Duration::from_secs(2)),
            "kept open after 408"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "stalled bodies answered after {took:?} (HTTP_BODY_TIMEOUT=2)"
    );
    stalled
}

#[test]
fn stalled_bodies_are_answered_408_and_their_memory_given_back() {
    let server = serve_tiny(&[("HTTP_BODY_TIMEOUT", "2")]);
    let pid = server_pid(&server);
    embeds(&server);
    let baseline = rss_mib(pid);
    let stalled = stall_bodies(&server, pid, 30);
    std::thread::sleep(Duration::from_millis(300));
    let after_first = rss_mib(pid);
    let stalled_again = stall_bodies(&server, pid, 30);
    std::thread::sleep(Duration::from_millis(300));
    let after_second = rss_mib(pid);
    let seen = format!(
        "RSS MiB: baseline {baseline:.0}, 30 stalled {stalled:.0}, after {after_first:.0}, \
         30 stalled again {stalled_again:.0}, after a second round {after_second:.0}"
    );
    eprintln!("{seen}");
    // 30 MiB of partial bodies were held while they stalled ...
    assert!(stalled - baseline >= 20.0, "{seen}");
    // ... and given back: the second round's peak reuses that memory instead of adding all of
    // it again (30 MiB more if nothing were freed). Peaks are compared, not the RSS after
    // each round, which depends on how soon the allocator hands pages back.
    assert!(
        stalled_again - stalled < 0.75 * (stalled - baseline),
        "{seen}"
    );
    assert!(after_second - baseline < 80.0, "{seen}");
    embeds(&server);
    let (_, metrics) = server.get("/metrics");
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains("ember_http_refused_total{reason=\"body_timeout\"} 60"),
        "{text}"
    );
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = serve_tiny(&[("HTTP_MAX_CONNECTIONS", "4")]);
    let mut open: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&server);
            s.write_all(HEALTH).expect("write");
            assert_eq!(response(&mut s).0, 200);
            s
        })
        .collect();
    let mut fifth = connect(&server);
    fifth.write_all(HEALTH).expect("write");
    fifth
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    let waited = fifth.read(&mut byte);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a fifth connection was served with HTTP_MAX_CONNECTIONS=4: {waited:?}"
    );
    let closed_at = Instant::now();
    drop(open.pop());
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    assert_eq!(response(&mut fifth).0, 200);
    assert!(closed_at.elapsed() < Duration::from_secs(2));
    drop(open);
    drop(fifth);
    embeds(&server);
}

#[test]
fn raw_key_on_runpod_routes_only_and_made_up_methods_share_a_label() {
    let server = serve_tiny(&[("API_KEY", "s3cret-key")]);
    let c = client();
    let post = |auth: &str, path: &str, body: &Value| {
        let resp = c
            .post(format!("{}{path}", server.url))
            .header("Authorization", auth)
            .json(body)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap_or(Value::Null))
    };
    let input = json!({"input": "hello"});
    let job = json!({"input": input});
    let (status, out) = post("s3cret-key", "/run", &job);
    assert_eq!(
        (status, out["status"].as_str()),
        (200, Some("IN_QUEUE")),
        "{out}"
    );
    let (status, out) = post("s3cret-key", "/v2/local/runsync", &job);
    assert_eq!(
        (status, out["status"].as_str()),
        (200, Some("COMPLETED")),
        "{out}"
    );
    let (status, out) = post("s3cret-key", "/v1/embeddings", &input);
    assert_eq!(status, 401, "{out}");
    let message = out["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Bearer"), "{out}");
    let (status, out) = post("s3cret-key", "/v2/local/openai/v1/embeddings", &input);
    assert_eq!(status, 401, "{out}");
    let (status, out) = post("Bearer s3cret-key", "/run", &job);
    assert_eq!(
        (status, out["status"].as_str()),
        (200, Some("IN_QUEUE")),
        "{out}"
    );
    let (status, out) = post("Bearer s3cret-key", "/v1/embeddings", &input);
    assert_eq!(status, 200, "{out}");

    let method = reqwest::Method::from_bytes(b"FOO").expect("method");
    for path in ["/v1/embeddings", "/nowhere"] {
        let status = c
            .request(method.clone(), format!("{}{path}", server.url))
            .header("Authorization", "Bearer s3cret-key")
            .send()
            .expect("request")
            .status()
            .as_u16();
        assert!(matches!(status, 404 | 405), "FOO {path}: {status}");
    }
    let (_, metrics) = server.get("/metrics");
    let text = metrics.as_str().unwrap_or_default();
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ember_requests_total{"))
        .collect();
    assert!(
        requests.iter().any(|l| l.contains("method=\"other\"")),
        "{requests:#?}"
    );
    assert!(!requests.iter().any(|l| l.contains("FOO")), "{requests:#?}");
}
