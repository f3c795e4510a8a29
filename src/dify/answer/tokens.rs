//! What a blocking answer spent, read from its JSON as it streams by, whatever its size: a
//! chat or completion answer's `metadata.usage` (its `total_tokens` for the budget, the rest
//! for the metrics), else a workflow run's `data.total_tokens`. Nothing of the body is kept;
//! only the keys on the way to those values are followed (a string's content, escaped quotes
//! included, is never a key).

use crate::dify::watcher::{SmallStr, Usage};

/// The deepest level followed: `metadata.usage.total_tokens`.
const DEPTH: usize = 3;
/// Keys longer than this are none of ours (`completion_tokens`).
const KEY_MAX: usize = 17;
/// The longest price or currency read; a longer one is not.
const TEXT_MAX: usize = 32;

/// A value followed.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Total,
    Prompt,
    Completion,
    Price,
    Currency,
    RunTotal,
}

#[derive(Default)]
pub(super) struct TokenCounter {
    /// Containers open, down to one below the deepest followed level: `true` for an object.
    objects: Vec<bool>,
    /// Containers open below those (none of their values is followed).
    deeper: u64,
    /// The key whose value is being read, at each followed level (1-based; `[0]` unused).
    keys: [Key; DEPTH + 1],
    /// Whether the next string is a key (in an object, before its colon).
    expecting_key: bool,
    in_string: bool,
    escaped: bool,
    /// The string being read is a key, and `key` holds it while it may be one of ours.
    reading_key: bool,
    key: Option<Key>,
    /// The digits of a followed number being read, and which it is.
    number: Option<(Field, u64)>,
    /// The bytes of a followed string being read (`None` once it cannot be one).
    text: Option<(Field, [u8; TEXT_MAX], u8)>,
    usage: Usage,
    chat: Option<u64>,
    run: Option<u64>,
}

#[derive(Clone, Copy, Default, PartialEq)]
struct Key {
    bytes: [u8; KEY_MAX],
    len: u8,
}

impl Key {
    fn is(&self, name: &str) -> bool {
        &self.bytes[..usize::from(self.len)] == name.as_bytes()
    }

    /// Adds `b`; `None` once it is longer than any of ours.
    fn push(mut self, b: u8) -> Option<Key> {
        *self.bytes.get_mut(usize::from(self.len))? = b;
        self.len += 1;
        Some(self)
    }
}

