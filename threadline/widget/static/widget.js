/*
 * Threadline chat widget. A page embeds it with
 *
 *   <script src="https://<server>/widget.js" data-app="<app id>" async></script>
 *
 * and, to tie the visitor to the site's own user, data-user-id="<id>" plus
 * data-user-hash="<hex HMAC-SHA256 of the id, keyed with the app's widget secret>".
 * Without them the visitor is anonymous and kept in localStorage.
 *
 * Plain JavaScript, no build step. Everything lives in an open shadow root, so the page's
 * styles do not leak in and ours do not leak out. Text is only ever set with textContent;
 * the one markup shown is a part's `body_html` (cleaned by the server), rebuilt here from
 * an allowlist of formatting elements, never assigned as HTML.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.dataset.app || window.__threadlineWidget) return;
  window.__threadlineWidget = true;

  var BASE = script.src.replace(/\/widget\.js([?#].*)?$/, "");
  var APP = script.dataset.app;
  var SITE_USER = script.dataset.userId || null;
  var SITE_USER_HASH = script.dataset.userHash || null;
  // The widget's title is the site's to set (the server tells no one an app's name).
  var TITLE = script.dataset.title || null;
  var STORAGE_KEY = "threadline:" + BASE + ":" + APP + ":" + (SITE_USER ? "u:" + SITE_USER : "anon");

  // Reconnection waits (seconds), then the last one again; a little jitter spreads the herd.
  var BACKOFF = [1, 2, 4, 8, 15];
  // The server pings every 25 s; this much silence means the connection is dead.
  var SILENCE_MS = 70000;
  var TYPING_SEND_MS = 2500;
  var TYPING_SHOW_MS = 6000;

  var CSS = [
    ":host { all: initial; position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;",
    "  font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif;",
    "  color: #1f2328; --accent: #2457c5; --accent-dark: #1c4499; }",
    "[hidden] { display: none !important; }",
    "button { font: inherit; }",
    ".launcher { position: relative; width: 58px; height: 58px; border-radius: 50%; border: 0;",
    "  background: var(--accent); color: #fff; cursor: pointer; display: grid; place-items: center;",
    "  box-shadow: 0 6px 20px rgba(15, 23, 42, .28); transition: transform .15s ease; }",
    ".launcher:hover { transform: scale(1.05); background: var(--accent-dark); }",
    // Focus rings at 3:1 or more against what is around them (a host page of any colour:
    // the launcher's is dark with a white edge; the header's is white on the accent).
    ".launcher:focus-visible { outline: 3px solid #1f2328; outline-offset: 2px;",
    "  box-shadow: 0 0 0 3px #fff, 0 6px 20px rgba(15, 23, 42, .28); }",
    ".close:focus-visible { outline: 3px solid #fff; outline-offset: 0; }",
    ".send:focus-visible, .attach:focus-visible, .bubble a:focus-visible, .file:focus-visible {",
    "  outline: 3px solid #b34700; outline-offset: 2px; }",
    ".launcher svg { width: 28px; height: 28px; display: block; }",
    ".icon-close, .root.open .icon-chat { display: none; }",
    ".root.open .icon-close { display: block; }",
    ".badge { position: absolute; top: -5px; right: -5px; min-width: 22px; height: 22px;",
    "  padding: 0 6px; box-sizing: border-box; border-radius: 11px; background: #d1242f;",
    "  color: #fff; font-size: 12px; font-weight: 700; line-height: 18px; text-align: center;",
    "  border: 2px solid #fff; }",
    ".panel { position: fixed; right: 20px; bottom: 92px; width: 370px;",
    "  max-width: calc(100vw - 24px); height: min(600px, calc(100vh - 120px)); display: flex;",
    "  flex-direction: column; background: #fff; border-radius: 16px; overflow: hidden;",
    "  box-shadow: 0 16px 48px rgba(15, 23, 42, .24); border: 1px solid rgba(15, 23, 42, .08); }",
    "header { display: flex; align-items: center; gap: 12px; padding: 14px 14px 14px 18px;",
    "  background: var(--accent); color: #fff; }",
    ".titles { flex: 1; min-width: 0; }",
    ".title { display: block; font-weight: 700; font-size: 16px; white-space: nowrap;",
    "  overflow: hidden; text-overflow: ellipsis; }",
    ".subtitle { display: block; font-size: 13px; color: #dbe6ff; }",
    ".close { width: 36px; height: 36px; border-radius: 50%; border: 0; background: transparent;",
    "  color: #fff; cursor: pointer; display: grid; place-items: center; }",
    ".close:hover { background: rgba(255, 255, 255, .16); }",
    ".close svg { width: 20px; height: 20px; }",
    ".connection { padding: 8px 16px; background: #fff4d6; color: #6b4400; font-size: 13px;",
    "  border-bottom: 1px solid #f3d27a; }",
    ".connection.fatal { background: #ffe3e3; color: #86181d; border-color: #f5b5b5; }",
    ".messages { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column;",
    "  gap: 10px; background: #f7f8fa; overscroll-behavior: contain; }",
    ".messages:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }",
    ".empty { margin: auto 0; text-align: center; color: #57606a; font-size: 14px; padding: 0 12px; }",
    ".msg { display: flex; flex-direction: column; max-width: 82%; }",
    ".msg.user { align-self: flex-end; align-items: flex-end; }",
    ".msg.admin { align-self: flex-start; align-items: flex-start; }",
    ".author { font-size: 12px; color: #57606a; margin: 0 4px 2px; }",
    ".bubble { padding: 9px 13px; border-radius: 16px; white-space: pre-wrap;",
    "  overflow-wrap: anywhere; word-break: break-word; }",
    ".msg.user .bubble { background: var(--accent); color: #fff; border-bottom-right-radius: 4px; }",
    ".msg.admin .bubble { background: #fff; color: #1f2328; border: 1px solid #e3e6ea;",
    "  border-bottom-left-radius: 4px; }",
    ".msg.pending .bubble { opacity: .7; }",
    ".msg.failed .bubble { background: #fbe9ea; color: #86181d; border: 1px solid #f5b5b5; }",
    ".meta { display: flex; gap: 6px; font-size: 12px; color: #57606a; margin: 3px 4px 0; }",
    ".read { color: #1a7f37; }",
    ".bubble a { color: inherit; text-decoration: underline; }",
    ".bubble p, .bubble ul, .bubble ol, .bubble pre, .bubble blockquote { margin: 0; }",
    ".bubble code, .bubble pre { font-family: ui-monospace, monospace; font-size: 13px; }",
    ".files { display: flex; flex-direction: column; gap: 4px; margin-top: 4px; }",
    ".files img { display: block; max-width: 220px; max-height: 220px; border-radius: 10px;",
    "  border: 1px solid #e3e6ea; }",
    ".file { color: var(--accent); font-size: 14px; overflow-wrap: anywhere; }",
    ".attach { width: 40px; height: 40px; flex: none; border-radius: 50%; border: 0;",
    "  background: transparent; color: #57606a; cursor: pointer; display: grid; place-items: center; }",
    ".attach:hover { background: #eef1f5; }",
    ".attach svg { width: 20px; height: 20px; }",
    ".typing { padding: 4px 18px 6px; font-size: 13px; color: #57606a; background: #f7f8fa;",
    "  font-style: italic; }",
    "form { display: flex; align-items: flex-end; gap: 8px; padding: 10px 12px;",
    "  border-top: 1px solid #e3e6ea; background: #fff; margin: 0; }",
    "textarea { flex: 1; resize: none; border: 1px solid #767f8a; border-radius: 12px;",
    "  padding: 9px 12px; font: inherit; color: inherit; max-height: 120px; min-height: 40px;",
    "  box-sizing: border-box; line-height: 20px; background: #fff; }",
    "textarea:focus { outline: 2px solid var(--accent); outline-offset: 0; border-color: var(--accent); }",
    ".send { width: 40px; height: 40px; flex: none; border-radius: 50%; border: 0;",
    "  background: var(--accent); color: #fff; cursor: pointer; display: grid; place-items: center; }",
    ".send:hover { background: var(--accent-dark); }",
    ".send svg { width: 18px; height: 18px; }",
    "@media (max-width: 480px) {",
    "  :host { right: 14px; bottom: 14px; }",
    "  .panel { inset: 0; width: 100%; max-width: none; height: 100%; border-radius: 0; border: 0; }",
    "  .root.open .launcher { display: none; }",
    "}",
    "@media (prefers-reduced-motion: reduce) { .launcher { transition: none; } }",
  ].join("\n");

  // Fixed markup only: nothing in here comes from data.
  var CHAT_ICON =
    '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
    'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">' +
    '<path d="M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.9A8 8 0 1 1 21 12z"/></svg>';
  var CLOSE_ICON =
    '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" ' +
    'stroke-linecap="round" aria-hidden="true" focusable="false"><path d="M6 6l12 12M18 6L6 18"/></svg>';
  var SEND_ICON =
    '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true" focusable="false">' +
    '<path d="M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z"/></svg>';
  var CLIP_ICON =
    '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
    'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">' +
    '<path d="M21 11.5l-8.6 8.6a5.5 5.5 0 0 1-7.8-7.8l8.6-8.6a3.7 3.7 0 0 1 5.2 5.2l-8.6 8.6' +
    'a1.8 1.8 0 0 1-2.6-2.6l7.9-7.9"/></svg>';
  var MARKUP =
    '<div class="root">' +
    '<section class="panel" id="tl-panel" data-testid="tl-panel" role="dialog" ' +
    'aria-labelledby="tl-title" hidden>' +
    '<header><div class="titles"><span class="title" id="tl-title">Chat with us</span>' +
    '<span class="subtitle">We usually answer within a few minutes</span></div>' +
    '<button class="close" type="button" aria-label="Close chat">' + CLOSE_ICON + "</button></header>" +
    '<div class="connection" data-testid="tl-connection" role="status" aria-live="polite" hidden></div>' +
    '<div class="messages" role="log" aria-live="polite" aria-label="Messages" tabindex="0">' +
    '<p class="empty">Hi! Ask us anything: we answer right here.</p></div>' +
    '<div class="typing" data-testid="tl-typing" aria-live="polite" hidden></div>' +
    '<form novalidate><button class="attach" data-testid="tl-attach" type="button" ' +
    'aria-label="Attach a file">' + CLIP_ICON + "</button>" +
    '<input type="file" data-testid="tl-file" hidden tabindex="-1">' +
    '<textarea data-testid="tl-input" rows="1" aria-label="Message" dir="auto" ' +
    'placeholder="Write a message…" maxlength="65536"></textarea>' +
    '<button class="send" data-testid="tl-send" type="submit" aria-label="Send">' + SEND_ICON +
    "</button></form></section>" +
    '<button class="launcher" data-testid="tl-launcher" type="button" aria-controls="tl-panel" ' +
    'aria-expanded="false" aria-label="Open chat"><span class="icon-chat">' + CHAT_ICON +
    '</span><span class="icon-close">' + CLOSE_ICON + "</span>" +
    '<span class="badge" data-testid="tl-unread" aria-hidden="true" hidden></span></button>' +
    "</div>";

  var host = document.createElement("div");
  host.setAttribute("data-threadline-widget", "");
  var shadow = host.attachShadow({ mode: "open" });
  var style = document.createElement("style");
  style.textContent = CSS;
  shadow.appendChild(style);
  var template = document.createElement("template");
  template.innerHTML = MARKUP;
  shadow.appendChild(template.content);

  var ui = {
    root: shadow.querySelector(".root"),
    launcher: shadow.querySelector(".launcher"),
    badge: shadow.querySelector(".badge"),
    panel: shadow.querySelector(".panel"),
    title: shadow.querySelector(".title"),
    close: shadow.querySelector(".close"),
    connection: shadow.querySelector(".connection"),
    messages: shadow.querySelector(".messages"),
    empty: shadow.querySelector(".empty"),
    typing: shadow.querySelector(".typing"),
    form: shadow.querySelector("form"),
    input: shadow.querySelector("textarea"),
    attach: shadow.querySelector(".attach"),
    file: shadow.querySelector("input[type=file]"),
  };

  var state = {
    token: null,
    user: null,
    appName: null,
    conversation: null,
    open: false,
    unread: 0,
    tag: null,
    ws: null,
    connected: false,
    httpDown: false,
    attempt: 0,
    historyLoaded: false,
    fatal: false,
  };
  var parts = new Map(); // part id -> {part, el}
  var pending = new Map(); // random_id -> {el, body}
  var outbox = [];
  var seenEvents = new Set();
  var authors = new Map(); // "admin:3" / "sender:1" -> name, from the parts seen
  var timers = { reconnect: null, silence: null, typing: null, banner: null };
  var lastTypingSent = 0;

  // ------------------------------------------------------------------ storage

  function load() {
    try {
      var saved = JSON.parse(window.localStorage.getItem(STORAGE_KEY) || "null");
      if (saved && saved.token) {
        state.token = saved.token;
        state.user = saved.user;
        state.appName = TITLE;
      }
    } catch (e) {
      /* storage disabled: the visitor gets a new session per page */
    }
  }

  function save() {
    try {
      window.localStorage.setItem(
        STORAGE_KEY,
        JSON.stringify({ token: state.token, user: state.user, appName: state.appName })
      );
    } catch (e) {
      /* storage disabled or full */
    }
  }

  function forgetSession() {
    state.token = null;
    state.user = null;
    try {
      window.localStorage.removeItem(STORAGE_KEY);
    } catch (e) {
      /* storage disabled */
    }
  }

  // ------------------------------------------------------------------ HTTP

  function ApiError(status, name, message) {
    this.status = status;
    this.errorName = name;
    this.message = message;
  }

  function api(method, path, body) {
    var form = body instanceof FormData;
    var headers = form ? {} : { "Content-Type": "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    return fetch(BASE + "/widget/api" + path, {
      method: method,
      headers: headers,
      body: body === undefined || form ? body : JSON.stringify(body),
      credentials: "omit",
    }).then(
      function (response) {
        if (response.status < 500 && state.httpDown) {
          state.httpDown = false;
          if (state.connected) hideBanner();
        }
        return response
          .json()
          .catch(function () {
            return null;
          })
          .then(function (payload) {
            if (response.ok && payload) return payload.data;
            var meta = (payload && payload.meta) || {};
            throw new ApiError(response.status, meta.error || "", meta.error_message || response.statusText);
          });
      },
      function () {
        state.httpDown = true;
        throw new ApiError(0, "Unreachable", "the server is unreachable");
      }
    );
  }

  // What a visitor reads when a message is refused: never the server's developer text.
  function plainReason(error) {
    if (error.status === 400) return "the message is too long or empty.";
    if (error.status === 403 || error.status === 404) return "this conversation is no longer available.";
    return "something went wrong. Please try again.";
  }

  // Worth trying again: no answer, a server error, or "too many requests".
  function transient(error) {
    return !(error instanceof ApiError) || error.status === 0 || error.status >= 500 || error.status === 429;
  }

  function randomId() {
    // 52 random bits: unique per write, and exact in a JavaScript number.
    var words = new Uint32Array(2);
    window.crypto.getRandomValues(words);
    return (words[0] & 0xfffff) * 4294967296 + words[1] + 1;
  }

  function sleep(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }

  function backoffMs(attempt) {
    var seconds = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
    return seconds * 1000 * (0.8 + Math.random() * 0.4);
  }

  // ------------------------------------------------------------------ rendering

  function formatTime(seconds) {
    var date = new Date(seconds * 1000);
    var time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (date.toDateString() === new Date().toDateString()) return time;
    return date.toLocaleDateString([], { month: "short", day: "numeric" }) + ", " + time;
  }

  function isFromUser(part) {
    return part.type === "reply_user" || part.type === "chat_bot_user";
  }

  function authorName(part) {
    var from = part.from;
    if (from && typeof from === "object" && from.name) return from.name;
    return part.type === "reply_admin" ? "Support" : "";
  }

  function partText(part) {
    var text = part.body || "";
    if (!text.trim() && part.body_json && typeof part.body_json.title === "string") {
      text = part.body_json.title;
      if (typeof part.body_json.url === "string") text += "\n" + part.body_json.url;
    }
    return text;
  }

  // The formatting the server leaves in `body_html`; anything else is kept as its text.
  var ALLOWED = /^(A|B|BLOCKQUOTE|BR|CODE|DEL|DIV|EM|I|LI|OL|P|PRE|S|SPAN|STRONG|U|UL)$/;

  function copyInto(target, from) {
    from.childNodes.forEach(function (node) {
      if (node.nodeType === 3) {
        target.appendChild(document.createTextNode(node.textContent));
      } else if (node.nodeType === 1) {
        if (!ALLOWED.test(node.tagName)) {
          copyInto(target, node);
          return;
        }
        var copy = document.createElement(node.tagName.toLowerCase());
        if (node.tagName === "A") {
          var href = (node.getAttribute("href") || "").trim();
          if (/^(https?:|mailto:)/i.test(href)) {
            copy.href = href;
            copy.target = "_blank";
            copy.rel = "noopener noreferrer";
          }
        }
        copyInto(copy, node);
        target.appendChild(copy);
      }
    });
  }

  function fillBody(bubble, part) {
    bubble.textContent = "";
    if (typeof part.body_html === "string" && part.body_html) {
      // DOMParser's document is inert: nothing in it loads or runs.
      copyInto(bubble, new DOMParser().parseFromString(part.body_html, "text/html").body);
    } else {
      bubble.textContent = partText(part);
    }
    // A file sent alone shows as the file only.
    bubble.hidden = !bubble.textContent && (part.attachments || []).length > 0;
  }

  // A file is fetched with the visitor's token (never put in a URL), as a blob.
  function fetchFile(part, file) {
    var path = "/widget/api/conversations/" + part.conversation + "/attachments/" + file.id;
    return fetch(BASE + path, {
      headers: { Authorization: "Bearer " + state.token },
      credentials: "omit",
    }).then(function (response) {
      if (!response.ok) throw new Error("the file could not be loaded");
      return response.blob();
    });
  }

  var IMAGE = /^image\/(png|jpeg|gif|webp)$/;

  function filesElement(part) {
    var box = el("div", "files", "tl-files");
    (part.attachments || []).forEach(function (file) {
      if (IMAGE.test(file.mime_type || "")) {
        var img = el("img", "", "tl-image");
        img.alt = file.filename;
        box.appendChild(img);
        fetchFile(part, file).then(
          function (blob) {
            img.src = URL.createObjectURL(blob);
          },
          function () {
            img.alt = file.filename + " (could not be loaded)";
          }
        );
        return;
      }
      var link = el("a", "file", "tl-file-link");
      link.href = "#";
      link.textContent = "\uD83D\uDCCE " + file.filename;
      link.addEventListener("click", function (event) {
        event.preventDefault();
        fetchFile(part, file).then(function (blob) {
          var a = document.createElement("a");
          a.href = URL.createObjectURL(blob);
          a.download = file.filename;
          shadow.appendChild(a);
          a.click();
          a.remove();
          setTimeout(URL.revokeObjectURL.bind(URL, a.href), 60000);
        });
      });
      box.appendChild(link);
    });
    return box;
  }

  function el(tag, className, testid) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (testid) node.setAttribute("data-testid", testid);
    return node;
  }

  function messageElement(from, text) {
    var node = el("div", "msg " + from, "tl-message");
    node.setAttribute("data-from", from);
    var bubble = el("div", "bubble", "tl-message-body");
    bubble.dir = "auto";
    bubble.textContent = text;
    var meta = el("div", "meta");
    node.appendChild(bubble);
    node.appendChild(meta);
    return node;
  }

  function setMeta(node, part) {
    var meta = node.querySelector(".meta");
    meta.textContent = "";
    var time = el("time", "", "tl-message-time");
    var date = new Date(part.created * 1000);
    time.dateTime = date.toISOString();
    time.title = date.toLocaleString();
    time.textContent = formatTime(part.created);
    meta.appendChild(time);
    if (isFromUser(part) && part.read) {
      var read = el("span", "read", "tl-read");
      read.textContent = "✓ Seen";
      meta.appendChild(read);
    }
  }

  function nearBottom() {
    var m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function insertInOrder(node, id) {
    // Parts arrive in id order nearly always; walk back from the end for the rare others.
    node.setAttribute("data-part-id", String(id));
    var after = null;
    var children = ui.messages.children;
    for (var i = children.length - 1; i >= 0; i--) {
      var other = children[i].getAttribute("data-part-id");
      if (other === null) continue; // pending messages stay last
      if (Number(other) < id) break;
      after = children[i];
    }
    var firstPending = ui.messages.querySelector(".msg.pending, .msg.failed");
    ui.messages.insertBefore(node, after || firstPending || null);
  }

  function upsertPart(part) {
    var writer = part.from;
    if (writer && typeof writer === "object" && writer.name) {
      // A part names the app's sender with the vendor's `message_sender`; typing says `sender`.
      var kind = writer.type === "message_sender" ? "sender" : writer.type;
      authors.set(kind + ":" + writer.id, writer.name);
    }
    var known = parts.get(part.id);
    if (known) {
      known.part = part;
      setMeta(known.el, part);
      return false;
    }
    var stick = nearBottom();
    var from = isFromUser(part) ? "user" : "admin";
    var node;
    var waiting = part.random_id ? pending.get(part.random_id) : null;
    if (waiting && from === "user") {
      pending.delete(part.random_id);
      node = waiting.el;
      node.classList.remove("pending", "failed");
      node.remove();
      var shown = node.querySelector(".files");
      if (shown) shown.remove();
    } else {
      node = messageElement(from, "");
      if (from === "admin" && authorName(part)) {
        var author = el("div", "author");
        author.textContent = authorName(part);
        node.insertBefore(author, node.firstChild);
      }
    }
    fillBody(node.querySelector(".bubble"), part);
    if ((part.attachments || []).length) node.insertBefore(filesElement(part), node.querySelector(".meta"));
    setMeta(node, part);
    insertInOrder(node, part.id);
    parts.set(part.id, { part: part, el: node });
    ui.empty.hidden = true;
    if (stick || from === "user") scrollToBottom();
    return true;
  }

  function clearMessages() {
    parts.forEach(function (entry) {
      entry.el.remove();
    });
    parts.clear();
    ui.empty.hidden = pending.size > 0;
  }

  function markUserPartsRead() {
    parts.forEach(function (entry) {
      if (isFromUser(entry.part) && !entry.part.read) {
        entry.part = Object.assign({}, entry.part, { read: true });
        setMeta(entry.el, entry.part);
      }
    });
  }

  function setUnread(count) {
    state.unread = Math.max(0, count | 0);
    renderBadge();
  }

  function renderBadge() {
    var show = state.unread > 0 && !state.open;
    ui.badge.hidden = !show;
    ui.badge.textContent = state.unread > 99 ? "99+" : String(state.unread);
    var label = state.open ? "Close chat" : "Open chat";
    if (show) label += ", " + state.unread + " unread " + (state.unread === 1 ? "message" : "messages");
    ui.launcher.setAttribute("aria-label", label);
  }

  function showBanner(text, fatal) {
    clearTimeout(timers.banner);
    timers.banner = null;
    ui.connection.textContent = text;
    ui.connection.classList.toggle("fatal", !!fatal);
    ui.connection.hidden = false;
  }

  function hideBanner() {
    clearTimeout(timers.banner);
    timers.banner = null;
    if (!state.fatal) ui.connection.hidden = true;
  }

  function offline() {
    // A short grace period: a quick reconnect should not flash a warning.
    if (!ui.connection.hidden || timers.banner) return;
    timers.banner = setTimeout(function () {
      timers.banner = null;
      if ((!state.connected || state.httpDown) && !state.fatal) {
        showBanner("Can't reach the chat server. Reconnecting… Your messages will be sent when it's back.");
      }
    }, 1200);
  }

  function fatal(text) {
    state.fatal = true;
    showBanner(text, true);
  }

  function showTyping(author) {
    var name = authors.get(author.kind + ":" + author.id);
    ui.typing.textContent = (name || "Support") + " is typing…";
    ui.typing.hidden = false;
    clearTimeout(timers.typing);
    timers.typing = setTimeout(hideTyping, TYPING_SHOW_MS);
  }

  function hideTyping() {
    clearTimeout(timers.typing);
    ui.typing.hidden = true;
  }

  // ------------------------------------------------------------------ opening

  // On a phone the open panel covers the page: a modal dialog that keeps the focus inside
  // it until it is closed (Escape, or its close button), then gives it back to the launcher.
  var phone = window.matchMedia ? window.matchMedia("(max-width: 480px)") : null;

  function isModal() {
    return state.open && !!phone && phone.matches;
  }

  function setModal() {
    if (isModal()) ui.panel.setAttribute("aria-modal", "true");
    else ui.panel.removeAttribute("aria-modal");
  }

  function focusables() {
    return Array.prototype.filter.call(
      ui.panel.querySelectorAll("button, textarea, a[href], [tabindex='0']"),
      function (node) {
        return !node.disabled && node.getClientRects().length > 0;
      }
    );
  }

  function trapTab(event) {
    var list = focusables();
    if (!list.length) return;
    var first = list[0];
    var last = list[list.length - 1];
    var active = shadow.activeElement;
    if (event.shiftKey ? active === first || list.indexOf(active) < 0 : active === last) {
      event.preventDefault();
      (event.shiftKey ? last : first).focus();
    }
  }

  function setOpen(open) {
    state.open = open;
    ui.panel.hidden = !open;
    setModal();
    ui.root.classList.toggle("open", open);
    ui.launcher.setAttribute("aria-expanded", String(open));
    renderBadge();
    if (open) {
      scrollToBottom();
      ui.input.focus();
      markRead();
    } else {
      ui.launcher.focus();
    }
  }

  var reading = null;
  var readAgain = false;

  function markRead() {
    if (!state.open || document.hidden || state.conversation === null || !state.token) return;
    if (reading) {
      readAgain = true;
      return;
    }
    var id = state.conversation;
    reading = api("POST", "/conversations/" + id + "/read", {})
      .then(function (conversation) {
        if (state.conversation === id) setUnread(conversation.user_unread_count);
      })
      .catch(function () {
        /* marked read on the next opening */
      })
      .then(function () {
        reading = null;
        if (readAgain) {
          readAgain = false;
          markRead();
        }
      });
  }

  // ------------------------------------------------------------------ conversations

  function showConversation(id) {
    return api("GET", "/conversations/" + id).then(function (data) {
      if (state.conversation !== id) {
        clearMessages();
        state.conversation = id;
      }
      data.parts.forEach(upsertPart);
      setUnread(data.user_unread_count);
      markRead();
      scrollToBottom();
    });
  }

  function loadHistory() {
    return api("GET", "/conversations").then(function (list) {
      state.historyLoaded = true;
      if (!list.length) return null;
      return showConversation(list[0].id);
    });
  }

  function onEvent(event) {
    var id = event.conversation;
    if (id !== state.conversation) {
      // A conversation this visitor has not on screen (an operator's new message, or one
      // started in another tab): show it when something visible happened in it.
      if (event.part || event.type === "conversation_started") {
        showConversation(id).catch(function () {});
      }
      return;
    }
    var changes = event.changes || {};
    if (event.part) {
      var added = upsertPart(event.part);
      if (added && !isFromUser(event.part)) {
        hideTyping();
        if (typeof changes.user_unread_count !== "number") setUnread(state.unread + 1);
      }
    }
    if (typeof changes.user_unread_count === "number") setUnread(changes.user_unread_count);
    if (event.read_by === "admin") markUserPartsRead();
    if (state.unread > 0) markRead();
  }

  function onTyping(message) {
    if (!message || !message.from || message.from.kind === "user") return;
    if (message.conversation !== state.conversation) return;
    showTyping(message.from);
  }

  function onMessage(raw) {
    var message;
    try {
      message = JSON.parse(raw);
    } catch (e) {
      return;
    }
    resetSilence();
    if (message.tag) state.tag = message.tag;
    var channel = String(message.channel || "");
    if (channel === "ping") return;
    if (channel.indexOf("conversation_typing.") === 0) {
      onTyping(message.message);
      return;
    }
    // One event may come on several of the visitor's channels: handle it once.
    if (seenEvents.has(message.id)) return;
    seenEvents.add(message.id);
    if (seenEvents.size > 1000) seenEvents = new Set(Array.from(seenEvents).slice(-500));
    onEvent(message.message);
  }

  // ------------------------------------------------------------------ realtime

  function socketUrl() {
    var channels = [
      "conversation." + APP + "." + state.user,
      "conversation_typing." + APP + "." + state.user,
      "ping",
    ];
    var url =
      BASE.replace(/^http/, "ws") +
      "/websocket/" +
      channels.join("/");
    if (state.tag) url += "?tag=" + encodeURIComponent(state.tag);
    return url;
  }

  function resetSilence() {
    clearTimeout(timers.silence);
    timers.silence = setTimeout(function () {
      if (state.ws) state.ws.close();
    }, SILENCE_MS);
  }

  function connect() {
    clearTimeout(timers.reconnect);
    if (!state.token || state.fatal || state.ws) return Promise.resolve();
    return new Promise(function (resolve) {
      var ws;
      try {
        // The token goes as a subprotocol, not in the URL (URLs end up in access logs).
        ws = new WebSocket(socketUrl(), ["threadline", "token." + state.token]);
      } catch (e) {
        scheduleReconnect();
        resolve();
        return;
      }
      state.ws = ws;
      ws.onopen = function () {
        var wasDown = state.attempt > 0;
        state.connected = true;
        state.attempt = 0;
        if (!state.httpDown) hideBanner();
        resetSilence();
        resolve();
        // Without a tag nothing tells the server where we left off: read the history again.
        if (!state.historyLoaded || (wasDown && !state.tag)) {
          loadHistory().catch(function () {});
        }
        pump();
      };
      ws.onmessage = function (message) {
        onMessage(message.data);
      };
      ws.onclose = function (close) {
        resolve();
        if (state.ws !== ws) return;
        state.ws = null;
        state.connected = false;
        clearTimeout(timers.silence);
        if (close.code === 3401) {
          // The session is gone (the user was erased): start over as a new visitor.
          forgetSession();
          restart();
          return;
        }
        if (close.code === 3403) {
          fatal("The chat is not available on this page.");
          return;
        }
        offline();
        scheduleReconnect();
      };
    });
  }

  function scheduleReconnect() {
    clearTimeout(timers.reconnect);
    var wait = backoffMs(state.attempt);
    state.attempt += 1;
    timers.reconnect = setTimeout(connect, wait);
  }

  function reconnectNow() {
    if (state.ws || !state.token) return;
    state.attempt = 0;
    connect();
  }

  // ------------------------------------------------------------------ sending

  var pumping = false;

  function send(file) {
    var text = file ? "" : ui.input.value;
    if (!file && !text.trim()) return;
    if (!file) {
      ui.input.value = "";
      autosize();
    }
    var rid = randomId();
    var node = messageElement("user", file ? "\uD83D\uDCCE " + file.name : text);
    node.classList.add("pending");
    node.querySelector(".meta").textContent = "Sending…";
    ui.messages.appendChild(node);
    ui.empty.hidden = true;
    scrollToBottom();
    pending.set(rid, { el: node, body: text });
    outbox.push({ body: text, random_id: rid, file: file || null });
    pump();
  }

  function pump() {
    if (pumping || !outbox.length) return;
    if (!state.token) return; // sent once a session exists
    pumping = true;
    var item = outbox[0];
    var path = state.conversation === null ? "/conversations" : "/conversations/" + state.conversation + "/reply";
    var starting = state.conversation === null;
    var payload = { body: item.body, random_id: item.random_id };
    if (item.file) {
      payload = new FormData();
      payload.append("body", item.body);
      payload.append("random_id", String(item.random_id));
      payload.append("file", item.file, item.file.name);
    }
    api("POST", path, payload)
      .then(function (data) {
        outbox.shift();
        if (starting && state.conversation === null) state.conversation = data.conversation.id;
        if (data.conversation.id === state.conversation) upsertPart(data.part);
        state.attempt = 0;
        pumping = false;
        pump();
      })
      .catch(function (error) {
        pumping = false;
        var waiting = pending.get(item.random_id);
        if (transient(error)) {
          if (waiting) waiting.el.querySelector(".meta").textContent = "Not sent yet, retrying…";
          offline();
          sleep(backoffMs(state.attempt++)).then(pump);
          return;
        }
        if (error.status === 404 && !starting) {
          // The conversation is gone: the message starts a new one.
          state.conversation = null;
          pump();
          return;
        }
        if (error.status === 401) {
          forgetSession();
          restart();
          return;
        }
        outbox.shift();
        if (waiting) {
          pending.delete(item.random_id);
          waiting.el.classList.remove("pending");
          waiting.el.classList.add("failed");
          waiting.el.querySelector(".meta").textContent = item.file
            ? "The file was not sent: " + error.message.replace(/^file: /, "")
            : "Not sent: " + plainReason(error);
        }
        pump();
      });
  }

  function sendTyping() {
    var now = Date.now();
    if (state.conversation === null || now - lastTypingSent < TYPING_SEND_MS) return;
    lastTypingSent = now;
    api("POST", "/conversations/" + state.conversation + "/typing", {
      body: ui.input.value.slice(0, 1000),
    }).catch(function () {});
  }

  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = Math.min(ui.input.scrollHeight + 2, 120) + "px";
  }

  // ------------------------------------------------------------------ start

  var restarts = 0;

  function openSession() {
    if (state.token) return Promise.resolve();
    var body = { app: APP };
    if (SITE_USER) {
      body.user_id = SITE_USER;
      body.user_hash = SITE_USER_HASH || "";
    }
    return api("POST", "/session", body).then(function (session) {
      state.token = session.token;
      state.user = session.user;
      state.appName = TITLE;
      restartPending = false;
      save();
    });
  }

  function start() {
    if (state.appName) ui.title.textContent = state.appName;
    return openSession()
      .then(function () {
        if (state.appName) ui.title.textContent = state.appName;
        return connect();
      })
      .then(function () {
        if (!state.historyLoaded) return loadHistory();
        return null;
      })
      .then(function () {
        pump();
      })
      .catch(function (error) {
        if (transient(error)) {
          offline();
          // Without a session, or with the stream up but the history unread, try again;
          // otherwise the stream's reconnection reads the history once it is back.
          if (!state.token || state.connected) setTimeout(start, backoffMs(state.attempt++));
          return;
        }
        if (error.status === 401 && state.token && restarts < 2) {
          forgetSession();
          restart();
          return;
        }
        fatal(
          error.status === 404
            ? "The chat is not set up on this page yet."
            : "The chat is not available right now. Please try again later."
        );
      });
  }

  var restartPending = false;

  function restart() {
    if (restartPending) return; // the stream and a request may both notice a lost session
    restartPending = true;
    restarts += 1;
    if (restarts > 3) {
      fatal("The chat is not available right now.");
      return;
    }
    if (state.ws) {
      var ws = state.ws;
      state.ws = null;
      ws.close();
    }
    state.tag = null;
    state.historyLoaded = false;
    state.conversation = null;
    clearMessages();
    setUnread(0);
    start();
  }

  ui.launcher.addEventListener("click", function () {
    setOpen(!state.open);
  });
  ui.close.addEventListener("click", function () {
    setOpen(false);
  });
  ui.panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      event.preventDefault();
      setOpen(false);
    } else if (event.key === "Tab" && isModal()) {
      trapTab(event);
    }
  });
  // Focus that reaches the page behind the modal panel some other way comes back to it.
  document.addEventListener("focusin", function (event) {
    if (isModal() && event.target !== host) ui.input.focus();
  });
  if (phone && phone.addEventListener) phone.addEventListener("change", setModal);
  ui.form.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
    ui.input.focus();
  });
  ui.attach.addEventListener("click", function () {
    ui.file.click();
  });
  ui.file.addEventListener("change", function () {
    var chosen = ui.file.files && ui.file.files[0];
    ui.file.value = "";
    if (chosen) send(chosen);
    ui.input.focus();
  });
  ui.input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.input.addEventListener("input", function () {
    autosize();
    if (ui.input.value.trim()) sendTyping();
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      markRead();
      reconnectNow();
    }
  });
  window.addEventListener("online", reconnectNow);

  function mount() {
    document.body.appendChild(host);
    load();
    renderBadge();
    start();
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
