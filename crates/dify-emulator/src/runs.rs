//! `POST /v1/completion-messages` and `POST /v1/workflows/run` with their stop calls
//! (`/completion-messages/{task_id}/stop`, `/workflows/tasks/{task_id}/stop`).
//!
//! A real Dify app has one mode; this emulator answers these next to its chat endpoints so the
//! proxy can be tested against all three. The answer is the capture app's fake LLM text
//! (`SLOW` in the query or an input makes it slow); a stop by the same user ends a completion
//! with `message_end` and a workflow with `workflow_finished` (`status: "stopped"`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::answers::{self, Timing, estimate_tokens};
use super::ctx::Ctx;
use super::errors::ApiError;
use super::generate::usage;
use super::pyjson::sse_data;
use super::pyvalue::py_str;
use super::reqparse::{Location, choice, missing, to_dict};
use super::respond::json_response;
use super::state::{Shared, StopFlag, StreamGuard};
use super::store::{new_id, unix_now};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Completion,
    Workflow,
}

/// One run: its ids, its pieces and its stop flag.
struct Run {
    kind: Kind,
    shared: Arc<Shared>,
    task_id: String,
    /// The message id (completion) or the workflow run id.
    id: String,
    conversation_id: String,
    workflow_id: String,
    inputs: Map<String, Value>,
    created_at: i64,
    pieces: Vec<String>,
    interval: Duration,
    stop: Arc<StopFlag>,
    started: Instant,
}

struct Args {
    inputs: Map<String, Value>,
    query: String,
    streaming: bool,
    user: String,
}

fn parse(ctx: &Ctx, with_query: bool) -> Result<Args, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, true)?;
    let inputs = match body.get("inputs") {
        None => return Err(missing("inputs", Location::Json)),
        Some(Value::Null) => Map::new(),
        Some(v) => to_dict(v).map_err(|message| ApiError::param("inputs", message))?,
    };
    let streaming = match body.get("response_mode") {
        None => false,
        Some(v) => {
            let mode = py_str(v);
            choice("response_mode", &mode, &["blocking", "streaming"])?;
            mode == "streaming"
        }
    };
    let query = if with_query {
        body.get("query")
            .or_else(|| inputs.get("query"))
            .map(|q| q.as_str().map_or_else(|| py_str(q), str::to_owned))
            .unwrap_or_default()
    } else {
        inputs.values().map(py_str).collect::<Vec<_>>().join(" ")
    };
    Ok(Args {
        inputs,
        query,
        streaming,
        user,
    })
}

pub(crate) async fn completion(ctx: Ctx) -> Result<Response, ApiError> {
    let args = parse(&ctx, true)?;
    start(ctx, args, Kind::Completion).await
}

pub(crate) async fn workflow(ctx: Ctx) -> Result<Response, ApiError> {
    let args = parse(&ctx, false)?;
    start(ctx, args, Kind::Workflow).await
}

async fn start(ctx: Ctx, args: Args, kind: Kind) -> Result<Response, ApiError> {
    let shared = ctx.shared.clone();
    let timing = Timing {
        token_interval: shared.opts.token_interval,
        slow_interval: shared.opts.slow_interval,
    };
    let plan = answers::plan(&args.query, 1, shared.opts.demo, &timing);
    let task_id = new_id();
    let stop = shared.register_task(&task_id, &args.user);
    let run = Run {
        kind,
        shared: shared.clone(),
        task_id,
        id: new_id(),
        conversation_id: new_id(),
        workflow_id: new_id(),
        inputs: args.inputs,
        created_at: unix_now(),
        pieces: plan.pieces,
        interval: plan.interval,
        stop,
        started: Instant::now(),
    };
    if args.streaming {
        let mut resp = Response::new(sse(run));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        return Ok(resp);
    }
    let mut answer = String::new();
    for piece in &run.pieces {
        tokio::time::sleep(run.interval).await;
        answer.push_str(piece);
    }
    run.shared.unregister_task(&run.task_id);
    Ok(json_response(200, &run.blocking(&answer)))
}

impl Run {
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn blocking(&self, answer: &str) -> Value {
        match self.kind {
            Kind::Completion => json!({
                "event": "message",
                "task_id": self.task_id,
                "id": self.id,
                "message_id": self.id,
                "mode": "completion",
                "answer": answer,
                "metadata": {"usage": usage(11, estimate_tokens(answer), self.elapsed())},
                "created_at": self.created_at,
            }),
            Kind::Workflow => json!({
                "task_id": self.task_id,
                "workflow_run_id": self.id,
                "data": self.finished_data("succeeded", answer),
            }),
        }
    }

