//! Conversations, messages and files, per end user, with Dify's paging rules.
//!
//! Tests create many rows within one second, so ordering and cursors use a sequence number that
//! grows with every change instead of the whole-second timestamps Dify compares.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use super::answers::NEW_CONVERSATION;

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    pub id: String,
    pub user: String,
    pub name: String,
    pub inputs: Value,
    pub introduction: String,
    pub created_at: i64,
    pub updated_at: i64,
    created_seq: u64,
    updated_seq: u64,
    deleted: bool,
}

impl Conversation {
    /// A list item / rename answer (captures 06, 23).
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "inputs": self.inputs,
            "status": "normal",
            "introduction": self.introduction,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MessageStatus {
    Normal,
    Error,
}

#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub id: String,
    pub conversation_id: String,
    pub user: String,
    pub inputs: Value,
    pub query: String,
    pub answer: String,
    pub status: MessageStatus,
    pub error: Option<String>,
    pub created_at: i64,
    pub feedback: Option<String>,
    pub files: Vec<MessageFile>,
    /// The knowledge the answer cited (`retriever_resources`), in the order retrieved.
    pub retriever_resources: Vec<Value>,
    seq: u64,
}

/// A file the user attached to a message.
#[derive(Debug, Clone)]
pub(crate) struct MessageFile {
    pub id: String,
    pub kind: String,
    pub transfer_method: String,
    pub upload_file_id: Option<String>,
    pub remote_url: Option<String>,
    pub filename: String,
    pub mime_type: String,
    pub size: i64,
}

/// A file received by `POST /v1/files/upload`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedFile {
    pub id: String,
    pub name: String,
    pub size: usize,
    pub extension: String,
    pub mime_type: String,
    /// The end user's internal id, as Dify reports it.
    pub created_by: String,
    pub created_at: i64,
    /// The `user` the upload came with.
    pub user: String,
    pub bytes: Bytes,
}

/// A file a tool made, served at `/files/tools/{id}.{extension}`.
#[derive(Debug, Clone)]
pub(crate) struct ToolFile {
    pub extension: String,
    pub mime_type: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SortBy {
    CreatedAt,
    CreatedAtDesc,
    UpdatedAt,
    UpdatedAtDesc,
}

pub(crate) const SORT_CHOICES: [&str; 4] =
    ["created_at", "-created_at", "updated_at", "-updated_at"];

impl SortBy {
    pub(crate) fn parse(s: &str) -> Option<SortBy> {
        match s {
            "created_at" => Some(SortBy::CreatedAt),
            "-created_at" => Some(SortBy::CreatedAtDesc),
            "updated_at" => Some(SortBy::UpdatedAt),
            "-updated_at" => Some(SortBy::UpdatedAtDesc),
            _ => None,
        }
    }
}

/// The cursor row (`last_id` / `first_id`) does not exist for this user.
#[derive(Debug, PartialEq)]
pub(crate) struct CursorNotFound;

/// One page: the rows after the cursor in `ordered`, at most `limit`, and whether more follow.
fn page_after<T: Clone>(ordered: &[T], cursor: Option<usize>, limit: usize) -> (Vec<T>, bool) {
    let rest = match cursor {
        Some(pos) => ordered.get(pos + 1..).unwrap_or(&[]),
        None => ordered,
    };
    let page: Vec<T> = rest.iter().take(limit).cloned().collect();
    let has_more = page.len() == limit && rest.len() > limit;
    (page, has_more)
}

#[derive(Default)]
pub(crate) struct Store {
    seq: u64,
    answers: u64,
    end_users: HashMap<String, String>,
    conversations: HashMap<String, Conversation>,
    messages: HashMap<String, Message>,
    uploads: HashMap<String, UploadedFile>,
    tool_files: HashMap<String, ToolFile>,
}

impl Store {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Numbers the answers the model gives (`answer #N`).
    pub(crate) fn next_answer_number(&mut self) -> u64 {
        self.answers += 1;
        self.answers
    }

    /// The end user's internal id, created on first sight as Dify does.
    pub(crate) fn end_user_id(&mut self, user: &str) -> String {
        self.end_users
            .entry(user.to_owned())
            .or_insert_with(new_id)
            .clone()
    }

    /// A live conversation of this user.
    pub(crate) fn conversation(&self, user: &str, id: &str) -> Option<&Conversation> {
        self.conversations
            .get(id)
            .filter(|c| c.user == user && !c.deleted)
    }

    pub(crate) fn create_conversation(
        &mut self,
        user: &str,
        inputs: Value,
        introduction: String,
    ) -> String {
        let seq = self.next_seq();
        let now = unix_now();
        let id = new_id();
        self.conversations.insert(
            id.clone(),
            Conversation {
                id: id.clone(),
                user: user.to_owned(),
                name: NEW_CONVERSATION.to_owned(),
                inputs,
                introduction,
                created_at: now,
                updated_at: now,
                created_seq: seq,
                updated_seq: seq,
                deleted: false,
            },
        );
        id
    }

    /// Renames a live conversation of this user; returns the updated item.
    pub(crate) fn rename(&mut self, user: &str, id: &str, name: String) -> Option<Value> {
        let seq = self.next_seq();
        let conversation = self
            .conversations
            .get_mut(id)
            .filter(|c| c.user == user && !c.deleted)?;
        conversation.name = name;
        conversation.updated_at = unix_now();
        conversation.updated_seq = seq;
        Some(conversation.to_json())
    }

