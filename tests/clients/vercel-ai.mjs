// Drives the Vercel AI SDK (`ai`) with the community Dify provider (`dify-ai-provider` on npm)
// against dify-bff's gateway, changing only the base URL and using a placeholder key. Run by
// tests/api/gateway.rs against dify-bff in header mode (USER_HEADER = X-Forwarded-User):
//   node tests/clients/vercel-ai.mjs http://127.0.0.1:PORT/v1
// Prints one JSON line of what it saw and exits 0, or throws (exit 1) at the first surprise.
//
// The provider runs on a server and Node's fetch keeps no cookies, so each end user is named
// in the header an auth proxy would set; a conversation continues through the provider's
// `chat-id` header, and only for the user who started it.

import assert from "node:assert/strict";
import { APICallError, generateText, streamText } from "ai";
import { createDifyProvider } from "dify-ai-provider";

const base = process.argv[2];
assert.ok(base, "usage: node vercel-ai.mjs <gateway base URL>");

const as = (user) =>
  createDifyProvider({ baseURL: base, headers: { "X-Forwarded-User": user } });
const alice = as("alice@example.com");
const seen = {};

const first = await generateText({
  model: alice("chat", { apiKey: "bff", responseMode: "blocking", logger: false }),
  messages: [{ role: "user", content: "Hello" }],
});
assert.ok(first.text.length > 0, "an answer");
assert.ok(first.usage.totalTokens > 0, "Dify's usage comes through");
const conversation = first.providerMetadata?.difyWorkflowData?.conversationId;
assert.ok(conversation, "the answer names its conversation");
seen.blocking = { text: first.text.length, tokens: first.usage.totalTokens };

const second = streamText({
  model: alice("chat", { apiKey: "bff", logger: false }),
  messages: [{ role: "user", content: "And again" }],
  headers: { "chat-id": conversation },
});
let streamed = "";
for await (const part of second.textStream) streamed += part;
assert.ok(streamed.length > 0, "a streamed answer");
const meta = (await second.providerMetadata)?.difyWorkflowData;
assert.equal(meta?.conversationId, conversation, "the same conversation goes on");
assert.ok((await second.usage).totalTokens > 0);
seen.streaming = { text: streamed.length, conversation: meta.conversationId };

const bob = as("bob@example.com");
await assert.rejects(
  generateText({
    model: bob("chat", { apiKey: "bff", responseMode: "blocking", logger: false }),
    messages: [{ role: "user", content: "Let me in" }],
    headers: { "chat-id": conversation },
    maxRetries: 0,
  }),
  (e) => APICallError.isInstance(e) && e.statusCode === 404,
  "another user cannot continue alice's conversation",
);
seen.other_user = 404;

console.log(JSON.stringify({ ok: true, seen }));
