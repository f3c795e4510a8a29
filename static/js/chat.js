// chat.js — the message list: user and assistant turns, Dify stream events
// applied to an assistant turn, history pages, copy buttons and auto-scroll.

import { h, icon } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { ApiError, appFileUrl, describeError } from './api.js';
import { errorContent } from './errors.js';
import { renderSources, historySources, agentAnswer } from './sources.js';
import { t, number } from './i18n.js';

/** Resolve a file URL against our origin; other origins are blocked by CSP, so link them instead. */
function fileUrl(url) {
  try {
    const u = new URL(appFileUrl(url), location.origin);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    return { href: u.href, sameOrigin: u.origin === location.origin };
  } catch {
    return null;
  }
}

function fileNode(file) {
  const loc = file && file.url ? fileUrl(file.url) : null;
  if (!loc) return null;
  if (file.type === 'image' && loc.sameOrigin) {
    return h('a', { class: 'file-image', href: loc.href, target: '_blank', rel: 'noopener noreferrer', 'aria-label': t('openImage') },
      h('img', { src: loc.href, alt: t('attachedImage'), loading: 'lazy' }));
  }
  return h('a', { class: 'file-link', href: loc.href, target: '_blank', rel: 'noopener noreferrer' },
    icon('file'), h('span', { text: file.filename || (file.type === 'image' ? t('image') : t('file')) }));
}

function formatUsage(usage) {
  if (!usage) return '';
  const parts = [];
  if (usage.total_tokens != null) parts.push(t('tokens', { n: number(Number(usage.total_tokens)) }));
  if (usage.latency != null) parts.push(t('seconds', { n: number(Number(usage.latency), { minimumFractionDigits: 1, maximumFractionDigits: 1 }) }));
  return parts.join(' · ');
}