    /// The title Dify's background task gives a new conversation after its first answer.
    pub(crate) fn set_generated_name(&mut self, conversation_id: &str, name: String) {
        let seq = self.next_seq();
        if let Some(conversation) = self
            .conversations
            .get_mut(conversation_id)
            .filter(|c| !c.deleted && c.name == NEW_CONVERSATION)
        {
            conversation.name = name;
            conversation.updated_at = unix_now();
            conversation.updated_seq = seq;
        }
    }

    /// Soft-deletes a live conversation of this user.
    pub(crate) fn delete_conversation(&mut self, user: &str, id: &str) -> bool {
        match self
            .conversations
            .get_mut(id)
            .filter(|c| c.user == user && !c.deleted)
        {
            Some(conversation) => {
                conversation.deleted = true;
                true
            }
            None => false,
        }
    }

    pub(crate) fn list_conversations(
        &self,
        user: &str,
        sort: SortBy,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Conversation>, bool), CursorNotFound> {
        let mut rows: Vec<&Conversation> = self
            .conversations
            .values()
            .filter(|c| c.user == user && !c.deleted)
            .collect();
        match sort {
            SortBy::CreatedAt => rows.sort_by_key(|c| c.created_seq),
            SortBy::CreatedAtDesc => rows.sort_by_key(|c| std::cmp::Reverse(c.created_seq)),
            SortBy::UpdatedAt => rows.sort_by_key(|c| c.updated_seq),
            SortBy::UpdatedAtDesc => rows.sort_by_key(|c| std::cmp::Reverse(c.updated_seq)),
        }
        let cursor = match last_id {
            Some(id) => Some(rows.iter().position(|c| c.id == id).ok_or(CursorNotFound)?),
            None => None,
        };
        let (page, has_more) = page_after(&rows, cursor, limit);
        Ok((page.into_iter().cloned().collect(), has_more))
    }

    pub(crate) fn add_message(
        &mut self,
        user: &str,
        conversation_id: &str,
        inputs: Value,
        query: String,
        files: Vec<MessageFile>,
    ) -> (String, i64) {
        let seq = self.next_seq();
        let id = new_id();
        let created_at = unix_now();
        self.messages.insert(
            id.clone(),
            Message {
                id: id.clone(),
                conversation_id: conversation_id.to_owned(),
                user: user.to_owned(),
                inputs,
                query,
                answer: String::new(),
                status: MessageStatus::Normal,
                error: None,
                created_at,
                feedback: None,
                files,
                retriever_resources: Vec::new(),
                seq,
            },
        );
        (id, created_at)
    }

    /// Stores the sources an answer cites.
    pub(crate) fn set_retriever_resources(&mut self, id: &str, resources: Vec<Value>) {
        if let Some(message) = self.messages.get_mut(id) {
            message.retriever_resources = resources;
        }
    }

    /// Stores how an answer ended.
    pub(crate) fn finish_message(&mut self, id: &str, answer: String, error: Option<String>) {
        if let Some(message) = self.messages.get_mut(id) {
            message.answer = answer;
            message.status = if error.is_some() {
                MessageStatus::Error
            } else {
                MessageStatus::Normal
            };
            message.error = error;
        }
    }

    /// Messages of a conversation: the newest `limit` before `first_id`, oldest first.
    pub(crate) fn list_messages(
        &self,
        conversation_id: &str,
        first_id: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), CursorNotFound> {
        let mut rows: Vec<&Message> = self
            .messages
            .values()
            .filter(|m| m.conversation_id == conversation_id)
            .collect();
        rows.sort_by_key(|m| std::cmp::Reverse(m.seq));
        let cursor = match first_id {
            Some(id) => Some(rows.iter().position(|m| m.id == id).ok_or(CursorNotFound)?),
            None => None,
        };
        let (mut page, has_more) = page_after(&rows, cursor, limit);
        page.reverse();
        Ok((page.into_iter().cloned().collect(), has_more))
    }

    /// The first query of a conversation, for naming it.
    pub(crate) fn first_query(&self, conversation_id: &str) -> Option<String> {
        self.messages
            .values()
            .filter(|m| m.conversation_id == conversation_id)
            .min_by_key(|m| m.seq)
            .map(|m| m.query.clone())
    }

    /// A message of this user (the conversation may have been deleted, as in Dify 0.15).
    pub(crate) fn message_mut(&mut self, user: &str, id: &str) -> Option<&mut Message> {
        self.messages.get_mut(id).filter(|m| m.user == user)
    }

    pub(crate) fn add_upload(&mut self, file: UploadedFile) {
        self.uploads.insert(file.id.clone(), file);
    }

    pub(crate) fn upload(&self, id: &str) -> Option<&UploadedFile> {
        self.uploads.get(id)
    }

    pub(crate) fn add_tool_file(&mut self, id: String, file: ToolFile) {
        self.tool_files.insert(id, file);
    }

    pub(crate) fn tool_file(&self, id: &str) -> Option<&ToolFile> {
        self.tool_files.get(id)
    }
}

#[cfg(test)]
mod tests;
