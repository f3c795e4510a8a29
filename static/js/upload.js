// upload.js — attachments: the #attach button and hidden #file-input, count /
// size / type checks from /parameters, XHR upload with progress, canvas
// thumbnails (blob: URLs would be blocked by CSP default-src 'self'), remove.

import { h, icon } from './dom.js';
import { t } from './i18n.js';
import { uploadFile, describeError } from './api.js';

const IMAGE_ACCEPT = '.png,.jpg,.jpeg,.webp,.gif,image/png,image/jpeg,image/webp,image/gif';
const DOC_ACCEPT = '.txt,.md,.markdown,.mdx,.pdf,.html,.htm,.xlsx,.xls,.docx,.csv,.eml,.msg,.pptx,.ppt,.xml,.epub';
const THUMB = 112; // canvas pixels (shown at 56 CSS px)

function kindOf(file) {
  const type = file.type || '';
  if (/^image\/(png|jpe?g|webp|gif)$/.test(type)) return 'image';
  if (type.startsWith('audio/')) return 'audio';
  if (type.startsWith('video/')) return 'video';
  const ext = (file.name.split('.').pop() || '').toLowerCase();
  if (['png', 'jpg', 'jpeg', 'webp', 'gif'].includes(ext)) return 'image';
  if (DOC_ACCEPT.split(',').includes(`.${ext}`)) return 'document';
  return 'custom';
}

async function drawThumb(canvas, source) {
  const bitmap = source instanceof ImageBitmap ? source : await createImageBitmap(source);
  const ctx = canvas.getContext('2d');
  const scale = Math.max(THUMB / bitmap.width, THUMB / bitmap.height);
  const w = bitmap.width * scale;
  const hgt = bitmap.height * scale;
  ctx.drawImage(bitmap, (THUMB - w) / 2, (THUMB - hgt) / 2, w, hgt);
  return bitmap;
}

function thumbCanvas(label) {
  return h('canvas', { width: THUMB, height: THUMB, role: 'img', 'aria-label': label });
}

