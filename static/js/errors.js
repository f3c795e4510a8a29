// errors.js — what a failed answer shows: one short sentence per known Dify or dify-bff
// error code (dify-protocol.md §2.4, §5), and the raw code and message behind a "Details"
// toggle. The API relays Dify's code and message unchanged; only the page words them.

import { describeError } from './api.js';
import { h } from './dom.js';

const HUMAN = {
  // The model provider (Dify's settings, not the user's doing).
  provider_quota_exceeded: 'The assistant has used up its quota with the model provider. Please let the site’s administrator know.',
  provider_not_initialize: 'The assistant’s model isn’t set up yet. Please let the site’s administrator know.',
  model_currently_not_support: 'The assistant’s model isn’t available right now. Please let the site’s administrator know.',
  completion_request_error: 'The AI model couldn’t answer this time. Please try again in a moment.',
  internal_server_error: 'The assistant ran into a problem. Please try again in a moment.',
  unknown: 'The assistant ran into a problem. Please try again in a moment.',
  // Limits.
  rate_limited: 'You’re sending messages too quickly. Please wait a moment and try again.',
  rate_limit_error: 'The assistant is handling too many requests. Please wait a moment and try again.',
  too_many_requests: 'The assistant is handling too many requests. Please wait a moment and try again.',
  overloaded: 'The assistant is busy right now. Please try again in a moment.',
  // Content and input.
  output_moderation: 'This answer was withheld by the content filter.',
  moderation: 'This message was blocked by the content filter. Please rephrase it.',
  invalid_param: 'The assistant couldn’t accept this message. Check the form fields and attachments, then try again.',
  app_unavailable: 'This assistant isn’t available right now. Please let the site’s administrator know.',
  not_chat_app: 'This assistant isn’t set up as a chat app. Please let the site’s administrator know.',
  conversation_completed: 'This conversation has ended. Please start a new one.',
  not_found: 'This conversation no longer exists. Please start a new one.',
  file_too_large: 'That file is too large. Try a smaller one.',
  payload_too_large: 'That is too large to send. Try a smaller file or a shorter message.',
  unsupported_file_type: 'That file type isn’t supported.',
  too_many_files: 'Too many files: attach fewer and try again.',
  // The way to Dify.
  upstream_unavailable: 'The assistant service can’t be reached right now. Please try again in a moment.',
  upstream_timeout: 'The assistant took too long to answer. Please try again.',
  upstream_disconnected: 'The connection to the assistant broke off before the answer was complete. Please try again.',
  shutting_down: 'The service is restarting. Please try again in a moment.',
  interrupted: 'The answer was interrupted before it finished. Please try again.',
  workflow_failed: 'The assistant’s workflow failed before it could answer.',
  history_error: 'This answer failed before it was complete.',
};

/** A short sentence for `err` (an ApiError or a Dify stream error). */
export function humanError(err) {
  const code = err?.code;
  if (code === 'rate_limited' && err.retryAfter) return describeError(err);
  if (code === 'invalid_param' && /too many requests/i.test(err?.message || '')) return HUMAN.too_many_requests;
  if (code === 'invalid_param' && /moderat|sensitive/i.test(err?.message || '')) return HUMAN.moderation;
  return HUMAN[code] || describeError(err);
}

/** The raw detail for the "Details" toggle, or '' when there is nothing more to say. */
export function errorDetail(err) {
  const code = err?.code === 'history_error' ? '' : err?.code || '';
  const message = err?.message && err.message !== code ? err.message : '';
  const status = err?.status ? ` (${err.status})` : '';
  if (!code && !message) return '';
  if (!code) return message;
  return message ? `${code}${status}: ${message}` : `${code}${status}`;
}

/** `<p class="error-text">` plus a closed `<details>` with the raw code and message. */
export function errorContent(err) {
  const parts = [h('p', { class: 'error-text', text: humanError(err) })];
  const detail = errorDetail(err);
  if (detail) {
    parts.push(h('details', { class: 'error-details' },
      h('summary', { text: 'Details' }),
      h('code', { class: 'error-raw', text: detail })));
  }
  return parts;
}
