//! What the emulated model says: the capture app's fake LLM (plain answers, `SLOW`, `FAIL500`,
//! `MIDFAIL`), the demo texts, titles and suggested questions.

use std::time::Duration;

use serde_json::{Value, json};

/// Error text after an upstream HTTP 500 (captures 55, 56).
pub(crate) const FAIL500_MESSAGE: &str = "[openai_api_compatible] Error: API request failed with status code 500: {\"error\": {\"message\": \"fake upstream exploded\", \"type\": \"server_error\"}}";
/// Error text after an error object in the middle of the upstream stream (capture 57).
pub(crate) const MIDFAIL_MESSAGE: &str = "[openai_api_compatible] Error: {'message': 'fake mid-stream failure', 'type': 'server_error', 'code': 500}";

pub(crate) const NEW_CONVERSATION: &str = "New conversation";

pub(crate) const DEMO_NAME: &str = "dify-bff demo";
pub(crate) const DEMO_DESCRIPTION: &str =
    "The built-in Dify emulator of dify-bff: friendly canned answers, no real model.";
pub(crate) const DEMO_OPENING: &str = "Welcome to the dify-bff demo! No real model is connected: a built-in Dify emulator answers, so you can try the page without a Dify key. Put one of these words in a message to see a feature: MARKDOWN (code and a table), SOURCES (an answer citing its sources), LONG (a long answer you can Stop), SLOW (one word a second), MIDFAIL (fails mid-answer), FAIL500 (the model fails). Attach an image with the paper clip; follow-up questions appear after each answer.";
pub(crate) const DEMO_QUESTIONS: [&str; 4] = [
    "What can I try in this demo?",
    "Show me MARKDOWN with code and a table",
    "Answer with SOURCES",
    "Write a LONG answer so I can press Stop",
];

/// The demo's words that pick an answer, and what each shows (README: "The demo").
pub const DEMO_KEYWORDS: [(&str, &str); 6] = [
    (
        "MARKDOWN",
        "a Markdown answer with a heading, a list, code and a table",
    ),
    (
        "SOURCES",
        "an answer citing two knowledge sources (`retriever_resources`)",
    ),
    (
        "LONG",
        "a long answer streamed over about ten seconds: try Stop",
    ),
    ("SLOW", "thirty words, one a second"),
    (
        "MIDFAIL",
        "a few words, then the model fails mid-answer (an `error` event)",
    ),
    ("FAIL500", "the model fails before answering"),
];

const PIECE_CHARS: usize = 6;
const SLOW_PIECES: usize = 30;

/// How one answer unfolds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub pieces: Vec<String>,
    pub interval: Duration,
    /// After the pieces, the stream fails with this text instead of ending normally.
    pub error: Option<&'static str>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `retriever_resources` the answer cites (in `message_end` metadata and the message).
    pub sources: Vec<Value>,
}

pub(crate) struct Timing {
    pub token_interval: Duration,
    pub slow_interval: Duration,
}

/// The answer to `query`, the `number`-th answer the emulator gives.
pub(crate) fn plan(query: &str, number: u64, demo: bool, timing: &Timing) -> Plan {
    let plain = |text: String, completion_tokens| Plan {
        pieces: pieces(&text),
        interval: timing.token_interval,
        error: None,
        prompt_tokens: 11,
        completion_tokens,
        sources: Vec::new(),
    };
    if query.contains("FAIL500") {
        Plan {
            pieces: Vec::new(),
            error: Some(FAIL500_MESSAGE),
            ..plain(String::new(), 0)
        }
    } else if query.contains("MIDFAIL") {
        Plan {
            pieces: vec!["partial ".to_owned(), "text ".to_owned()],
            error: Some(MIDFAIL_MESSAGE),
            ..plain(String::new(), 0)
        }
    } else if query.contains("SLOW") {
        Plan {
            pieces: (0..SLOW_PIECES).map(|i| format!("slow{i} ")).collect(),
            interval: timing.slow_interval,
            ..plain(String::new(), 7)
        }
    } else if demo && query.contains("MARKDOWN") {
        plain(DEMO_MARKDOWN.to_owned(), estimate_tokens(DEMO_MARKDOWN))
    } else if demo && query.contains("SOURCES") {
        Plan {
            sources: demo_sources(),
            ..plain(DEMO_SOURCED.to_owned(), estimate_tokens(DEMO_SOURCED))
        }
    } else if demo && query.contains("LONG") {
        let text = demo_long();
        Plan {
            pieces: text
                .split_inclusive(' ')
                .collect::<Vec<_>>()
                .chunks(3)
                .map(|words| words.concat())
                .collect(),
            interval: timing.slow_interval / 5,
            ..plain(String::new(), estimate_tokens(&text))
        }
    } else if demo {
        let text = demo_answer(query);
        let tokens = estimate_tokens(&text);
        plain(text, tokens)
    } else {
        plain(format!("Hello! Dify 是一个平台 🚀 — answer #{number}."), 7)
    }
}

