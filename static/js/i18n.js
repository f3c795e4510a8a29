// i18n.js — every string the page shows, in one table: English and Simplified Chinese.
// The language is the app's `/site` `default_language` when Dify gives one (Dify ≥ 1.4),
// else the browser's. Numbers and dates go through Intl for that locale.

const STRINGS = {
  en: {
    skip: 'Skip to message box',
    dismiss: 'Dismiss notice', dismissShort: 'Dismiss',
    conversations: 'Conversations', history: 'Conversation history', recent: 'Recent',
    newChat: 'New chat', closeList: 'Close conversation list', openList: 'Open conversation list',
    close: 'Close', noConversations: 'No conversations yet.', loadMore: 'Load more', loading: 'Loading…',
    welcome: 'Welcome', welcomeSub: 'How can I help you today?', suggested: 'Suggested questions',
    beforeStart: 'Before you start', loadEarlier: 'Load earlier messages', messages: 'Messages',
    jumpLatest: 'Scroll to latest message', attachments: 'Attachments',
    attachImage: 'Attach image', attachFile: 'Attach file', message: 'Message',
    placeholder: 'Send a message…', send: 'Send message', sendShort: 'Send',
    stop: 'Stop generating', stopShort: 'Stop', hint: 'Enter to send · Shift+Enter for a new line',
    noscript: 'This chat needs JavaScript to be enabled.',
    assistant: 'Assistant', you: 'You', openImage: 'Open image', attachedImage: 'Attached image',
    image: 'Image', file: 'File', usedTools: 'Used {tools}', reasoning: 'Reasoning step',
    input: 'Input', result: 'Result', tokens: '{n} tokens', seconds: '{n} s',
    usageTitle: 'Tokens used · response time', retry: 'Retry', stopped: 'Stopped.',
    stoppedEarly: 'Stopped before an answer was written.', copyAnswer: 'Copy answer', copy: 'Copy',
    copied: 'Copied', copyFailed: 'Copy failed', good: 'Good answer', bad: 'Bad answer',
    loadingConversation: 'Loading conversation…',
    workflowDone: 'Workflow finished · {n} steps', workflowDoneOne: 'Workflow finished · 1 step',
    running: 'Running', untitled: 'New chat', rename: 'Rename', renameNamed: 'Rename “{name}”',
    delete: 'Delete', deleteNamed: 'Delete “{name}”', conversationName: 'Conversation name',
    confirmDelete: 'Delete “{name}”? This can’t be undone.',
    choose: 'Choose…', none: 'None', optional: ' (optional)',
    fillRequired: 'Please fill in the required fields above before sending.',
    sources: '{n} sources', sourcesOne: '1 source', score: 'score {n}', untitledDocument: 'Untitled document',
    readAloud: 'Read answer aloud', readAloudFailed: 'Could not read this answer aloud',
    record: 'Record a voice message', stopRecording: 'Stop recording',
    transcribeFailed: 'Could not turn the recording into text', noMicrophone: 'No microphone available',
  },
  zh: {
    skip: '跳到输入框',
    dismiss: '关闭提示', dismissShort: '关闭',
    conversations: '会话', history: '会话记录', recent: '最近',
    newChat: '新对话', closeList: '关闭会话列表', openList: '打开会话列表',
    close: '关闭', noConversations: '还没有会话。', loadMore: '加载更多', loading: '加载中…',
    welcome: '欢迎', welcomeSub: '今天有什么可以帮您？', suggested: '推荐问题',
    beforeStart: '开始之前', loadEarlier: '加载更早的消息', messages: '消息',
    jumpLatest: '滚动到最新消息', attachments: '附件',
    attachImage: '添加图片', attachFile: '添加文件', message: '消息',
    placeholder: '输入消息…', send: '发送消息', sendShort: '发送',
    stop: '停止生成', stopShort: '停止', hint: 'Enter 发送 · Shift+Enter 换行',
    noscript: '此聊天需要启用 JavaScript。',
    assistant: '助手', you: '你', openImage: '打开图片', attachedImage: '附带的图片',
    image: '图片', file: '文件', usedTools: '使用了 {tools}', reasoning: '推理步骤',
    input: '输入', result: '结果', tokens: '{n} 个 token', seconds: '{n} 秒',
    usageTitle: '使用的 token · 响应时间', retry: '重试', stopped: '已停止。',
    stoppedEarly: '在生成回答之前已停止。', copyAnswer: '复制回答', copy: '复制',
    copied: '已复制', copyFailed: '复制失败', good: '回答很好', bad: '回答不好',
    loadingConversation: '正在加载会话…',
    workflowDone: '工作流完成 · {n} 个步骤', workflowDoneOne: '工作流完成 · 1 个步骤',
    running: '运行中', untitled: '新对话', rename: '重命名', renameNamed: '重命名“{name}”',
    delete: '删除', deleteNamed: '删除“{name}”', conversationName: '会话名称',
    confirmDelete: '删除“{name}”？此操作无法撤销。',
    choose: '请选择…', none: '无', optional: '（可选）',
    fillRequired: '发送前请先填写上面的必填项。',
    sources: '{n} 个引用来源', sourcesOne: '1 个引用来源', score: '相关度 {n}', untitledDocument: '未命名文档',
    readAloud: '朗读回答', readAloudFailed: '无法朗读此回答',
    record: '录制语音', stopRecording: '停止录音',
    transcribeFailed: '无法识别录音', noMicrophone: '无法使用麦克风',
  },
};

