// voice.js — voice in and out, when the app enables them in /parameters:
// speech_to_text: a microphone button records (MediaRecorder), sends the recording to
//   POST /audio-to-text and puts the text in the message box;
// text_to_speech: a play button on each finished answer (POST /text-to-audio with the
//   message id), playing the audio Dify streams back; with `autoPlay: "enabled"` the answer
//   also speaks as it streams: main.js passes on the `tts_message` events (base64 MP3 chunks,
//   ended by `tts_message_end`) as `dify-tts` DOM events, played through a MediaSource.
// It watches the message list, so the chat view needs no changes for it.

import { h, icon } from './dom.js';
import { t } from './i18n.js';

const url = (path) => new URL(path, document.baseURI);
const PLAY = 'M8 5v14l11-7z';
const MIC = 'M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5 11a7 7 0 0 0 14 0M12 18v3';

function glyph(d) {
  const svg = icon('voice');
  svg.querySelector('path').setAttribute('d', d);
  return svg;
}

async function settings() {
  try {
    const res = await fetch(url('parameters'), { credentials: 'same-origin' });
    return res.ok ? await res.json() : {};
  } catch {
    return {};
  }
}

function enabled(params, name) {
  return Boolean(params && params[name] && params[name].enabled);
}

// ---- out: a play button per answer --------------------------------------------------------

let playing = null;

async function play(button, messageId) {
  if (playing) { playing.pause(); playing = null; }
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    const res = await fetch(url('text-to-audio'), {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ message_id: messageId }),
    });
    if (!res.ok) throw new Error(`text-to-audio ${res.status}`);
    const blob = await res.blob();
    const audio = new Audio(URL.createObjectURL(blob));
    playing = audio;
    button.dataset.played = '';
    audio.addEventListener('ended', () => URL.revokeObjectURL(audio.src), { once: true });
    await audio.play().catch(() => {}); // autoplay rules may refuse: the audio is still loaded
  } catch {
    button.title = t('readAloudFailed');
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

function addPlayButtons(root) {
  for (const actions of root.querySelectorAll('.message.assistant[data-message-id] .actions')) {
    if (actions.querySelector('.play-answer')) continue;
    const id = actions.closest('.message').dataset.messageId;
    const label = t('readAloud');
    const button = h('button', { type: 'button', class: 'icon-btn play-answer', 'aria-label': label, title: label },
      glyph(PLAY));
    button.addEventListener('click', () => play(button, id));
    actions.append(button);
  }
}

// ---- out, automatically: the answer's audio as it streams -------------------------------

const MP3 = 'audio/mpeg';

function bytes(base64) {
  const raw = atob(base64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** One answer's audio: chunks appended to a MediaSource as they come (or one blob at the end). */
class StreamedAudio {
  constructor(audio, messageId) {
    this.audio = audio;
    this.messageId = messageId;
    this.queue = [];
    this.done = false;
    if (window.MediaSource && MediaSource.isTypeSupported(MP3)) {
      this.media = new MediaSource();
      this.media.addEventListener('sourceopen', () => {
        this.buffer = this.media.addSourceBuffer(MP3);
        this.buffer.addEventListener('updateend', () => this.pump());
        this.pump();
      }, { once: true });
      this.start(URL.createObjectURL(this.media));
    }
  }

  start(src) {
    this.audio.src = src;
    this.audio.play().catch(() => {}); // autoplay rules may refuse: the audio stays loaded
  }

  push(chunk) {
    this.queue.push(chunk);
    this.pump();
  }

  end() {
    this.done = true;
    if (this.media) this.pump();
    else if (this.queue.length) this.start(URL.createObjectURL(new Blob(this.queue, { type: MP3 })));
  }

  pump() {
    const { buffer, media } = this;
    if (!buffer || buffer.updating || media.readyState !== 'open') return;
    try {
      if (this.queue.length) buffer.appendBuffer(this.queue.shift());
      else if (this.done) media.endOfStream();
    } catch {
      this.queue = []; // undecodable audio: stop feeding it
    }
  }

  stop() {
    this.audio.pause();
    URL.revokeObjectURL(this.audio.src);
  }
}

function autoPlay() {
  const audio = h('audio', { id: 'tts-audio', class: 'tts-audio', hidden: true });
  audio.addEventListener('playing', () => { audio.dataset.played = ''; });
  document.body.append(audio);
  let current = null;
  document.addEventListener('dify-tts', ({ detail }) => {
    const id = detail.message_id || '';
    if (detail.event === 'tts_message' && typeof detail.audio === 'string' && detail.audio) {
      if (!current || current.messageId !== id) {
        current?.stop();
        current = new StreamedAudio(audio, id);
      }
      try { current.push(bytes(detail.audio)); } catch { /* not base64: skip the chunk */ }
    } else if (detail.event === 'tts_message_end' && current && current.messageId === id) {
      current.end();
    }
  });
}

// ---- in: a microphone button --------------------------------------------------------------

function micButton(composer) {
  const label = () => t('record');
  const button = h('button', { type: 'button', id: 'mic', class: 'icon-btn mic', 'aria-label': label(),
    title: label(), 'aria-pressed': 'false' }, glyph(MIC));
  let recorder = null;
  let chunks = [];

  async function start() {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener('dataavailable', (e) => { if (e.data.size) chunks.push(e.data); });
    recorder.addEventListener('stop', () => {
      for (const track of stream.getTracks()) track.stop();
      transcribe(new Blob(chunks, { type: recorder.mimeType || 'audio/webm' }));
    }, { once: true });
    recorder.start();
    button.setAttribute('aria-pressed', 'true');
    button.setAttribute('aria-label', t('stopRecording'));
  }

  async function transcribe(blob) {
    button.setAttribute('aria-pressed', 'false');
    button.setAttribute('aria-label', label());
    button.disabled = true;
    try {
      const type = (blob.type || 'audio/webm').split(';')[0];
      const form = new FormData();
      form.append('file', blob, `voice.${type.split('/')[1] || 'webm'}`);
      const res = await fetch(url('audio-to-text'), { method: 'POST', credentials: 'same-origin', body: form });
      if (!res.ok) throw new Error(`audio-to-text ${res.status}`);
      const { text } = await res.json();
      if (text) {
        composer.value = composer.value ? `${composer.value} ${text}` : text;
        composer.dispatchEvent(new Event('input', { bubbles: true }));
        composer.focus();
      }
    } catch {
      button.title = t('transcribeFailed');
    } finally {
      button.disabled = false;
    }
  }

  button.addEventListener('click', () => {
    if (recorder && recorder.state === 'recording') recorder.stop();
    else start().catch(() => { button.title = t('noMicrophone'); });
  });
  return button;
}

// ---- boot ---------------------------------------------------------------------------------

async function boot() {
  const params = await settings();
  const messages = document.getElementById('messages');
  if (enabled(params, 'text_to_speech') && messages) {
    addPlayButtons(messages);
    new MutationObserver(() => addPlayButtons(messages)).observe(messages, { childList: true, subtree: true });
    if (params.text_to_speech.autoPlay === 'enabled') autoPlay();
  }
  const composer = document.getElementById('composer');
  if (enabled(params, 'speech_to_text') && composer && window.MediaRecorder && navigator.mediaDevices) {
    composer.before(micButton(composer));
  }
}

boot();
