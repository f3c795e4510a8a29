//! Property tests of the stream relay: however Dify's bytes are cut into chunks (inside UTF-8
//! characters, between `\r` and `\n`, one byte at a time), the relay passes every chunk on
//! unchanged and in order, and its watcher learns the same `task_id`, terminal event, event
//! count and usage as when fed the stream whole. A stream cut short gets exactly one error
//! event that parses on its own.

use std::time::Duration;

use bytes::Bytes;
use dify_bff::dify::relay::RelayStream;
use dify_bff::dify::watcher::{SseWatcher, Terminal, Usage};
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const RECORDED: &str = "02-chat-streaming-new-conversation.http";

/// Everything the watcher learns from a stream.
#[derive(Debug, PartialEq)]
struct Seen {
    task_id: Option<String>,
    conversation_id: Option<String>,
    terminal: Option<Terminal>,
    events: u64,
    usage: Option<Usage>,
}

fn watch<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Seen {
    let mut watcher = SseWatcher::new();
    for chunk in chunks {
        watcher.feed(chunk);
    }
    Seen {
        task_id: watcher.task_id().map(str::to_owned),
        conversation_id: watcher.conversation_id().map(str::to_owned),
        terminal: watcher.terminal(),
        events: watcher.events(),
        usage: watcher.usage().cloned(),
    }
}

/// Cuts `input` at these offsets (taken modulo its length + 1); empty pieces are kept, as an
/// upstream may send them.
fn cut(input: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        pieces.push(Bytes::copy_from_slice(&input[start..point]));
        start = point;
    }
    pieces.push(Bytes::copy_from_slice(&input[start..]));
    pieces
}

/// Runs the chunks through the real relay, as `POST /chat` does, and returns what it yields.
fn relay(chunks: &[Bytes]) -> Vec<Bytes> {
    let owned: Vec<Bytes> = Vec::from(chunks);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let upstream =
            futures_util::stream::iter(owned.into_iter().map(Ok::<_, reqwest::Error>)).boxed();
        let relay = RelayStream::from_stream(
            upstream,
            Duration::from_secs(60),
            CancellationToken::new().cancelled_owned(),
            None,
            None,
        );
        relay
            .map(|chunk| chunk.expect("the relay never yields an error"))
            .collect()
            .await
    })
}

fn crlf(input: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(input)
        .replace('\n', "\r\n")
        .into_bytes()
}

fn recorded() -> Vec<u8> {
    crate::support::fixture_body(RECORDED)
}

// A generated stream: events in Dify's shapes with raw UTF-8 answers, pings and comments, any
// of the three SSE line ends, and a terminal event or none.

#[derive(Debug, Clone)]
enum Piece {
    Message(String),
    Ping,
    Comment,
    /// One event whose JSON is split over two `data:` lines.
    TwoDataLines(String),
}

#[derive(Debug, Clone, Copy)]
enum Finish {
    MessageEnd,
    WorkflowFinished,
    Error,
    None,
}

#[derive(Debug, Clone)]
struct Generated {
    task_id: String,
    eol: &'static str,
    pieces: Vec<Piece>,
    end: Finish,
}

impl Generated {
    fn render(&self) -> Vec<u8> {
        let eol = self.eol;
        let mut out = String::new();
        let meta = |event: &str| {
            json!({
                "event": event,
                "conversation_id": "aa0483db-e114-40ab-b70f-c2128bd443fa",
                "message_id": "f3e2cd8a-f1d4-4370-b648-12d5e59a88e3",
                "task_id": self.task_id,
            })
        };
        for piece in &self.pieces {
            match piece {
                Piece::Message(answer) => {
                    let mut event = meta("message");
                    event["answer"] = json!(answer);
                    out.push_str(&format!("data: {event}{eol}{eol}"));
                }
                Piece::Ping => out.push_str(&format!("event: ping{eol}{eol}")),
                Piece::Comment => out.push_str(&format!(": keep-alive{eol}{eol}")),
                Piece::TwoDataLines(answer) => {
                    let mut event = meta("agent_message");
                    event["answer"] = json!(answer);
                    let text = event.to_string();
                    let (head, tail) = text.split_at(text.find(',').unwrap_or(1));
                    out.push_str(&format!("data: {head}{eol}data: {tail}{eol}{eol}"));
                }
            }
        }
        let last = match self.end {
            Finish::MessageEnd => {
                let mut event = meta("message_end");
                event["metadata"] = json!({"usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "total_price": "0.0001", "currency": "USD"}});
                Some(event)
            }
            Finish::WorkflowFinished => Some(meta("workflow_finished")),
            Finish::Error => Some(
                json!({"event": "error", "task_id": self.task_id, "status": 400, "code": "completion_request_error", "message": "模型出错 🚫"}),
            ),
            Finish::None => None,
        };
        if let Some(event) = last {
            out.push_str(&format!("data: {event}{eol}{eol}"));
        }
        out.into_bytes()
    }
}

fn answer() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zé中文🚀 \"\\\\\n\r-]{0,16}").expect("a regex")
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => answer().prop_map(Piece::Message),
        1 => Just(Piece::Ping),
        1 => Just(Piece::Comment),
        1 => answer().prop_map(Piece::TwoDataLines),
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        "[a-f0-9-]{1,36}",
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        proptest::collection::vec(piece(), 0..12),
        prop_oneof![
            Just(Finish::MessageEnd),
            Just(Finish::WorkflowFinished),
            Just(Finish::Error),
            Just(Finish::None),
        ],
    )
        .prop_map(|(task_id, eol, pieces, end)| Generated {
            task_id,
            eol,
            pieces,
            end,
        })
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), 0..60)
}

