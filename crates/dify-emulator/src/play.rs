//! Playing a scripted [`Reply`] back on the wire.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::respond::status;
use super::script::{Reply, Step, WRITE_GAP};
use super::state::{Shared, StreamGuard};

/// Headers the server manages itself; a script's copies would contradict the real framing.
const FRAMING_HEADERS: &[&str] = &["content-length", "transfer-encoding", "connection"];

pub(crate) async fn play(shared: Arc<Shared>, reply: Reply) -> Response {
    let event_stream = reply.is_event_stream();
    let mut steps: VecDeque<Step> = reply.steps.into();
    while let Some(step) = steps.front() {
        match step {
            Step::Send(_) => break,
            Step::Pause(pause) => {
                let pause = *pause;
                steps.pop_front();
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shared.shutdown_signal() => return aborted(),
                }
            }
            Step::Hang => {
                shared.shutdown_signal().await;
                return aborted();
            }
            Step::Drop => return aborted(),
        }
    }

    let body = match (event_stream, steps.len(), steps.front()) {
        (false, 0, _) => Body::empty(),
        (false, 1, Some(Step::Send(bytes))) => Body::from(bytes.clone()),
        _ => {
            let guard = event_stream.then(|| StreamGuard::open(shared.clone(), ""));
            steps_body(shared, steps, guard)
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status(reply.status);
    for (name, value) in &reply.headers {
        if FRAMING_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

fn steps_body(shared: Arc<Shared>, steps: VecDeque<Step>, guard: Option<StreamGuard>) -> Body {
    let stream = futures_util::stream::unfold((steps, guard), move |(mut steps, mut guard)| {
        let shutdown = shared.shutdown_signal();
        async move {
            tokio::pin!(shutdown);
            loop {
                match steps.pop_front() {
                    None => {
                        end(&mut guard);
                        return None;
                    }
                    Some(Step::Send(bytes)) => {
                        return Some((Ok::<Bytes, io::Error>(bytes), (steps, guard)));
                    }
                    Some(Step::Pause(pause)) => {
                        tokio::select! {
                            () = tokio::time::sleep(pause) => continue,
                            () = &mut shutdown => {}
                        }
                    }
                    Some(Step::Hang) => (&mut shutdown).await,
                    // Give the server a moment to flush what was sent before the connection goes.
                    Some(Step::Drop) => tokio::time::sleep(WRITE_GAP).await,
                }
                end(&mut guard);
                return Some((Err(connection_cut()), (VecDeque::new(), guard)));
            }
        }
    });
    Body::from_stream(stream)
}

fn end(guard: &mut Option<StreamGuard>) {
    if let Some(guard) = guard.as_mut() {
        guard.end();
    }
}

fn connection_cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "scripted connection drop")
}

/// A response whose body fails before its first byte: the server closes the connection without
/// writing the status line.
pub(crate) fn aborted() -> Response {
    let stream = futures_util::stream::once(async { Err::<Bytes, io::Error>(connection_cut()) });
    Response::new(Body::from_stream(stream))
}
