//! Scripted replies: what a test tells the emulator to answer instead of its own behaviour.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::capture::parse_response;
use super::pyjson::python_json;
use super::respond::SERVER_VERSION;

/// The gap between two sends that must reach the client as separate network writes.
pub(crate) const WRITE_GAP: Duration = Duration::from_millis(2);

/// One step of a scripted reply.
///
/// Steps before the first `Send` run before the status line is written, as in Dify, which sends
/// its headers together with the first body bytes: a leading `Pause` delays the headers, a
/// leading `Hang` never answers and a leading `Drop` closes the connection without a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Write these bytes as one body frame (one HTTP chunk when the body is chunked).
    Send(Bytes),
    Pause(Duration),
    /// Abort the connection mid-body: no terminating chunk is written.
    Drop,
    /// Send nothing more and keep the connection open.
    Hang,
}

/// A scripted reply: status, headers (in order) and the body as steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub steps: Vec<Step>,
}

fn dify_headers(content_type: &str) -> Vec<(String, String)> {
    [
        ("Content-Type", content_type),
        ("Access-Control-Allow-Origin", "*"),
        ("X-Version", SERVER_VERSION),
        ("X-Env", "PRODUCTION"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

impl Reply {
    /// Dify's framework writer: `json.dumps` bytes plus `"\n"`, `application/json`, with Dify's
    /// `Access-Control-Allow-Origin`, `X-Version` and `X-Env` headers.
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::raw_json(status, &format!("{}\n", python_json(v)))
    }

    /// Exactly these body bytes, `application/json`, with Dify's headers.
    pub fn raw_json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: dify_headers("application/json"),
            steps: vec![Step::Send(Bytes::copy_from_slice(body.as_bytes()))],
        }
    }

    /// An HTML page (`text/html; charset=utf-8`) without Dify's headers, like a proxy's error page.
    pub fn html(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".to_owned(),
                "text/html; charset=utf-8".to_owned(),
            )],
            steps: vec![Step::Send(Bytes::copy_from_slice(body.as_bytes()))],
        }
    }

    /// A 200 event stream with Dify's headers; each chunk is one write, ~2 ms apart.
    pub fn sse(chunks: Vec<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: dify_headers("text/event-stream; charset=utf-8"),
            steps: spaced_sends(chunks),
        }
    }

    /// Never answers: the request is held until the client gives up or the emulator stops.
    pub fn hang_before_headers() -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            steps: vec![Step::Hang],
        }
    }

    /// The RESPONSE section of a capture file: its status, its headers without the hop-by-hop
    /// ones (Connection, Transfer-Encoding, Content-Length, Date, Server, Keep-Alive) and its body,
    /// one `Send` per HTTP chunk (~2 ms apart) or one `Send` for a `Content-Length` body.
    pub fn from_capture(capture_file_text: &[u8]) -> Result<Reply, String> {
        let parsed = parse_response(capture_file_text)?;
        Ok(Reply {
            status: parsed.status,
            headers: parsed.headers,
            steps: spaced_sends(parsed.chunks),
        })
    }

    /// All sent bytes joined and cut again every `n` bytes (anywhere: inside UTF-8 characters,
    /// lines and events), ~2 ms apart. See [`Reply::rechunk_at`] for the other steps.
    pub fn rechunk_every(self, n: usize) -> Reply {
        let total = self.body_len();
        let cuts: Vec<usize> = (1..)
            .map(|i| i * n.max(1))
            .take_while(|c| *c < total)
            .collect();
        self.rechunk_at(&cuts)
    }

    /// All sent bytes joined and cut at these offsets, ~2 ms apart. `Pause` steps are dropped
    /// (the new cuts set the timing); a `Drop` or `Hang` stays at the end.
    pub fn rechunk_at(self, cuts: &[usize]) -> Reply {
        let mut body = BytesMut::new();
        let mut terminal = None;
        for step in self.steps {
            match step {
                Step::Send(bytes) => body.extend_from_slice(&bytes),
                Step::Pause(_) => {}
                Step::Drop | Step::Hang => {
                    terminal = Some(step);
                    break;
                }
            }
        }
        let mut body = body.freeze();
        let mut cuts: Vec<usize> = cuts
            .iter()
            .copied()
            .filter(|c| *c > 0 && *c < body.len())
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        let mut taken = 0;
        for cut in cuts {
            pieces.push(body.split_to(cut - taken));
            taken = cut;
        }
        if !body.is_empty() {
            pieces.push(body);
        }
        let mut steps = spaced_sends(pieces);
        steps.extend(terminal);
        Reply { steps, ..self }
    }

    /// Appends a step, e.g. `Step::Drop` after the last event.
    pub fn then(mut self, step: Step) -> Reply {
        self.steps.push(step);
        self
    }

    fn body_len(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Send(b) => b.len(),
                _ => 0,
            })
            .sum()
    }

    pub(crate) fn is_event_stream(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("content-type")
                && v.to_ascii_lowercase().starts_with("text/event-stream")
        })
    }
}

