// markdown.js — untrusted Markdown (answers, agent thoughts, the opening statement) → DOM.
//
// marked (static/vendor/) parses; raw HTML in the source is shown as text, never parsed.
// DOMPurify (static/vendor/) then keeps only the elements and attributes allowed below. Last,
// every link and image is checked again on its parsed value (entities decoded, as the browser
// will use it), and the page's own parts (code block header with a Copy button, table scroller,
// the reasoning block) are added with DOM calls. The result is a DocumentFragment: no string of
// HTML is ever assigned to the live document.

import { Marked } from '../vendor/marked.esm.js';
import DOMPurify from '../vendor/purify.es.mjs';
import { h } from './dom.js';
import { appFileUrl } from './api.js';
import { t } from './i18n.js';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const LANGUAGE = /^[\w+#.-]{1,30}$/;

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html({ text, block }) {
      const shown = escapeHtml(text.replace(/\n+$/, '')).replace(/\n/g, '<br>');
      return block ? `<p>${shown}</p>` : shown;
    },
    checkbox({ checked }) {
      return checked ? '☑ ' : '☐ ';
    },
    code({ text, lang }) {
      const name = (lang || '').split(/\s/)[0];
      const cls = LANGUAGE.test(name) ? ` class="language-${name}"` : '';
      return `<pre><code${cls}>${escapeHtml(text)}</code></pre>`;
    },
  },
});

/** Per element, the attributes content may carry, and the values some of them may take. */
const ATTRIBUTES = {
  a: ['href', 'title'],
  img: ['src', 'alt', 'title'],
  ol: ['start'],
  code: ['class'],
  th: ['align'],
  td: ['align'],
};
const VALUES = {
  class: /^language-[\w+#.-]{1,30}$/,
  align: /^(?:left|center|right)$/,
};

const PURIFY = {
  ALLOWED_TAGS: [
    'p', 'br', 'hr', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'ul', 'ol', 'li', 'blockquote',
    'pre', 'code', 'em', 'strong', 'del', 'a', 'img', 'table', 'thead', 'tbody', 'tr', 'th', 'td',
  ],
  ALLOWED_ATTR: [...new Set(Object.values(ATTRIBUTES).flat())],
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook('uponSanitizeAttribute', (node, data) => {
  const name = data.attrName;
  const allowed = ATTRIBUTES[node.nodeName.toLowerCase()]?.includes(name) &&
    (!VALUES[name] || VALUES[name].test(data.attrValue));
  if (!allowed) data.keepAttr = false;
});

const ALLOWED_SCHEMES = new Set(['http', 'https', 'mailto']);

/**
 * http, https, mailto and scheme-less (relative) URLs. Browsers ignore tabs, newlines and
 * control characters inside a scheme ("java\tscript:" is javascript:), so they go first.
 */
function allowedHref(url) {
  const compact = String(url ?? '').replace(/[\u0000-\u0020\u007f-\u009f]/g, '').toLowerCase();
  if (!compact) return false;
  const scheme = /^([^/?#]*?):/.exec(compact);
  return !scheme || ALLOWED_SCHEMES.has(scheme[1]);
}

/** Images load only from this origin ("/files/…"); any other image is shown as a link. */
function sameOriginPath(url) {
  const compact = String(url ?? '').replace(/[\u0000-\u0020\u007f-\u009f]/g, '');
  if (!compact.startsWith('/')) return false;
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch {
    return false;
  }
}

const link = (href, ...label) =>
  h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, ...label);

function finish(fragment) {
  for (const a of fragment.querySelectorAll('a')) {
    if (allowedHref(a.getAttribute('href'))) {
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
    } else {
      a.replaceWith(...a.childNodes);
    }
  }
  for (const img of fragment.querySelectorAll('img')) {
    const src = img.getAttribute('src');
    if (sameOriginPath(src)) {
      img.setAttribute('src', appFileUrl(src));
      img.loading = 'lazy';
    }
    else if (allowedHref(src) && !img.closest('a')) img.replaceWith(link(src, img.alt || src));
    else img.replaceWith(img.alt);
  }
  for (const pre of fragment.querySelectorAll('pre')) {
    const lang = /^language-(.+)$/.exec(pre.querySelector('code')?.className ?? '')?.[1];
    const block = h('div', { class: 'code-block' },
      h('div', { class: 'code-head' },
        h('span', { class: 'code-lang', text: lang || 'code' }),
        h('button', { type: 'button', class: 'copy-code', 'aria-label': t('copyCode'), text: t('copy') })));
    pre.replaceWith(block);
    block.append(pre);
  }
  for (const table of fragment.querySelectorAll('table')) {
    const wrap = h('div', { class: 'table-wrap' });
    table.replaceWith(wrap);
    wrap.append(table);
  }
  for (const cell of fragment.querySelectorAll('th[align], td[align]')) {
    cell.className = `align-${cell.getAttribute('align')}`;
    cell.removeAttribute('align');
  }
  return fragment;
}

function render(markdown) {
  const clean = DOMPurify.sanitize(marked.parse(markdown), PURIFY);
  if (typeof clean === 'string') return document.createTextNode(markdown); // no DOMPurify support
  return finish(clean);
}

const THINK_RE = /^\s*(?:<think>|<details[^>\n]*>\s*<summary>[^<\n]*<\/summary>)([\s\S]*?)(<\/think>|<\/details>|$)/;

/** Untrusted Markdown as a DocumentFragment of allow-listed elements, ready to append. */
export function renderMarkdown(source) {
  const text = String(source ?? '').replace(/\r\n?/g, '\n');
  // Reasoning models: "<think>…</think>" (or Dify's older "<details><summary>Thinking…")
  // at the start of an answer, shown collapsed once it is complete.
  const m = THINK_RE.exec(text);
  if (!m) return render(text);
  const done = Boolean(m[2]);
  const out = document.createDocumentFragment();
  out.append(
    h('details', { class: 'thinking', open: !done },
      h('summary', { text: done ? t('thoughtProcess') : t('thinking') }), render(m[1])),
    render(text.slice(m[0].length)));
  return out;
}
