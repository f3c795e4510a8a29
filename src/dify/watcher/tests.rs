use super::*;
use proptest::prelude::*;

const STREAM: &str = concat!(
    "data: {\"event\": \"message\", \"conversation_id\": \"c1\", \"message_id\": \"m1\", \"created_at\": 1, \"task_id\": \"t1\", \"id\": \"m1\", \"answer\": \"Dify \\u662f \u{1F680} \u{662F}\", \"from_variable_selector\": null}\n\n",
    "event: ping\n\n",
    "data: {\"event\": \"message_end\", \"conversation_id\": \"c1\", \"message_id\": \"m1\", \"created_at\": 1, \"task_id\": \"t1\", \"id\": \"m1\", \"metadata\": {\"usage\": {\"prompt_tokens\": 11, \"completion_tokens\": 7, \"total_tokens\": 18, \"total_price\": \"0E-7\", \"currency\": \"USD\"}}, \"files\": null}\n\n",
);

fn watch(parts: &[&[u8]]) -> SseWatcher {
    let mut w = SseWatcher::new();
    for p in parts {
        w.feed(p);
    }
    w
}

#[test]
fn learns_task_id_terminal_and_usage() {
    let w = watch(&[STREAM.as_bytes()]);
    assert_eq!(w.task_id(), Some("t1"));
    assert_eq!(w.conversation_id(), Some("c1"));
    assert_eq!(w.terminal(), Some(Terminal::MessageEnd));
    assert_eq!(w.usage().map(|u| u.total_tokens), Some(18));
    assert_eq!(w.events(), 3);
}

#[test]
fn data_split_over_lines_or_chunks_is_joined_and_long_ids_are_kept_whole() {
    let long = "t".repeat(100);
    let event = format!(
        "data: {{\"event\": \"message_end\",\ndata: \"task_id\": \"{long}\", \"metadata\": {{\"usage\": {{\"total_tokens\": 3, \"total_price\": \"0.0001\", \"currency\": \"USD\"}}}}}}\n\n"
    );
    for cut in [0, 10, 40, event.len() - 1] {
        let (a, b) = event.as_bytes().split_at(cut);
        let w = watch(&[a, b]);
        assert_eq!(w.task_id(), Some(long.as_str()), "cut at {cut}");
        assert_eq!(w.terminal(), Some(Terminal::MessageEnd));
        let usage = w.usage().cloned().unwrap_or_default();
        assert_eq!(usage.total_tokens, 3);
        assert_eq!(usage.total_price.as_deref(), Some("0.0001"));
        assert_eq!(usage.currency.as_deref(), Some("USD"));
    }
}

#[test]
fn tokens_come_from_message_end_or_else_from_workflow_finished() {
    let mut w = SseWatcher::new();
    w.feed(b"data: {\"event\": \"workflow_finished\", \"task_id\": \"t\", \"data\": {\"status\": \"succeeded\", \"total_tokens\": 42}}\n\n");
    assert_eq!(w.total_tokens(), Some(42));
    w.feed(STREAM.as_bytes());
    assert_eq!(
        w.total_tokens(),
        Some(18),
        "message_end's figure wins, counted once"
    );
}

#[test]
fn error_event_is_terminal() {
    let w = watch(&[b"data: {\"event\": \"error\", \"code\": \"x\", \"status\": 400}\n\n"]);
    assert_eq!(w.terminal(), Some(Terminal::Error));
    assert_eq!(w.task_id(), None);
}

#[test]
fn an_event_without_its_blank_line_is_not_dispatched() {
    let w = watch(&[b"data: {\"event\": \"message_end\", \"task_id\": \"t\"}\n"]);
    assert_eq!(w.terminal(), None);
    assert_eq!(w.separator_needed(), b"\n");
}

#[test]
fn a_partial_line_needs_two_newlines() {
    let w = watch(&[b"data: {\"event\": \"mess"]);
    assert_eq!(w.separator_needed(), b"\n\n");
    let w = watch(&[b"data: {}\n\n"]);
    assert_eq!(w.separator_needed(), b"");
}

#[test]
fn a_cut_between_cr_and_lf_needs_its_own_blank_line() {
    let line = b"data: {\"event\": \"message\", \"task_id\": \"t\"}\r";
    let w = watch(&[line]);
    assert_eq!(w.separator_needed(), b"\n\n");
    let mut whole = line.to_vec();
    whole.extend_from_slice(w.separator_needed());
    whole.extend_from_slice(b"data: {\"event\": \"error\"}\n\n");
    let w = watch(&[&whole]);
    assert_eq!(w.task_id(), Some("t"));
    assert_eq!(w.terminal(), Some(Terminal::Error));
    assert_eq!(w.events(), 2);
    // A bare `\r` that was itself the blank line needs nothing.
    assert_eq!(watch(&[b"data: {}\r\r"]).separator_needed(), b"");
}