fn spaced_sends(chunks: Vec<Bytes>) -> Vec<Step> {
    let mut steps = Vec::with_capacity(chunks.len() * 2);
    for chunk in chunks {
        if !steps.is_empty() {
            steps.push(Step::Pause(WRITE_GAP));
        }
        steps.push(Step::Send(chunk));
    }
    steps
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sends(reply: &Reply) -> Vec<Bytes> {
        reply
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn json_reply_uses_the_framework_writer() {
        let reply = Reply::json(
            404,
            &json!({"code": "not_found", "message": "Conversation Not Exists.", "status": 404}),
        );
        assert_eq!(reply.status, 404);
        assert_eq!(
            sends(&reply),
            vec![Bytes::from_static(
                b"{\"code\": \"not_found\", \"message\": \"Conversation Not Exists.\", \"status\": 404}\n"
            )]
        );
        assert_eq!(
            reply.headers[0],
            ("Content-Type".to_owned(), "application/json".to_owned())
        );
        assert!(!reply.is_event_stream());
    }

    #[test]
    fn sse_reply_spaces_its_chunks() {
        let reply = Reply::sse(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(
            reply.steps,
            vec![
                Step::Send(Bytes::from_static(b"a")),
                Step::Pause(WRITE_GAP),
                Step::Send(Bytes::from_static(b"b"))
            ]
        );
        assert!(reply.is_event_stream());
    }

    #[test]
    fn rechunk_every_cuts_inside_utf8_and_keeps_the_terminal_step() {
        let reply = Reply::sse(vec![Bytes::from("data: é\n\n"), Bytes::from("data: x\n\n")])
            .then(Step::Drop)
            .rechunk_every(7);
        let joined: Vec<u8> = sends(&reply).concat();
        assert_eq!(joined, "data: é\n\ndata: x\n\n".as_bytes());
        assert_eq!(sends(&reply)[0], Bytes::from_static(b"data: \xc3"));
        assert_eq!(
            sends(&reply).iter().map(Bytes::len).collect::<Vec<_>>(),
            [7, 7, 5]
        );
        assert_eq!(reply.steps.last(), Some(&Step::Drop));
    }

    #[test]
    fn rechunk_at_ignores_out_of_range_and_repeated_cuts() {
        let reply = Reply::raw_json(200, "abcdef").rechunk_at(&[4, 0, 2, 2, 99]);
        assert_eq!(
            sends(&reply),
            vec![
                Bytes::from_static(b"ab"),
                Bytes::from_static(b"cd"),
                Bytes::from_static(b"ef")
            ]
        );
    }

    #[test]
    fn hang_before_headers_has_no_send() {
        assert_eq!(Reply::hang_before_headers().steps, vec![Step::Hang]);
    }
}
