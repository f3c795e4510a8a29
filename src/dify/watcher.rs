//! An incremental SSE watcher: fed the relayed bytes exactly as they arrive (lines and UTF-8
//! characters may be split anywhere), it learns what the relay needs to know (the `task_id`,
//! the terminal event, token usage) without ever changing or holding back a byte.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

mod scan;

/// Lines longer than this are not parsed (their bytes are still relayed untouched).
const MAX_LINE: usize = 1 << 20;
/// Events whose `data` lines add up to more than this are not parsed either: what the watcher
/// holds stays bounded however an upstream frames its events.
const MAX_EVENT_DATA: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminal {
    MessageEnd,
    WorkflowFinished,
    Error,
}

/// Token usage from `message_end`, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub total_price: Option<SmallStr>,
    #[serde(default)]
    pub currency: Option<SmallStr>,
}

/// A short string (an id, a price, a currency) kept inline; on the heap only when longer.
#[derive(Clone, PartialEq, Eq)]
pub enum SmallStr {
    Inline(u8, [u8; SmallStr::INLINE]),
    Heap(Box<str>),
}

impl SmallStr {
    /// A UUID (36 bytes) fits.
    const INLINE: usize = 38;

    pub fn new(s: &str) -> SmallStr {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= Self::INLINE => {
                let mut bytes = [0; Self::INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                SmallStr::Inline(len, bytes)
            }
            _ => SmallStr::Heap(s.into()),
        }
    }
}

impl std::ops::Deref for SmallStr {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Always whole characters: the bytes were copied from a `str`.
            SmallStr::Inline(len, bytes) => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            SmallStr::Heap(s) => s,
        }
    }
}

