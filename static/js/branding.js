// branding.js — the app's look from Dify's WebApp settings (`/site`, Dify ≥ 1.4): title,
// icon, accent colour, copyright, privacy-policy link and disclaimer. Every value comes from
// whoever configures the Dify app, so each is checked before use: the colour must be #rgb or
// #rrggbb, links must be absolute http(s) URLs, and text goes in as text (no HTML).

import { h } from './dom.js';
import { appFileUrl } from './api.js';
import { t } from './i18n.js';

const COLOUR = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;
const text = (v) => (typeof v === 'string' ? v.trim() : '');

/** `v` when it is a #rgb / #rrggbb colour, else null. */
export function colour(v) {
  const s = text(v);
  return COLOUR.test(s) ? s : null;
}

/** `v` when it is an absolute http(s) URL, else null. */
export function httpUrl(v) {
  try {
    const url = new URL(text(v));
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

function icon(site) {
  if (site.icon_type === 'image') {
    const path = text(site.icon_url);
    const src = path.startsWith('/files/') ? appFileUrl(path) : httpUrl(path);
    return src ? h('img', { id: 'app-icon', class: 'app-icon', src, alt: '' }) : null;
  }
  const emoji = text(site.icon);
  if (!emoji || [...emoji].length > 8 || (site.icon_type && site.icon_type !== 'emoji')) return null;
  const el = h('span', { id: 'app-icon', class: 'app-icon', 'aria-hidden': 'true', text: emoji });
  const background = colour(site.icon_background);
  if (background) el.style.backgroundColor = background;
  return el;
}

/**
 * Applies `site` to the page; returns the title it set ('' when none). Without settings
 * (Dify < 1.4) it changes nothing.
 */
export function applySite(site) {
  if (!site || typeof site !== 'object') return '';
  const title = text(site.title);
  if (title) {
    document.getElementById('app-name').textContent = title;
    document.title = title;
  }

  document.getElementById('app-icon')?.remove();
  const logo = icon(site);
  if (logo) document.querySelector('.app-meta')?.before(logo);

  const accent = colour(site.chat_color_theme);
  const root = document.documentElement;
  if (accent) {
    root.style.setProperty('--brand', accent);
    root.style.setProperty('--on-brand', site.chat_color_theme_inverted === true ? '#101828' : '#ffffff');
    root.dataset.brand = '';
  }

  const disclaimer = document.getElementById('disclaimer');
  if (disclaimer) {
    disclaimer.textContent = text(site.custom_disclaimer);
    disclaimer.hidden = !disclaimer.textContent;
  }

  const footer = document.getElementById('site-footer');
  if (footer) {
    const owner = text(site.copyright);
    const privacy = httpUrl(site.privacy_policy);
    footer.replaceChildren(
      owner ? h('span', { class: 'copyright', text: t('copyright', { year: new Date().getFullYear(), owner }) }) : null,
      owner && privacy ? ' · ' : null,
      privacy ? h('a', { href: privacy, target: '_blank', rel: 'noopener noreferrer', text: t('privacyPolicy') }) : null,
    );
    footer.hidden = !footer.childNodes.length;
  }
  return title;
}
