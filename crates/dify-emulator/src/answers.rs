//! What the emulated model says: the capture app's fake LLM (plain answers, `SLOW`, `FAIL500`,
//! `MIDFAIL`), the demo texts, titles and suggested questions.

use std::time::Duration;

/// Error text after an upstream HTTP 500 (captures 55, 56).
pub(crate) const FAIL500_MESSAGE: &str = "[openai_api_compatible] Error: API request failed with status code 500: {\"error\": {\"message\": \"fake upstream exploded\", \"type\": \"server_error\"}}";
/// Error text after an error object in the middle of the upstream stream (capture 57).
pub(crate) const MIDFAIL_MESSAGE: &str = "[openai_api_compatible] Error: {'message': 'fake mid-stream failure', 'type': 'server_error', 'code': 500}";

pub(crate) const NEW_CONVERSATION: &str = "New conversation";

pub(crate) const DEMO_NAME: &str = "dify-bff demo";
pub(crate) const DEMO_DESCRIPTION: &str =
    "The built-in Dify emulator of dify-bff: friendly canned answers, no real model.";
pub(crate) const DEMO_OPENING: &str = "Welcome to the dify-bff demo! No real model is connected: a built-in Dify emulator answers with friendly canned replies, so you can try the page without a Dify key.";
pub(crate) const DEMO_QUESTIONS: [&str; 3] = [
    "What is dify-bff?",
    "How do I connect my own Dify app?",
    "What can I try in this demo?",
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
            "How does streaming work here?",
            "Can I stop an answer midway?",
            "Where do my conversations live?",
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
