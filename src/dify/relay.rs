//! The stream relay: Dify's SSE bytes go out unchanged, chunk for chunk, while the watcher
//! learns the `task_id` and whether a terminal event came. An upstream that breaks, goes idle
//! or ends early gets one appended error event; a client that leaves triggers Dify's stop (and,
//! for a generation that counts against a budget, the rest of the answer is read to count it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{Stream, StreamExt};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use self::drain::Rest;
use super::answer::TokenSink;
use super::client::{Caller, DifyClient, StopKind};
use super::transport;
use super::watcher::SseWatcher;
use crate::telemetry::metrics;

mod drain;

/// Why the proxy ended a stream itself; each becomes one SSE error event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFailure {
    UpstreamDisconnected,
    UpstreamTimeout,
    ShuttingDown,
}

impl StreamFailure {
    fn event(self) -> &'static [u8] {
        match self {
            StreamFailure::UpstreamDisconnected => b"data: {\"event\": \"error\", \"status\": 502, \"code\": \"upstream_disconnected\", \"message\": \"The connection to Dify broke before the answer was complete.\"}\n\n",
            StreamFailure::UpstreamTimeout => b"data: {\"event\": \"error\", \"status\": 504, \"code\": \"upstream_timeout\", \"message\": \"Dify sent nothing for too long.\"}\n\n",
            StreamFailure::ShuttingDown => b"data: {\"event\": \"error\", \"status\": 503, \"code\": \"shutting_down\", \"message\": \"The server is restarting. Please try again.\"}\n\n",
        }
    }

    fn label(self) -> &'static str {
        match self {
            StreamFailure::UpstreamDisconnected => "upstream_disconnected",
            StreamFailure::UpstreamTimeout => "upstream_timeout",
            StreamFailure::ShuttingDown => "shutting_down",
        }
    }
}

/// Set once a server of this process starts ending its streams: from then on every waiting
/// relay polls its shutdown signal again when woken (see [`RelayStream::waits_armed`]).
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Cancels `streams`, the shutdown signal given to relays. Cancel it only through here: a
/// relay that has already waited on the signal does not poll it again until this is called.
pub fn end_streams(streams: &tokio_util::sync::CancellationToken) {
    SHUTTING_DOWN.store(true, Ordering::Release);
    streams.cancel();
}

/// What the relay needs to call Dify's stop when the client leaves early.
pub struct StopOnAbandon {
    pub client: Arc<DifyClient>,
    pub caller: Caller,
    pub stops: Arc<tokio::sync::Semaphore>,
    /// The stop call that matches the endpoint the stream came from.
    pub kind: StopKind,
}

/// Anything that must live exactly as long as the stream (stream-count permits, gauges).
pub type StreamGuard = super::answer::Guard;

pub struct RelayStream {
    parts: Pin<Box<dyn Upstream>>,
    last_byte: Instant,
    finished: bool,
    /// The waker the shutdown signal and the idle timer were last polled with (see
    /// [`RelayStream::waits_armed`]).
    armed: Option<Waker>,
    stop: Option<StopOnAbandon>,
    _guard: Option<StreamGuard>,
}

pin_project! {
    /// The relay's state, in one allocation: Dify's body, the idle timer, the shutdown signal
    /// and the watcher.
    struct Parts<S, F> {
        watcher: SseWatcher,
        // The idle timeout in nanoseconds: a `Duration` takes 16 bytes, and this allocation
        // lives as long as the stream.
        idle: u64,
        #[pin]
        upstream: Option<S>,
        #[pin]
        idle_timer: Sleep,
        #[pin]
        shutdown: F,
    }
}

