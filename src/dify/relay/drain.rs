//! The rest of an answer whose client left before its end, read in a task of its own so that
//! what Dify spent on it is counted (API.md §7): asked to stop, Dify ends the answer within
//! about a second with a normal `message_end` carrying the usage so far (dify-protocol.md
//! §5.7). A client may leave before the first event, which names the task to stop: it is read
//! here first. The connection is closed when the end does not come in time.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use tokio::time::Instant;

use super::{StopOnAbandon, StreamGuard, stop_call};
use crate::dify::answer::TokenSink;
use crate::dify::watcher::SseWatcher;
use crate::telemetry::metrics;

/// How long the rest of a left answer is read, from the client's leaving and again from the
/// stop: Dify's first event comes with its headers, and its stop takes about a second.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// Dify's body from where the client left it, and what the relay had seen of it.
pub(super) struct Rest {
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, ()>> + Send>>,
    pub watcher: SseWatcher,
}

/// Reads `rest` to its terminal event, asking Dify to stop (`stop`) once the task id is known,
/// for at most [`DRAIN_LIMIT`] and again as long from the stop; then tells `tokens` what it
/// spent. The stream's slot is held until then.
pub(super) async fn count_rest(
    mut rest: Rest,
    mut stop: Option<StopOnAbandon>,
    _guard: Option<StreamGuard>,
    tokens: TokenSink,
) {
    let mut limit = Instant::now() + DRAIN_LIMIT;
    while rest.watcher.terminal().is_none() {
        if let Some(task_id) = rest.watcher.task_id()
            && let Some(stop) = stop.take()
        {
            if let Some(call) = stop_call(stop, task_id) {
                tokio::spawn(call);
            }
            limit = Instant::now() + DRAIN_LIMIT;
        }
        match tokio::time::timeout_at(limit, rest.body.next()).await {
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