/// Cuts text into pieces of six characters, as the capture app's model streamed it.
pub(crate) fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(PIECE_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// Dify's own token estimate for a partial answer (used after a stop).
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64 * 5).div_ceil(12)
}

const DEMO_MARKDOWN: &str = "## Markdown in the demo\n\n\
The page renders answers as **safe Markdown**: *emphasis*, `inline code`, lists, links such as \
[Dify](https://dify.ai), code blocks with a copy button, and tables.\n\n\
```sh\n\
DIFY_API_KEY=app-your-key \\\n  DIFY_BASE_URL=https://api.dify.ai/v1 \\\n  dify-bff\n\
```\n\n\
| route | what it does |\n\
|:---|:---|\n\
| `POST /chat` | streams the answer |\n\
| `GET /conversations` | your history |\n\
| `POST /files/upload` | attaches a file |\n\n\
1. Ask a question\n\
2. Watch it stream\n\
3. Rate the answer\n";

const DEMO_SOURCED: &str = "dify-bff keeps the Dify key on the server and gives each browser an identity of its own, \
in a signed cookie or from your auth proxy [1]. Answers stream through byte for byte, and a browser \
that leaves stops the answer at Dify [2]. The sources below are what a knowledge base would cite.";

/// Two knowledge-base citations, as 0.15.3 puts them in `retriever_resources` (a dict with the
/// keys it set).
fn demo_sources() -> Vec<Value> {
    let source = |position: u32, document: &str, segment: &str, score: f64, content: &str| {
        json!({
            "position": position,
            "dataset_id": "9c1d6d5e-3f8a-4f43-9d1c-2b6f3f0d7a11",
            "dataset_name": "dify-bff docs",
            "document_id": format!("{document:0>8}-0000-4000-8000-000000000000"),
            "document_name": document,
            "data_source_type": "upload_file",
            "segment_id": segment,
            "retriever_from": "api",
            "score": score,
            "hit_count": 1,
            "word_count": content.split_whitespace().count(),
            "segment_position": position,
            "index_node_hash": format!("{:064x}", u64::from(position) * 0x9e37_79b9),
            "content": content,
        })
    };
    vec![
        source(
            1,
            "README.md",
            "4b1c9f8e-7f5e-4a52-9d33-0a6b2b7c1e01",
            0.91,
            "A Dify app key must never reach a browser. dify-bff holds the key and gives each browser its own identity.",
        ),
        source(
            2,
            "deploy.md",
            "4b1c9f8e-7f5e-4a52-9d33-0a6b2b7c1e02",
            0.83,
            "If the browser leaves mid-stream, the upstream request is dropped and Dify's stop is called for the task.",
        ),
    ]
}