function prettyJson(text) {
  if (text == null || text === '') return '';
  if (typeof text !== 'string') return JSON.stringify(text, null, 2);
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

/** One assistant turn. Knows how to apply Dify stream events to itself. */
class AssistantTurn {
  constructor(initial) {
    this.progressEl = h('div', { class: 'progress', hidden: true });
    this.stepsEl = h('div', { class: 'steps' });
    this.typingEl = h('div', { class: 'typing', 'aria-hidden': 'true' }, h('span'), h('span'), h('span'));
    this.answerEl = h('div', { class: 'answer markdown' });
    this.filesEl = h('div', { class: 'files' });
    this.sourcesEl = h('div', { class: 'sources-slot' });
    this.footEl = h('div', { class: 'message-foot' });
    this.suggestEl = h('div', { class: 'suggestions' });
    this.el = h('article', { class: 'message assistant', 'aria-label': t('assistant') },
      h('div', { class: 'avatar', 'aria-hidden': 'true', text: initial || 'A' }),
      h('div', { class: 'bubble' }, this.progressEl, this.stepsEl, this.typingEl, this.answerEl,
        this.sourcesEl, this.filesEl, this.footEl, this.suggestEl));
    this.reset();
  }

  reset() {
    this.answer = '';
    this.messageId = null;
    this.done = false;       // a terminal event (message_end / workflow_finished / error) arrived
    this.failed = false;
    this.steps = new Map();
    this.thoughts = new Map();
    this.nodes = [];
    clearTimeout(this.frame);
    this.frame = 0;
    this.renderedAt = 0;
    this.renderCost = 0;
    this.el.removeAttribute('data-message-id');
    this.progressEl.hidden = true;
    this.progressEl.replaceChildren();
    for (const el of [this.stepsEl, this.answerEl, this.sourcesEl, this.filesEl, this.footEl, this.suggestEl]) el.replaceChildren();
    this.el.querySelector('.error')?.remove();
    this.el.querySelector('.note')?.remove();
    this.el.querySelector('.sources')?.remove();
    this.typingEl.hidden = true;
  }

  setMessageId(id) {
    if (!id || this.messageId === id) return;
    this.messageId = id;
    this.el.dataset.messageId = id;
  }

  /** Streaming: aria-busy defers screen-reader announcements until the answer is complete. */
  setStreaming(on) {
    this.el.setAttribute('aria-busy', on ? 'true' : 'false');
    this.typingEl.hidden = !on || Boolean(this.answer);
    this.el.classList.toggle('streaming', on);
  }

  /** Re-render on the next frame; long answers back off so rendering stays under ~25% of the time. */
  setAnswer(text) {
    this.answer = text;
    this.typingEl.hidden = true;
    if (this.frame) return;
    const wait = Math.max(0, this.renderedAt + this.renderCost * 3 - performance.now());
    this.frame = setTimeout(() => requestAnimationFrame(() => this.flush()), wait);
  }

  flush() {
    clearTimeout(this.frame);
    this.frame = 0;
    const start = performance.now();
    this.answerEl.replaceChildren(renderMarkdown(this.answer));
    this.renderedAt = performance.now();
    this.renderCost = this.renderedAt - start;
    this.onRender?.();
  }

  upsertThought(th) {
    // Steps with a tool call (or an observation) are shown; a tool-less thought
    // is the answer itself, which already arrives through agent_message.
    if (th) this.thoughts.set(th.id || `p${th.position}`, th);
    if (!th || (!th.tool && !th.observation)) return;
    const key = th.id || `p${th.position}`;
    let step = this.steps.get(key);
    if (!step) {
      step = {
        summary: h('summary'),
        body: h('div', { class: 'step-body' }),
      };
      step.el = h('details', { class: 'step' }, step.summary, step.body);
      this.steps.set(key, step);
      this.stepsEl.append(step.el);
    }
    const tools = String(th.tool || '').split(';').filter(Boolean).join(', ');
    step.summary.replaceChildren(icon('tool'), h('span', { text: tools ? t('usedTools', { tools }) : t('reasoning') }));
    const parts = [];
    if (th.thought) parts.push(h('div', { class: 'markdown' }, renderMarkdown(th.thought)));
    if (th.tool_input) parts.push(h('p', { class: 'step-label', text: t('input') }), h('pre', { text: prettyJson(th.tool_input) }));
    if (th.observation) parts.push(h('p', { class: 'step-label', text: t('result') }), h('pre', { text: prettyJson(th.observation) }));
    step.body.replaceChildren(...parts);
  }

  setSources(resources) {
    const block = renderSources(resources);
    this.sourcesEl.replaceChildren(...(block ? [block] : []));
  }

  addFile(file) {
    if (file.belongs_to === 'user') return;
    const node = fileNode(file);
    if (node) { this.filesEl.append(node); this.onRender?.(); }
  }

  progress(kind, data = {}) {
    if (kind === 'node') {
      if (data.title) this.nodes.push({ id: data.node_id || data.id, title: data.title, done: false });
    } else if (kind === 'node_done') {
      const node = this.nodes.find((n) => n.id === (data.node_id || data.id) && !n.done);
      if (node) node.done = true;
    }
    const finished = kind === 'end';
    const titles = this.nodes.map((n) => n.title);
    const text = finished
      ? (this.nodes.length === 1 ? t('workflowDoneOne') : t('workflowDone', { n: this.nodes.length }))
      : `${t('running')}${titles.length ? ': ' : '…'}${titles.slice(-3).join(' › ')}`;
    this.progressEl.replaceChildren(h('span', { class: finished ? 'dot' : 'spinner', 'aria-hidden': 'true' }),
      h('span', { class: 'progress-text', text }));
    if (finished && titles.length) this.progressEl.title = titles.join(' › ');
    this.progressEl.hidden = false;
  }

  setUsage(usage) {
    const text = formatUsage(usage);
    if (!text) return;
    this.footEl.querySelector('.usage')?.remove();
    this.footEl.append(h('span', { class: 'usage', text, title: t('usageTitle') }));
  }

  /** Apply one parsed Dify stream event. */
  handleEvent(d) {
    if (d.message_id && /^(message|agent_message|message_end|message_replace|agent_thought)$/.test(d.event)) {
      this.setMessageId(d.message_id);
    }
    switch (d.event) {
      case 'message':
      case 'agent_message':
        if (d.answer) this.setAnswer(this.answer + d.answer);
        break;
      case 'message_replace':
        this.setAnswer(d.answer || '');
        break;
      case 'agent_thought':
        this.upsertThought(d);
        break;
      case 'message_file':
        this.addFile(d);
        break;
      case 'message_end':
        this.setMessageId(d.message_id || d.id);
        this.setUsage(d.metadata && d.metadata.usage);
        this.setSources(d.metadata && d.metadata.retriever_resources);
        this.done = true;
        break;
      case 'workflow_started':
        this.progress('start');
        break;
      case 'node_started':
        this.progress('node', d.data);
        break;
      case 'node_finished':
        this.progress('node_done', d.data);
        break;
      case 'workflow_finished':
        this.progress('end', d.data);
        if (d.data && d.data.status && !/^succeeded$/.test(d.data.status) && d.data.error) {
          this.showError(new ApiError('workflow_failed', d.data.error));
        }
        this.done = true;
        break;
      case 'error':
        this.showError(new ApiError(d.code || 'stream_error', d.message || '', d.status || 0));
        this.done = true;
        break;
      default:
        break; // ping, tts_message, text_chunk… are not shown
    }
  }

  /** Inline error with a Retry button (retry callback set by the controller). */
  showError(err) {
    this.failed = true;
    this.typingEl.hidden = true;
    this.el.querySelector('.error')?.remove();
    const box = h('div', { class: 'error', role: 'alert' }, errorContent(err));
    if (this.retry) {
      box.append(h('button', { type: 'button', class: 'retry', onclick: () => this.retry() },
        icon('retry'), h('span', { text: t('retry') })));
    }
    this.answerEl.after(box);
    this.onRender?.();
  }

  /** The connection dropped mid-answer and the page is fetching the rest. */
  setReconnecting(on) {
    this.el.querySelector('.reconnecting')?.remove();
    if (on) this.answerEl.after(h('p', { class: 'note reconnecting', role: 'status', text: t('reconnecting') }));
  }

  markStopped() {
    this.typingEl.hidden = true;
    this.answerEl.after(h('p', { class: 'note', text: this.answer ? t('stopped') : t('stoppedEarly') }));
  }

  /** Stream over: render the final text, show feedback/copy actions when there is an answer. */
  finish({ rating = null, onFeedback } = {}) {
    if (!this.answer && this.thoughts.size) this.answer = agentAnswer({ agent_thoughts: [...this.thoughts.values()] });
    this.flush();
    this.setStreaming(false);
    this.typingEl.hidden = true;
    if (this.answer && !this.failed) this.addActions(rating, onFeedback);
  }

  addActions(rating, onFeedback) {
    this.footEl.querySelector('.actions')?.remove();
    const copy = h('button', { type: 'button', class: 'icon-btn copy-answer', 'aria-label': t('copyAnswer'), title: t('copy') }, icon('copy'));
    copy.addEventListener('click', () => copyText(this.answer, copy));
    const actions = h('div', { class: 'actions' }, copy);
    if (this.messageId && onFeedback) {
      let current = rating;
      const like = h('button', { type: 'button', class: 'icon-btn feedback-like', 'aria-label': t('good'), title: t('good') }, icon('like'));
      const dislike = h('button', { type: 'button', class: 'icon-btn feedback-dislike', 'aria-label': t('bad'), title: t('bad') }, icon('dislike'));
      const paint = () => {
        like.setAttribute('aria-pressed', String(current === 'like'));
        dislike.setAttribute('aria-pressed', String(current === 'dislike'));
      };
      const rate = async (value) => {
        const previous = current;
        current = current === value ? null : value; // clicking the active thumb undoes it
        paint();
        try {
          await onFeedback(this.messageId, current);
        } catch (err) {
          current = previous;
          paint();
          throw err;
        }
      };
      like.addEventListener('click', () => rate('like').catch(() => {}));
      dislike.addEventListener('click', () => rate('dislike').catch(() => {}));
      paint();
      actions.append(like, dislike);
    }
    this.footEl.prepend(actions);
  }

  showSuggestions(questions, onPick) {
    this.suggestEl.replaceChildren(...questions.filter(Boolean).map((q) =>
      h('button', { type: 'button', class: 'chip suggested-question', text: q, onclick: () => onPick(q) })));
    this.onRender?.();
  }
}

async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    const area = h('textarea', { class: 'visually-hidden', 'aria-hidden': 'true' });
    area.value = text;
    document.body.append(area);
    area.select();
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    area.remove();
  }
  const label = button.getAttribute('aria-label');
  button.classList.add(ok ? 'copied' : 'copy-failed');
  if (button.classList.contains('copy-code')) button.textContent = ok ? t('copied') : t('copyFailed');
  button.setAttribute('aria-label', ok ? t('copied') : t('copyFailed'));
  setTimeout(() => {
    button.classList.remove('copied', 'copy-failed');
    if (button.classList.contains('copy-code')) button.textContent = t('copy');
    button.setAttribute('aria-label', label);
  }, 1500);
}

