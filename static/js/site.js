// site.js — Dify's WebApp settings (`GET site`, Dify ≥ 1.4), asked for once per page: the
// language (i18n.js) and the branding (branding.js) both come from it. null before Dify 1.4
// (404) or when it cannot be read; the page then keeps /info's name and its own look.

export const site = (async () => {
  try {
    const res = await fetch(new URL('site', document.baseURI), { credentials: 'same-origin' });
    if (!res.ok) return null;
    const body = await res.json();
    return body && typeof body === 'object' && !Array.isArray(body) ? body : null;
  } catch {
    return null;
  }
})();
