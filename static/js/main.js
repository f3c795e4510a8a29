/*
 * dify-bff chat page — entry module. No build step, no framework.
 *
 * Module layout (static/js/):
 *   main.js      boot, app state and wiring: send / stop / retry, new chat,
 *                open conversation, load earlier, banner, offline notice
 *   api.js       same-origin fetch/XHR wrappers for the BFF, ApiError,
 *                describeError() (error code → plain words)
 *   sse.js       streaming SSE parser (one TextDecoder + line buffer) and reader
 *   markdown.js  Markdown → sanitized DOM (vendored marked + DOMPurify)
 *   chat.js      #messages view: user / assistant turns, Dify events → DOM,
 *                history pages, feedback, copy, auto-scroll
 *   sidebar.js   conversation list, Load more, rename, delete, mobile drawer
 *   inputs.js    welcome (opening statement, suggestions) and #inputs-form
 *   upload.js    attachments: checks, upload with progress, thumbnails
 *   apps.js      several apps: the picker at /, the app switcher in the header
 *   dom.js       tiny element builder and SVG icons
 *   route.js     the open conversation in the URL (#/c/{id}): reload, bookmarks, back/forward
 *   errors.js    a failed answer in plain words, the raw error behind "Details"
 *   site.js      Dify's WebApp settings (/site), fetched once
 *   branding.js  title, icon, accent colour, footer and disclaimer from /site
 */

import { api, ApiError, APP_NAME, describeError } from './api.js';
import { addSwitcher, listApps, renderPicker } from './apps.js';
import { readResumableSSE } from './sse.js';
import { createChatView } from './chat.js';
import { createSidebar } from './sidebar.js';
import { createWelcome, createInputsForm } from './inputs.js';
import { createUploader } from './upload.js';
import './embedded.js';
import './voice.js';
import { ready as languageChosen, t, number, dateTime } from './i18n.js';
import { site } from './site.js';
import { applySite } from './branding.js';
import { linkedConversation, showInUrl, onLinkChange } from './route.js';

const $ = (id) => document.getElementById(id);
const composer = $('composer');
const sendBtn = $('send');
const stopBtn = $('stop');
const loadEarlierBtn = $('load-earlier');
const formError = $('form-error');

const state = {
  params: {},
  initial: 'A',             // assistant avatar letter (from the app name)
  conversationId: '',       // '' = new conversation
  conversationInputs: {},
  firstId: null,            // oldest message id shown, for "Load earlier"
  stream: null,             // {controller, taskId, stopped, detached}
  view: 0,                  // bumps on every conversation switch; stale responses are ignored
  needsTitle: new Set(),    // conversations created here that still need an auto title
};

// ---- banner ---------------------------------------------------------------

let bannerKind = '';
function showBanner(text, kind = 'error') {
  bannerKind = kind;
  $('banner-text').textContent = text;
  $('banner').dataset.kind = kind;
  $('banner').hidden = false;
}
function hideBanner(kind) {
  if (kind && kind !== bannerKind) return;
  $('banner').hidden = true;
  bannerKind = '';
}
$('banner-close').addEventListener('click', () => hideBanner());

function updateOnline() {
  if (navigator.onLine === false) showBanner(t('offline'), 'offline');
  else hideBanner('offline');
}
window.addEventListener('online', updateOnline);
window.addEventListener('offline', updateOnline);

function showFormError(text) {
  formError.textContent = text;
  formError.hidden = !text;
}

// ---- views ----------------------------------------------------------------

const chat = createChatView({ messages: $('messages'), scroller: $('scroller'), jump: $('jump-latest') });
const welcome = createWelcome({ onPick: (q) => send(q) });
const inputsForm = createInputsForm();
const uploader = createUploader({ onError: (text) => showFormError(text), onChange: () => updateComposer() });
const sidebar = createSidebar({
  onSelect: (conv) => openConversation(conv),
  onDeleted: (id) => { if (id === state.conversationId) newChat({ replace: true }); },
  onError: (text) => showBanner(text),
});

