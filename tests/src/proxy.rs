//! A forward HTTP proxy for the image tests: it records the request line that opens each
//! connection, relays plain-HTTP requests (absolute-form) to one origin server whatever host
//! they name, and refuses CONNECT tunnels with 403 (after recording them).

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
pub struct FakeProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

/// Reads up to the end of the request head; returns the bytes read (head and any more).
async fn read_head(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

async fn relay(mut client: TcpStream, origin: String, lines: Arc<Mutex<Vec<String>>>) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let first = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    lines.lock().unwrap().push(first.clone());
    if first.starts_with("CONNECT ") {
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&origin).await else {
        return;
    };
    if upstream.write_all(&head).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

impl FakeProxy {
    /// Starts a proxy on a loopback port that relays to `origin` (`HOST:PORT`).
    pub fn start(origin: &str) -> FakeProxy {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (origin, recorded) = (origin.to_string(), lines.clone());
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, origin.clone(), recorded.clone()));
            }
        });
        FakeProxy {
            url,
            lines,
            _runtime: runtime,
        }
    }

    /// The first request line of every connection so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}