impl TokenCounter {
    pub(super) fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.in_string {
                self.string_byte(b);
                continue;
            }
            if self.number.is_some() {
                if b.is_ascii_digit() {
                    self.number = self.number.map(|(field, n)| {
                        (
                            field,
                            n.saturating_mul(10).saturating_add(u64::from(b - b'0')),
                        )
                    });
                    continue;
                }
                self.end_number();
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.reading_key = self.expecting_key;
                    self.key = Some(Key::default());
                    self.text = match self.followed() {
                        Some(field @ (Field::Price | Field::Currency)) if !self.reading_key => {
                            Some((field, [0; TEXT_MAX], 0))
                        }
                        _ => None,
                    };
                }
                b'{' | b'[' => {
                    if self.objects.len() > DEPTH {
                        self.deeper = self.deeper.saturating_add(1);
                    } else {
                        self.objects.push(b == b'{');
                    }
                    self.expecting_key = b == b'{';
                    self.set_key(Key::default());
                }
                b'}' | b']' => {
                    if self.deeper > 0 {
                        self.deeper -= 1;
                    } else {
                        self.objects.pop();
                    }
                    self.expecting_key = false;
                }
                b',' => self.expecting_key = self.deeper == 0 && self.objects.last() == Some(&true),
                b'0'..=b'9' => {
                    self.number = match self.followed() {
                        Some(Field::Price | Field::Currency) | None => None,
                        Some(field) => Some((field, u64::from(b - b'0'))),
                    }
                }
                _ => {}
            }
        }
    }

    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            // None of our keys, prices or currencies has an escape.
            self.escaped = false;
            self.key = None;
            self.text = None;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
            if std::mem::take(&mut self.reading_key) {
                self.expecting_key = false;
                let key = self.key.take().unwrap_or_default();
                self.set_key(key);
            } else if let Some((field, bytes, len)) = self.text.take() {
                let text = std::str::from_utf8(&bytes[..usize::from(len)])
                    .ok()
                    .map(SmallStr::new);
                match field {
                    Field::Price => self.usage.total_price = text,
                    _ => self.usage.currency = text,
                }
                self.set_key(Key::default());
            }
        } else if self.reading_key {
            self.key = self.key.and_then(|key| key.push(b));
        } else if let Some((_, bytes, len)) = &mut self.text {
            match bytes.get_mut(usize::from(*len)) {
                Some(slot) => {
                    *slot = b;
                    *len += 1;
                }
                None => self.text = None,
            }
        }
    }

    /// The key whose value comes next in the innermost container, if it is a followed level.
    fn set_key(&mut self, key: Key) {
        if let Some(slot) = self.keys.get_mut(self.objects.len()) {
            *slot = key;
        }
    }

    /// Records a followed number; the key is then spent (a fraction's digits are not another).
    fn end_number(&mut self) {
        let Some((field, n)) = self.number.take() else {
            return;
        };
        match field {
            Field::Total => self.chat = Some(n),
            Field::Prompt => self.usage.prompt_tokens = n,
            Field::Completion => self.usage.completion_tokens = n,
            Field::RunTotal => self.run = Some(n),
            Field::Price | Field::Currency => {}
        }
        self.set_key(Key::default());
    }

    /// Which followed value starts here, if any.
    fn followed(&self) -> Option<Field> {
        let k = &self.keys;
        if !self.objects.iter().all(|&object| object) {
            return None;
        }
        match self.objects.len() {
            3 if k[1].is("metadata") && k[2].is("usage") => [
                ("total_tokens", Field::Total),
                ("prompt_tokens", Field::Prompt),
                ("completion_tokens", Field::Completion),
                ("total_price", Field::Price),
                ("currency", Field::Currency),
            ]
            .into_iter()
            .find_map(|(name, field)| k[3].is(name).then_some(field)),
            2 if k[1].is("data") && k[2].is("total_tokens") => Some(Field::RunTotal),
            _ => None,
        }
    }

    /// What the answer spent, once it has all gone by: the tokens for the budget, and a chat
    /// or completion answer's usage for the metrics.
    pub(super) fn spent(mut self) -> (Option<u64>, Option<Usage>) {
        self.end_number();
        match self.chat {
            Some(total) => (
                Some(total),
                Some(Usage {
                    total_tokens: total,
                    ..self.usage
                }),
            ),
            None => (self.run, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenCounter;
    use crate::dify::watcher::{SmallStr, Usage};

    fn read(chunks: &[&[u8]]) -> (Option<u64>, Option<Usage>) {
        let mut counter = TokenCounter::default();
        for chunk in chunks {
            counter.feed(chunk);
        }
        counter.spent()
    }

    fn spent(chunks: &[&[u8]]) -> Option<u64> {
        read(chunks).0
    }

    #[test]
    fn a_chat_answer_spends_its_usage_total() {
        let body = br#"{"event": "message", "answer": "hi", "metadata": {"usage": {"prompt_tokens": 3, "total_tokens": 9}}, "data": ["not a run"]}"#;
        assert_eq!(spent(&[body]), Some(9));
    }

    #[test]
    fn a_workflow_run_spends_its_data_total() {
        let body = br#"{"task_id": "t", "workflow_run_id": "r", "data": {"status": "succeeded", "outputs": {"total_tokens": 5}, "total_tokens": 21, "total_steps": 3}}"#;
        assert_eq!(spent(&[body]), Some(21));
    }

    #[test]
    fn an_answer_without_a_count_spends_nothing_known() {
        assert_eq!(spent(&[br#"{"result": "success"}"#]), None);
        assert_eq!(spent(&[b"not json"]), None);
    }

    #[test]
    fn the_count_is_read_across_chunks_split_anywhere() {
        let body = br#"{"answer": "x", "metadata": {"usage": {"total_tokens": 1234}}}"#;
        for at in 0..body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(spent(&[a, b]), Some(1234), "split at {at}");
        }
    }

    #[test]
    fn keys_inside_strings_and_nested_values_are_not_counted() {
        let body = br#"{"answer": "\"metadata\": {\"usage\": {\"total_tokens\": 1}}", "metadata": {"retriever_resources": [{"usage": {"total_tokens": 2}}], "usage": {"total_tokens": 77}}}"#;
        assert_eq!(spent(&[body]), Some(77));
    }

    #[test]
    fn an_answer_of_any_size_is_counted() {
        let mut counter = TokenCounter::default();
        counter.feed(br#"{"answer": ""#);
        for _ in 0..10_000 {
            counter.feed("\\ud83d\\ude00 €".repeat(10).as_bytes());
        }
        counter.feed(br#"", "metadata": {"usage": {"total_tokens": 50034}}}"#);
        assert_eq!(counter.spent().0, Some(50034));
    }

    #[test]
    fn a_chat_answers_usage_is_read_for_the_metrics() {
        let body = br#"{"answer": "hi", "metadata": {"usage": {"prompt_tokens": 1033, "prompt_unit_price": "0.001", "completion_tokens": 128, "total_tokens": 1161, "total_price": "0.0001161", "currency": "USD", "latency": 0.71}}}"#;
        for at in 0..body.len() {
            let (a, b) = body.split_at(at);
            let usage = read(&[a, b]).1.expect("a chat answer has usage");
            assert_eq!(
                usage,
                Usage {
                    prompt_tokens: 1033,
                    completion_tokens: 128,
                    total_tokens: 1161,
                    total_price: Some(SmallStr::new("0.0001161")),
                    currency: Some(SmallStr::new("USD")),
                },
                "split at {at}"
            );
        }
    }

    #[test]
    fn deep_nesting_holds_nothing_per_level_and_is_read_through() {
        let mut counter = TokenCounter::default();
        counter.feed(br#"{"answer": "x", "extra": "#);
        for _ in 0..100_000 {
            counter.feed(b"[{\"a\": ");
        }
        counter.feed(b"1");
        for _ in 0..100_000 {
            counter.feed(b"}]");
        }
        counter.feed(br#", "metadata": {"usage": {"total_tokens": 7}}}"#);
        assert!(counter.objects.capacity() <= 8);
        assert_eq!(counter.spent().0, Some(7));
    }

    #[test]
    fn a_workflow_run_has_no_chat_usage() {
        let body = br#"{"data": {"total_tokens": 21}}"#;
        assert_eq!(read(&[body]), (Some(21), None));
    }
}
