//! A Dify 0.15.3 Service API emulator for a chat app: byte-exact JSON and SSE, per-user
//! conversations and messages, streaming with pings, stop, uploads and signed file URLs.
//! It serves `dify-bff --demo` and the tests, which can also script replies one request at a
//! time and inspect every request received.

mod answers;
mod app_info;
mod audio;
mod auth;
mod capture;
mod chat;
mod conversations;
mod ctx;
mod errors;
mod files;
mod form;
mod generate;
mod messages;
mod play;
mod pyjson;
mod pyvalue;
mod record;
mod reqparse;
mod respond;
mod routes;
mod routing;
mod runs;
mod script;
mod sign;
mod state;
mod store;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use answers::DEMO_KEYWORDS;
pub use audio::SPEECH_HEADER;
pub use record::Recorded;
pub use script::{Reply, Step};
pub use store::UploadedFile;

use sign::Preview;
use state::{Shared, lock};
use store::{ToolFile, new_id, unix_now};

#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The only key accepted (`Authorization: Bearer <key>`, scheme in any case).
    pub api_key: String,
    /// Answers are a few friendly sentences about dify-bff's demo instead of the capture app's.
    pub demo: bool,
    /// `event: ping` each time the time since the stream started crosses a multiple of this.
    pub ping_interval: Duration,
    /// The gap between answer pieces.
    pub token_interval: Duration,
    /// The gap between pieces of a `SLOW` answer.
    pub slow_interval: Duration,
    /// How long a stopped stream takes to notice the stop and end with `message_end`.
    pub stop_latency: Duration,
    /// Off, like the captured app: `GET /messages/{id}/suggested` gives 400.
    pub suggested_questions_after_answer: bool,
    pub opening_statement: Option<String>,
    pub suggested_questions: Vec<String>,
    /// `/parameters` `user_input_form`; a conversation's first `inputs` are checked against it.
    pub user_input_form: Value,
    /// `/parameters` `file_upload`; when enabled, chat `files` are checked and stored.
    pub file_upload: Value,
    /// `/info`'s `name`, `description` and `mode` (Dify ≥ 1.0 sends `mode`), replacing the
    /// capture app's (or the demo's) name and description.
    pub info: Option<AppInfo>,
    /// Answer `/site` (Dify's WebApp settings, Dify ≥ 1.4); off, `/site` is the 404 page of
    /// Dify 0.15, whose captures this emulator follows.
    pub webapp_site: bool,
}

/// What `/info` says about the app.
#[derive(Clone, Debug)]
pub struct AppInfo {
    pub name: String,
    pub description: String,
    pub mode: String,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            api_key: "app-TESTKEY0000000000000000".to_owned(),
            demo: false,
            ping_interval: Duration::from_secs(10),
            token_interval: Duration::from_millis(20),
            slow_interval: Duration::from_secs(1),
            stop_latency: Duration::from_millis(300),
            suggested_questions_after_answer: false,
            opening_statement: None,
            suggested_questions: Vec::new(),
            user_input_form: json!([]),
            file_upload: json!({"image": {
                "enabled": false,
                "number_limits": 3,
                "detail": "high",
                "transfer_methods": ["remote_url", "local_file"],
            }}),
            info: None,
            webapp_site: false,
        }
    }
}

impl EmulatorOptions {
    /// The app `dify-bff --demo` shows: demo answers (with the [`DEMO_KEYWORDS`]), image
    /// upload on (the page's attach button) and suggested questions after each answer.
    pub fn demo_app() -> EmulatorOptions {
        let mut opts = EmulatorOptions {
            demo: true,
            suggested_questions_after_answer: true,
            ..EmulatorOptions::default()
        };
        opts.file_upload["image"]["enabled"] = json!(true);
        opts.file_upload["image"]["transfer_methods"] = json!(["local_file", "remote_url"]);
        opts
    }

    /// Demo mode fills an empty opening statement and suggestions with friendly ones.
    fn resolved(mut self) -> Self {
        if self.demo {
            self.opening_statement
                .get_or_insert_with(|| answers::DEMO_OPENING.to_owned());
            if self.suggested_questions.is_empty() {
                self.suggested_questions = answers::DEMO_QUESTIONS
                    .iter()
                    .map(|q| (*q).to_owned())
                    .collect();
            }
        }
        self
    }
}

/// A running emulator on `127.0.0.1` with an ephemeral port; it stops when dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Emulator {
    pub async fn start(opts: EmulatorOptions) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts.resolved()));
        let app = routes::router(shared.clone());
        let shutdown = shared.shutdown_signal();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "dify emulator stopped");
            }
        });
        Ok(Emulator {
            shared,
            addr,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a one-shot reply for the next `method` request to `path`: the path below `/v1`
    /// (e.g. `/chat-messages`; a leading `/v1` is ignored), or the whole path for routes outside
    /// it (e.g. `/files/…`). It is used after the request has been recorded and has passed the
    /// key check; replies for the same method and path are used in order.
    pub fn script(&self, method: &str, path: &str, reply: Reply) {
        self.shared
            .push_script(method, routes::script_key(path), reply);
    }

    /// Every request received, in order, unauthorised ones included. A body still arriving
    /// shows what has arrived so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.journal.all()
    }

    pub fn clear_requests(&self) {
        self.shared.journal.clear();
    }

    /// The first request (already received or still to come) whose body has fully arrived and
    /// that matches `pred`, or `None` after `timeout`.
    pub async fn wait_for_request(
        &self,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Option<Recorded> {
        self.shared.journal.wait_for(pred, timeout).await
    }

    /// SSE responses (generated or scripted) currently being written.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams()
    }

    /// Task ids (`""` for scripted streams) of SSE bodies the client dropped before their end.
    pub fn dropped_streams(&self) -> Vec<String> {
        self.shared.dropped_streams()
    }

    /// A file received by `POST /v1/files/upload`.
    pub fn uploaded_file(&self, id: &str) -> Option<UploadedFile> {
        lock(&self.shared.store).upload(id).cloned()
    }

    /// A fresh signed `/files/{id}/file-preview?timestamp=…&nonce=…&sign=…` URL (relative, as
    /// Dify makes them without `FILES_URL`).
    pub fn signed_file_url(&self, upload_file_id: &str) -> String {
        self.shared
            .signer
            .upload_url(upload_file_id, Preview::File, unix_now())
    }

    /// A fresh signed `/files/{id}/image-preview?…` URL.
    pub fn signed_image_url(&self, upload_file_id: &str) -> String {
        self.shared
            .signer
            .upload_url(upload_file_id, Preview::Image, unix_now())
    }

    /// Stores a tool-made file and returns its signed `/files/tools/{id}.{extension}?…` URL.
    pub fn add_tool_file(&self, bytes: Bytes, mime_type: &str, extension: &str) -> String {
        let id = new_id();
        let file = ToolFile {
            extension: extension.to_owned(),
            mime_type: mime_type.to_owned(),
            bytes,
        };
        lock(&self.shared.store).add_tool_file(id.clone(), file);
        self.shared.signer.tool_url(&id, extension, unix_now())
    }

    /// Stops accepting connections, closes idle ones and cuts open streams and held requests.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
        self.server.abort();
    }
}
