//! Werkzeug's URL map of the 0.15.3 Service API (and the file routes outside `/v1`).

use http::Method;

use super::reqparse::percent_decode;
use super::sign::Preview;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Index,
    ChatMessages,
    ChatStop(String),
    Conversations,
    ConversationDelete(String),
    ConversationName(String),
    Messages,
    MessageFeedbacks(String),
    MessageSuggested(String),
    Parameters,
    Meta,
    Info,
    FilesUpload,
    CompletionMessages,
    CompletionStop(String),
    WorkflowsRun,
    WorkflowStop(String),
    ConversationVariables(String),
    AudioToText,
    TextToAudio,
    Site,
    ServiceFilePreview(String),
    FilePreview(String, Preview),
    ToolFile { id: String, extension: String },
}

impl Route {
    /// Routes Dify serves without an app key.
    pub(crate) fn is_public(&self) -> bool {
        matches!(
            self,
            Route::Index | Route::FilePreview(..) | Route::ToolFile { .. }
        )
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum Resolved {
    Route(Route),
    /// `OPTIONS` on a known URL, with its `Allow` list.
    Preflight(&'static str),
    /// `/v1` without its slash: Werkzeug redirects to `/v1/`.
    AddSlash,
    NotFound,
    MethodNotAllowed(&'static str),
}

const GET: &str = "GET, HEAD, OPTIONS";
const POST: &str = "OPTIONS, POST";
const DELETE: &str = "DELETE, OPTIONS";

pub(crate) fn resolve(method: &Method, raw_path: &str) -> Resolved {
    let path = percent_decode(raw_path);
    if path == "/v1" {
        return Resolved::AddSlash;
    }
    let Some((route, allow)) = match_path(&path) else {
        return Resolved::NotFound;
    };
    let wanted = match allow {
        GET => Method::GET,
        POST => Method::POST,
        _ => Method::DELETE,
    };
    if *method == Method::OPTIONS {
        Resolved::Preflight(allow)
    } else if *method == wanted || (*method == Method::HEAD && wanted == Method::GET) {
        Resolved::Route(route)
    } else {
        Resolved::MethodNotAllowed(allow)
    }
}

fn match_path(path: &str) -> Option<(Route, &'static str)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let found = match segments.as_slice() {
        ["v1", ""] => (Route::Index, GET),
        ["v1", "chat-messages"] => (Route::ChatMessages, POST),
        ["v1", "chat-messages", task, "stop"] if !task.is_empty() => {
            (Route::ChatStop((*task).to_owned()), POST)
        }
        ["v1", "conversations"] => (Route::Conversations, GET),
        ["v1", "conversations", id] => (Route::ConversationDelete(uuid_segment(id)?), DELETE),
        ["v1", "conversations", id, "name"] => (Route::ConversationName(uuid_segment(id)?), POST),
        ["v1", "messages"] => (Route::Messages, GET),
        ["v1", "messages", id, "feedbacks"] => (Route::MessageFeedbacks(uuid_segment(id)?), POST),
        ["v1", "messages", id, "suggested"] => (Route::MessageSuggested(uuid_segment(id)?), GET),
        ["v1", "parameters"] => (Route::Parameters, GET),
        ["v1", "meta"] => (Route::Meta, GET),
        ["v1", "info"] => (Route::Info, GET),
        ["v1", "files", "upload"] => (Route::FilesUpload, POST),
        ["v1", "completion-messages"] => (Route::CompletionMessages, POST),
        ["v1", "completion-messages", task, "stop"] if !task.is_empty() => {
            (Route::CompletionStop((*task).to_owned()), POST)
        }
        ["v1", "workflows", "run"] => (Route::WorkflowsRun, POST),
        ["v1", "workflows", "tasks", task, "stop"] if !task.is_empty() => {
            (Route::WorkflowStop((*task).to_owned()), POST)
        }
        ["v1", "conversations", id, "variables"] => {
            (Route::ConversationVariables(uuid_segment(id)?), GET)
        }
        ["v1", "audio-to-text"] => (Route::AudioToText, POST),
        ["v1", "text-to-audio"] => (Route::TextToAudio, POST),
        ["v1", "site"] => (Route::Site, GET),
        ["v1", "files", id, "preview"] => (Route::ServiceFilePreview(uuid_segment(id)?), GET),
        ["files", "tools", file] => {
            let (id, extension) = file.split_at_checked(36)?;
            let extension = extension.strip_prefix('.').filter(|e| !e.is_empty())?;
            (
                Route::ToolFile {
                    id: uuid_segment(id)?,
                    extension: extension.to_owned(),
                },
                GET,
            )
        }
        ["files", id, "file-preview"] => {
            (Route::FilePreview(uuid_segment(id)?, Preview::File), GET)
        }
        ["files", id, "image-preview"] => {
            (Route::FilePreview(uuid_segment(id)?, Preview::Image), GET)
        }
        _ => return None,
    };
    Some(found)
}

/// Werkzeug's `uuid` converter: hyphenated hex in any case; the id is used in lower case.
fn uuid_segment(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let shaped = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    shaped.then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "aa0483db-e114-40ab-b70f-c2128bd443fa";

    fn route(method: Method, path: &str) -> Resolved {
        resolve(&method, path)
    }

    #[test]
    fn known_routes_resolve_with_their_ids() {
        assert_eq!(route(Method::GET, "/v1/"), Resolved::Route(Route::Index));
        assert_eq!(
            route(Method::POST, "/v1/chat-messages"),
            Resolved::Route(Route::ChatMessages)
        );
        assert_eq!(
            route(Method::POST, "/v1/chat-messages/any%20task/stop"),
            Resolved::Route(Route::ChatStop("any task".to_owned()))
        );
        assert_eq!(
            route(
                Method::DELETE,
                &format!("/v1/conversations/{}", ID.to_uppercase())
            ),
            Resolved::Route(Route::ConversationDelete(ID.to_owned()))
        );
        assert_eq!(
            route(Method::HEAD, &format!("/v1/messages/{ID}/suggested")),
            Resolved::Route(Route::MessageSuggested(ID.to_owned()))
        );
        assert_eq!(
            route(Method::GET, &format!("/files/tools/{ID}.png")),
            Resolved::Route(Route::ToolFile {
                id: ID.to_owned(),
                extension: "png".to_owned()
            })
        );
        assert_eq!(
            route(Method::POST, "/v1/workflows/tasks/t1/stop"),
            Resolved::Route(Route::WorkflowStop("t1".to_owned()))
        );
        assert_eq!(
            route(Method::POST, "/v1/completion-messages/t1/stop"),
            Resolved::Route(Route::CompletionStop("t1".to_owned()))
        );
        assert_eq!(
            route(Method::GET, &format!("/v1/conversations/{ID}/variables")),
            Resolved::Route(Route::ConversationVariables(ID.to_owned()))
        );
        assert_eq!(
            route(Method::GET, &format!("/v1/files/{ID}/preview")),
            Resolved::Route(Route::ServiceFilePreview(ID.to_owned()))
        );
        assert_eq!(
            route(Method::GET, &format!("/files/{ID}/image-preview")),
            Resolved::Route(Route::FilePreview(ID.to_owned(), Preview::Image))
        );
    }

    #[test]
    fn unknown_paths_and_bad_ids_are_404() {
        for path in [
            "/v1/nope",
            "/v1/conversations/",
            "/v1/conversations/abc",
            "/v1/messages/aa0483dbe11440abb70fc2128bd443fa/feedbacks",
            "/v1/chat-messages//stop",
            "/files/tools/abc.png",
            &format!("/files/tools/{ID}"),
            "/",
        ] {
            assert_eq!(route(Method::GET, path), Resolved::NotFound, "{path}");
        }
        assert_eq!(route(Method::GET, "/v1"), Resolved::AddSlash);
    }

    #[test]
    fn wrong_methods_are_405_with_werkzeugs_allow_list() {
        assert_eq!(
            route(Method::GET, "/v1/chat-messages"),
            Resolved::MethodNotAllowed("OPTIONS, POST")
        );
        assert_eq!(
            route(Method::POST, "/v1/conversations"),
            Resolved::MethodNotAllowed("GET, HEAD, OPTIONS")
        );
        assert_eq!(
            route(Method::GET, &format!("/v1/conversations/{ID}")),
            Resolved::MethodNotAllowed("DELETE, OPTIONS")
        );
        assert_eq!(
            route(Method::OPTIONS, "/v1/chat-messages"),
            Resolved::Preflight("OPTIONS, POST")
        );
    }
}