// ---- composer ---------------------------------------------------------------

function autosize() {
  composer.style.height = 'auto';
  composer.style.height = `${Math.min(composer.scrollHeight, 240)}px`;
}

function updateComposer() {
  const streaming = Boolean(state.stream);
  sendBtn.disabled = streaming || !composer.value.trim() || uploader.busy();
}

function setStreaming(on) {
  document.body.dataset.state = on ? 'streaming' : 'idle';
  const hadFocus = document.activeElement === composer || document.activeElement === sendBtn;
  const stopHadFocus = document.activeElement === stopBtn;
  composer.disabled = on;
  $('attach').disabled = on;
  sendBtn.hidden = on;
  stopBtn.hidden = !on;
  updateComposer();
  if (on && hadFocus) stopBtn.focus();
  if (!on && (stopHadFocus || document.activeElement === document.body)) composer.focus();
}

composer.addEventListener('input', () => { autosize(); updateComposer(); if (!formError.hidden) showFormError(''); });
composer.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    send();
  }
});
composer.addEventListener('paste', (e) => {
  const files = [...(e.clipboardData?.files || [])];
  if (files.length && uploader.enabled()) { e.preventDefault(); uploader.add(files); }
});
$('composer-form').addEventListener('submit', (e) => { e.preventDefault(); send(); });
$('composer-form').addEventListener('dragover', (e) => { if (uploader.enabled()) e.preventDefault(); });
$('composer-form').addEventListener('drop', (e) => {
  if (!uploader.enabled() || !e.dataTransfer?.files?.length) return;
  e.preventDefault();
  uploader.add([...e.dataTransfer.files]);
});
stopBtn.addEventListener('click', stop);
$('new-chat').addEventListener('click', () => { newChat(); sidebar.closeDrawer(); composer.focus(); });
loadEarlierBtn.addEventListener('click', loadEarlier);

// ---- sending and streaming ------------------------------------------------

function send(text) {
  const query = (text ?? composer.value).trim();
  if (state.stream) return;
  if (!query) { composer.focus(); return; }
  if (navigator.onLine === false) { updateOnline(); return; }
  if (uploader.busy()) { showFormError(t('waitUploads')); return; }
  if (uploader.failed()) { showFormError(t('removeFailedUpload')); return; }
  let inputs = state.conversationInputs || {};
  if (!state.conversationId) {
    const result = inputsForm.collect();
    if (!result.ok) { showFormError(t('requiredEmpty')); return; }
    inputs = result.values;
  }
  showFormError('');
  hideBanner('error');

  const request = { query, conversation_id: state.conversationId, inputs, response_mode: 'streaming' };
  const files = uploader.difyFiles();
  if (files.length) request.files = files;

  welcome.show(false);
  inputsForm.show(false);
  chat.clearSuggestions();
  if (state.conversationId && sidebar.has(state.conversationId)) sidebar.upsert({ id: state.conversationId }, { top: true });
  chat.addUser(query, uploader.previews());
  uploader.clear();
  if (text === undefined) { composer.value = ''; autosize(); }
  stream(request, chat.addAssistant(state.initial));
}

function retry(request, turn) {
  if (state.stream) return;
  turn.reset();
  // If the failed attempt already created the conversation, continue in it.
  stream({ ...request, conversation_id: state.conversationId || request.conversation_id }, turn);
}

function stop() {
  const s = state.stream;
  if (!s) return;
  s.stopped = true;
  if (s.taskId) api.stopTask(s.taskId).catch(() => {});
  s.controller.abort();
}

/** Stop reading the current stream without telling the server (used when switching away). */
function detach() {
  const s = state.stream;
  if (!s) return;
  s.detached = true;
  s.controller.abort();
  state.stream = null;
  setStreaming(false);
}

