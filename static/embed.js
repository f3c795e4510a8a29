// embed.js — put the chat on any site allowed by EMBED_ORIGINS with one tag:
//
//   <script src="https://chat.example.com/embed.js" async
//           data-app="support" data-position="bottom-right" data-color="#1c64f2"></script>
//
// It draws a launcher bubble that opens the chat page in an iframe panel (full screen on
// phones). The panel is hidden, never destroyed, so a conversation survives closing and
// reopening; Escape closes it and focus returns to the bubble. The chat runs in the iframe,
// on the chat server's own origin: no key, token or identity is visible to this page.
(() => {
  'use strict';
  const script = document.currentScript;
  if (!script || !script.src) return;
  const origin = new URL(script.src).origin;
  const NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
  const app = script.dataset.app || '';
  const path = NAME.test(app) ? `/apps/${app}/` : '/';
  const left = script.dataset.position === 'bottom-left';
  // Only a plain colour reaches the style sheet (no `;`, `url(`, or anything else).
  const colour = /^(#[0-9a-f]{3,8}|[a-z]{3,20})$/i.test(script.dataset.color || '')
    ? script.dataset.color : '#1c64f2';
  const id = `dify-bff-${Math.random().toString(36).slice(2, 10)}`;

  const style = document.createElement('style');
  style.textContent = `
    #${id}-bubble { position: fixed; bottom: 20px; ${left ? 'left' : 'right'}: 20px;
      width: 56px; height: 56px; border-radius: 50%; border: 0; padding: 0; margin: 0;
      background: ${colour}; color: #fff; cursor: pointer; z-index: 2147483000;
      box-shadow: 0 4px 14px rgba(0,0,0,.25); display: grid; place-items: center; }
    #${id}-bubble:focus-visible { outline: 3px solid #111; outline-offset: 3px;
      box-shadow: 0 0 0 6px #fff; }
    #${id}-bubble svg { width: 28px; height: 28px; fill: none; stroke: currentColor;
      stroke-width: 2; stroke-linecap: round; stroke-linejoin: round; }
    #${id}-panel { position: fixed; bottom: 88px; ${left ? 'left' : 'right'}: 20px;
      width: min(400px, calc(100vw - 40px)); height: min(640px, calc(100vh - 108px));
      border: 0; border-radius: 12px; overflow: hidden; z-index: 2147483000;
      box-shadow: 0 8px 30px rgba(0,0,0,.3); background: #fff; }
    #${id}-panel[hidden] { display: none; }
    #${id}-panel iframe { width: 100%; height: 100%; border: 0; display: block; }
    @media (max-width: 600px) {
      #${id}-panel { inset: 0; width: 100vw; height: 100dvh; border-radius: 0; }
      #${id}-root[data-open] #${id}-bubble { top: 8px; bottom: auto; ${left ? 'left' : 'right'}: 8px;
        width: 40px; height: 40px; }
    }`;

  const root = document.createElement('div');
  root.id = `${id}-root`;
  const bubble = document.createElement('button');
  bubble.type = 'button';
  bubble.id = `${id}-bubble`;
  bubble.className = 'dify-bff-bubble';
  bubble.setAttribute('aria-controls', `${id}-panel`);
  const panel = document.createElement('div');
  panel.id = `${id}-panel`;
  panel.className = 'dify-bff-panel';
  panel.setAttribute('role', 'dialog');
  panel.hidden = true;
  let frame = null;

  const chatIcon = 'M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z';
  const closeIcon = 'M6 6l12 12M18 6L6 18';
  const zh = /^zh\b/i.test(navigator.language || '');
  const words = zh ? { open: '打开聊天', close: '关闭聊天', title: '聊天' }
    : { open: 'Open chat', close: 'Close chat', title: 'Chat' };
  panel.setAttribute('aria-label', words.title);

  function drawBubble(open) {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    const icon = document.createElementNS('http://www.w3.org/2000/svg', 'path');
    icon.setAttribute('d', open ? closeIcon : chatIcon);
    svg.appendChild(icon);
    bubble.replaceChildren(svg);
    bubble.setAttribute('aria-label', open ? words.close : words.open);
    bubble.setAttribute('aria-expanded', String(open));
    bubble.title = open ? words.close : words.open;
  }

  function open() {
    if (!frame) {
      // Created on first open: sites pay nothing for a chat nobody opens.
      frame = document.createElement('iframe');
      frame.src = origin + path;
      frame.title = words.title;
      frame.allow = 'microphone; autoplay; clipboard-write';
      frame.referrerPolicy = 'no-referrer';
      panel.appendChild(frame);
    }
    panel.hidden = false;
    root.dataset.open = '';
    drawBubble(true);
    frame.focus();
  }

  function close() {
    panel.hidden = true;
    delete root.dataset.open;
    drawBubble(false);
    bubble.focus();
  }

  bubble.addEventListener('click', () => (panel.hidden ? open() : close()));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !panel.hidden) close();
  });
  // Escape pressed inside the chat (another origin) arrives as a message from the frame.
  window.addEventListener('message', (e) => {
    if (e.origin === origin && frame && e.source === frame.contentWindow &&
        e.data && e.data.type === 'dify-bff:close' && !panel.hidden) close();
  });

  drawBubble(false);
  root.append(style, panel, bubble);
  const mount = () => document.body.appendChild(root);
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount, { once: true });
})();
