//! One pass over an event's top-level members, taking the few the watcher reads and skipping
//! the rest by their brackets and quotes, without building anything.
//!
//! Dify's events are JSON written by a JSON encoder. Whatever the scan does not take as
//! plainly as serde_json would (an escape in a wanted value or in a key, a wanted member given
//! twice, a value of another type, nesting deeper than serde_json's limit, anything that is not
//! one object) makes it answer `None`, and the caller asks serde_json instead. It does not
//! check the grammar of the values it skips (numbers, literals, control characters inside
//! strings): an encoder never writes those wrong.

use super::{SmallStr, Usage};

/// The members the watcher reads, as they appear in the event.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Members<'a> {
    pub event: Option<&'a str>,
    pub task_id: Option<&'a str>,
    pub conversation_id: Option<&'a str>,
    /// The raw JSON value of `metadata` (usage, in `message_end`).
    pub metadata: Option<&'a [u8]>,
    /// What [`usage`] reads from `metadata`, when the scan read it on its way through
    /// (`None`: not read, `usage` or serde_json must read the raw value).
    pub usage: Option<Option<Usage>>,
    /// The raw JSON value of `data` (total tokens, in `workflow_finished`).
    pub data: Option<&'a [u8]>,
}

/// serde_json's recursion limit: deeper events are left to it (it refuses them).
const MAX_DEPTH: usize = 128;

