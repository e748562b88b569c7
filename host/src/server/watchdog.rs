//! A connection's watchdog: it follows the connection's phase (idle, receiving headers, busy)
//! and says when the header or keep-alive timeout closes it.

use crate::config::ServerLimits;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// A request's headers did not arrive within `header_timeout`.
    Headers,
    /// The connection stayed idle for `keepalive_timeout`.
    Idle,
}

impl Expired {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Expired::Headers => "headers not received in time (HTTP_HEADER_TIMEOUT)",
            Expired::Idle => "idle keep-alive connection (HTTP_KEEPALIVE_TIMEOUT)",
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    /// No request in progress and no byte of the next one; closed at `until`.
    Idle { until: Instant },
    /// Receiving a request's headers; closed at `until`.
    Headers { until: Instant },
    /// Requests in progress (their bodies are timed by [`TimedBody`]).
    Busy { requests: usize },
}

/// Follows a connection's phase and says when it has to be closed.
pub(super) struct Watchdog {
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

impl Watchdog {
    /// A fresh connection: its first request's headers are due within the header timeout.
    pub(super) fn new(limits: &ServerLimits) -> Watchdog {
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
    pub(super) async fn expired(&self) -> Expired {
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
pub(super) struct Busy(Arc<Watchdog>);

impl Busy {
    pub(super) fn start(watchdog: Arc<Watchdog>) -> Busy {
        watchdog.request_started();
        Busy(watchdog)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A socket that tells its watchdog when bytes arrive.
pub(super) struct Watched {
    pub(super) inner: TcpStream,
    pub(super) watchdog: Arc<Watchdog>,
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