/**
 * createChatView({messages, scroller, jump}) — the #messages list inside the
 * scrolling pane; `jump` is the "scroll to latest" button.
 */
export function createChatView({ messages, scroller, jump }) {
  let stick = true; // follow new content unless the user scrolled up

  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
  scroller.addEventListener('scroll', () => {
    stick = atBottom();
    jump.hidden = stick;
  }, { passive: true });
  jump.addEventListener('click', () => scrollToBottom(true));

  // Copy buttons inside rendered code blocks (the markup comes from markdown.js).
  messages.addEventListener('click', (e) => {
    const button = e.target.closest('.copy-code');
    if (!button) return;
    const code = button.closest('.code-block')?.querySelector('pre code');
    if (code) copyText(code.textContent, button);
  });

  function scrollToBottom(force = false) {
    if (force) stick = true;
    if (stick) {
      scroller.scrollTop = scroller.scrollHeight;
      jump.hidden = true;
    }
  }

  function userTurn(query, attachments = []) {
    const files = attachments.map((a) => a instanceof Node ? a : fileNode(a)).filter(Boolean);
    return h('article', { class: 'message user', 'aria-label': t('you') },
      h('div', { class: 'bubble' },
        files.length ? h('div', { class: 'sent-files' }, files) : null,
        h('p', { class: 'query', text: query })));
  }

  function assistantTurn(initial) {
    const turn = new AssistantTurn(initial);
    turn.onRender = () => scrollToBottom();
    return turn;
  }

  return {
    scrollToBottom,
    clear() {
      messages.replaceChildren();
      stick = true;
      jump.hidden = true;
    },
    setLoading(on) {
      messages.querySelector('.loading')?.remove();
      if (on) messages.append(h('p', { class: 'loading', text: t('loadingConversation') }));
    },
    /** Append a user turn; `attachments` are preview nodes or Dify message_files. */
    addUser(query, attachments) {
      messages.append(userTurn(query, attachments));
      scrollToBottom(true);
    },
    addAssistant(initial) {
      const turn = assistantTurn(initial);
      messages.append(turn.el);
      scrollToBottom(true);
      return turn;
    },
    clearSuggestions() {
      for (const el of messages.querySelectorAll('.suggestions')) el.replaceChildren();
    },
    /**
     * Render a page of history (oldest first). With prepend, the page goes above
     * what is shown and the scroll position is kept. Returns the last assistant turn.
     */
    renderHistory(items, { prepend = false, initial, onFeedback, retryFor } = {}) {
      const frag = document.createDocumentFragment();
      let last = null;
      for (const m of items) {
        const userFiles = (m.message_files || []).filter((f) => f.belongs_to === 'user');
        if (m.query) frag.append(userTurn(m.query, userFiles));
        const turn = assistantTurn(initial);
        turn.onRender = null;
        turn.setMessageId(m.id);
        for (const t of m.agent_thoughts || []) turn.upsertThought(t);
        for (const f of m.message_files || []) turn.addFile(f);
        turn.answer = agentAnswer(m);
        turn.setSources(historySources(m));
        if (m.status === 'error' || m.error) {
          turn.retry = retryFor ? retryFor(m) : null;
          turn.showError(new ApiError('history_error', m.error || ''));
        }
        turn.finish({ rating: m.feedback ? m.feedback.rating : null, onFeedback });
        turn.onRender = () => scrollToBottom();
        frag.append(turn.el);
        last = turn;
      }
      if (prepend) {
        const before = scroller.scrollHeight;
        messages.prepend(frag);
        scroller.scrollTop += scroller.scrollHeight - before;
      } else {
        messages.append(frag);
        scrollToBottom(true);
      }
      return last;
    },
  };
}
