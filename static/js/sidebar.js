// sidebar.js — conversation list (Load more, select, inline rename, delete with
// confirm) and the narrow-screen drawer behind #menu-toggle.

import { h, icon } from './dom.js';
import { api, describeError } from './api.js';
import { t } from './i18n.js';

const UNTITLED = () => t('untitled');

export function createSidebar({ onSelect, onDeleted, onError }) {
  const sidebar = document.getElementById('sidebar');
  const list = document.getElementById('conversation-list');
  const loadMore = document.getElementById('load-more');
  const empty = document.getElementById('conversation-empty');
  const toggle = document.getElementById('menu-toggle');
  const closeBtn = document.getElementById('sidebar-close');
  const scrim = document.getElementById('scrim');
  const main = document.getElementById('main');
  const narrow = window.matchMedia('(max-width: 767.98px)');

  const items = new Map(); // id → {conv, li, titleBtn}
  let activeId = null;
  let hasMore = false;
  let loading = false;

  // ---- list ---------------------------------------------------------------

  function render(conv) {
    const name = conv.name || UNTITLED();
    const titleBtn = h('button', { type: 'button', class: 'conversation-title', title: name, text: name });
    const li = h('li', { class: 'conversation', dataset: { id: conv.id } },
      titleBtn,
      h('div', { class: 'conversation-actions' },
        h('button', { type: 'button', class: 'icon-btn rename', 'aria-label': t('renameNamed', { name }), title: t('rename') }, icon('pencil')),
        h('button', { type: 'button', class: 'icon-btn delete', 'aria-label': t('deleteNamed', { name }), title: t('delete') }, icon('trash'))));
    return { conv, li, titleBtn };
  }

  function setName(entry, name) {
    entry.conv.name = name;
    const shown = name || UNTITLED();
    entry.titleBtn.textContent = shown;
    entry.titleBtn.title = shown;
    entry.li.querySelector('.rename').setAttribute('aria-label', t('renameNamed', { name: shown }));
    entry.li.querySelector('.delete').setAttribute('aria-label', t('deleteNamed', { name: shown }));
  }

  function updateEmpty() {
    empty.hidden = items.size > 0 || loading;
    loadMore.hidden = !hasMore;
  }

  async function load(reset = false) {
    if (loading) return;
    loading = true;
    loadMore.disabled = true;
    loadMore.textContent = t('loading');
    try {
      const lastId = reset || !list.lastElementChild ? undefined : list.lastElementChild.dataset.id;
      // A conversation started while this page was loading is not in it: keep it on a reset.
      const stale = reset ? new Set(items.keys()) : null;
      const page = await api.conversations(lastId);
      if (stale) {
        for (const id of stale) { items.get(id)?.li.remove(); items.delete(id); }
      }
      for (const conv of page?.data || []) {
        if (!conv || !conv.id || items.has(conv.id)) continue;
        const entry = render(conv);
        items.set(conv.id, entry);
        list.append(entry.li);
      }
      hasMore = Boolean(page?.has_more);
      setActive(activeId);
    } catch (err) {
      onError(describeError(err));
    } finally {
      loading = false;
      loadMore.disabled = false;
      loadMore.textContent = t('loadMore');
      updateEmpty();
    }
  }

  function setActive(id) {
    activeId = id || null;
    for (const [key, entry] of items) {
      const on = key === activeId;
      entry.li.classList.toggle('active', on);
      if (on) entry.titleBtn.setAttribute('aria-current', 'true');
      else entry.titleBtn.removeAttribute('aria-current');
    }
  }

  /** Insert or update a conversation; `top` moves it to the start of the list. */
  function upsert(conv, { top = false } = {}) {
    if (!conv || !conv.id) return;
    let entry = items.get(conv.id);
    if (entry) {
      Object.assign(entry.conv, conv);
      setName(entry, conv.name ?? entry.conv.name);
      if (top && !entry.li.querySelector('.rename-input')) list.prepend(entry.li);
    } else {
      entry = render(conv);
      items.set(conv.id, entry);
      if (top) list.prepend(entry.li); else list.append(entry.li);
    }
    setActive(activeId);
    updateEmpty();
  }

  // ---- rename -------------------------------------------------------------

  function startRename(entry) {
    if (entry.li.querySelector('.rename-input')) return;
    const original = entry.conv.name || '';
    const input = h('input', {
      type: 'text', class: 'rename-input', maxlength: 200, 'aria-label': t('conversationName'),
    });
    input.value = original;
    let finished = false;
    const done = async (save) => {
      if (finished) return;
      finished = true;
      const name = input.value.trim();
      input.replaceWith(entry.titleBtn);
      entry.titleBtn.focus();
      if (!save || !name || name === original) return;
      setName(entry, name);
      try {
        const conv = await api.renameConversation(entry.conv.id, name);
        if (conv && conv.name) setName(entry, conv.name);
      } catch (err) {
        setName(entry, original);
        onError(describeError(err));
      }
    };
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.isComposing) { e.preventDefault(); done(true); }
      else if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); done(false); }
    });
    input.addEventListener('blur', () => done(true));
    entry.titleBtn.replaceWith(input);
    input.focus();
    input.select();
  }

  // ---- delete -------------------------------------------------------------

  async function remove(entry) {
    const name = entry.conv.name || UNTITLED();
    if (!window.confirm(t('confirmDelete', { name }))) return;
    const button = entry.li.querySelector('.delete');
    button.disabled = true;
    try {
      await api.deleteConversation(entry.conv.id);
    } catch (err) {
      button.disabled = false;
      if (err.code !== 'not_found') { onError(describeError(err)); return; }
    }
    const next = entry.li.nextElementSibling || entry.li.previousElementSibling;
    entry.li.remove();
    items.delete(entry.conv.id);
    updateEmpty();
    (next ? next.querySelector('.conversation-title') : document.getElementById('new-chat'))?.focus();
    onDeleted(entry.conv.id);
  }

  list.addEventListener('click', (e) => {
    const li = e.target.closest('li.conversation');
    const entry = li && items.get(li.dataset.id);
    if (!entry) return;
    if (e.target.closest('.rename')) startRename(entry);
    else if (e.target.closest('.delete')) remove(entry);
    else if (e.target.closest('.conversation-title')) {
      if (narrow.matches) closeDrawer(false);
      onSelect(entry.conv);
    }
  });
  loadMore.addEventListener('click', () => load(false));

  // ---- drawer (narrow screens) ---------------------------------------------

  const isOpen = () => sidebar.classList.contains('open');

  function openDrawer() {
    sidebar.classList.add('open');
    document.body.classList.add('drawer-open');
    scrim.hidden = false;
    toggle.setAttribute('aria-expanded', 'true');
    main.inert = true;
    (sidebar.querySelector('.active .conversation-title') || document.getElementById('new-chat')).focus();
  }

  function closeDrawer(restoreFocus = true) {
    if (!isOpen()) return;
    sidebar.classList.remove('open');
    document.body.classList.remove('drawer-open');
    scrim.hidden = true;
    toggle.setAttribute('aria-expanded', 'false');
    main.inert = false;
    if (restoreFocus) toggle.focus();
  }

  toggle.addEventListener('click', () => (isOpen() ? closeDrawer() : openDrawer()));
  closeBtn.addEventListener('click', () => closeDrawer());
  scrim.addEventListener('click', () => closeDrawer());
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && isOpen()) closeDrawer();
  });
  narrow.addEventListener('change', () => { if (!narrow.matches) closeDrawer(false); });

  return {
    load,
    setActive,
    upsert,
    has: (id) => items.has(id),
    closeDrawer: () => closeDrawer(false),
    isNarrow: () => narrow.matches,
  };
}