#[test]
fn crlf_and_cr_line_ends_are_understood() {
    let crlf = STREAM.replace('\n', "\r\n");
    let cr = STREAM.replace('\n', "\r");
    for s in [crlf, cr] {
        let w = watch(&[s.as_bytes()]);
        assert_eq!(w.task_id(), Some("t1"));
        assert_eq!(w.terminal(), Some(Terminal::MessageEnd));
    }
}

#[test]
fn cr_and_lf_split_across_chunks_count_once() {
    let s = "data: {\"task_id\": \"t\"}\r";
    let w = watch(&[
        s.as_bytes(),
        b"\n",
        b"\r\n",
        b"data: {\"event\": \"error\"}\r\n\r\n",
    ]);
    assert_eq!(w.task_id(), Some("t"));
    assert_eq!(w.terminal(), Some(Terminal::Error));
    assert_eq!(w.events(), 2);
}

#[test]
fn multi_line_data_is_joined_with_newlines() {
    let w = watch(&[b"data: {\"event\":\ndata: \"message_end\", \"task_id\": \"t\"}\n\n"]);
    assert_eq!(w.terminal(), Some(Terminal::MessageEnd));
}

fn cut(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut parts = Vec::new();
    let mut start = 0;
    for p in points {
        parts.push(input[start..p].to_vec());
        start = p;
    }
    parts.push(input[start..].to_vec());
    parts
}

#[test]
fn an_event_of_endless_data_lines_is_not_held_and_later_events_are_still_seen() {
    let mut w = SseWatcher::new();
    let line = format!("data: {}\n", "x".repeat(8 * 1024));
    for _ in 0..1024 {
        w.feed(line.as_bytes());
        assert!(w.data.capacity() <= MAX_EVENT_DATA, "{}", w.data.capacity());
    }
    w.feed(b"\n");
    w.feed(STREAM.as_bytes());
    assert_eq!(w.terminal(), Some(Terminal::MessageEnd));
    assert_eq!(w.task_id(), Some("t1"));
}

proptest! {
    #[test]
    fn any_cutting_sees_the_same_events(cuts in proptest::collection::vec(0usize..2000, 0..40), crlf in any::<bool>()) {
        let text = if crlf { STREAM.replace('\n', "\r\n") } else { STREAM.to_owned() };
        let whole = watch(&[text.as_bytes()]);
        let parts = cut(text.as_bytes(), &cuts);
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let pieces = watch(&refs);
        prop_assert_eq!(pieces.task_id(), whole.task_id());
        prop_assert_eq!(pieces.terminal(), whole.terminal());
        prop_assert_eq!(pieces.events(), whole.events());
        prop_assert_eq!(pieces.usage(), whole.usage());
    }
}

#[test]
fn ids_written_with_escapes_are_still_learned() {
    let w = watch(&[
        b"data: {\"event\": \"message\", \"conversation_id\": \"c\\u0031\", \"task_id\": \"t\\/1\", \"answer\": \"\"}\n\n",
    ]);
    assert_eq!(w.task_id(), Some("t/1"));
    assert_eq!(w.conversation_id(), Some("c1"));
}

#[test]
fn a_message_end_whose_usage_cannot_be_read_still_ends_the_stream() {
    for metadata in ["{\"usage\": {\"total_tokens\": \"18\"}}", "\"none\"", "[1]"] {
        let event = format!(
            "data: {{\"event\": \"message_end\", \"task_id\": \"t\", \"metadata\": {metadata}}}\n\n"
        );
        let w = watch(&[event.as_bytes()]);
        assert_eq!(w.terminal(), Some(Terminal::MessageEnd), "{metadata}");
        assert_eq!(w.task_id(), Some("t"));
        assert_eq!(w.usage(), None);
    }
}

#[test]
fn only_dify_shaped_answer_chunks_skip_the_scan() {
    for answer in [
        &b"{\"event\": \"message\", \"answer\": \"x\"}"[..],
        b"{\"event\": \"agent_message\", \"answer\": \"x\"}",
    ] {
        assert!(is_answer(answer), "{}", String::from_utf8_lossy(answer));
    }
    for other in [
        &b"{\"event\": \"message_end\", \"metadata\": {}}"[..],
        b"{\"event\": \"agent_thought\", \"id\": \"x\"}",
        b"{\"event\": \"agent_\"}",
        b"{\"event\":\"message\",\"answer\":\"x\"}",
        b"{\"event\": \"message\"}",
        b"{\"event\": \"",
        b"",
    ] {
        assert!(!is_answer(other), "{}", String::from_utf8_lossy(other));
    }
}

#[test]
fn a_chunk_shaped_like_a_whole_event_still_continues_a_partial_line() {
    let w = watch(&[
        b"data: {\"event\": \"message\", \"answer\": \"x\"",
        b"data: {\"event\": \"error\"}\n\n",
    ]);
    assert_eq!(w.terminal(), None);
    assert_eq!(w.events(), 1);
    let w = watch(&[b"data: {\"event\": \"error\"}\n\n"]);
    assert_eq!(w.terminal(), Some(Terminal::Error));
    assert_eq!(w.events(), 1);
}