async function stream(request, turn) {
  const view = state.view;
  const s = { controller: new AbortController(), taskId: null, stopped: false, detached: false, conversationId: request.conversation_id };
  state.stream = s;
  turn.retry = () => retry(request, turn);
  turn.setStreaming(true);
  setStreaming(true);

  const onEvent = ({ event, data }) => {
    if (event === 'ping' || !data) return;
    let d;
    try { d = JSON.parse(data); } catch { return; }
    if (!d || typeof d !== 'object' || !d.event || d.event === 'ping') return;
    if (d.task_id) s.taskId = d.task_id;
    if (d.conversation_id && !s.conversationId) {
      s.conversationId = d.conversation_id;
      adoptConversation(view, d.conversation_id, request);
    }
    if (d.event === 'tts_message' || d.event === 'tts_message_end') {
      document.dispatchEvent(new CustomEvent('dify-tts', { detail: d })); // voice.js plays it
    }
    turn.handleEvent(d);
  };

  try {
    const res = await api.chat(request, s.controller.signal);
    await readResumableSSE(res, onEvent, s.controller.signal, {
      resume: api.resumeStream,
      onReconnecting: (on) => turn.setReconnecting(on),
    });
    if (!turn.done) turn.showError(new ApiError('interrupted'));
  } catch (err) {
    if (s.detached) return;
    if (err.name === 'AbortError') turn.markStopped();
    else turn.showError(err);
  } finally {
    if (!s.detached) {
      state.stream = null;
      turn.finish({ onFeedback: (id, rating) => rateMessage(id, rating) });
      setStreaming(false);
    }
  }
  showBudget();
  if (s.detached || view !== state.view) return;
  const ok = turn.done && !turn.failed && !s.stopped;
  if (s.conversationId && state.needsTitle.has(s.conversationId) && (ok || s.stopped) && turn.answer) {
    autoTitle(s.conversationId);
  }
  if (ok && turn.messageId && state.params.suggested_questions_after_answer?.enabled) {
    api.suggested(turn.messageId)
      .then((res) => { if (view === state.view && res?.data?.length) turn.showSuggestions(res.data, (q) => send(q)); })
      .catch(() => {});
  }
}

/** With TOKEN_BUDGET_PER_DAY set, what is left of today's tokens, under the composer. */
async function showBudget() {
  const el = document.getElementById('budget-left');
  if (!el) return;
  try {
    const u = await api.usage();
    if (!u || !u.tokens_budget) { el.hidden = true; return; }
    const left = Math.max(0, u.tokens_budget - u.tokens_used);
    const resets = dateTime(new Date(u.resets_at * 1000), { hour: '2-digit', minute: '2-digit' });
    el.textContent = left > 0
      ? t('tokensLeft', { n: number(left) })
      : t('tokensUsedUp', { time: resets });
    el.hidden = false;
  } catch {
    el.hidden = true;
  }
}

function adoptConversation(view, id, request) {
  if (!request.conversation_id) {
    state.needsTitle.add(id);
    sidebar.upsert({ id, name: request.query.slice(0, 60), inputs: request.inputs }, { top: true });
  }
  if (view !== state.view || state.conversationId) return;
  state.conversationId = id;
  state.conversationInputs = request.inputs || {};
  sidebar.setActive(id);
  showInUrl(id, { replace: true });
}

async function autoTitle(id) {
  state.needsTitle.delete(id);
  try {
    const conv = await api.autoNameConversation(id);
    if (conv && conv.name) sidebar.upsert({ ...conv, id });
  } catch {
    /* keep the provisional title (the first question) */
  }
}

async function rateMessage(id, rating) {
  try {
    await api.feedback(id, rating);
  } catch (err) {
    showBanner(t('feedbackFailed', { reason: describeError(err) }));
    throw err;
  }
}

// ---- conversations ----------------------------------------------------------

/** `url: false` leaves the URL alone (boot, back/forward); `replace` drops a dead link. */
function newChat({ url = true, replace = false } = {}) {
  if (url) showInUrl('', { replace });
  detach();
  state.view++;
  state.conversationId = '';
  state.conversationInputs = {};
  state.firstId = null;
  sidebar.setActive(null);
  chat.clear();
  loadEarlierBtn.hidden = true;
  welcome.show(true);
  inputsForm.show(true);
  showFormError('');
}