/// [`Parts`] whatever the upstream's stream type.
trait Upstream: Send {
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
    /// Whether the idle timer has fired and not been polled since.
    fn idle_elapsed(&self) -> bool;
    fn idle(&self) -> Duration;
    /// `None` once the upstream is closed; `Err` when it broke. A chunk has been fed to the
    /// watcher.
    fn poll_upstream(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Option<Result<Bytes, ()>>>>;
    /// Dropping the upstream body closes that connection at once.
    fn close(self: Pin<&mut Self>);
    /// Takes the upstream body, and the watcher with what it has seen, to read elsewhere.
    fn take_rest(self: Pin<&mut Self>) -> Option<Rest>;
    fn idle_timer(self: Pin<&mut Self>) -> Pin<&mut Sleep>;
    fn watcher(&self) -> &SseWatcher;
}

impl<S, E, F> Upstream for Parts<S, F>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    F: Future<Output = ()> + Send,
{
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().shutdown.poll(cx)
    }

    fn idle_elapsed(&self) -> bool {
        self.idle_timer.is_elapsed()
    }

    fn idle(&self) -> Duration {
        Duration::from_nanos(self.idle)
    }

    fn poll_upstream(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Option<Result<Bytes, ()>>>> {
        let this = self.project();
        let next = this.upstream.as_pin_mut()?.poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            this.watcher.feed(chunk);
        }
        Some(next.map(|next| next.map(|r| r.map_err(drop))))
    }

    fn close(self: Pin<&mut Self>) {
        self.project().upstream.set(None);
    }

    fn take_rest(self: Pin<&mut Self>) -> Option<Rest> {
        let this = self.project();
        let body = this.upstream.get_mut().take()?;
        Some(Rest {
            body: Box::pin(body.map(|r| r.map_err(drop))),
            watcher: std::mem::take(this.watcher),
            idle: Duration::from_nanos(*this.idle),
        })
    }

    fn idle_timer(self: Pin<&mut Self>) -> Pin<&mut Sleep> {
        self.project().idle_timer
    }

    fn watcher(&self) -> &SseWatcher {
        &self.watcher
    }
}

impl RelayStream {
    pub fn new(
        upstream: transport::Response,
        idle: Duration,
        shutdown: WaitForCancellationFutureOwned,
        stop: StopOnAbandon,
        guard: Option<StreamGuard>,
    ) -> RelayStream {
        Self::from_stream(upstream.into_body(), idle, shutdown, Some(stop), guard)
    }

    /// The relay of any stream of chunks (Dify's body, or chunks made up by a test).
    pub fn from_stream<S, E>(
        upstream: S,
        idle: Duration,
        shutdown: WaitForCancellationFutureOwned,
        stop: Option<StopOnAbandon>,
        guard: Option<StreamGuard>,
    ) -> RelayStream
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: 'static,
    {
        let now = Instant::now();
        RelayStream {
            parts: Box::pin(Parts {
                watcher: SseWatcher::new(),
                idle: u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX),
                upstream: Some(upstream),
                idle_timer: tokio::time::sleep_until(now + idle),
                shutdown,
            }),
            last_byte: now,
            finished: false,
            armed: None,
            stop,
            _guard: guard,
        }
    }

    /// The tokens the answer spent, once Dify has said (see [`SseWatcher::total_tokens`]).
    pub fn total_tokens(&self) -> Option<u64> {
        self.parts.watcher().total_tokens()
    }

    /// For a stream left before its end (or ended by the proxy: idle, shutting down): instead
    /// of closing Dify's connection when dropped, reads the rest of the answer in a task while
    /// Dify is asked to stop, and tells `tokens` what it spent ([`drain`]). Nothing for a
    /// stream that has ended, or whose connection broke.
    pub fn count_after_abandon(&mut self, tokens: TokenSink) {
        if self.parts.watcher().terminal().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(rest) = self.parts.as_mut().take_rest() else {
            return;
        };
        self.finished = true;
        runtime.spawn(drain::count_rest(
            rest,
            self.stop.take(),
            self._guard.take(),
            tokens,
        ));
    }

    #[cold]
    #[inline(never)]
    fn fail(&mut self, failure: StreamFailure) -> Bytes {
        // Dify's connection is left to the drop (closed) or to the drain (read to count what
        // the stopped answer spent), unless it broke.
        if failure == StreamFailure::UpstreamDisconnected {
            self.parts.as_mut().close();
        }
        self.finished = true;
        metrics::stream_failed(failure.label());
        tracing::warn!(
            reason = failure.label(),
            task_id = self.parts.watcher().task_id().unwrap_or(""),
            "stream ended by the proxy"
        );
        let separator = self.parts.watcher().separator_needed();
        let event = failure.event();
        let mut out = BytesMut::with_capacity(separator.len() + event.len());
        out.extend_from_slice(separator);
        out.extend_from_slice(event);
        out.freeze()
    }

    /// Whether the shutdown signal and the idle timer already wait with this `cx`'s waker and
    /// neither may have fired: polling them again would only register the same waker again
    /// (the signal takes two locks for it). Each wakes the stream when it fires; the signal
    /// is looked at again once [`end_streams`] has been called in this process.
    fn waits_armed(&self, cx: &Context<'_>) -> bool {
        self.armed
            .as_ref()
            .is_some_and(|armed| armed.will_wake(cx.waker()))
            && !SHUTTING_DOWN.load(Ordering::Acquire)
            && !self.parts.idle_elapsed()
    }

    /// Idle check that touches the timer only when it fires, not on every chunk.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.parts.as_mut().idle_timer().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last_byte + self.parts.idle();
            if deadline <= Instant::now() {
                return true;
            }
            self.parts.as_mut().idle_timer().reset(deadline);
        }
    }
}

