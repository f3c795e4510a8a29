//! One answer being generated: its timing (pieces, pings, stop), its SSE bytes, the blocking
//! body, and what gets stored when it ends.
//!
//! The generator is driven by whoever reads it (the SSE body or the blocking handler): when a
//! client goes away, the body is dropped, and so is the generation.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::answers::{Plan, estimate_tokens};
use super::pyjson::{PING, python_json, sse_data};
use super::state::{Shared, StopFlag, StreamGuard, lock};

/// The ids of one chat turn.
#[derive(Debug, Clone)]
pub(crate) struct Turn {
    pub task_id: String,
    pub conversation_id: String,
    pub message_id: String,
    pub created_at: i64,
    pub user: String,
    /// The title to give a new conversation once its first answer ends.
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Piece(String),
    /// The empty `message` Dify sends for the model's final chunk.
    Final,
    Ping,
    End {
        usage: Value,
    },
    Error(&'static str),
    /// The emulator is shutting down: the connection is cut.
    Shutdown,
}

enum Phase {
    Pieces,
    Final,
    End,
    Done,
}

pub(crate) struct Generation {
    shared: Arc<Shared>,
    turn: Turn,
    plan: Plan,
    stop: Arc<StopFlag>,
    start: Instant,
    next_at: Instant,
    next_piece: usize,
    pings: u32,
    stop_at: Option<Instant>,
    phase: Phase,
    answer: String,
}

impl Generation {
    pub(crate) fn start(shared: Arc<Shared>, turn: Turn, plan: Plan) -> Generation {
        let stop = shared.register_task(&turn.task_id, &turn.user);
        let start = Instant::now();
        Generation {
            shared,
            turn,
            plan,
            stop,
            start,
            next_at: start,
            next_piece: 0,
            pings: 0,
            stop_at: None,
            phase: Phase::Pieces,
            answer: String::new(),
        }
    }

    fn next_ping_at(&self) -> Option<Instant> {
        let interval = self.shared.opts.ping_interval;
        (!interval.is_zero()).then(|| self.start + interval * (self.pings + 1))
    }

    /// The next event, at its time; `None` once the answer has ended.
    pub(crate) async fn next_event(&mut self) -> Option<Event> {
        loop {
            if matches!(self.phase, Phase::Done) {
                return None;
            }
            if self.stop_at.is_none() && self.stop.is_stopped() {
                self.stop_at = Some(Instant::now() + self.shared.opts.stop_latency);
            }
            let ping_at = self.next_ping_at();
            let due = self.next_at;
            let wake = [Some(due), ping_at, self.stop_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(due);
            if Instant::now() < wake {
                let stop = self.stop.clone();
                let watch_stop = self.stop_at.is_none();
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    () = stop.stopped(), if watch_stop => continue,
                    () = self.shared.shutdown_signal() => {
                        self.close(None);
                        return Some(Event::Shutdown);
                    }
                }
            }
            let now = Instant::now();
            if self.stop_at.is_some_and(|at| at <= now) {
                return Some(self.finish_stopped());
            }
            if ping_at.is_some_and(|at| at <= now && at <= due) {
                self.pings += 1;
                return Some(Event::Ping);
            }
            if due <= now
                && let Some(event) = self.advance()
            {
                return Some(event);
            }
        }
    }

    fn advance(&mut self) -> Option<Event> {
        match self.phase {
            Phase::Pieces => {
                if let Some(piece) = self.plan.pieces.get(self.next_piece).cloned() {
                    self.next_piece += 1;
                    self.answer.push_str(&piece);
                    self.next_at += self.plan.interval;
                    return Some(Event::Piece(piece));
                }
                if let Some(message) = self.plan.error {
                    self.close(Some(message.to_owned()));
                    return Some(Event::Error(message));
                }
                self.phase = Phase::Final;
                None
            }
            Phase::Final => {
                self.phase = Phase::End;
                Some(Event::Final)
            }
            Phase::End => {
                self.close(None);
                Some(Event::End {
                    usage: self.usage(self.plan.prompt_tokens, self.plan.completion_tokens),
                })
            }
            Phase::Done => None,
        }
    }

    /// A stop ends the answer with a plain `message_end` and Dify's own token estimate.
    fn finish_stopped(&mut self) -> Event {
        self.close(None);
        Event::End {
            usage: self.usage(10, estimate_tokens(&self.answer)),
        }
    }

    fn usage(&self, prompt: u64, completion: u64) -> Value {
        usage(prompt, completion, self.start.elapsed().as_secs_f64())
    }

    /// Stores the outcome once: the stripped answer, or `""` and the error text.
    fn close(&mut self, error: Option<String>) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        self.phase = Phase::Done;
        self.shared.unregister_task(&self.turn.task_id);
        let answer = if error.is_some() {
            String::new()
        } else {
            self.answer.trim().to_owned()
        };
        let mut store = lock(&self.shared.store);
        if error.is_none() && !self.plan.sources.is_empty() {
            store.set_retriever_resources(&self.turn.message_id, self.plan.sources.clone());
        }
        store.finish_message(&self.turn.message_id, answer, error);
        if let Some(title) = self.turn.title.take() {
            store.set_generated_name(&self.turn.conversation_id, title);
        }
    }

