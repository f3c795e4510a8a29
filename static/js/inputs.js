// inputs.js — the empty-chat welcome (opening statement, suggested questions)
// and the app's input form from /parameters user_input_form, with validation.

import { h } from './dom.js';
import { t } from './i18n.js';
import { renderMarkdown } from './markdown.js';

const FIELD_TYPES = ['text-input', 'paragraph', 'select', 'number'];

/** Welcome block shown on an empty chat. */
export function createWelcome({ onPick }) {
  const root = document.getElementById('welcome');
  const statement = document.getElementById('opening-statement');
  const suggestions = document.getElementById('suggested-questions');

  return {
    render(params, { name } = {}) {
      const text = (params && params.opening_statement) || '';
      statement.replaceChildren(...(text ? [renderMarkdown(text)] : []));
      statement.hidden = !text;
      const greeting = document.getElementById('welcome-greeting');
      greeting.hidden = Boolean(text);
      if (name) greeting.querySelector('.welcome-title').textContent = name;
      const questions = ((params && params.suggested_questions) || []).filter((q) => typeof q === 'string' && q.trim());
      suggestions.replaceChildren(...questions.map((q) =>
        h('button', { type: 'button', class: 'chip suggested-question', text: q, onclick: () => onPick(q) })));
      suggestions.hidden = questions.length === 0;
    },
    show(on) { root.hidden = !on; },
  };
}

/** The app input form (#inputs-form). Fields are named and id'd "input-<variable>". */
export function createInputsForm() {
  const form = document.getElementById('inputs-form');
  const fieldsEl = document.getElementById('inputs-fields');
  const summary = document.getElementById('inputs-error');
  let fields = []; // {type, config, control, error}

  form.addEventListener('submit', (e) => e.preventDefault());

  function control(type, c, id) {
    const common = { id, name: id, 'aria-describedby': `${id}-error`, required: Boolean(c.required) };
    const maxlength = c.max_length > 0 ? c.max_length : null;
    if (type === 'paragraph') return h('textarea', { ...common, rows: 3, maxlength });
    if (type === 'number') return h('input', { ...common, type: 'number', step: 'any', inputmode: 'decimal' });
    if (type === 'select') {
      const select = h('select', common,
        h('option', { value: '', text: c.required ? t('choose') : t('none') }),
        ...(c.options || []).map((o) => h('option', { value: String(o), text: String(o) })));
      return select;
    }
    return h('input', { ...common, type: 'text', maxlength, autocomplete: 'off' });
  }

  function setError(field, message) {
    field.error.textContent = message;
    field.error.hidden = !message;
    if (message) field.control.setAttribute('aria-invalid', 'true');
    else field.control.removeAttribute('aria-invalid');
  }

  return {
    /** Build the form; returns true when the app has any supported input field. */
    render(userInputForm) {
      fields = [];
      fieldsEl.replaceChildren();
      for (const entry of userInputForm || []) {
        const type = entry && FIELD_TYPES.find((t) => entry[t]);
        const c = type && entry[type];
        if (!c || !c.variable) continue; // file / external_data_tool fields are not supported here
        const id = `input-${c.variable}`;
        const ctl = control(type, c, id);
        if (c.default != null && c.default !== '') ctl.value = String(c.default);
        const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
        const label = h('label', { for: id }, h('span', { text: c.label || c.variable }),
          c.required ? h('span', { class: 'required', 'aria-hidden': 'true', text: ' *' }) : h('span', { class: 'optional', text: t('optional') }));
        const field = { type, config: c, control: ctl, error };
        ctl.addEventListener('input', () => { if (!field.error.hidden) setError(field, ''); });
        fields.push(field);
        fieldsEl.append(h('div', { class: `field field-${type}` }, label, ctl, error));
      }
      form.hidden = fields.length === 0;
      return fields.length > 0;
    },

    show(on) { form.hidden = !on || fields.length === 0; },

    /** Validate; on failure shows messages, focuses the first bad field, returns {ok:false}. */
    collect() {
      const values = {};
      let firstBad = null;
      for (const f of fields) {
        const c = f.config;
        const raw = f.control.value;
        const text = f.type === 'paragraph' ? raw : raw.trim();
        let message = '';
        if (!text) {
          if (c.required) message = `${c.label || c.variable} is required.`;
        } else if (f.type === 'number') {
          const n = Number(text);
          if (!Number.isFinite(n)) message = `${c.label || c.variable} must be a number.`;
          else values[c.variable] = n;
        } else if (c.max_length > 0 && text.length > c.max_length) {
          message = `${c.label || c.variable} must be at most ${c.max_length} characters.`;
        } else {
          values[c.variable] = text;
        }
        setError(f, message);
        if (message && !firstBad) firstBad = f;
      }
      summary.hidden = !firstBad;
      summary.textContent = firstBad ? t('fillRequired') : '';
      if (firstBad) {
        form.hidden = false;
        firstBad.control.focus();
        return { ok: false, values };
      }
      return { ok: true, values };
    },
  };
}
