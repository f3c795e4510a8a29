//! One method per Dify endpoint a handler calls: each names its path and body, and goes
//! through the client's one way of sending (`user` added in `prepare`, errors in `exchange`).

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, Method};
use reqwest::multipart::Part;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{CHAT_MESSAGES, Caller, DifyClient, Payload, Source, StopKind};
use crate::dify::answer::{Answer, Guard};
use crate::dify::bodies::{ChatMessage, Feedback, Rename, TextToAudio, UserOnly};
use crate::dify::relay::{RelayStream, StopOnAbandon};
use crate::dify::transport::{self, Outbound};
use crate::error::ApiError;
use crate::telemetry::metrics;

impl DifyClient {
    pub async fn chat_blocking(
        &self,
        caller: &Caller,
        body: &ChatMessage<'_>,
        slot: Guard,
    ) -> Result<Answer, ApiError> {
        let payload = Payload::<()>::Chat(body);
        self.generate(CHAT_MESSAGES, caller, payload, Some(slot))
            .await
    }

    /// Starts a streaming chat and returns the relay, ready to serve: it holds `slot` for as
    /// long as it lives and asks Dify to stop the task if the browser leaves early. The wait
    /// for Dify's response headers is bounded by the caller (see `routes::generation`); the
    /// relay has its own idle timeout.
    pub async fn chat_stream(
        self: &Arc<Self>,
        caller: Caller,
        body: &ChatMessage<'_>,
        slot: Guard,
        shutdown: WaitForCancellationFutureOwned,
    ) -> Result<RelayStream, ApiError> {
        let started = Instant::now();
        let call = self.prepare(
            Method::POST,
            CHAT_MESSAGES,
            &caller,
            Payload::<()>::Chat(body),
        )?;
        let response = self
            .exchange(call, None, Source::of(CHAT_MESSAGES))
            .await
            .map_err(|f| f.error)?;
        metrics::time_to_first_byte(started.elapsed());
        self.counters.stream(&self.app);
        let stop = StopOnAbandon {
            client: Arc::clone(self),
            caller,
            stops: Arc::clone(&self.stops),
            kind: StopKind::Chat,
        };
        Ok(RelayStream::new(
            response,
            self.stream_idle,
            shutdown,
            stop,
            Some(slot),
        ))
    }

    pub async fn stop(&self, caller: &Caller, task_id: &str) -> Result<Answer, ApiError> {
        self.stop_task(caller, StopKind::Chat, task_id).await
    }

    /// The stop call of a chat, completion or workflow task.
    pub async fn stop_task(
        &self,
        caller: &Caller,
        kind: StopKind,
        task_id: &str,
    ) -> Result<Answer, ApiError> {
        let path = kind.path(task_id);
        let payload = Payload::Json(&UserOnly {});
        self.call(Method::POST, &path, caller, payload, None).await
    }

    pub async fn conversations(
        &self,
        caller: &Caller,
        params: &[(&str, &str)],
    ) -> Result<Answer, ApiError> {
        self.get("conversations", caller, params).await
    }

    pub async fn delete_conversation(&self, caller: &Caller, id: &str) -> Result<Answer, ApiError> {
        let path = format!("conversations/{id}");
        let payload = Payload::Json(&UserOnly {});
        self.call(Method::DELETE, &path, caller, payload, None)
            .await
    }

    pub async fn rename_conversation(
        &self,
        caller: &Caller,
        id: &str,
        body: &Rename<'_>,
    ) -> Result<Answer, ApiError> {
        let path = format!("conversations/{id}/name");
        self.call(Method::POST, &path, caller, Payload::Json(body), None)
            .await
    }

    pub async fn messages(
        &self,
        caller: &Caller,
        params: &[(&str, &str)],
    ) -> Result<Answer, ApiError> {
        self.get("messages", caller, params).await
    }

    pub async fn feedback(
        &self,
        caller: &Caller,
        message_id: &str,
        body: &Feedback<'_>,
    ) -> Result<Answer, ApiError> {
        let path = format!("messages/{message_id}/feedbacks");
        self.call(Method::POST, &path, caller, Payload::Json(body), None)
            .await
    }

    pub async fn suggested(&self, caller: &Caller, message_id: &str) -> Result<Answer, ApiError> {
        self.get(&format!("messages/{message_id}/suggested"), caller, &[])
            .await
    }

    /// `parameters`, `info` or `meta`: app settings, the same for every user, but Dify still
    /// gets our `user` so no call omits it.
    pub async fn app_settings(&self, caller: &Caller, which: &str) -> Result<Answer, ApiError> {
        self.get(which, caller, &[]).await
    }

    /// `POST /files/upload` with the file streamed through as it arrives.
    pub async fn upload(&self, caller: &Caller, file: Part) -> Result<Answer, ApiError> {
        let payload = Payload::<()>::File(Box::new(file));
        self.call(Method::POST, "files/upload", caller, payload, None)
            .await
    }

    /// `POST /audio-to-text` with the recording streamed through as it arrives.
    pub async fn audio_to_text(&self, caller: &Caller, file: Part) -> Result<Answer, ApiError> {
        let payload = Payload::<()>::File(Box::new(file));
        self.call(Method::POST, "audio-to-text", caller, payload, None)
            .await
    }

    /// `POST /text-to-audio`: the answer is audio, relayed as it streams.
    pub async fn text_to_audio(
        &self,
        caller: &Caller,
        body: &TextToAudio<'_>,
    ) -> Result<Answer, ApiError> {
        self.call(
            Method::POST,
            "text-to-audio",
            caller,
            Payload::Json(body),
            None,
        )
        .await
    }

    /// A signed file URL on Dify's origin (outside `/v1`): no key, no `user`, no cookies; the
    /// signed query byte for byte. A 304 counts as success.
    pub async fn file(
        &self,
        path_and_query: &str,
        headers: impl Iterator<Item = (HeaderName, HeaderValue)>,
    ) -> Result<transport::Response, ApiError> {
        let url = self
            .origin
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|e| ApiError::Internal(format!("joining file path: {e}")))?;
        let mut call = Outbound::new(Method::GET, url, self.transport.headers().clone());
        for (name, value) in headers {
            call.headers.insert(name, value);
        }
        let deadline = Instant::now() + self.timeout;
        self.exchange(call, Some(deadline), Source::File)
            .await
            .map_err(|f| f.error)
    }
}
