// sources.js — the knowledge an answer cites (Dify's `retriever_resources`, in `message_end`
// metadata and in history), as a closed "Sources" list under the answer. Plain text only.

import { h } from './dom.js';

/** Shows `resources` after `anchor` (replacing an earlier list); nothing when there are none. */
export function showSources(anchor, resources) {
  anchor.parentElement?.querySelector(':scope > .sources')?.remove();
  const list = Array.isArray(resources) ? resources.filter((r) => r && typeof r === 'object') : [];
  if (!list.length) return;
  const items = list
    .slice()
    .sort((a, b) => (Number(a.position) || 0) - (Number(b.position) || 0))
    .map((r) => {
      const title = String(r.document_name || r.title || r.dataset_name || 'Source');
      const from = r.dataset_name && r.dataset_name !== title ? ` · ${r.dataset_name}` : '';
      const content = String(r.content || '').trim();
      return h('li', { class: 'source' },
        h('span', { class: 'source-title', text: title }),
        from ? h('span', { class: 'source-from', text: from }) : null,
        content ? h('p', { class: 'source-content', text: content.length > 400 ? `${content.slice(0, 400)}…` : content }) : null);
    });
  anchor.after(h('details', { class: 'sources' },
    h('summary', { text: `Sources (${items.length})` }),
    h('ol', {}, items)));
}
