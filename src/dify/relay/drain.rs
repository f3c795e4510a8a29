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
/// How often a stop that found no slot is asked again.
const STOP_RETRY: Duration = Duration::from_secs(1);

/// Dify's body from where the client left it, and what the relay had seen of it.
pub(super) struct Rest {
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, ()>> + Send>>,
    pub watcher: SseWatcher,
    /// The most the body may stay silent (the relay's idle timeout).
    pub idle: Duration,
}

/// Reads `rest` to its terminal event, asking Dify to stop (`stop`) once the task id is known,
/// then for at most [`DRAIN_LIMIT`]; before that (and while too many stops are pending, when
/// the stop is asked again every [`STOP_RETRY`]), each read within the idle timeout and all
/// within [`GENERATION_LIMIT`]. Then tells `tokens` what it spent. The stream's slot is held
/// until then.
pub(super) async fn count_rest(
    mut rest: Rest,
    mut stop: Option<StopOnAbandon>,
    _guard: Option<StreamGuard>,
    tokens: TokenSink,
) {
    let mut limit = Instant::now() + GENERATION_LIMIT;
    let mut last_read = Instant::now();
    let mut stopped = false;
    let mut waiting = false;
    while rest.watcher.terminal().is_none() {
        if !stopped && let Some(task_id) = rest.watcher.task_id() {
            match stop.take().map(|stop| stop_call(stop, task_id)) {
                Some(Ok(call)) => drop(tokio::spawn(call)),
                // Without a stop slot Dify generates on: its answer is read on, and the stop
                // asked again while it lasts.
                Some(Err(again)) => {
                    if !std::mem::replace(&mut waiting, true) {
                        tracing::warn!(%task_id, "too many pending stop calls; asking again shortly");
                    }
                    stop = Some(again);
                }
                None => {}
            }
            if stop.is_none() {
                stopped = true;
                limit = Instant::now() + DRAIN_LIMIT;
            }
        }
        let read_by = if stopped {
            limit
        } else {
            limit.min(last_read + rest.idle)
        };
        let by = if stop.is_some() && rest.watcher.task_id().is_some() {
            read_by.min(Instant::now() + STOP_RETRY)
        } else {
            read_by
        };
        match tokio::time::timeout_at(by, rest.body.next()).await {
            Ok(Some(Ok(chunk))) => {
                last_read = Instant::now();
                rest.watcher.feed(&chunk);
            }
            Err(_) if Instant::now() < read_by => {}
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::stream;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::config::Config;
    use crate::dify::client::{Caller, DifyClient, StopKind};

    const FIRST: &[u8] =
        b"data: {\"event\": \"message\", \"task_id\": \"t-1\", \"answer\": \"Hi\"}\n\n";
    const END: &[u8] =
        b"data: {\"event\": \"message_end\", \"metadata\": {\"usage\": {\"total_tokens\": 42}}}\n\n";

    fn no_stop_slot() -> StopOnAbandon {
        let vars = [
            ("DIFY_API_KEY", "app-test"),
            ("DIFY_BASE_URL", "http://127.0.0.1:9/v1"),
        ];
        let config = Config::from_lookup(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            },
            false,
        )
        .unwrap();
        StopOnAbandon {
            client: Arc::new(DifyClient::new(&config, &config.apps.apps[0]).unwrap()),
            caller: Caller {
                user: "u-1".into(),
                trace_id: None,
            },
            stops: Arc::new(Semaphore::new(0)),
            kind: StopKind::Chat,
        }
    }

    /// An answer whose first event names its task, and whose end comes long after.
    fn named_then_ended_late() -> Rest {
        let mut watcher = SseWatcher::new();
        watcher.feed(FIRST);
        let late_end = stream::once(async {
            tokio::time::sleep(DRAIN_LIMIT * 10).await;
            Ok(Bytes::from_static(END))
        });
        Rest {
            body: Box::pin(late_end),
            watcher,
            idle: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_that_found_no_slot_is_asked_again_once_one_frees() {
        let rest = named_then_ended_late();
        let stop = no_stop_slot();
        let stops = Arc::clone(&stop.stops);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            stops.add_permits(1);
        });
        let started = Instant::now();
        count_rest(rest, Some(stop), None, Box::new(|_| {})).await;
        // Stopped once the slot freed, the answer is read for DRAIN_LIMIT, not to its end.
        assert!(started.elapsed() <= Duration::from_secs(2) + STOP_RETRY + DRAIN_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_cannot_be_stopped_is_read_to_its_end_and_counted() {
        let rest = named_then_ended_late();
        let counted = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&counted);
        count_rest(
            rest,
            Some(no_stop_slot()),
            None,
            Box::new(move |tokens| *sink.lock().unwrap() = Some(tokens)),
        )
        .await;
        assert_eq!(*counted.lock().unwrap(), Some(42));
    }
}
