// route.js — the open conversation in the URL: `#/c/{conversation_id}`. A reload reopens it,
// it can be bookmarked, and back/forward move between conversations. The hash works under
// any base path (`/` or `/apps/{name}/`) and never reaches the server.

const PREFIX = '#/c/';
const ID = /^[A-Za-z0-9-]{1,64}$/;

/** The conversation id in the URL, or '' (none, or not an id). */
export function linkedConversation() {
  const hash = location.hash || '';
  if (!hash.startsWith(PREFIX)) return '';
  let id = '';
  try { id = decodeURIComponent(hash.slice(PREFIX.length)); } catch { return ''; }
  return ID.test(id) ? id : '';
}

function urlFor(id) {
  const base = `${location.pathname}${location.search}`;
  return id ? `${base}${PREFIX}${encodeURIComponent(id)}` : base;
}

/**
 * Put `id` ('' for a new chat) in the URL. `replace` rewrites the current history entry (a
 * new chat that just got its id, a link that led nowhere); otherwise a new entry is pushed,
 * so back returns to the previous conversation. Nothing happens when the URL already says so.
 */
export function showInUrl(id, { replace = false } = {}) {
  if (linkedConversation() === (id || '') && (id || !location.hash)) return;
  const url = urlFor(id);
  if (replace) history.replaceState(history.state, '', url);
  else history.pushState(null, '', url);
}

/** Calls `onChange(id)` when back/forward (or an edited hash) changes the linked conversation. */
export function onLinkChange(onChange) {
  const fire = () => onChange(linkedConversation());
  window.addEventListener('popstate', fire);
  window.addEventListener('hashchange', fire);
}