impl Stream for RelayStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let Some(polled) = this.parts.as_mut().poll_upstream(cx) else {
            this.finished = true;
            return Poll::Ready(None);
        };
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                this.last_byte = Instant::now();
                metrics::bytes_relayed(chunk.len());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(_))) => {
                Poll::Ready(Some(Ok(this.fail(StreamFailure::UpstreamDisconnected))))
            }
            Poll::Ready(None) => {
                if this.parts.watcher().terminal().is_some() {
                    this.parts.as_mut().close();
                    this.finished = true;
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(this.fail(StreamFailure::UpstreamDisconnected))))
                }
            }
            // Shutdown is looked at only before waiting (a ready chunk goes out first), and only
            // when it may have come: while waiting the stream is woken by it.
            Poll::Pending => {
                if this.waits_armed(cx) {
                    return Poll::Pending;
                }
                if this.parts.as_mut().poll_shutdown(cx).is_ready() {
                    return Poll::Ready(Some(Ok(this.fail(StreamFailure::ShuttingDown))));
                }
                if this.poll_idle(cx) {
                    return Poll::Ready(Some(Ok(this.fail(StreamFailure::UpstreamTimeout))));
                }
                if !this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.armed = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for RelayStream {
    fn drop(&mut self) {
        if let Some(usage) = self.parts.watcher().usage() {
            metrics::token_usage(usage);
        }
        if self.parts.watcher().terminal().is_some() {
            return;
        }
        self.parts.as_mut().close();
        let (Some(stop), Some(task_id)) = (self.stop.take(), self.parts.watcher().task_id()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match stop_call(stop, task_id) {
            Ok(call) => drop(runtime.spawn(call)),
            Err(_) => {
                tracing::warn!(%task_id, "too many pending stop calls; not stopping this task")
            }
        }
    }
}

/// Dify's stop for a stream left before its end, to run on a task; `stop` back when too many
/// stop calls are pending already.
fn stop_call(
    stop: StopOnAbandon,
    task_id: &str,
) -> Result<impl Future<Output = ()> + use<>, StopOnAbandon> {
    let Ok(permit) = stop.stops.clone().try_acquire_owned() else {
        return Err(stop);
    };
    let task_id = task_id.to_owned();
    tracing::info!(%task_id, "stream abandoned before its end; asking Dify to stop the task");
    metrics::stop_on_disconnect();
    Ok(async move {
        let _permit = permit;
        let call = stop.client.stop_task(&stop.caller, stop.kind, &task_id);
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(_)) => tracing::debug!(%task_id, "Dify stopped the task"),
            Ok(Err(e)) => tracing::warn!(%task_id, error = %e, "stop call failed"),
            Err(_) => tracing::warn!(%task_id, "stop call timed out"),
        }
    })
}
