// errors.js — what a failed answer shows: one short sentence per known Dify or dify-bff
// error code (dify-protocol.md §2.4, §5), and the raw code and message behind a "Details"
// toggle. The API relays Dify's code and message unchanged; only the page words them.

import { describeError } from './api.js';
import { h } from './dom.js';
import { has, t } from './i18n.js';

// The sentences live in i18n.js's table as `err.{code}`, in every language the page speaks.
const human = (code) => (has(`err.${code}`) ? t(`err.${code}`) : null);

/** A short sentence for `err` (an ApiError or a Dify stream error). */
export function humanError(err) {
  const code = err?.code;
  if (code === 'rate_limited' && err.retryAfter) return describeError(err);
  if (code === 'invalid_param' && /too many requests/i.test(err?.message || '')) return human('too_many_requests');
  if (code === 'invalid_param' && /moderat|sensitive/i.test(err?.message || '')) return human('moderation');
  return (typeof code === 'string' && human(code)) || describeError(err);
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
      h('summary', { text: t('details') }),
      h('code', { class: 'error-raw', text: detail })));
  }
  return parts;
}
