//! The journal of every request the emulator received, bodies included.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::Notify;

use super::pyvalue::py_str;
use super::reqparse::QueryArgs;
use super::state::{Shared, lock};

/// One request as the emulator received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// The path as sent, e.g. `/v1/chat-messages`.
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Bytes of body received; for an upload the client aborted, what arrived before that.
    pub body_len: usize,
}

impl Recorded {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        QueryArgs::parse(self.query.as_deref())
            .get(name)
            .map(str::to_owned)
    }

    /// The Dify `user` the request carried: JSON body `user`, else query `user`, else the
    /// multipart `user` field.
    pub fn user(&self) -> Option<String> {
        let from_json = self
            .json()
            .and_then(|v| v.get("user").filter(|u| !u.is_null()).map(py_str));
        from_json
            .or_else(|| self.query_param("user"))
            .or_else(|| self.multipart_field("user"))
    }

    fn multipart_field(&self, name: &str) -> Option<String> {
        let boundary = multer::parse_boundary(self.header("content-type")?).ok()?;
        let delimiter = format!("--{boundary}");
        let body = String::from_utf8_lossy(&self.body);
        body.split(delimiter.as_str()).find_map(|part| {
            let (head, content) = part.split_once("\r\n\r\n")?;
            let wanted = format!("name=\"{name}\"");
            let is_field = head.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("content-disposition:")
                    && l.contains(&wanted)
                    && !l.contains("filename=")
            });
            is_field.then(|| content.strip_suffix("\r\n").unwrap_or(content).to_owned())
        })
    }
}

struct Entry {
    id: u64,
    rec: Recorded,
    /// The body so far while it is still arriving; moved into `rec.body` at its end.
    partial: Vec<u8>,
    complete: bool,
}

impl Entry {
    fn snapshot(&self) -> Recorded {
        if self.complete {
            return self.rec.clone();
        }
        Recorded {
            body: Bytes::copy_from_slice(&self.partial),
            body_len: self.partial.len(),
            ..self.rec.clone()
        }
    }
}

#[derive(Default)]
pub(crate) struct Journal {
    entries: Mutex<(u64, Vec<Entry>)>,
    changed: Notify,
}

impl Journal {
    /// Records a request's head; its body is added as it arrives (see [`RecordingBody`]).
    pub(crate) fn begin(&self, parts: &http::request::Parts) -> u64 {
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let rec = Recorded {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers,
            body: Bytes::new(),
            body_len: 0,
        };
        let mut entries = lock(&self.entries);
        entries.0 += 1;
        let id = entries.0;
        entries.1.push(Entry {
            id,
            rec,
            partial: Vec::new(),
            complete: false,
        });
        drop(entries);
        self.changed.notify_waiters();
        id
    }

    fn append(&self, id: u64, chunk: &[u8]) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.1.iter_mut().rev().find(|e| e.id == id) {
            entry.partial.extend_from_slice(chunk);
        }
    }

    fn complete(&self, id: u64) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries
            .1
            .iter_mut()
            .rev()
            .find(|e| e.id == id && !e.complete)
        {
            entry.rec.body = Bytes::from(std::mem::take(&mut entry.partial));
            entry.rec.body_len = entry.rec.body.len();
            entry.complete = true;
        }
        drop(entries);
        self.changed.notify_waiters();
    }

    pub(crate) fn all(&self) -> Vec<Recorded> {
        lock(&self.entries).1.iter().map(Entry::snapshot).collect()
    }

    pub(crate) fn clear(&self) {
        lock(&self.entries).1.clear();
    }

    /// The first request whose body has fully arrived and that matches `pred`.
    pub(crate) async fn wait_for(
        &self,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Option<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let complete: Vec<Recorded> = lock(&self.entries)
                .1
                .iter()
                .filter(|e| e.complete)
                .map(|e| e.rec.clone())
                .collect();
            if let Some(found) = complete.into_iter().find(|r| pred(r)) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

/// A request body that copies every chunk into the journal as it passes and marks the entry
/// complete at its end, on an error, or when dropped unread.
pub(crate) struct RecordingBody {
    shared: Arc<Shared>,
    id: u64,
    inner: axum::body::BodyDataStream,
    done: bool,
}

impl RecordingBody {
    pub(crate) fn new(shared: Arc<Shared>, id: u64, body: Body) -> Self {
        RecordingBody {
            shared,
            id,
            inner: body.into_data_stream(),
            done: false,
        }
    }

    /// Reads the whole body. A body that breaks off yields what arrived.
    pub(crate) async fn collect(mut self) -> Bytes {
        let mut buf = Vec::new();
        while let Some(chunk) = self.next().await {
            match chunk {
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
        Bytes::from(buf)
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.shared.journal.complete(self.id);
        }
    }
}

impl Stream for RecordingBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.shared.journal.append(self.id, &chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish();
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for RecordingBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(headers: &[(&str, &str)], query: Option<&str>, body: &[u8]) -> Recorded {
        Recorded {
            method: "POST".to_owned(),
            path: "/v1/x".to_owned(),
            query: query.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: Bytes::copy_from_slice(body),
            body_len: body.len(),
        }
    }

    #[test]
    fn user_comes_from_json_then_query_then_multipart() {
        let json = recorded(
            &[("content-type", "application/json")],
            Some("user=q"),
            br#"{"user": "j"}"#,
        );
        assert_eq!(json.user().as_deref(), Some("j"));
        let query = recorded(&[], Some("user=a%20b"), b"");
        assert_eq!(query.user().as_deref(), Some("a b"));
        let form = recorded(
            &[("content-type", "multipart/form-data; boundary=XX")],
            None,
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"user\"\r\n\r\nbytes\r\n--XX\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nuser-alice\r\n--XX--\r\n",
        );
        assert_eq!(form.user().as_deref(), Some("user-alice"));
        assert_eq!(recorded(&[], None, b"").user(), None);
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let r = recorded(&[("authorization", "Bearer k")], None, b"");
        assert_eq!(r.header("Authorization"), Some("Bearer k"));
        assert_eq!(r.json(), None);
    }
}
