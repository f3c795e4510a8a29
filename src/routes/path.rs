//! Path parameters by name, so the same handlers serve `/…` and `/apps/{name}/…` (a nested
//! route's parameters include the app's `name`, which these ignore).

use serde::Deserialize;

/// `{id}`: a conversation or message id.
#[derive(Deserialize)]
pub struct IdParam {
    pub id: String,
}

/// `{task_id}` of a generation.
#[derive(Deserialize)]
pub struct TaskIdParam {
    pub task_id: String,
}

/// `/files/{id}/{kind}`.
#[derive(Deserialize)]
pub struct FilePreviewParam {
    pub id: String,
    pub kind: String,
}

/// `/files/tools/{file}`.
#[derive(Deserialize)]
pub struct ToolFileParam {
    pub file: String,
}