    fn envelope(&self, event: &str) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("event".to_owned(), json!(event));
        map.insert(
            "conversation_id".to_owned(),
            json!(self.turn.conversation_id),
        );
        map.insert("message_id".to_owned(), json!(self.turn.message_id));
        map.insert("created_at".to_owned(), json!(self.turn.created_at));
        map
    }

    /// The bytes Dify 0.15.3 writes for an event (captures 02, 55, 57, 69).
    fn render(&self, event: &Event) -> Bytes {
        let message = |answer: &str| {
            let mut map = self.envelope("message");
            map.insert("task_id".to_owned(), json!(self.turn.task_id));
            map.insert("id".to_owned(), json!(self.turn.message_id));
            map.insert("answer".to_owned(), json!(answer));
            map.insert("from_variable_selector".to_owned(), Value::Null);
            sse_data(&Value::Object(map))
        };
        match event {
            Event::Piece(piece) => message(piece),
            Event::Final => message(""),
            Event::Ping | Event::Shutdown => Bytes::from_static(PING),
            Event::End { usage } => {
                let mut map = self.envelope("message_end");
                map.insert("task_id".to_owned(), json!(self.turn.task_id));
                map.insert("id".to_owned(), json!(self.turn.message_id));
                map.insert("metadata".to_owned(), self.metadata(usage.clone()));
                map.insert("files".to_owned(), Value::Null);
                sse_data(&Value::Object(map))
            }
            Event::Error(text) => {
                let mut map = self.envelope("error");
                map.insert("code".to_owned(), json!("completion_request_error"));
                map.insert("status".to_owned(), json!(400));
                map.insert("message".to_owned(), json!(text));
                sse_data(&Value::Object(map))
            }
        }
    }

    /// 0.15.3's metadata: only the keys set; `retriever_resources` (set when retrieval ran,
    /// before the model) precedes `usage`.
    fn metadata(&self, usage: Value) -> Value {
        let mut map = serde_json::Map::new();
        if !self.plan.sources.is_empty() {
            map.insert(
                "retriever_resources".to_owned(),
                Value::Array(self.plan.sources.clone()),
            );
        }
        map.insert("usage".to_owned(), usage);
        Value::Object(map)
    }

    /// The blocking body (capture 01): `json.dumps` without a trailing newline.
    fn blocking_body(&self, usage: Value) -> String {
        python_json(&json!({
            "event": "message",
            "task_id": self.turn.task_id,
            "id": self.turn.message_id,
            "message_id": self.turn.message_id,
            "conversation_id": self.turn.conversation_id,
            "mode": "chat",
            "answer": self.answer,
            "metadata": self.metadata(usage),
            "created_at": self.turn.created_at,
        }))
    }
}

impl Drop for Generation {
    /// A client that goes away stops the generation; the partial answer is kept.
    fn drop(&mut self) {
        self.close(None);
    }
}

/// How a blocking generation ended.
pub(crate) enum Blocking {
    Answer(String),
    Failed(&'static str),
    Shutdown,
}

pub(crate) async fn run_blocking(mut generation: Generation) -> Blocking {
    while let Some(event) = generation.next_event().await {
        match event {
            Event::End { usage } => return Blocking::Answer(generation.blocking_body(usage)),
            Event::Error(text) => return Blocking::Failed(text),
            Event::Shutdown => return Blocking::Shutdown,
            Event::Piece(_) | Event::Final | Event::Ping => {}
        }
    }
    Blocking::Shutdown
}

/// The SSE body: one event per frame, written as each becomes due.
pub(crate) fn sse_body(generation: Generation) -> Body {
    let guard = StreamGuard::open(generation.shared.clone(), &generation.turn.task_id);
    let stream = futures_util::stream::unfold(
        (generation, guard),
        |(mut generation, mut guard)| async move {
            let event = generation.next_event().await?;
            let item = match event {
                Event::Shutdown => {
                    guard.end();
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "emulator shutting down",
                    ))
                }
                Event::End { .. } | Event::Error(_) => {
                    guard.end();
                    Ok(generation.render(&event))
                }
                _ => Ok(generation.render(&event)),
            };
            Some((item, (generation, guard)))
        },
    );
    Body::from_stream(stream)
}

/// `metadata.usage` as the capture app's model reported it (zero prices, Decimal strings).
pub(crate) fn usage(prompt: u64, completion: u64, latency: f64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "prompt_unit_price": "0",
        "prompt_price_unit": "0",
        "prompt_price": "0E-7",
        "completion_tokens": completion,
        "completion_unit_price": "0",
        "completion_price_unit": "0",
        "completion_price": "0E-7",
        "total_tokens": prompt + completion,
        "total_price": "0E-7",
        "currency": "USD",
        "latency": latency,
    })
}
