// sources.js — what an answer was built from: the knowledge snippets Dify retrieved
// (`retriever_resources`, live from `message_end` and from history) as expandable citations,
// and the answer of an agent turn whose `answer` Dify left empty.

import { h } from './dom.js';
import { t, number } from './i18n.js';

/** The citations block for `resources`, or null when there are none. */
export function renderSources(resources) {
  const list = (Array.isArray(resources) ? resources : []).filter((r) => r && typeof r === 'object');
  if (!list.length) return null;
  const items = list.map((r, i) => {
    const name = String(r.document_name || r.dataset_name || t('untitledDocument'));
    const head = [h('span', { class: 'source-name', text: `${i + 1}. ${name}` })];
    if (typeof r.score === 'number') {
      head.push(h('span', { class: 'source-score', text: t('score', { n: number(r.score, { maximumFractionDigits: 2, minimumFractionDigits: 2 }) }) }));
    }
    return h('li', { class: 'source' },
      h('details', {},
        h('summary', {}, ...head),
        h('p', { class: 'source-snippet', text: String(r.content || '') })));
  });
  const label = list.length === 1 ? t('sourcesOne') : t('sources', { n: number(list.length) });
  return h('details', { class: 'sources' },
    h('summary', { text: label }),
    h('ol', { class: 'source-list' }, ...items));
}

/** Retrieved resources of a history message (top level, or in `metadata` on newer Dify). */
export function historySources(m) {
  return m.retriever_resources || (m.metadata && m.metadata.retriever_resources) || [];
}

/**
 * An agent run that ends in free text instead of a "Final Answer" action leaves `answer`
 * empty with the text in its thoughts: the thoughts that are not tool steps are the answer.
 */
export function agentAnswer(m) {
  if (m.answer) return m.answer;
  const thoughts = (m.agent_thoughts || []).slice().sort((a, b) => (a.position || 0) - (b.position || 0));
  const said = thoughts.filter((t) => t.thought && !t.tool && !t.observation).map((t) => t.thought);
  if (said.length) return said.join('\n\n');
  const last = thoughts[thoughts.length - 1];
  return (last && last.thought) || '';
}