function renderPage(page, prepend) {
  const items = (page && page.data) || [];
  if (items.length) state.firstId = items[0].id;
  loadEarlierBtn.hidden = !(page && page.has_more);
  chat.renderHistory(items, {
    prepend,
    initial: state.initial,
    onFeedback: (id, rating) => rateMessage(id, rating),
    retryFor: (m) => (m.query ? () => send(m.query) : null),
  });
}

async function openConversation(conv, { fromUrl = false } = {}) {
  if (conv.id === state.conversationId && !state.stream) return;
  if (!fromUrl) showInUrl(conv.id);
  detach();
  const view = ++state.view;
  state.conversationId = conv.id;
  state.conversationInputs = conv.inputs || {};
  state.firstId = null;
  sidebar.setActive(conv.id);
  welcome.show(false);
  inputsForm.show(false);
  showFormError('');
  loadEarlierBtn.hidden = true;
  chat.clear();
  chat.setLoading(true);
  try {
    const page = await api.messages(conv.id);
    if (view !== state.view) return;
    chat.setLoading(false);
    renderPage(page, false);
  } catch (err) {
    if (view !== state.view) return;
    chat.setLoading(false);
    if (err.status === 404 || err.code === 'not_found' || err.code === 'invalid_param') {
      // Unknown, deleted or someone else's: the empty state, and the link is forgotten.
      newChat({ replace: true });
      showBanner(t('conversationGone'));
      return;
    }
    showBanner(t('conversationLoadFailed', { reason: describeError(err) }));
  }
}

async function loadEarlier() {
  if (!state.conversationId || !state.firstId) return;
  const view = state.view;
  loadEarlierBtn.disabled = true;
  loadEarlierBtn.textContent = t('loading');
  try {
    const page = await api.messages(state.conversationId, state.firstId);
    if (view === state.view) renderPage(page, true);
  } catch (err) {
    if (view === state.view) showBanner(t('earlierFailed', { reason: describeError(err) }));
  } finally {
    loadEarlierBtn.disabled = false;
    loadEarlierBtn.textContent = t('loadEarlier');
  }
}

// ---- boot -----------------------------------------------------------------

async function boot() {
  await languageChosen;
  document.body.dataset.state = 'idle';
  updateOnline();
  autosize();
  updateComposer();
  newChat({ url: false });
  const linked = linkedConversation();
  if (linked) openConversation({ id: linked }, { fromUrl: true });
  onLinkChange((id) => {
    if (id === state.conversationId) return;
    if (id) openConversation({ id }, { fromUrl: true });
    else newChat({ url: false });
  });
  const [info, params] = await Promise.allSettled([api.info(), api.parameters(), sidebar.load(true)]);
  showBudget();

  // With several apps the root serves none: it is the app picker.
  if (!APP_NAME && info.status === 'rejected' && info.reason?.code === 'not_found') {
    const apps = await listApps();
    if (apps) {
      hideBanner();
      renderPicker(apps);
      return;
    }
  }
  addSwitcher();

  let name = '';
  if (info.status === 'fulfilled' && info.value) {
    name = String(info.value.name || '').trim();
    const description = String(info.value.description || '').trim();
    if (name) {
      $('app-name').textContent = name;
      document.title = name;
      state.initial = [...name][0].toUpperCase();
    }
    $('app-description').textContent = description;
    $('app-description').hidden = !description;
  }
  // Dify's WebApp settings (≥ 1.4) name and brand the page over /info.
  const title = applySite(await site);
  if (title) {
    name = title;
    state.initial = [...title][0].toUpperCase();
  }

  if (params.status === 'fulfilled' && params.value) {
    state.params = params.value;
    inputsForm.render(state.params.user_input_form);
    uploader.configure(state.params.file_upload, state.params.system_parameters);
  }
  welcome.render(state.params, { name });
  inputsForm.show(!state.conversationId);

  const failed = [info, params].find((r) => r.status === 'rejected');
  if (failed) showBanner(describeError(failed.reason));
}

boot();