export function createUploader({ onError, onChange }) {
  const button = document.getElementById('attach');
  const input = document.getElementById('file-input');
  const list = document.getElementById('attachments');
  let cfg = { enabled: false, types: [], limit: 0, sizes: {} };
  let items = [];

  function configure(fileUpload, system) {
    const fu = fileUpload || {};
    const img = fu.image || {};
    const sys = system || {};
    const imageLocal = Boolean(img.enabled) && (img.transfer_methods || ['local_file']).includes('local_file');
    const genericMethods = fu.allowed_file_upload_methods || fu.allowed_upload_methods || img.transfer_methods || ['local_file'];
    const genericLocal = Boolean(fu.enabled) && genericMethods.includes('local_file');
    let types = [];
    if (genericLocal) types = (fu.allowed_file_types && fu.allowed_file_types.length) ? fu.allowed_file_types : ['image'];
    else if (imageLocal) types = ['image'];
    const limit = Number((genericLocal ? fu.number_limits : img.number_limits) || img.number_limits || 3);
    cfg = {
      enabled: types.length > 0,
      types,
      limit,
      extensions: (fu.allowed_file_extensions || []).map((e) => String(e).toLowerCase().replace(/^\.?/, '.')),
      sizes: {
        image: sys.image_file_size_limit, audio: sys.audio_file_size_limit,
        video: sys.video_file_size_limit, document: sys.file_size_limit, custom: sys.file_size_limit,
      },
    };
    const accept = types.map((t) => ({
      image: IMAGE_ACCEPT, document: DOC_ACCEPT, audio: 'audio/*', video: 'video/*',
      custom: cfg.extensions.join(','),
    })[t] ?? '');
    if (accept.includes('')) input.removeAttribute('accept');
    else input.setAttribute('accept', accept.join(','));
    input.multiple = limit > 1;
    const onlyImages = types.length === 1 && types[0] === 'image';
    button.setAttribute('aria-label', onlyImages ? t('attachImage') : t('attachFile'));
    button.title = onlyImages ? t('attachImage') : t('attachFile');
    button.hidden = !cfg.enabled;
  }

  function check(file, kind) {
    const allowed = cfg.types.includes(kind) ||
      (cfg.types.includes('custom') && (!cfg.extensions.length ||
        cfg.extensions.includes(`.${(file.name.split('.').pop() || '').toLowerCase()}`)));
    if (!allowed) return t('unsupportedFile', { name: file.name });
    const mb = Number(cfg.sizes[kind]);
    if (mb > 0 && file.size > mb * 1024 * 1024) return t('fileTooLarge', { name: file.name, mb });
    return '';
  }

  function renderItem(item) {
    const label = item.file.name;
    let thumb;
    if (item.kind === 'image') {
      thumb = thumbCanvas(label);
      drawThumb(thumb, item.file).then((bmp) => { item.bitmap = bmp; })
        .catch(() => thumb.replaceWith(h('span', { class: 'file-badge', text: t('imageBadge') })));
    } else {
      thumb = h('span', { class: 'file-badge', text: (label.split('.').pop() || 'file').slice(0, 4).toUpperCase() });
    }
    item.progress = h('progress', { class: 'upload-progress', max: 100, value: 0, 'aria-label': t('uploading', { name: label }) });
    item.status = h('span', { class: 'visually-hidden', 'aria-live': 'polite' });
    item.el = h('li', { class: 'attachment', dataset: { state: 'uploading' }, title: label },
      h('div', { class: 'thumb' }, thumb), item.progress, item.status,
      h('button', { type: 'button', class: 'remove', 'aria-label': t('removeNamed', { name: label }), title: t('remove'), onclick: () => remove(item) }, icon('close')));
    list.append(item.el);
  }

  function setState(item, state, message = '') {
    item.state = state;
    item.el.dataset.state = state;
    item.progress.hidden = state !== 'uploading';
    item.status.textContent = state === 'done' ? t('uploaded', { name: item.file.name }) : message;
    if (message) item.el.title = message;
    onChange?.();
  }

  function start(item) {
    const { promise, abort } = uploadFile(item.file, (fraction) => { item.progress.value = Math.round(fraction * 100); });
    item.abort = abort;
    promise.then((res) => {
      item.uploaded = res;
      setState(item, 'done');
    }).catch((err) => {
      if (err.name === 'AbortError') return;
      const message = describeError(err);
      setState(item, 'error', message);
      onError(t('uploadFailed', { name: item.file.name, reason: message }));
    });
  }

  function add(files) {
    if (!cfg.enabled) return;
    for (const file of files) {
      if (items.length >= cfg.limit) {
        onError(cfg.limit === 1 ? t('attachLimitOne') : t('attachLimit', { n: cfg.limit }));
        break;
      }
      const kind = kindOf(file);
      const problem = check(file, kind);
      if (problem) { onError(problem); continue; }
      const item = { file, kind, state: 'uploading' };
      items.push(item);
      renderItem(item);
      start(item);
    }
    list.hidden = items.length === 0;
    onChange?.();
  }

  function remove(item) {
    item.abort?.();
    item.el.remove();
    items = items.filter((i) => i !== item);
    list.hidden = items.length === 0;
    onChange?.();
    document.getElementById('composer').focus();
  }

  button.addEventListener('click', () => input.click());
  input.addEventListener('change', () => {
    add([...input.files]);
    input.value = '';
  });

  return {
    configure,
    add,
    enabled: () => cfg.enabled,
    busy: () => items.some((i) => i.state === 'uploading'),
    failed: () => items.some((i) => i.state === 'error'),
    /** Uploaded files in the shape /chat expects. */
    difyFiles: () => items.filter((i) => i.state === 'done').map((i) => ({
      type: i.kind, transfer_method: 'local_file', upload_file_id: i.uploaded.id,
    })),
    /** Preview nodes for the sent user message. */
    previews: () => items.filter((i) => i.state === 'done').map((i) => {
      if (i.kind === 'image' && i.bitmap) {
        const c = thumbCanvas(i.file.name);
        drawThumb(c, i.bitmap).catch(() => {});
        return h('span', { class: 'sent-thumb' }, c);
      }
      return h('span', { class: 'file-link' }, icon('file'), h('span', { text: i.file.name }));
    }),
    clear() {
      items = [];
      list.replaceChildren();
      list.hidden = true;
      onChange?.();
    },
  };
}