pub(super) fn members(json: &[u8]) -> Option<Members<'_>> {
    let mut scan = Scan { json, at: 0 };
    let mut found = Members::default();
    let mut seen = [false; 5];
    scan.skip_space();
    scan.expect(b'{')?;
    scan.skip_space();
    if scan.peek() == Some(b'}') {
        scan.at += 1;
    } else {
        loop {
            scan.skip_space();
            scan.expect(b'"')?;
            let key = scan.plain_string()?;
            scan.skip_space();
            scan.expect(b':')?;
            scan.skip_space();
            let wanted = match key {
                b"event" => Some(0),
                b"task_id" => Some(1),
                b"conversation_id" => Some(2),
                b"metadata" => Some(3),
                b"data" => Some(4),
                _ => None,
            };
            match wanted {
                Some(i) if std::mem::replace(&mut seen[i], true) => return None,
                Some(i @ 0..=2) => {
                    let text = scan.optional_text()?;
                    match i {
                        0 => found.event = text,
                        1 => found.task_id = text,
                        _ => found.conversation_id = text,
                    }
                }
                Some(i) => {
                    let start = scan.at;
                    let usage = if i == 3 { scan.metadata_usage() } else { None };
                    if usage.is_none() {
                        scan.at = start;
                        scan.skip_value()?;
                    }
                    let raw = &json[start..scan.at];
                    // `null` is an absent member to serde, whatever its type.
                    let raw = (raw != b"null").then_some(raw);
                    if i == 3 {
                        found.metadata = raw;
                        found.usage = usage;
                    } else {
                        found.data = raw;
                    }
                }
                None => scan.skip_value()?,
            }
            scan.skip_space();
            match scan.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    scan.skip_space();
    (scan.at == json.len()).then_some(found)
}

/// `message_end`'s usage from its `metadata`, as serde_json reads it into [`PeekMetadata`]:
/// `Some(None)` without a `usage` (or with a `null` one). `None` leaves it to serde_json: an
/// escape, a member given twice, a count that is not a plain integer, anything not an object.
///
/// [`PeekMetadata`]: super::PeekMetadata
pub(super) fn usage(metadata: &[u8]) -> Option<Option<Usage>> {
    let mut scan = Scan {
        json: metadata,
        at: 0,
    };
    let usage = scan.usage_member(0, 0)?;
    scan.skip_space();
    (scan.at == metadata.len()).then_some(usage)
}

struct Scan<'a> {
    json: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The rest of a string whose opening quote is read, when it holds no escape.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let rest = &self.json[self.at..];
        let end = quote_or_backslash(rest)?;
        if rest[end] == b'\\' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// A wanted member's value: a string as serde_json would borrow it, or `null`.
    fn optional_text(&mut self) -> Option<Option<&'a str>> {
        match self.next()? {
            b'"' => {
                let rest = &self.json[self.at..];
                let end = plain_text_end(rest)?;
                self.at += end + 1;
                std::str::from_utf8(&rest[..end]).ok().map(Some)
            }
            b'n' => {
                let rest = self.json.get(self.at..self.at + 3)?;
                self.at += 3;
                (rest == b"ull").then_some(None)
            }
            _ => None,
        }
    }

    /// An event's `metadata` value as [`usage`] reads it, the scan left after it; `None` (the
    /// scan's place undefined) where `usage` would answer `None` or the value is not an object.
    /// Values it skips nest as deep as [`Scan::skip_value`] allows them from the event.
    fn metadata_usage(&mut self) -> Option<Option<Usage>> {
        self.usage_member(1, 2)
    }

    /// An object holding `usage` at most once (`Some(None)` without it or with a `null` one);
    /// its other members are skipped as values `depth` deep, `usage`'s as `usage_depth` deep.
    fn usage_member(&mut self, depth: usize, usage_depth: usize) -> Option<Option<Usage>> {
        let mut usage = None;
        let mut seen = false;
        self.object(|scan, key| {
            if key != b"usage" {
                return scan.skip_nested(depth);
            }
            if std::mem::replace(&mut seen, true) {
                return None;
            }
            if scan.peek() == Some(b'n') {
                return scan.null();
            }
            usage = Some(scan.usage(usage_depth)?);
            Some(())
        })?;
        Some(usage)
    }

    /// An object's members, each value read by `member` (given the key, without escapes).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.skip_space();
        self.expect(b'{')?;
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.skip_space();
            self.expect(b'"')?;
            let key = self.plain_string()?;
            self.skip_space();
            self.expect(b':')?;
            self.skip_space();
            member(self, key)?;
            self.skip_space();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn null(&mut self) -> Option<()> {
        let rest = self.json.get(self.at..self.at + 4)?;
        self.at += 4;
        (rest == b"null").then_some(())
    }

    /// `usage`'s object: its counts plain integers, its texts plain strings or `null`; other
    /// members skipped as values `depth` deep.
    fn usage(&mut self, depth: usize) -> Option<Usage> {
        let mut usage = Usage::default();
        let mut seen = [false; 5];
        self.object(|scan, key| {
            let i = match key {
                b"prompt_tokens" => 0,
                b"completion_tokens" => 1,
                b"total_tokens" => 2,
                b"total_price" => 3,
                b"currency" => 4,
                _ => return scan.skip_nested(depth),
            };
            if std::mem::replace(&mut seen[i], true) {
                return None;
            }
            match i {
                0 => usage.prompt_tokens = scan.count()?,
                1 => usage.completion_tokens = scan.count()?,
                2 => usage.total_tokens = scan.count()?,
                _ => {
                    let text = scan.optional_text()?.map(SmallStr::new);
                    if i == 3 {
                        usage.total_price = text;
                    } else {
                        usage.currency = text;
                    }
                }
            }
            Some(())
        })?;
        Some(usage)
    }

    /// A number serde_json reads as a `u64`: digits without a leading zero, no fraction or
    /// exponent, not past `u64::MAX`.
    fn count(&mut self) -> Option<u64> {
        let digits = self.json[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.json[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        if matches!(self.json.get(self.at + digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.at += digits;
        text.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    }

    /// The rest of a string whose opening quote is read, escapes and all.
    fn skip_string(&mut self) -> Option<()> {
        loop {
            let rest = &self.json[self.at..];
            let i = quote_or_backslash(rest)?;
            if rest[i] == b'"' {
                self.at += i + 1;
                return Some(());
            }
            self.at += i + 2;
            if self.at > self.json.len() {
                return None;
            }
        }
    }

    /// One value: a string, a number or literal, or an object or array whatever it nests.
    fn skip_value(&mut self) -> Option<()> {
        self.skip_nested(0)
    }

    /// [`Scan::skip_value`] for a value that is itself inside `outer` objects or arrays of the
    /// value being skipped: together they nest no deeper than it allows.
    fn skip_nested(&mut self, outer: usize) -> Option<()> {
        let mut depth = outer;
        loop {
            match self.next()? {
                b'"' => self.skip_string()?,
                b'{' | b'[' => {
                    depth += 1;
                    if depth >= MAX_DEPTH {
                        return None;
                    }
                    continue;
                }
                b'}' | b']' if depth > outer => depth -= 1,
                b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' if depth > outer => continue,
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    while matches!(self.peek(), Some(b) if !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    {
                        self.at += 1;
                    }
                }
                _ => return None,
            }
            if depth == outer {
                return Some(());
            }
        }
    }
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The bytes of `word` (little-endian) less than `n` (at most 0x80) have their high bit set;
/// above the first such byte others may be set too.
fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|chunk| {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        u64::from_le_bytes(word)
    })
}

/// Where the first `"` or `\` is. Most strings of an event are short (keys, ids): eight bytes
/// at a time within the first 64, where memchr's set-up costs more than the search.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    let head = bytes.len().min(64) & !7;
    for (i, word) in words(&bytes[..head]).enumerate() {
        let found =
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1);
        if found != 0 {
            return Some(i * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    memchr::memchr2(b'"', b'\\', &bytes[head..]).map(|i| head + i)
}

/// Where the closing `"` of a string whose opening quote is read is, when no escape and no
/// control character (which JSON strings may not hold) comes before it: one pass for both.
fn plain_text_end(bytes: &[u8]) -> Option<usize> {
    let head = bytes.len().min(64) & !7;
    for (i, word) in words(&bytes[..head]).enumerate() {
        let stop = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if stop != 0 {
            let at = i * 8 + stop.trailing_zeros() as usize / 8;
            return (bytes[at] == b'"').then_some(at);
        }
    }
    let end = head + memchr::memchr2(b'"', b'\\', &bytes[head..])?;
    (bytes[end] == b'"' && !has_control(&bytes[head..end])).then_some(end)
}

/// Whether a string's bytes hold a control character, which JSON strings may not.
fn has_control(bytes: &[u8]) -> bool {
    let whole = bytes.len() & !7;
    words(&bytes[..whole]).any(|word| below(word, 0x20) != 0)
        || bytes[whole..].iter().any(|&b| b < 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    /// What serde_json reads from the same event, for the members the scan takes.
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Reference {
        event: Option<String>,
        task_id: Option<String>,
        conversation_id: Option<String>,
        metadata: Option<Value>,
        data: Option<Value>,
    }

    fn agrees(json: &[u8]) -> Result<(), TestCaseError> {
        let Some(found) = members(json) else {
            return Ok(());
        };
        let reference: Reference = serde_json::from_slice(json)
            .map_err(|e| TestCaseError::fail(format!("scanned what serde_json refuses: {e}")))?;
        let raw = |v: Option<&[u8]>| v.map(|raw| serde_json::from_slice::<Value>(raw).ok());
        prop_assert_eq!(found.event.map(str::to_owned), reference.event);
        prop_assert_eq!(found.task_id.map(str::to_owned), reference.task_id);
        prop_assert_eq!(
            found.conversation_id.map(str::to_owned),
            reference.conversation_id
        );
        prop_assert_eq!(raw(found.metadata), reference.metadata.map(Some));
        prop_assert_eq!(raw(found.data), reference.data.map(Some));
        Ok(())
    }

    #[test]
    fn takes_the_members_of_difys_events_as_they_are_written() {
        let first = br#"{"event": "message", "conversation_id": "c1", "message_id": "m1", "created_at": 1705395332, "task_id": "t1", "id": "m1", "answer": "Hi \"there\" \\ \u00e9", "from_variable_selector": null}"#;
        let found = members(first);
        assert_eq!(
            found,
            Some(Members {
                event: Some("message"),
                task_id: Some("t1"),
                conversation_id: Some("c1"),
                metadata: None,
                usage: None,
                data: None,
            })
        );
        let end = br#"{"event": "message_end", "task_id": "t1", "metadata": {"usage": {"total_tokens": 18, "total_price": "0E-7"}, "retriever_resources": [{"a": [1, {"b": "}"}]}]}, "files": null}"#;
        let found = members(end).map(|m| m.metadata);
        assert_eq!(
            found,
            Some(Some(
                &br#"{"usage": {"total_tokens": 18, "total_price": "0E-7"}, "retriever_resources": [{"a": [1, {"b": "}"}]}]}"#[..]
            ))
        );
    }

    #[test]
    fn the_usage_read_in_passing_is_what_usage_reads_from_the_metadata() {
        for end in [
            &br#"{"event": "message_end", "metadata": {"usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12, "total_price": "0.0000250", "currency": "USD", "latency": 0.5}, "x": [{"y": [1]}]}, "files": null}"#[..],
            br#"{"event": "message_end", "metadata": {"usage": null}}"#,
            br#"{"event": "message_end", "metadata": {}}"#,
            br#"{"event": "message_end", "metadata": {"usage": {"total_tokens": 1.5}}}"#,
            br#"{"event": "message_end", "metadata": {"us\u0061ge": {"total_tokens": 1}}}"#,
            br#"{"event": "message_end", "metadata": null}"#,
            br#"{"event": "message_end", "metadata": [1, 2]}"#,
        ] {
            let found = members(end).unwrap_or_default();
            let raw = found.metadata;
            let expected = raw.and_then(usage);
            let text = String::from_utf8_lossy(end);
            assert!(found.usage.is_none() || found.usage == expected, "{text}");
            assert_eq!(found.usage.is_some(), expected.is_some(), "{text}");
        }
    }

    #[test]
    fn nesting_in_metadata_counts_from_the_event() {
        for depth in [120, 125, 126, 127, 128, 130] {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            for metadata in [
                format!("{{\"x\": {nested}}}"),
                format!("{{\"usage\": {{\"x\": {nested}}}}}"),
            ] {
                let event = format!("{{\"event\": \"message_end\", \"metadata\": {metadata}}}");
                let mut skip = Scan {
                    json: metadata.as_bytes(),
                    at: 0,
                };
                let alone = skip.skip_value().is_some() && skip.at == metadata.len();
                assert_eq!(
                    members(event.as_bytes()).is_some(),
                    alone,
                    "{depth}: {metadata}"
                );
            }
        }
    }

    #[test]
    fn a_task_id_nested_in_another_member_is_not_the_events() {
        let json = br#"{"event": "node_finished", "data": {"outputs": {"task_id": "inner"}}, "task_id": "outer"}"#;
        assert_eq!(members(json).and_then(|m| m.task_id), Some("outer"));
    }

    #[test]
    fn leaves_to_serde_what_it_would_not_read_plainly() {
        for json in [
            &br#"{"task_id": "a\"b"}"#[..],
            br#"{"task\u005fid": "t"}"#,
            br#"{"task_id": "t", "task_id": "u"}"#,
            br#"{"task_id": 5}"#,
            br#"{"task_id": "t"} x"#,
            br#"{"task_id": "t""#,
            br#"[{"task_id": "t"}]"#,
            br#"{"a": , "task_id": "t"}"#,
            b"{\"task_id\": \"a\x01b\"}",
        ] {
            assert_eq!(members(json), None, "{}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn a_null_member_is_an_absent_one() {
        let json = br#"{"event": null, "metadata": null, "data": null}"#;
        assert_eq!(members(json), Some(Members::default()));
    }

    #[test]
    fn nesting_past_serdes_limit_is_left_to_it() {
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(members(deep.as_bytes()), None);
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            prop::sample::select(vec![
                "message_end",
                "workflow_finished",
                "}",
                "\\",
                "{\"x\": 1}"
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "event",
                "task_id",
                "conversation_id",
                "metadata",
                "data",
                "answer",
                "usage",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ]
    }

    /// A member the scan takes, with a value it takes as often as not.
    fn wanted() -> impl Strategy<Value = (String, Value)> {
        let name = prop::sample::select(vec!["event", "task_id", "conversation_id"]);
        let text = prop_oneof![
            "[a-z0-9_ é🚀-]{0,12}".prop_map(Value::String),
            Just(Value::Null),
            value(),
        ];
        (name.prop_map(str::to_owned), text)
    }

    fn event() -> impl Strategy<Value = Value> {
        let member = prop_oneof![wanted(), (key(), value())];
        prop::collection::vec(member, 0..8).prop_map(|pairs| {
            let mut object = Map::new();
            for (k, v) in pairs {
                object.insert(k, v);
            }
            Value::Object(object)
        })
    }

    proptest! {
        #[test]
        fn what_it_takes_is_what_serde_json_reads(event in event(), pretty in any::<bool>(), cut in any::<prop::sample::Index>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&event)
            } else {
                serde_json::to_vec(&event)
            }
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            agrees(&text)?;
            agrees(&text[..cut.index(text.len() + 1)])?;
        }
    }

    fn usage_agrees(json: &[u8]) -> Result<(), TestCaseError> {
        let Some(found) = usage(json) else {
            return Ok(());
        };
        let reference = serde_json::from_slice::<super::super::PeekMetadata>(json)
            .map_err(|e| TestCaseError::fail(format!("scanned what serde_json refuses: {e}")))?;
        prop_assert_eq!(found, reference.usage);
        Ok(())
    }

    #[test]
    fn reads_message_ends_usage_as_dify_writes_it() {
        let metadata = br#"{"usage": {"prompt_tokens": 11, "prompt_unit_price": "0.001", "completion_tokens": 7, "total_tokens": 18, "total_price": "0.0000250", "currency": "USD", "latency": 0.5}, "retriever_resources": [{"a": "}"}]}"#;
        let found = usage(metadata).flatten().unwrap_or_default();
        assert_eq!(
            (
                found.prompt_tokens,
                found.completion_tokens,
                found.total_tokens
            ),
            (11, 7, 18)
        );
        assert_eq!(found.total_price.as_deref(), Some("0.0000250"));
        assert_eq!(found.currency.as_deref(), Some("USD"));
        assert_eq!(usage(br#"{"usage": null}"#), Some(None));
        assert_eq!(usage(b"{}"), Some(None));
        assert_eq!(usage(br#"{"usage": {}}"#), Some(Some(Usage::default())));
    }

    #[test]
    fn leaves_to_serde_usage_it_would_not_read_plainly() {
        for json in [
            &br#"{"usage": {"total_tokens": 1.0}}"#[..],
            br#"{"usage": {"total_tokens": -1}}"#,
            br#"{"usage": {"total_tokens": 01}}"#,
            br#"{"usage": {"total_tokens": 1e3}}"#,
            br#"{"usage": {"total_tokens": 18446744073709551616}}"#,
            br#"{"usage": {"total_tokens": null}}"#,
            br#"{"usage": {"total_tokens": 1, "total_tokens": 2}}"#,
            br#"{"usage": {}, "usage": {}}"#,
            br#"{"usage": {"currency": "U\u0053D"}}"#,
            br#"{"us\u0061ge": {}}"#,
            br#"{"usage": []}"#,
            br#"[{}]"#,
            br#"{"usage": {}} x"#,
        ] {
            assert_eq!(usage(json), None, "{}", String::from_utf8_lossy(json));
        }
    }

    fn usage_member() -> impl Strategy<Value = (String, Value)> {
        let name = prop::sample::select(vec![
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "total_price",
            "currency",
            "latency",
        ]);
        let value = prop_oneof![
            any::<u64>().prop_map(Value::from),
            (0u64..100).prop_map(Value::from),
            "[A-Z0-9.]{0,8}".prop_map(Value::String),
            Just(Value::Null),
            value(),
        ];
        (name.prop_map(str::to_owned), value)
    }

    fn metadata() -> impl Strategy<Value = Value> {
        let usage = prop_oneof![
            prop::collection::vec(usage_member(), 0..8).prop_map(|pairs| {
                Value::Object(pairs.into_iter().collect::<Map<String, Value>>())
            }),
            Just(Value::Null),
            value(),
        ];
        let member = prop_oneof![
            usage.prop_map(|u| ("usage".to_owned(), u)),
            (key(), value())
        ];
        prop::collection::vec(member, 0..4)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn the_usage_it_reads_is_what_serde_json_reads(metadata in metadata(), pretty in any::<bool>(), cut in any::<prop::sample::Index>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&metadata)
            } else {
                serde_json::to_vec(&metadata)
            }
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            usage_agrees(&text)?;
            usage_agrees(&text[..cut.index(text.len() + 1)])?;
        }
    }

    proptest! {
        #[test]
        fn the_word_searches_agree_with_bytewise_ones(bytes in prop::collection::vec(prop::sample::select(vec![0u8, 0x1f, 0x20, b'"', b'\\', b'a', 0x7f, 0x80, 0xdc, 0xff]), 0..150)) {
            prop_assert_eq!(
                quote_or_backslash(&bytes),
                bytes.iter().position(|&b| b == b'"' || b == b'\\')
            );
            prop_assert_eq!(has_control(&bytes), bytes.iter().any(|&b| b < 0x20));
            let stop = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(
                plain_text_end(&bytes),
                stop.filter(|&at| bytes[at] == b'"')
            );
        }
    }

    #[test]
    fn an_empty_object_has_no_members() {
        assert_eq!(members(b" {} "), Some(Members::default()));
        assert_eq!(
            members(json!({}).to_string().as_bytes()),
            Some(Members::default())
        );
    }
}
