// apps.js — several Dify apps behind one server: the app picker the root page shows, and
// the switcher in an app's header. With one app neither appears.

import { h } from './dom.js';
import { api, APP_NAME } from './api.js';
import { t } from './i18n.js';

const MODES = {
  chat: 'modeChat',
  'advanced-chat': 'modeAdvancedChat',
  'agent-chat': 'modeAgentChat',
  completion: 'modeCompletion',
  workflow: 'modeWorkflow',
};

const appPath = (name) => `/apps/${encodeURIComponent(name)}/`;

/** The app list, or null when this server has one app (no /apps) or it cannot be read. */
export async function listApps() {
  try {
    const body = await api.apps();
    return Array.isArray(body?.data) ? body.data : null;
  } catch {
    return null;
  }
}

/** Replaces the chat layout with a list of the apps, each a link to its own page. */
export function renderPicker(apps) {
  document.title = t('chooseAssistant');
  document.body.dataset.view = 'picker';
  document.querySelector('.layout').hidden = true;
  document.querySelector('.skip-link').hidden = true;
  const cards = apps.map((app) =>
    h('li', {},
      h('a', { class: 'picker-card', href: appPath(app.name), dataset: { app: app.name } },
        h('span', { class: 'picker-head' },
          h('span', { class: 'picker-title', text: app.title || app.name }),
          MODES[app.mode] ? h('span', { class: 'picker-mode', text: t(MODES[app.mode]) }) : null),
        app.description ? h('span', { class: 'picker-description', text: app.description }) : null)));
  document.body.append(
    h('main', { id: 'picker', class: 'picker', 'aria-labelledby': 'picker-heading' },
      h('h1', { id: 'picker-heading', class: 'picker-heading', text: t('chooseAssistant') }),
      h('ul', { class: 'picker-list' }, cards)));
}

/** In an app's page: a menu of the other apps and a link to the picker, in the header. */
export async function addSwitcher() {
  if (!APP_NAME) return;
  const apps = await listApps();
  if (!apps || apps.length < 2) return;
  const select = h('select', { id: 'app-switch', class: 'app-switch', 'aria-label': t('switchApp') },
    apps.map((app) => h('option', { value: app.name, text: app.title || app.name, selected: app.name === APP_NAME })));
  select.addEventListener('change', () => location.assign(appPath(select.value)));
  document.querySelector('.topbar').append(
    h('div', { class: 'app-switcher' },
      select,
      h('a', { id: 'all-apps', class: 'link-btn all-apps', href: '/', text: t('allApps') })));
}
