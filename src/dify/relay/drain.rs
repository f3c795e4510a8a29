//! The rest of an answer whose client left before its end, read in a task of its own so that
//! what Dify spent on it is counted (API.md §7): asked to stop, Dify ends the answer within
//! about a second with a normal `message_end` carrying the usage so far (dify-protocol.md
//! §5.7). A client may leave before the first event that names the task to stop (a chatflow's
//! comes once a worker takes the run, after pings): it is waited for as the relay would, each
//! read within the idle timeout. The connection is closed when the end does not come in time.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use tokio::time::Instant;

use super::{StopOnAbandon, StreamGuard, stop_call};
use crate::dify::answer::TokenSink;
use crate::dify::client::GENERATION_LIMIT;
use crate::dify::watcher::SseWatcher;
use crate::telemetry::metrics;

/// How long the rest of a stopped answer is read: Dify's stop takes about a second.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// Dify's body from where the client left it, and what the relay had seen of it.
pub(super) struct Rest {
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, ()>> + Send>>,
    pub watcher: SseWatcher,
    /// The most the body may stay silent (the relay's idle timeout).
    pub idle: Duration,
}

/// Reads `rest` to its terminal event, asking Dify to stop (`stop`) once the task id is known,
/// then for at most [`DRAIN_LIMIT`]; before that, each read within the idle timeout and all
/// within [`GENERATION_LIMIT`]. Then tells `tokens` what it spent. The stream's slot is held
/// until then.
pub(super) async fn count_rest(
    mut rest: Rest,
    mut stop: Option<StopOnAbandon>,
    _guard: Option<StreamGuard>,
    tokens: TokenSink,
) {
    let mut limit = Instant::now() + GENERATION_LIMIT;
    let mut stopped = false;
    while rest.watcher.terminal().is_none() {
        if !stopped && let Some(task_id) = rest.watcher.task_id() {
            if let Some(call) = stop.take().and_then(|stop| stop_call(stop, task_id)) {
                tokio::spawn(call);
            }
            stopped = true;
            limit = Instant::now() + DRAIN_LIMIT;
        }
        let by = if stopped {
            limit
        } else {
            limit.min(Instant::now() + rest.idle)
        };
        match tokio::time::timeout_at(by, rest.body.next()).await {
            Ok(Some(Ok(chunk))) => rest.watcher.feed(&chunk),
            _ => break,
        }
    }
    if let Some(usage) = rest.watcher.usage() {
        metrics::token_usage(usage);
    }
    if let Some(spent) = rest.watcher.total_tokens() {
        tokens(spent);
    }
}
