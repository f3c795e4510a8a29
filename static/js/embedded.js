// embedded.js — when the page runs inside embed.js's panel on another site: Escape asks the
// embedding page to close the panel (focus then returns to its bubble). Only this request
// crosses the frame; nothing about the user or the conversation does.

const framed = window.parent !== window;

if (framed) {
  document.documentElement.dataset.embedded = '';
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' || e.defaultPrevented) return;
    // An open menu, rename box or sidebar takes Escape first.
    if (document.querySelector('dialog[open], .sidebar.open, input.rename')) return;
    window.parent.postMessage({ type: 'dify-bff:close' }, '*');
  });
}
