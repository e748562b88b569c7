//! Request and response bodies on a connection: a request body timed by `body_timeout`, and
//! a response body that keeps its connection busy until it is sent.

use super::watchdog::Busy;
use super::BoxError;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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

/// A response body that keeps its connection busy until hyper has sent it (and drops it).
pub struct Tracked {
    pub(super) body: Body,
    pub(super) _busy: Busy,
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
pub(super) struct TimedBody<B> {
    inner: B,
    limit: Duration,
    deadline: Instant,
    /// Armed at the first wait for more of the body.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
    /// Counts the body if it times out.
    refusals: prometheus::IntCounter,
}

impl<B> TimedBody<B> {
    pub(super) fn new(inner: B, limit: Duration, refusals: prometheus::IntCounter) -> TimedBody<B> {
        TimedBody {
            inner,
            limit,
            deadline: Instant::now() + limit,
            timer: None,
            timed_out: false,
            refusals,
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
                this.refusals.inc();
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
