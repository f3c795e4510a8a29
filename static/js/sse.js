// sse.js — incremental Server-Sent Events parser.
// One TextDecoder in stream mode (so multi-byte characters split across chunks
// survive) plus a carried-over line buffer. Lines may end in \n, \r\n or \r,
// including a \r at the end of one chunk followed by \n at the start of the next.

/**
 * createSSEParser(onEvent) → {push(Uint8Array|string), end()}
 * onEvent({event, data, id}) is called once per event, on the blank line that ends it.
 * Events without any data line (e.g. "event: ping") are not dispatched.
 */
export function createSSEParser(onEvent) {
  const decoder = new TextDecoder('utf-8');
  let partial = '';      // text of the current, unterminated line
  let skipLF = false;    // previous line ended with \r: a leading \n belongs to it
  let dataLines = [];
  let eventName = '';
  let lastId = '';

  function dispatch() {
    if (dataLines.length) {
      const data = dataLines.join('\n');
      dataLines = [];
      const event = eventName || 'message';
      eventName = '';
      onEvent({ event, data, id: lastId });
    } else {
      eventName = '';
    }
  }

  function processLine(line) {
    if (line === '') return dispatch();
    if (line.charCodeAt(0) === 58 /* : */) return; // comment
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') dataLines.push(value);
    else if (field === 'event') eventName = value;
    else if (field === 'id' && !value.includes('\0')) lastId = value;
    // "retry" and unknown fields are ignored.
  }

  function feed(text) {
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (skipLF) {
        skipLF = false;
        if (c === 10) { start = i + 1; continue; }
      }
      if (c === 10 || c === 13) {
        processLine(partial + text.slice(start, i));
        partial = '';
        start = i + 1;
        skipLF = c === 13;
      }
    }
    partial += text.slice(start);
  }

  return {
    push(chunk) {
      feed(typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }));
    },
    /** End of stream: flush the decoder; a final unterminated event is still delivered. */
    end() {
      feed(decoder.decode());
      if (partial) { processLine(partial); partial = ''; }
      dispatch();
    },
  };
}

/**
 * Read a fetch Response body as SSE until it ends. Rejects with AbortError
 * if `signal` aborts (the reader is cancelled so the connection is released).
 */
export async function readSSE(response, onEvent, signal) {
  const reader = response.body.getReader();
  const parser = createSSEParser(onEvent);
  const cancel = () => { reader.cancel().catch(() => {}); };
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (signal?.aborted) break;
      if (done) break;
      if (value) parser.push(value);
    }
    if (!signal?.aborted) parser.end();
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
  if (signal?.aborted) throw new DOMException('The answer was stopped', 'AbortError');
}

const RESUME_ATTEMPTS = 6;

/**
 * Like readSSE, but a network error mid-answer does not end it: with the response's
 * X-Stream-Id, it asks `resume(id, offset, signal)` for the body from the bytes already
 * received (backing off 0.5 s, 1 s, 2 s … between attempts) and feeds the same parser, so
 * no token is shown twice or lost, even when the cut fell inside a line or a character.
 * `onReconnecting(true|false)` tells the page while it tries. A refused resume (404, 410, …)
 * or too many failures end it with that error.
 */
export async function readResumableSSE(response, onEvent, signal, { resume, onReconnecting } = {}) {
  const id = response.headers.get('x-stream-id');
  const parser = createSSEParser(onEvent);
  let received = 0;
  let failures = 0;
  for (;;) {
    const reader = response.body.getReader();
    const cancel = () => { reader.cancel().catch(() => {}); };
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (signal?.aborted || done) break;
        if (value) {
          received += value.length;
          failures = 0;
          parser.push(value);
        }
      }
      break;
    } catch (err) {
      if (signal?.aborted) throw new DOMException('The answer was stopped', 'AbortError');
      if (!id || !resume || failures >= RESUME_ATTEMPTS) throw err;
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
    onReconnecting?.(true);
    for (;;) {
      await pause(500 * 2 ** failures++, signal);
      try {
        response = await resume(id, received, signal);
        break;
      } catch (err) {
        if (err?.name === 'AbortError' || err?.status || failures >= RESUME_ATTEMPTS) {
          onReconnecting?.(false);
          throw err;
        }
      }
    }
    onReconnecting?.(false);
  }
  if (signal?.aborted) throw new DOMException('The answer was stopped', 'AbortError');
  parser.end();
}

function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new DOMException('The answer was stopped', 'AbortError'));
    }, { once: true });
  });
}