impl std::fmt::Debug for SmallStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl<'de> Deserialize<'de> for SmallStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SmallStr, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = SmallStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SmallStr, E> {
                Ok(SmallStr::new(s))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// The fields the watcher reads, borrowed from the event's data (no allocation unless a value
/// holds escapes), when [`scan::members`] leaves the event to serde_json.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    event: Option<Text<'a>>,
    #[serde(borrow)]
    task_id: Option<Text<'a>>,
    #[serde(borrow)]
    conversation_id: Option<Text<'a>>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// A string of the event's data, borrowed unless it holds escapes (serde's own `Cow` is always
/// a copy inside an `Option`).
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text<'a>, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// `workflow_finished`'s `data`: the run's token count.
#[derive(Deserialize)]
struct PeekData {
    total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct PeekMetadata {
    usage: Option<Usage>,
}

#[derive(Debug, Default)]
pub struct SseWatcher {
    line: Vec<u8>,
    line_overflow: bool,
    data: Vec<u8>,
    has_data: bool,
    data_overflow: bool,
    event_lines: usize,
    last_was_cr: bool,
    task_id: Option<SmallStr>,
    conversation_id: Option<SmallStr>,
    terminal: Option<Terminal>,
    /// Boxed: it comes at the end, and a held stream keeps the watcher all along.
    usage: Option<Box<Usage>>,
    workflow_tokens: Option<u64>,
    events: u64,
}

impl SseWatcher {
    pub fn new() -> SseWatcher {
        SseWatcher::default()
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.feed_one_event(chunk) {
            return;
        }
        let mut rest = chunk;
        // An event's only `data` line so far, still in `chunk`: copied aside only if the
        // event does not end in this chunk.
        let mut pending: Option<&[u8]> = None;
        while !rest.is_empty() {
            if self.last_was_cr {
                self.last_was_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            // The blank line that ends an event needs no search.
            let line_end = if rest[0] == b'\n' {
                Some(0)
            } else {
                memchr::memchr2(b'\n', b'\r', rest)
            };
            match line_end {
                Some(i) => {
                    self.last_was_cr = rest[i] == b'\r';
                    if self.line.is_empty() && !self.line_overflow {
                        // The whole line is in this chunk: read it in place.
                        let line = &rest[..i];
                        let overflow = line.len() > MAX_LINE;
                        if line.is_empty() && pending.is_some() {
                            self.dispatch(pending.take());
                        } else if let Some(value) = field_value(line, b"data")
                            .filter(|_| !overflow && !self.has_data && pending.is_none())
                        {
                            self.event_lines += 1;
                            self.has_data = true;
                            pending = Some(value);
                        } else {
                            self.keep(pending.take());
                            self.complete_line(line, overflow);
                        }
                    } else {
                        self.keep(pending.take());
                        self.push_line_bytes(&rest[..i]);
                        self.end_line();
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    self.keep(pending.take());
                    self.push_line_bytes(rest);
                    rest = &[];
                }
            }
        }
        self.keep(pending);
    }

    /// The usual chunk, one whole event of one `data` line (`data: …\n\n`) after a complete
    /// one, read without the line-by-line bookkeeping of [`SseWatcher::feed`]; `false` (nothing
    /// done) for anything else.
    fn feed_one_event(&mut self, chunk: &[u8]) -> bool {
        let between_events = self.event_lines == 0
            && self.line.is_empty()
            && !self.line_overflow
            && !self.last_was_cr;
        let Some(line) = chunk
            .strip_suffix(b"\n\n")
            .filter(|line| between_events && line.len() <= MAX_LINE)
        else {
            return false;
        };
        let Some(value) = field_value(line, b"data") else {
            return false;
        };
        if memchr::memchr2(b'\n', b'\r', value).is_some() {
            return false;
        }
        self.events += 1;
        self.peek(value);
        true
    }

    /// Copies a pending `data` value (see [`SseWatcher::feed`]) into the event's data.
    fn keep(&mut self, pending: Option<&[u8]>) {
        let Some(value) = pending else {
            return;
        };
        if value.len() > MAX_EVENT_DATA {
            self.data_overflow = true;
        } else {
            self.data.extend_from_slice(value);
        }
    }

    pub fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }

    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation_id.as_deref()
    }

    pub fn terminal(&self) -> Option<Terminal> {
        self.terminal
    }

    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_deref()
    }

    /// The tokens this answer spent, counted once: `message_end`'s usage, or for workflow
    /// runs without one, `workflow_finished`'s `total_tokens`.
    pub fn total_tokens(&self) -> Option<u64> {
        self.usage
            .as_ref()
            .map(|u| u.total_tokens)
            .or(self.workflow_tokens)
    }

    /// Events dispatched so far (pings included).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// What must be written before an appended event so that it parses on its own: `\n\n`
    /// after a partial line, `\n` after complete lines of an undispatched event. When the last
    /// line ended with a bare `\r`, a reader takes a following `\n` as the rest of that `\r\n`,
    /// so the blank line that ends the event needs a `\n` of its own.
    pub fn separator_needed(&self) -> &'static [u8] {
        let partial_line = !self.line.is_empty() || self.line_overflow;
        if partial_line || (self.event_lines > 0 && self.last_was_cr) {
            b"\n\n"
        } else if self.event_lines > 0 {
            b"\n"
        } else {
            b""
        }
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.line_overflow = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    /// Ends the line gathered in `self.line` across chunks.
    fn end_line(&mut self) {
        let overflow = std::mem::take(&mut self.line_overflow);
        let line = std::mem::take(&mut self.line);
        self.complete_line(&line, overflow);
        if !overflow {
            // Keep the allocation for the next split line.
            self.line = line;
            self.line.clear();
        }
    }

    /// One complete line (without its end); `overflow` when it was longer than `MAX_LINE`.
    fn complete_line(&mut self, line: &[u8], overflow: bool) {
        if line.is_empty() && !overflow {
            self.dispatch(None);
            return;
        }
        self.event_lines += 1;
        if overflow {
            return;
        }
        if let Some(value) = field_value(line, b"data") {
            let continued = std::mem::replace(&mut self.has_data, true);
            if self.data_overflow {
                return;
            }
            if self.data.len() + usize::from(continued) + value.len() > MAX_EVENT_DATA {
                self.data_overflow = true;
                self.data = Vec::new();
                return;
            }
            if continued {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
        }
    }

    /// Ends an event; its data is `data` when still in the chunk, else in `self.data`.
    fn dispatch(&mut self, data: Option<&[u8]>) {
        if self.event_lines == 0 {
            return;
        }
        self.event_lines = 0;
        self.events += 1;
        let overflow = std::mem::take(&mut self.data_overflow);
        if !std::mem::take(&mut self.has_data) || overflow {
            return;
        }
        if let Some(data) = data {
            self.peek(data);
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        self.peek(&data);
        data.clear();
        self.data = data;
    }

    fn peek(&mut self, data: &[u8]) {
        // An answer chunk: once the ids are known it holds nothing the watcher needs.
        if !(self.knows_ids() && is_answer(data)) {
            self.read(data);
        }
    }

    /// Reads an event that is not a plain answer chunk. Kept out of line: its frame (the scan,
    /// serde_json) would otherwise be set up for every answer chunk too.
    #[inline(never)]
    fn read(&mut self, data: &[u8]) {
        if let Some(members) = scan::members(data) {
            self.learn(members);
        } else if let Ok(peek) = serde_json::from_slice::<Peek>(data) {
            self.learn(scan::Members {
                event: peek.event.as_deref(),
                task_id: peek.task_id.as_deref(),
                conversation_id: peek.conversation_id.as_deref(),
                metadata: peek.metadata.map(|raw| raw.get().as_bytes()),
                usage: None,
                data: peek.data.map(|raw| raw.get().as_bytes()),
            });
        }
    }

    fn knows_ids(&self) -> bool {
        self.task_id.is_some() && self.conversation_id.is_some()
    }

    fn learn(&mut self, seen: scan::Members<'_>) {
        if self.task_id.is_none() {
            self.task_id = seen.task_id.map(SmallStr::new);
        }
        if self.conversation_id.is_none() {
            self.conversation_id = seen
                .conversation_id
                .filter(|c| !c.is_empty())
                .map(SmallStr::new);
        }
        let terminal = match seen.event {
            Some("message_end") => Some(Terminal::MessageEnd),
            Some("workflow_finished") => Some(Terminal::WorkflowFinished),
            Some("error") => Some(Terminal::Error),
            _ => None,
        };
        // The end is the end even when its token count cannot be read.
        if terminal == Some(Terminal::MessageEnd) {
            self.usage = seen
                .metadata
                .and_then(|raw| {
                    seen.usage.or_else(|| scan::usage(raw)).unwrap_or_else(|| {
                        serde_json::from_slice::<PeekMetadata>(raw)
                            .ok()
                            .and_then(|m| m.usage)
                    })
                })
                .map(Box::new);
        }
        if terminal == Some(Terminal::WorkflowFinished) {
            self.workflow_tokens = seen
                .data
                .and_then(|raw| serde_json::from_slice::<PeekData>(raw).ok())
                .and_then(|run| run.total_tokens);
        }
        if terminal.is_some() && self.terminal.is_none() {
            self.terminal = terminal;
        }
    }
}

/// Whether `data` starts like an answer chunk (the bulk of a stream) as Dify serialises it
/// (Python's `json.dumps`, `event` first): `{"event": "message", ` or
/// `{"event": "agent_message", `. Anything else, compact JSON included, is parsed. Compared as
/// short arrays, which the compiler does inline instead of calling `memcmp`.
fn is_answer(data: &[u8]) -> bool {
    let Some((head, name)) = data.split_first_chunk::<11>() else {
        return false;
    };
    let name = match name.split_first_chunk::<6>() {
        Some((b"agent_", rest)) => rest,
        _ => name,
    };
    head == b"{\"event\": \"" && name.first_chunk::<10>() == Some(b"message\", ")
}

fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?;
    let rest = rest.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

#[cfg(test)]
mod tests;
