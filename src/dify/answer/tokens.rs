//! What a blocking answer spent, read from its JSON as it streams by, whatever its size: a
//! chat or completion answer's `metadata.usage.total_tokens`, else a workflow run's
//! `data.total_tokens`. Nothing of the body is kept; only the keys on the way to those two
//! numbers are followed (a string's content, escaped quotes included, is never a key).

/// The deepest level followed: `metadata.usage.total_tokens`.
const DEPTH: usize = 3;
/// Keys longer than this are none of ours.
const KEY_MAX: usize = 16;

#[derive(Default)]
pub(super) struct TokenCounter {
    /// Containers open: `true` for an object.
    objects: Vec<bool>,
    /// The key whose value is being read, at each followed level (1-based; `[0]` unused).
    keys: [Key; DEPTH + 1],
    /// Whether the next string is a key (in an object, before its colon).
    expecting_key: bool,
    in_string: bool,
    escaped: bool,
    /// The string being read is a key, and `key` holds it while it may be one of ours.
    reading_key: bool,
    key: Option<Key>,
    /// The digits of a followed number being read.
    number: Option<u64>,
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
                    self.number = self
                        .number
                        .map(|n| n.saturating_mul(10).saturating_add(u64::from(b - b'0')));
                    continue;
                }
                self.end_number();
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.reading_key = self.expecting_key;
                    self.key = Some(Key::default());
                }
                b'{' | b'[' => {
                    self.objects.push(b == b'{');
                    self.expecting_key = b == b'{';
                    self.set_key(Key::default());
                }
                b'}' | b']' => {
                    self.objects.pop();
                    self.expecting_key = false;
                }
                b',' => self.expecting_key = self.objects.last() == Some(&true),
                b'0'..=b'9' if self.followed() => self.number = Some(u64::from(b - b'0')),
                _ => {}
            }
        }
    }

    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            // None of our keys has an escape.
            self.escaped = false;
            self.key = None;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
            if std::mem::take(&mut self.reading_key) {
                self.expecting_key = false;
                let key = self.key.take().unwrap_or_default();
                self.set_key(key);
            }
        } else if self.reading_key {
            self.key = self.key.and_then(|key| key.push(b));
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
        let Some(n) = self.number.take() else {
            return;
        };
        match self.objects.len() {
            3 => self.chat = Some(n),
            _ => self.run = Some(n),
        }
        self.set_key(Key::default());
    }

    /// Whether a value starting here is one of the two numbers.
    fn followed(&self) -> bool {
        let k = &self.keys;
        self.objects.iter().all(|&object| object)
            && match self.objects.len() {
                3 => k[1].is("metadata") && k[2].is("usage") && k[3].is("total_tokens"),
                2 => k[1].is("data") && k[2].is("total_tokens"),
                _ => false,
            }
    }

    /// What the answer spent, once it has all gone by.
    pub(super) fn spent(mut self) -> Option<u64> {
        self.end_number();
        self.chat.or(self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::TokenCounter;

    fn spent(chunks: &[&[u8]]) -> Option<u64> {
        let mut counter = TokenCounter::default();
        for chunk in chunks {
            counter.feed(chunk);
        }
        counter.spent()
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
        assert_eq!(counter.spent(), Some(50034));
    }
}