/** The table's language for a BCP 47 tag or a Dify language (`zh-Hans`, `en-US`…). */
export function pick(tag) {
  return /^zh\b/i.test(String(tag || '')) ? 'zh' : 'en';
}

let lang = pick(navigator.language);
let intlLocale = lang === 'zh' ? 'zh-CN' : (navigator.language || 'en');

export function language() { return lang; }

/** The string for `key` in the page's language, `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** A number for this locale (grouping, decimal mark). */
export function number(n, options = {}) {
  return new Intl.NumberFormat(intlLocale, options).format(n);
}

/** A date and time for this locale. */
export function dateTime(date, options = { dateStyle: 'medium', timeStyle: 'short' }) {
  return new Intl.DateTimeFormat(intlLocale, options).format(date);
}

// The page's own markup: [selector, attribute or 'text', key].
const STATIC = [
  ['.skip-link', 'text', 'skip'],
  ['#banner-close', 'aria-label', 'dismiss'], ['#banner-close', 'title', 'dismissShort'],
  ['#sidebar', 'aria-label', 'conversations'],
  ['#new-chat', 'aria-label', 'newChat'], ['#new-chat span', 'text', 'newChat'],
  ['#sidebar-close', 'aria-label', 'closeList'], ['#sidebar-close', 'title', 'close'],
  ['.sidebar-body', 'aria-label', 'history'], ['.sidebar-heading', 'text', 'recent'],
  ['#conversation-empty', 'text', 'noConversations'], ['#load-more', 'text', 'loadMore'],
  ['#menu-toggle', 'aria-label', 'openList'],
  ['#welcome', 'aria-label', 'welcome'], ['.welcome-sub', 'text', 'welcomeSub'],
  ['#suggested-questions', 'aria-label', 'suggested'], ['#inputs-title', 'text', 'beforeStart'],
  ['#load-earlier', 'text', 'loadEarlier'], ['#messages', 'aria-label', 'messages'],
  ['#jump-latest', 'aria-label', 'jumpLatest'], ['#attachments', 'aria-label', 'attachments'],
  ['#attach', 'aria-label', 'attachImage'], ['#attach', 'title', 'attachImage'],
  ['label[for="composer"]', 'text', 'message'], ['#composer', 'placeholder', 'placeholder'],
  ['#send', 'aria-label', 'send'], ['#send', 'title', 'sendShort'],
  ['#stop', 'aria-label', 'stop'], ['#stop', 'title', 'stopShort'],
  ['#composer-hint', 'text', 'hint'],
];

function applyStatic() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const [selector, where, key] of STATIC) {
    const el = document.querySelector(selector);
    if (!el) continue;
    if (where === 'text') el.textContent = t(key);
    else el.setAttribute(where, t(key));
  }
}

/** The app's default language, from Dify's WebApp settings (none before Dify 1.4). */
async function siteLanguage() {
  try {
    const res = await fetch(new URL('site', document.baseURI), { credentials: 'same-origin' });
    if (!res.ok) return null;
    const site = await res.json();
    return typeof site.default_language === 'string' ? site.default_language : null;
  } catch {
    return null;
  }
}

/** Settles once the language is chosen and the page's own markup is in it. */
export const ready = (async () => {
  const site = await siteLanguage();
  if (site) {
    lang = pick(site);
    intlLocale = lang === 'zh' ? 'zh-CN' : site;
  }
  applyStatic();
})();
