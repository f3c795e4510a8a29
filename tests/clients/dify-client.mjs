// Drives Dify's official Node SDK (`dify-client` on npm) against dify-bff's gateway, changing
// only the base URL and using a placeholder key. Run by tests/api/gateway.rs:
//   node tests/clients/dify-client.mjs http://127.0.0.1:PORT/v1
// Prints one JSON line of what it saw and exits 0, or throws (exit 1) at the first surprise.
//
// A browser keeps dify-bff's identity cookie by itself; a Node program must keep it, as here
// (or run dify-bff in header mode behind its auth proxy). The `user` the SDK sends is ignored.

import assert from "node:assert/strict";
import axios from "axios";
import { ChatClient } from "dify-client";

const base = process.argv[2];
assert.ok(base, "usage: node dify-client.mjs <gateway base URL>");

let cookie = null;
axios.interceptors.request.use((config) => {
  if (cookie) config.headers.set("Cookie", cookie);
  return config;
});
axios.interceptors.response.use((response) => {
  const set = response.headers["set-cookie"];
  if (set && set.length) cookie = set[0].split(";")[0];
  return response;
});

const client = new ChatClient("bff", base);
const user = "sdk-user-ignored-by-the-gateway";

async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

function events(text) {
  return text
    .split("\n\n")
    .map((block) => block.split("\n").find((l) => l.startsWith("data: ")))
    .filter(Boolean)
    .map((line) => JSON.parse(line.slice(6)));
}

const seen = {};

const parameters = await client.getApplicationParameters(user);
assert.equal(parameters.status, 200);
assert.ok("opening_statement" in parameters.data);
seen.parameters = true;

const blocking = await client.createChatMessage({}, "Hello from the SDK", user, false);
assert.equal(blocking.status, 200);
assert.ok(blocking.data.answer.length > 0);
const conversationId = blocking.data.conversation_id;
const messageId = blocking.data.message_id;
seen.blocking = blocking.data.answer;

const streaming = await client.createChatMessage({}, "And streamed?", user, true, conversationId);
assert.equal(streaming.status, 200);
assert.match(streaming.headers["content-type"], /^text\/event-stream/);
const streamed = events(await readAll(streaming.data));
assert.equal(streamed.at(-1).event, "message_end");
assert.equal(streamed[0].conversation_id, conversationId);
seen.streamed_events = streamed.length;

const conversations = await client.getConversations(user);
assert.deepEqual(
  conversations.data.data.map((c) => c.id),
  [conversationId],
);

const history = await client.getConversationMessages(user, conversationId);
assert.equal(history.data.data.length, 2);
assert.equal(history.data.data[0].id, messageId);
seen.history = history.data.data.length;

const renamed = await client.renameConversation(conversationId, "Renamed by the SDK", user, false);
assert.equal(renamed.data.name, "Renamed by the SDK");

const feedback = await client.messageFeedback(messageId, "like", user);
assert.deepEqual(feedback.data, { result: "success" });

const form = new FormData();
form.append("user", user);
form.append("file", new Blob([Buffer.from("hello from node")], { type: "text/plain" }), "note.txt");
const upload = await client.fileUpload(form);
assert.equal(upload.status, 201);
assert.equal(upload.data.name, "note.txt");
seen.upload = upload.data.id;

const deleted = await client.deleteConversation(conversationId, user);
assert.ok(deleted.status < 300);
const after = await client.getConversations(user);
assert.deepEqual(after.data.data, []);

console.log(JSON.stringify({ ok: true, ...seen }));
