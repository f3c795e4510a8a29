// markdown.js — small, safe Markdown → HTML renderer.
// Safety model: the whole input is HTML-escaped FIRST; every rule below then
// works on the escaped text and can only add the fixed tags it writes itself.
// No raw HTML ever passes through; link/image URLs go through an allowlist.
//
// Supported: paragraphs (single newlines become <br>), headings, bold, italic,
// strike, inline code, fenced code blocks (with a Copy button), ordered /
// unordered (nested) lists, blockquotes, rules, pipe tables, links, bare URLs,
// same-origin images, and a leading <think>…</think> block (shown collapsed).

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const UNESCAPES = { amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function unescapeHtml(text) {
  return text.replace(/&(amp|lt|gt|quot|#39);/g, (_, name) => UNESCAPES[name]);
}

const ALLOWED_SCHEMES = new Set(['http', 'https', 'mailto']);

/**
 * Given an (escaped) URL, return it escaped and safe for an attribute, or null.
 * Allowed: http, https, mailto and scheme-less (relative) URLs. Browsers ignore
 * tabs/newlines/control characters inside a scheme, so those are removed before
 * the scheme is read ("java\tscript:" is still javascript:).
 */
export function safeUrl(escapedUrl) {
  const raw = unescapeHtml(escapedUrl).trim();
  if (!raw) return null;
  const compact = raw.replace(/[\u0000-\u0020\u007f-\u009f]/g, '').toLowerCase();
  const scheme = /^([^/?#]*?):/.exec(compact);
  if (scheme && !ALLOWED_SCHEMES.has(scheme[1])) return null;
  return escapeHtml(raw);
}

function isSameOriginPath(url) {
  const raw = unescapeHtml(url);
  return raw.startsWith('/') && !raw.startsWith('//') && !raw.startsWith('/\\');
}

function link(href, labelHtml) {
  return `<a href="${href}" target="_blank" rel="noopener noreferrer">${labelHtml}</a>`;
}

// ---- inline ---------------------------------------------------------------

const URL_PART = '((?:[^()\\s]|\\([^()\\s]*\\))+)';
const TITLE_PART = '(?:\\s+&quot;[^\\n]*?&quot;)?';
const IMAGE_RE = new RegExp(`!\\[([^\\]\\n]*)\\]\\(\\s*${URL_PART}${TITLE_PART}\\s*\\)`, 'g');
const LINK_RE = new RegExp(`\\[([^\\]\\n]+)\\]\\(\\s*${URL_PART}${TITLE_PART}\\s*\\)`, 'g');
const SLOT_RE = /\u0000(\d+)\u0000/g;

function emphasis(s) {
  return s
    .replace(/\*\*([^\s*](?:[\s\S]*?[^\s*])?)\*\*/g, '<strong>$1</strong>')
    .replace(/(^|[^\w])__([^\s_](?:[\s\S]*?[^\s_])?)__(?!\w)/g, '$1<strong>$2</strong>')
    .replace(/\*([^\s*](?:[^*]*?[^\s*])?)\*/g, '<em>$1</em>')
    .replace(/(^|[^\w])_([^\s_](?:[^_]*?[^\s_])?)_(?!\w)/g, '$1<em>$2</em>')
    .replace(/~~([^\s~](?:[\s\S]*?[^\s~])?)~~/g, '<del>$1</del>');
}

/** Inline Markdown on already-escaped text. */
function inline(text) {
  const slots = [];
  const put = (html) => `\u0000${slots.push(html) - 1}\u0000`;
  let s = text;

  // Code spans first: their content is literal.
  s = s.replace(/(`+)([^`\n]|[^`\n][\s\S]*?[^`])\1(?!`)/g, (_, ticks, code) =>
    put(`<code>${code.replace(/^ (.*) $/s, '$1')}</code>`));
  // Backslash escapes of Markdown punctuation.
  s = s.replace(/\\([\\`*_{}[\]()#+\-.!|~])/g, (_, c) => put(c));

  s = s.replace(IMAGE_RE, (_, alt, url) => {
    const href = safeUrl(url);
    const altText = alt.replace(SLOT_RE, '');
    if (href && isSameOriginPath(href)) return put(`<img src="${href}" alt="${altText}" loading="lazy">`);
    if (href) return put(link(href, altText || href));
    return put(altText);
  });
  s = s.replace(LINK_RE, (_, label, url) => {
    const href = safeUrl(url);
    return put(href ? link(href, emphasis(label)) : emphasis(label));
  });
  // Bare http(s) URLs. Trailing punctuation / closing quotes stay outside the link.
  s = s.replace(/(^|[\s(]|&lt;)(https?:\/\/[^\s\u0000]+)/g, (_, pre, url) => {
    let tail = '';
    for (;;) {
      const m = /(?:[.,;:!?)*_~]|&gt;|&quot;|&#39;)$/.exec(url);
      if (!m) break;
      tail = m[0] + tail;
      url = url.slice(0, -m[0].length);
    }
    const href = url.length > 8 ? safeUrl(url) : null;
    return pre + (href ? put(link(href, url)) : url) + tail;
  });

  s = emphasis(s);
  // Restore slots (they may nest: a link label can hold a code span).
  for (let i = 0; i < 5 && s.includes('\u0000'); i++) s = s.replace(SLOT_RE, (_, n) => slots[n]);
  return s;
}

// ---- blocks ---------------------------------------------------------------

const FENCE_RE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)/;
const HEADING_RE = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR_RE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE_RE = /^ {0,3}&gt; ?/;
const LIST_RE = /^([ \t]*)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const TABLE_SEP_RE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

const indentOf = (line) => line.match(/^[ \t]*/)[0].replace(/\t/g, '    ').length;
const isBlank = (line) => !line.trim();

function isTableStart(lines, i) {
  return lines[i].includes('|') && i + 1 < lines.length && lines[i + 1].includes('|') &&
    TABLE_SEP_RE.test(lines[i + 1]);
}

function startsBlock(lines, i) {
  const line = lines[i];
  return FENCE_RE.test(line) || HEADING_RE.test(line) || HR_RE.test(line) || QUOTE_RE.test(line) ||
    LIST_RE.test(line) || isTableStart(lines, i);
}

function splitRow(line) {
  let s = line.trim().replace(/\\\|/g, '\u0001');
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|')) s = s.slice(0, -1);
  return s.split('|').map((cell) => cell.replace(/\u0001/g, '|').trim());
}

function codeBlock(code, lang) {
  const label = lang || 'code';
  const cls = lang ? ` class="language-${lang}"` : '';
  return '<div class="code-block"><div class="code-head">' +
    `<span class="code-lang">${label}</span>` +
    '<button type="button" class="copy-code" aria-label="Copy code">Copy</button></div>' +
    `<pre><code${cls}>${code}</code></pre></div>`;
}

function table(lines, i) {
  const head = splitRow(lines[i]);
  const aligns = splitRow(lines[i + 1]).map((c) =>
    c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : c.startsWith(':') ? 'left' : '');
  const cell = (tag, text, col) => {
    const a = aligns[col] ? ` class="align-${aligns[col]}"` : '';
    return `<${tag}${a}>${inline(text)}</${tag}>`;
  };
  let html = '<div class="table-wrap"><table><thead><tr>' +
    head.map((c, col) => cell('th', c, col)).join('') + '</tr></thead><tbody>';
  let j = i + 2;
  for (; j < lines.length && !isBlank(lines[j]) && lines[j].includes('|'); j++) {
    const cells = splitRow(lines[j]);
    html += '<tr>' + head.map((_, col) => cell('td', cells[col] ?? '', col)).join('') + '</tr>';
  }
  return [html + '</tbody></table></div>', j];
}

function list(lines, i) {
  const first = LIST_RE.exec(lines[i]);
  const base = indentOf(lines[i]);
  const ordered = /\d/.test(first[2]);
  const items = [];
  let item = null;
  const sibling = (m, line) => m && indentOf(line) <= base + 1 && /\d/.test(m[2]) === ordered;

  while (i < lines.length) {
    const line = lines[i];
    const m = LIST_RE.exec(line);
    if (sibling(m, line)) {
      item = { lines: [m[3] || ''], indent: indentOf(line) + m[2].length + 1 };
      items.push(item);
      i++;
      continue;
    }
    if (m && indentOf(line) <= base + 1) break; // a different kind of list starts
    if (isBlank(line)) {
      let j = i + 1;
      while (j < lines.length && isBlank(lines[j])) j++;
      if (j < lines.length && (sibling(LIST_RE.exec(lines[j]), lines[j]) || indentOf(lines[j]) > base + 1)) {
        if (!sibling(LIST_RE.exec(lines[j]), lines[j])) item.lines.push('');
        i = j;
        continue;
      }
      break;
    }
    const ind = indentOf(line);
    if (ind > base + 1) {
      item.lines.push(line.replace(/\t/g, '    ').slice(Math.min(ind, item.indent)));
    } else if (!isBlank(item.lines[item.lines.length - 1]) && !startsBlock(lines, i)) {
      item.lines.push(line.trim()); // lazy continuation
    } else {
      break;
    }
    i++;
  }
  const start = ordered ? parseInt(first[2], 10) : 1;
  const open = ordered ? (start !== 1 ? `<ol start="${start}">` : '<ol>') : '<ul>';
  const body = items.map((it) => `<li>${blocks(it.lines, !it.lines.some(isBlank))}</li>`).join('');
  return [`${open}${body}${ordered ? '</ol>' : '</ul>'}`, i];
}

function blocks(lines, tight = false) {
  let out = '';
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (isBlank(line)) { i++; continue; }

    if ((m = FENCE_RE.exec(line))) {
      const fence = m[1];
      const lang = /^[\w+#.-]{1,30}$/.test(m[2]) ? m[2] : '';
      const indent = indentOf(line);
      const close = new RegExp(`^ {0,3}${fence[0] === '`' ? '`' : '~'}{${fence.length},}[ \\t]*$`);
      const dedent = new RegExp(`^ {0,${indent}}`);
      const code = [];
      i++;
      while (i < lines.length && !close.test(lines[i])) {
        code.push(indent ? lines[i].replace(dedent, '') : lines[i]);
        i++;
      }
      i++; // closing fence (or end of input while streaming)
      out += codeBlock(code.join('\n'), lang);
      continue;
    }
    if ((m = HEADING_RE.exec(line))) {
      const level = m[1].length;
      out += `<h${level}>${inline(m[2] || '')}</h${level}>`;
      i++;
      continue;
    }
    if (HR_RE.test(line)) { out += '<hr>'; i++; continue; }
    if (QUOTE_RE.test(line)) {
      const inner = [];
      while (i < lines.length && (QUOTE_RE.test(lines[i]) ||
        (!isBlank(lines[i]) && inner.length && !isBlank(inner[inner.length - 1]) && !startsBlock(lines, i)))) {
        inner.push(lines[i].replace(QUOTE_RE, ''));
        i++;
      }
      out += `<blockquote>${blocks(inner)}</blockquote>`;
      continue;
    }
    if (isTableStart(lines, i)) {
      const [html, next] = table(lines, i);
      out += html;
      i = next;
      continue;
    }
    if (LIST_RE.test(line)) {
      const [html, next] = list(lines, i);
      out += html;
      i = next;
      continue;
    }
    const para = [line.trim()];
    i++;
    while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines, i)) para.push(lines[i++].trim());
    const html = inline(para.join('\n')).replace(/\n/g, '<br>');
    out += tight ? html : `<p>${html}</p>`;
  }
  return out;
}

function renderEscaped(text) {
  return blocks(escapeHtml(text).split('\n'));
}

/** Render untrusted Markdown to an HTML string that is safe to assign to innerHTML. */
export function renderMarkdown(source) {
  let text = String(source ?? '').replace(/\r\n?/g, '\n').replace(/\u0000/g, '\uFFFD');
  let thinking = '';
  // Reasoning models: "<think>…</think>" (or Dify's older "<details><summary>Thinking…")
  // at the start of an answer. Its content is rendered through the same escaping.
  const m = /^\s*(?:<think>|<details[^>\n]*>\s*<summary>[^<\n]*<\/summary>)([\s\S]*?)(<\/think>|<\/details>|$)/.exec(text);
  if (m) {
    const done = Boolean(m[2]);
    thinking = `<details class="thinking"${done ? '' : ' open'}><summary>${done ? 'Thought process' : 'Thinking…'}</summary>` +
      `${renderEscaped(m[1])}</details>`;
    text = text.slice(m[0].length);
  }
  return thinking + renderEscaped(text);
}
