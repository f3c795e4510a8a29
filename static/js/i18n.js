// i18n.js — every string the page shows, in one table: English and Simplified Chinese.
// The language is the app's `/site` `default_language` when Dify gives one (Dify ≥ 1.4),
// else the browser's. Numbers and dates go through Intl for that locale.

import { site } from './site.js';

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
    // Site branding (/site).
    privacyPolicy: 'Privacy policy', copyright: '© {year} {owner}',
    // The page's own notices.
    offline: 'You’re offline. Check your connection; you can send again once it’s back.',
    waitUploads: 'Please wait until your attachments finish uploading.',
    removeFailedUpload: 'Remove the attachment that failed to upload, then send again.',
    requiredEmpty: 'Some required fields are empty. Fill them in above, then send again.',
    tokensLeft: '{n} tokens left today', tokensUsedUp: 'Today’s tokens are used up; more at {time}',
    feedbackFailed: 'Your feedback wasn’t saved. {reason}',
    conversationGone: 'That conversation isn’t available. You can start a new one.',
    conversationLoadFailed: 'This conversation couldn’t be loaded. {reason}',
    earlierFailed: 'Earlier messages couldn’t be loaded. {reason}',
    reconnecting: 'Reconnecting…', details: 'Details',
    copyCode: 'Copy code', thoughtProcess: 'Thought process', thinking: 'Thinking…',
    chooseAssistant: 'Choose an assistant', switchApp: 'Switch app', allApps: 'All apps',
    modeChat: 'Chatbot', modeAdvancedChat: 'Chatflow', modeAgentChat: 'Agent',
    modeCompletion: 'Text generator', modeWorkflow: 'Workflow',
    imageBadge: 'IMG', uploading: 'Uploading {name}', removeNamed: 'Remove {name}', remove: 'Remove',
    uploaded: '{name} uploaded', uploadFailed: '“{name}” couldn’t be uploaded. {reason}',
    unsupportedFile: '“{name}” is not a supported file type.', fileTooLarge: '“{name}” is larger than {mb} MB.',
    attachLimit: 'You can attach up to {n} files.', attachLimitOne: 'You can attach up to 1 file.',
    // Errors (api.js describeError): what went wrong, in words a person can act on.
    'api.invalid_param': 'The request wasn’t accepted. Please check what you entered and try again.',
    'api.unauthorized': 'Your session has expired. Reload the page to continue.',
    'api.forbidden': 'You don’t have permission to do that.',
    'api.not_found': 'That conversation or message no longer exists.',
    'api.payload_too_large': 'That is too large to send. Try a smaller file or a shorter message.',
    'api.unsupported_media_type': 'That file type isn’t supported.',
    'api.rate_limited': 'You’re sending requests too quickly. Please wait a moment and try again.',
    'api.internal_error': 'Something went wrong on our side. Please try again.',
    'api.upstream_unavailable': 'The assistant service can’t be reached right now.',
    'api.overloaded': 'The assistant is busy right now. Please try again in a moment.',
    'api.shutting_down': 'The service is restarting. Please try again in a moment.',
    'api.upstream_timeout': 'The assistant took too long to respond. Please try again.',
    'api.offline': 'You appear to be offline. Check your connection and try again.',
    'api.network': 'The server couldn’t be reached. Check your connection and try again.',
    'api.interrupted': 'The answer was interrupted before it finished.',
    'api.bad_response': 'The server sent an unexpected response. Please try again.',
    rateWait: 'You’re sending requests too quickly. Please wait {n} seconds and try again.',
    rateWaitOne: 'You’re sending requests too quickly. Please wait 1 second and try again.',
    notAccepted: 'The request wasn’t accepted: {message}',
    couldNotComplete: 'The assistant couldn’t complete this answer.',
    couldNotCompleteWhy: 'The assistant couldn’t complete this answer. ({message})',
    // Errors (errors.js humanError): a failed answer, one sentence per Dify or dify-bff code.
    'err.provider_quota_exceeded': 'The assistant has used up its quota with the model provider. Please let the site’s administrator know.',
    'err.provider_not_initialize': 'The assistant’s model isn’t set up yet. Please let the site’s administrator know.',
    'err.model_currently_not_support': 'The assistant’s model isn’t available right now. Please let the site’s administrator know.',
    'err.completion_request_error': 'The AI model couldn’t answer this time. Please try again in a moment.',
    'err.internal_server_error': 'The assistant ran into a problem. Please try again in a moment.',
    'err.unknown': 'The assistant ran into a problem. Please try again in a moment.',
    'err.rate_limited': 'You’re sending messages too quickly. Please wait a moment and try again.',
    'err.rate_limit_error': 'The assistant is handling too many requests. Please wait a moment and try again.',
    'err.too_many_requests': 'The assistant is handling too many requests. Please wait a moment and try again.',
    'err.overloaded': 'The assistant is busy right now. Please try again in a moment.',
    'err.output_moderation': 'This answer was withheld by the content filter.',
    'err.moderation': 'This message was blocked by the content filter. Please rephrase it.',
    'err.invalid_param': 'The assistant couldn’t accept this message. Check the form fields and attachments, then try again.',
    'err.app_unavailable': 'This assistant isn’t available right now. Please let the site’s administrator know.',
    'err.not_chat_app': 'This assistant isn’t set up as a chat app. Please let the site’s administrator know.',
    'err.conversation_completed': 'This conversation has ended. Please start a new one.',
    'err.not_found': 'This conversation no longer exists. Please start a new one.',
    'err.file_too_large': 'That file is too large. Try a smaller one.',
    'err.payload_too_large': 'That is too large to send. Try a smaller file or a shorter message.',
    'err.unsupported_file_type': 'That file type isn’t supported.',
    'err.too_many_files': 'Too many files: attach fewer and try again.',
    'err.upstream_unavailable': 'The assistant service can’t be reached right now. Please try again in a moment.',
    'err.upstream_timeout': 'The assistant took too long to answer. Please try again.',
    'err.upstream_disconnected': 'The connection to the assistant broke off before the answer was complete. Please try again.',
    'err.shutting_down': 'The service is restarting. Please try again in a moment.',
    'err.interrupted': 'The answer was interrupted before it finished. Please try again.',
    'err.workflow_failed': 'The assistant’s workflow failed before it could answer.',
    'err.history_error': 'This answer failed before it was complete.',
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
    privacyPolicy: '隐私政策', copyright: '© {year} {owner}',
    offline: '您已离线。请检查网络连接，恢复后即可再次发送。',
    waitUploads: '请等待附件上传完成。',
    removeFailedUpload: '请移除上传失败的附件，然后再次发送。',
    requiredEmpty: '有必填项尚未填写。请在上方填写后再次发送。',
    tokensLeft: '今天还剩 {n} 个 token', tokensUsedUp: '今天的 token 已用完，{time} 恢复',
    feedbackFailed: '您的反馈未能保存。{reason}',
    conversationGone: '该会话不可用。您可以开始新的会话。',
    conversationLoadFailed: '无法加载此会话。{reason}',
    earlierFailed: '无法加载更早的消息。{reason}',
    reconnecting: '正在重新连接…', details: '详情',
    copyCode: '复制代码', thoughtProcess: '思考过程', thinking: '思考中…',
    chooseAssistant: '选择助手', switchApp: '切换应用', allApps: '全部应用',
    modeChat: '聊天助手', modeAdvancedChat: '对话流', modeAgentChat: 'Agent',
    modeCompletion: '文本生成', modeWorkflow: '工作流',
    imageBadge: '图片', uploading: '正在上传 {name}', removeNamed: '移除 {name}', remove: '移除',
    uploaded: '{name} 已上传', uploadFailed: '“{name}”上传失败。{reason}',
    unsupportedFile: '不支持“{name}”的文件类型。', fileTooLarge: '“{name}”超过 {mb} MB。',
    attachLimit: '最多可添加 {n} 个文件。', attachLimitOne: '最多可添加 1 个文件。',
    'api.invalid_param': '请求未被接受。请检查输入内容后重试。',
    'api.unauthorized': '您的会话已过期。请刷新页面继续。',
    'api.forbidden': '您没有执行此操作的权限。',
    'api.not_found': '该会话或消息已不存在。',
    'api.payload_too_large': '内容过大，无法发送。请换用更小的文件或更短的消息。',
    'api.unsupported_media_type': '不支持该文件类型。',
    'api.rate_limited': '您发送请求过于频繁。请稍候再试。',
    'api.internal_error': '我们这边出了问题。请重试。',
    'api.upstream_unavailable': '暂时无法连接到助手服务。',
    'api.overloaded': '助手当前繁忙。请稍后再试。',
    'api.shutting_down': '服务正在重启。请稍后再试。',
    'api.upstream_timeout': '助手响应超时。请重试。',
    'api.offline': '您似乎已离线。请检查网络连接后重试。',
    'api.network': '无法连接到服务器。请检查网络连接后重试。',
    'api.interrupted': '回答在完成前被中断。',
    'api.bad_response': '服务器返回了意外的响应。请重试。',
    rateWait: '您发送请求过于频繁。请等待 {n} 秒后重试。',
    rateWaitOne: '您发送请求过于频繁。请等待 1 秒后重试。',
    notAccepted: '请求未被接受：{message}',
    couldNotComplete: '助手未能完成此回答。',
    couldNotCompleteWhy: '助手未能完成此回答。（{message}）',
    'err.provider_quota_exceeded': '助手在模型供应商处的额度已用完。请告知网站管理员。',
    'err.provider_not_initialize': '助手的模型尚未配置。请告知网站管理员。',
    'err.model_currently_not_support': '助手的模型当前不可用。请告知网站管理员。',
    'err.completion_request_error': 'AI 模型这次未能回答。请稍后再试。',
    'err.internal_server_error': '助手遇到了问题。请稍后再试。',
    'err.unknown': '助手遇到了问题。请稍后再试。',
    'err.rate_limited': '您发送消息过于频繁。请稍候再试。',
    'err.rate_limit_error': '助手正在处理过多请求。请稍候再试。',
    'err.too_many_requests': '助手正在处理过多请求。请稍候再试。',
    'err.overloaded': '助手当前繁忙。请稍后再试。',
    'err.output_moderation': '此回答已被内容过滤器拦截。',
    'err.moderation': '此消息已被内容过滤器拦截。请换一种说法。',
    'err.invalid_param': '助手无法接受此消息。请检查表单字段和附件后重试。',
    'err.app_unavailable': '此助手当前不可用。请告知网站管理员。',
    'err.not_chat_app': '此助手未设置为聊天应用。请告知网站管理员。',
    'err.conversation_completed': '此会话已结束。请开始新的会话。',
    'err.not_found': '此会话已不存在。请开始新的会话。',
    'err.file_too_large': '文件过大。请换一个更小的文件。',
    'err.payload_too_large': '内容过大，无法发送。请换用更小的文件或更短的消息。',
    'err.unsupported_file_type': '不支持该文件类型。',
    'err.too_many_files': '文件过多：请减少附件后重试。',
    'err.upstream_unavailable': '暂时无法连接到助手服务。请稍后再试。',
    'err.upstream_timeout': '助手回答超时。请重试。',
    'err.upstream_disconnected': '回答完成前与助手的连接中断了。请重试。',
    'err.shutting_down': '服务正在重启。请稍后再试。',
    'err.interrupted': '回答在完成前被中断。请重试。',
    'err.workflow_failed': '助手的工作流在回答前失败了。',
    'err.history_error': '此回答在完成前失败了。',
  },
};

/** The table's language for a BCP 47 tag or a Dify language (`zh-Hans`, `en-US`…). */
export function pick(tag) {
  return /^zh\b/i.test(String(tag || '')) ? 'zh' : 'en';
}

let lang = pick(navigator.language);
let intlLocale = lang === 'zh' ? 'zh-CN' : (navigator.language || 'en');

export function language() { return lang; }

/** Whether the table has a string for `key` (e.g. an error code's sentence). */
export function has(key) {
  return Object.hasOwn(STRINGS.en, key);
}

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
  const settings = await site;
  return settings && typeof settings.default_language === 'string' ? settings.default_language : null;
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