    fn finished_data(&self, status: &str, answer: &str) -> Value {
        json!({
            "id": self.id,
            "workflow_id": self.workflow_id,
            "status": status,
            "outputs": {"text": answer},
            "error": null,
            "elapsed_time": self.elapsed(),
            "total_tokens": 11 + estimate_tokens(answer),
            "total_steps": 3,
            "created_at": self.created_at,
            "finished_at": unix_now(),
        })
    }

    /// The events before the answer's pieces.
    fn opening(&self) -> Vec<Value> {
        if self.kind == Kind::Completion {
            return Vec::new();
        }
        let node = |event: &str, extra: Value| {
            let mut data = json!({
                "id": format!("{}-start", self.id),
                "node_id": "start",
                "node_type": "start",
                "title": "Start",
                "index": 1,
                "predecessor_node_id": null,
                "inputs": self.inputs,
                "created_at": self.created_at,
            });
            if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
                data.extend(extra.clone());
            }
            json!({"event": event, "task_id": self.task_id, "workflow_run_id": self.id, "data": data})
        };
        vec![
            json!({"event": "workflow_started", "task_id": self.task_id, "workflow_run_id": self.id,
                   "data": {"id": self.id, "workflow_id": self.workflow_id, "inputs": self.inputs, "created_at": self.created_at}}),
            node("node_started", json!({})),
            node(
                "node_finished",
                json!({"outputs": self.inputs, "status": "succeeded", "error": null, "elapsed_time": 0.01}),
            ),
        ]
    }

    fn piece(&self, text: &str) -> Value {
        match self.kind {
            Kind::Completion => json!({
                "event": "message", "conversation_id": self.conversation_id, "message_id": self.id,
                "created_at": self.created_at, "task_id": self.task_id, "id": self.id,
                "answer": text, "from_variable_selector": null,
            }),
            Kind::Workflow => json!({
                "event": "text_chunk", "task_id": self.task_id, "workflow_run_id": self.id,
                "data": {"text": text, "from_variable_selector": ["llm", "text"]},
            }),
        }
    }

    fn end(&self, answer: &str, stopped: bool) -> Value {
        match self.kind {
            Kind::Completion => json!({
                "event": "message_end", "conversation_id": self.conversation_id,
                "message_id": self.id, "created_at": self.created_at, "task_id": self.task_id,
                "id": self.id,
                "metadata": {"usage": usage(11, estimate_tokens(answer), self.elapsed())},
                "files": null,
            }),
            Kind::Workflow => json!({
                "event": "workflow_finished", "task_id": self.task_id, "workflow_run_id": self.id,
                "data": self.finished_data(if stopped { "stopped" } else { "succeeded" }, answer),
            }),
        }
    }
}

/// The run as SSE: the opening events, a piece per interval, the end (early after a stop).
fn sse(run: Run) -> Body {
    let guard = StreamGuard::open(run.shared.clone(), &run.task_id);
    let mut queue: std::collections::VecDeque<Value> = run.opening().into();
    struct Progress {
        run: Run,
        guard: StreamGuard,
        next: usize,
        answer: String,
        done: bool,
    }
    let first: Vec<Bytes> = queue.drain(..).map(|v| sse_data(&v)).collect();
    let opening = futures_util::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>));
    let progress = Progress {
        run,
        guard,
        next: 0,
        answer: String::new(),
        done: false,
    };
    let pieces = futures_util::stream::unfold(progress, |mut p| async move {
        if p.done {
            return None;
        }
        let stopped = tokio::select! {
            () = tokio::time::sleep(p.run.interval) => p.run.stop.is_stopped(),
            () = p.run.stop.stopped() => true,
            () = p.run.shared.shutdown_signal() => {
                p.guard.end();
                return None;
            }
        };
        let event = match p.run.pieces.get(p.next).cloned() {
            Some(piece) if !stopped => {
                p.next += 1;
                p.answer.push_str(&piece);
                p.run.piece(&piece)
            }
            _ => {
                p.done = true;
                p.guard.end();
                p.run.shared.unregister_task(&p.run.task_id);
                p.run.end(&p.answer, stopped)
            }
        };
        Some((Ok(sse_data(&event)), p))
    });
    Body::from_stream(futures_util::StreamExt::chain(opening, pieces))
}

/// `POST /v1/completion-messages/{task_id}/stop` and `POST /v1/workflows/tasks/{task_id}/stop`.
pub(crate) fn stop(ctx: Ctx, task_id: &str) -> Result<Response, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, true)?;
    ctx.shared.stop_task(task_id, &user);
    Ok(json_response(200, &json!({"result": "success"})))
}