/// The bytes the relay appends after a stream cut short.
fn appended(relayed: &[u8], input: &[u8]) -> Vec<u8> {
    assert!(
        relayed.starts_with(input),
        "the relayed bytes begin with the input"
    );
    relayed[input.len()..].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_recorded_stream_cut_anywhere_is_relayed_chunk_for_chunk(
        cuts in cuts(),
        use_crlf in any::<bool>(),
    ) {
        let input = if use_crlf { crlf(&recorded()) } else { recorded() };
        let chunks = cut(&input, &cuts);
        let relayed = relay(&chunks);
        prop_assert_eq!(&relayed, &chunks, "the same chunks, in order, none added");
        prop_assert_eq!(relayed.concat(), input);
    }

    #[test]
    fn a_recorded_stream_cut_anywhere_teaches_the_watcher_the_same(
        cuts in cuts(),
        use_crlf in any::<bool>(),
    ) {
        let input = if use_crlf { crlf(&recorded()) } else { recorded() };
        let whole = watch([input.as_slice()]);
        prop_assert_eq!(whole.terminal, Some(Terminal::MessageEnd));
        prop_assert_eq!(whole.task_id.as_deref(), Some("f02dec3c-358c-4b01-9451-860821071dba"));
        let chunks = cut(&input, &cuts);
        prop_assert_eq!(watch(chunks.iter().map(|c| c.as_ref())), whole);
    }

    #[test]
    fn a_generated_stream_cut_anywhere_teaches_the_watcher_the_same(
        stream in generated(),
        cuts in cuts(),
    ) {
        let input = stream.render();
        let whole = watch([input.as_slice()]);
        prop_assert_eq!(whole.task_id.as_deref(), match stream.end {
            Finish::None if stream.pieces.iter().all(|p| matches!(p, Piece::Ping | Piece::Comment)) => None,
            _ => Some(stream.task_id.as_str()),
        });
        let chunks = cut(&input, &cuts);
        prop_assert_eq!(watch(chunks.iter().map(|c| c.as_ref())), whole);
    }

    #[test]
    fn a_generated_stream_cut_anywhere_is_relayed_unchanged(
        stream in generated(),
        cuts in cuts(),
    ) {
        let input = stream.render();
        let chunks = cut(&input, &cuts);
        let relayed = relay(&chunks);
        prop_assert_eq!(&relayed[..chunks.len()], &chunks[..], "every chunk as it came");
        let tail = appended(&relayed.concat(), &input);
        match stream.end {
            Finish::None => {
                prop_assert_eq!(relayed.len(), chunks.len() + 1, "one appended piece");
                prop_assert!(String::from_utf8_lossy(&tail).contains("upstream_disconnected"));
            }
            _ => prop_assert!(tail.is_empty(), "a complete stream gets nothing appended"),
        }
    }

    #[test]
    fn a_stream_broken_anywhere_ends_with_one_error_event_that_parses(
        stream in generated(),
        at in any::<usize>(),
        cuts in cuts(),
    ) {
        let full = stream.render();
        let input = &full[..at % (full.len() + 1)];
        let relayed = relay(&cut(input, &cuts)).concat();
        let tail = appended(&relayed, input);
        let before = watch([input]);
        let after = watch([relayed.as_slice()]);
        if before.terminal.is_some() {
            prop_assert!(tail.is_empty());
        } else {
            // A break right after a complete terminal line (before its blank line) lets that
            // event complete first; either way the stream now ends with a terminal event.
            prop_assert!(
                after.terminal.is_some(),
                "the appended event is seen: {:?}",
                String::from_utf8_lossy(&relayed)
            );
            prop_assert!(after.events > before.events);
            let text = String::from_utf8_lossy(&tail);
            prop_assert_eq!(text.matches("upstream_disconnected").count(), 1);
            let event = text.trim_start_matches(['\r', '\n']);
            let data = event.strip_prefix("data: ").and_then(|d| d.strip_suffix("\n\n"));
            let parsed = data.and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok());
            prop_assert!(
                parsed.is_some_and(|e| e["event"] == "error"),
                "the appended event parses on its own: {:?}",
                text
            );
        }
    }
}

#[test]
fn a_recorded_stream_one_byte_at_a_time_is_relayed_unchanged() {
    for input in [recorded(), crlf(&recorded())] {
        let chunks: Vec<Bytes> = input
            .iter()
            .map(|b| Bytes::copy_from_slice(&[*b]))
            .collect();
        let relayed = relay(&chunks);
        assert_eq!(relayed, chunks);
        assert_eq!(
            watch(chunks.iter().map(|c| c.as_ref())),
            watch([input.as_slice()])
        );
    }
}

#[test]
fn a_cut_between_cr_and_lf_gets_an_error_event_of_its_own() {
    let event = b"data: {\"event\": \"message\", \"task_id\": \"t1\", \"answer\": \"Hi\"}\r";
    let relayed = relay(&[Bytes::from_static(event)]).concat();
    let seen = watch([relayed.as_slice()]);
    assert_eq!(seen.terminal, Some(Terminal::Error));
    assert_eq!(seen.task_id.as_deref(), Some("t1"));
    assert_eq!(
        seen.events, 2,
        "the message and the error are separate events"
    );
}
