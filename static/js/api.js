// api.js — wrappers for the same-origin BFF endpoints, one ApiError type, and
// describeError(): error code → a sentence a person can act on.
//
// With several apps each app's page is /apps/{name}/ and its API lives under the same
// prefix: APP_BASE is derived from the page's own address ('' for the one-app root).

import { t } from './i18n.js';

const APP_PATH = /^\/apps\/([a-z0-9][a-z0-9-]{0,31})(?:\/|$)/.exec(location.pathname);
/** The app this page is for, when served under /apps/{name}/; null at the root. */
export const APP_NAME = APP_PATH ? APP_PATH[1] : null;
/** Prefix of this app's API paths: '/apps/{name}', or '' at the root. */
export const APP_BASE = APP_NAME ? `/apps/${APP_NAME}` : '';

/** Dify's signed file URLs ("/files/…") load through this app's own file route. */
export function appFileUrl(url) {
  return APP_BASE && typeof url === 'string' && url.startsWith('/files/') ? `${APP_BASE}${url}` : url;
}

export class ApiError extends Error {
  constructor(code, message = '', status = 0, retryAfter = null) {
    super(message || code);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter; // seconds, when the server sent Retry-After
  }
}

const CODE_BY_STATUS = {
  400: 'invalid_param', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found',
  413: 'payload_too_large', 415: 'unsupported_media_type', 429: 'rate_limited',
  500: 'internal_error', 502: 'upstream_unavailable', 503: 'overloaded', 504: 'upstream_timeout',
};

// The sentences live in i18n.js's table as `api.{code}`.
const WORDS = new Set([
  'invalid_param', 'unauthorized', 'forbidden', 'not_found', 'payload_too_large', 'unsupported_media_type',
  'rate_limited', 'internal_error', 'upstream_unavailable', 'overloaded', 'shutting_down', 'upstream_timeout',
  'offline', 'network', 'interrupted', 'bad_response',
]);

/** Plain-words description of any error thrown by this module (or a Dify stream error). */
export function describeError(err) {
  if (typeof navigator !== 'undefined' && navigator.onLine === false) return t('api.offline');
  const code = err?.code;
  if (code === 'rate_limited' && err.retryAfter) {
    const s = Math.max(1, Math.ceil(err.retryAfter));
    return s === 1 ? t('rateWaitOne') : t('rateWait', { n: s });
  }
  if (code === 'invalid_param' && err.message && err.message !== code) {
    return t('notAccepted', { message: err.message });
  }
  if (WORDS.has(code)) return t(`api.${code}`);
  // Unknown codes are Dify stream errors (e.g. provider_quota_exceeded): keep its message.
  return err?.message && err.message !== code
    ? t('couldNotCompleteWhy', { message: err.message })
    : t('couldNotComplete');
}

function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return secs;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

function errorFromBody(body, status, retryAfter) {
  const code = (body && typeof body.code === 'string' && body.code) ||
    CODE_BY_STATUS[status] || (status >= 500 ? 'internal_error' : 'invalid_param');
  const message = body && typeof body.message === 'string' ? body.message : '';
  return new ApiError(code, message, (body && body.status) || status, retryAfter);
}

async function errorFromResponse(res) {
  let body = null;
  if ((res.headers.get('content-type') || '').includes('json')) body = await res.json().catch(() => null);
  return errorFromBody(body, res.status, parseRetryAfter(res.headers.get('retry-after')));
}

/** Turn a fetch rejection into an ApiError (offline / network); AbortError passes through. */
export function networkError(err) {
  if (err?.name === 'AbortError') return err;
  const offline = typeof navigator !== 'undefined' && navigator.onLine === false;
  return new ApiError(offline ? 'offline' : 'network', err?.message || '');
}

async function send(method, path, { body, query, signal, accept = 'application/json', root = false } = {}) {
  let url = root ? path : `${APP_BASE}${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v != null && v !== '') params.set(k, String(v));
    url += `?${params}`;
  }
  const headers = { Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, {
      method, headers, signal, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw networkError(err);
  }
  if (!res.ok) throw await errorFromResponse(res);
  return res;
}

async function json(method, path, opts) {
  const res = await send(method, path, opts);
  if (res.status === 204) return null;
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError('bad_response', 'Response was not JSON', res.status);
  }
}

const seg = encodeURIComponent;

export const api = {
  /** GET /apps (several apps only): [{name, title, description, mode}]. */
  apps: () => json('GET', '/apps', { root: true }),
  info: () => json('GET', '/info'),
  parameters: () => json('GET', '/parameters'),
  conversations: (lastId) => json('GET', '/conversations', { query: { limit: 20, last_id: lastId } }),
  deleteConversation: (id) => json('DELETE', `/conversations/${seg(id)}`, { body: {} }),
  renameConversation: (id, name) => json('POST', `/conversations/${seg(id)}/name`, { body: { name } }),
  autoNameConversation: (id) => json('POST', `/conversations/${seg(id)}/name`, { body: { auto_generate: true } }),
  messages: (conversationId, firstId) =>
    json('GET', '/messages', { query: { conversation_id: conversationId, limit: 20, first_id: firstId } }),
  feedback: (messageId, rating) => json('POST', `/messages/${seg(messageId)}/feedbacks`, { body: { rating } }),
  suggested: (messageId) => json('GET', `/messages/${seg(messageId)}/suggested`),
  stopTask: (taskId) => json('POST', `/chat/${seg(taskId)}/stop`, { body: {} }),
  usage: () => json('GET', '/usage'),

  /** GET /chat/streams/{id}?offset=N: the rest of a streamed answer after a network error. */
  resumeStream: (id, offset, signal) =>
    send('GET', `/chat/streams/${seg(id)}`, { query: { offset }, signal, accept: 'text/event-stream' }),

  /** POST /chat; resolves to the streaming Response, or throws ApiError (JSON error body). */
  async chat(body, signal) {
    const res = await send('POST', '/chat', { body, signal, accept: 'text/event-stream' });
    const type = res.headers.get('content-type') || '';
    if (type.includes('text/event-stream') && res.body) return res;
    if (type.includes('json')) {
      const data = await res.json().catch(() => null);
      throw errorFromBody(data, res.status, null);
    }
    throw new ApiError('bad_response', `Unexpected content type: ${type}`, res.status);
  },
};

/**
 * Multipart upload with progress (fetch has no upload progress, so XHR).
 * Returns {promise, abort}; promise resolves to {id, name, size, extension, mime_type, ...}.
 */
export function uploadFile(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', `${APP_BASE}/files/upload`);
    xhr.withCredentials = true;
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300 && body && body.id) resolve(body);
      else reject(errorFromBody(body, xhr.status || 500, parseRetryAfter(xhr.getResponseHeader('Retry-After'))));
    });
    xhr.addEventListener('error', () => reject(networkError(new TypeError('Upload failed'))));
    xhr.addEventListener('abort', () => reject(new DOMException('Upload cancelled', 'AbortError')));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}