fn demo_long() -> String {
    let topics = [
        "Streaming: every piece of this answer is relayed to your browser the moment the emulator writes it, byte for byte.",
        "Stop: press the Stop button now and dify-bff asks Dify to stop the task; the words so far are kept.",
        "History: each conversation is stored in Dify under your own identity, and nobody else can list it.",
        "Renaming: conversations get a generated title, and you can rename or delete them in the sidebar.",
        "Feedback: thumbs up or down on an answer is sent to Dify as message feedback.",
        "Uploads: attach an image with the paper clip; it streams to Dify and is attached to your next message.",
        "Follow-ups: after an answer, Dify's suggested questions appear as buttons below it.",
        "Errors: words like FAIL500 or MIDFAIL show how the page explains a failed answer.",
    ];
    let mut text = String::from("Here is a long answer, so you have time to try Stop.\n\n");
    for (i, topic) in topics.iter().enumerate() {
        text.push_str(&format!("{}. {topic}\n\n", i + 1));
    }
    text.push_str("That is everything the page can do.");
    text
}

fn demo_answer(query: &str) -> String {
    let asked: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let asked = match asked.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &asked[..cut]),
        None => asked,
    };
    format!(
        "Hi! I'm the built-in demo of dify-bff. No real model is connected, so this reply is canned. \
         You asked: \u{201c}{asked}\u{201d}. Everything around it is real: streaming, stop, conversations, \
         renaming, feedback and file upload go through dify-bff just as they would to Dify. \
         To see more, put one of these words in a message: MARKDOWN, SOURCES, LONG, SLOW, MIDFAIL or FAIL500. \
         Set DIFY_API_KEY to chat with your own Dify app."
    )
}

/// The conversation title Dify's background task would generate: the query's first words.
pub(crate) fn title(query: &str) -> String {
    let words: Vec<&str> = query.split_whitespace().take(6).collect();
    let joined = words.join(" ");
    let title: String = joined.chars().take(40).collect();
    if title.is_empty() {
        NEW_CONVERSATION.to_owned()
    } else {
        title
    }
}

/// Questions offered after an answer when the feature is on.
pub(crate) fn suggested_after_answer(demo: bool) -> Vec<String> {
    let questions: [&str; 3] = if demo {
        [
            "Show me MARKDOWN with code and a table",
            "Answer with SOURCES",
            "Now MIDFAIL: fail halfway through",
        ]
    } else {
        [
            "Can you tell me more?",
            "Could you give an example?",
            "What should I ask next?",
        ]
    };
    questions.iter().map(|q| (*q).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            token_interval: Duration::from_millis(20),
            slow_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn default_answer_is_cut_like_capture_02() {
        let plan = plan("What is Dify?", 4, false, &timing());
        assert_eq!(
            plan.pieces,
            ["Hello!", " Dify ", "是一个平台 ", "🚀 — an", "swer #", "4."]
        );
        assert_eq!(plan.error, None);
        assert_eq!((plan.prompt_tokens, plan.completion_tokens), (11, 7));
    }

    #[test]
    fn keywords_select_the_fake_models_behaviours() {
        let slow = plan("SLOW please", 1, false, &timing());
        assert_eq!(slow.pieces.len(), 30);
        assert_eq!(slow.pieces[13], "slow13 ");
        assert_eq!(slow.interval, Duration::from_secs(1));
        let fail = plan("FAIL500 now", 1, false, &timing());
        assert!(fail.pieces.is_empty());
        assert_eq!(fail.error, Some(FAIL500_MESSAGE));
        let mid = plan("MIDFAIL now", 1, true, &timing());
        assert_eq!(mid.pieces, ["partial ", "text "]);
        assert_eq!(mid.error, Some(MIDFAIL_MESSAGE));
    }

    #[test]
    fn demo_answers_explain_the_demo() {
        let plan = plan("hello   there", 1, true, &timing());
        let text: String = plan.pieces.concat();
        assert!(text.contains("demo of dify-bff"));
        assert!(text.contains("\u{201c}hello there\u{201d}"));
    }

    #[test]
    fn stop_estimate_matches_capture_51a() {
        let partial: String = (0..14).map(|i| format!("slow{i} ")).collect();
        assert_eq!(estimate_tokens(&partial), 37);
    }

    #[test]
    fn titles_are_the_first_words() {
        assert_eq!(
            title("  What is   Dify? 请简短回答 and more words here"),
            "What is Dify? 请简短回答 and more"
        );
        assert_eq!(title("   "), NEW_CONVERSATION);
    }
}
