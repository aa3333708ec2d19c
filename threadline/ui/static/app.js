// The operators' inbox: views with live counts, the conversation list, one conversation.
import { Api, UNREACHABLE, randomId, resetPassword, signIn } from "./api.js";
import { showAudit } from "./audit.js";
import { showSettings } from "./settings.js";
import {
  byTestId, fill, formatDateTime, h, localInputValue, operatorBody, operatorText, snippet,
  timeElement,
} from "./dom.js";
import { BAD_TOKEN, Realtime } from "./realtime.js";

const STORAGE_KEY = "threadline.inbox.session";
const PAGE_SIZE = 20;
// How long "typing…" stays without a new notice.
const TYPING_MS = 6000;
// At most one typing notice per this many ms while the operator types.
const TYPING_EVERY_MS = 2500;
// Changes arriving together are fetched once.
const REFRESH_DELAY_MS = 120;
const ERROR_MS = 10000;
const SYSTEM_PARTS = new Set([
  "assigned", "closed", "opened", "delayed", "tag_added", "tag_deleted", "channel_changed",
  "service",
]);
const FIXED_VIEWS = [
  ["open", "Open"], ["mine", "Assigned to me"], ["unassigned", "Unassigned"],
  ["delayed", "Snoozed"], ["closed", "Closed"],
];

const $ = (id) => document.getElementById(id);

const state = {
  session: null,
  api: null,
  realtime: null,
  admins: new Map(),
  channels: [],
  counts: null,
  view: "open",
  query: "",
  rows: [],
  next: null,
  listToken: 0,
  current: null,
  openToken: 0,
  typing: new Map(),
  drafts: new Map(),
  pendingReply: null,
  lastTypingSent: 0,
  refreshIds: new Set(),
  rowStamps: new Map(),
  refreshTimer: null,
  countsTimer: null,
  streamDown: null,
  apiDown: false,
};

// --- Small helpers -----------------------------------------------------------------

function userName(user) {
  if (!user) return "Unknown user";
  const props = user.props || {};
  return props.$name || props.$email || user.user_id || `User ${user.id}`;
}

function authorName(from) {
  if (from && typeof from === "object") {
    if (from.type === "bot") return "Bot";
    return from.name || (from.type === "message_sender" ? "The team" : `Admin ${from.id}`);
  }
  return "System";
}

function adminName(id) {
  const admin = state.admins.get(String(id));
  return admin ? admin.name : `Admin ${id}`;
}

function channelName(id) {
  const channel = state.channels.find((c) => c.id === String(id));
  return channel ? channel.name : `Channel ${id}`;
}

function statusOf(c) {
  if (c.closed) return "closed";
  if (c.delayed_until && c.delayed_until > Date.now() / 1000) return "snoozed";
  return "open";
}

function partText(part) {
  if (!part) return "";
  const files = (part.attachments || []).map((a) => `📎 ${a.filename}`).join(" ");
  const body = part.type === "reply_user" ? part.body : operatorText(part.body || "");
  return [body.trim(), files].filter(Boolean).join(" ");
}

function viewFilters(key) {
  if (key === "open" || key === "delayed" || key === "closed") return { status: key };
  if (key === "mine") return { status: "open", assignee: state.session.admin };
  if (key === "unassigned") return { status: "open", assignee: 0 };
  if (key.startsWith("channel-")) return { status: "open", channel: key.slice(8) };
  if (key.startsWith("tag-")) return { status: "open", tag: key.slice(4) };
  return { status: "open" };
}

function viewLabel(key) {
  const fixed = FIXED_VIEWS.find(([k]) => k === key);
  if (fixed) return fixed[1];
  if (key.startsWith("channel-")) return channelName(key.slice(8));
  if (key.startsWith("tag-")) return `#${key.slice(4)}`;
  return key;
}

/** Does conversation `c` (as GET /conversations/{id} answers) belong to view `key`? */
function inView(c, key) {
  if (!c.replied || c.removed) return false;
  const f = viewFilters(key);
  const status = statusOf(c) === "snoozed" ? "delayed" : statusOf(c);
  if (f.status !== status) return false;
  const assignee = c.assignee ? c.assignee.id : null;
  if (f.assignee === 0 && assignee !== null) return false;
  if (f.assignee && assignee !== f.assignee) return false;
  if (f.channel !== undefined && (c.channel ? c.channel.id : null) !== f.channel) return false;
  if (f.tag !== undefined && !c.tags.includes(f.tag)) return false;
  return true;
}

function newerFirst(a, b) {
  if (a.last_update !== b.last_update) return b.last_update - a.last_update;
  return Number(b.id) - Number(a.id);
}

/** Keep keyboard focus on "the same" control when a part of the page is rebuilt. */
function keepFocus(container, rebuild) {
  const active = document.activeElement;
  const testid = active && container.contains(active) ? active.dataset.testid : null;
  const rowId = active && active.closest ? active.closest("[data-conversation-id]") : null;
  const convId = rowId ? rowId.dataset.conversationId : null;
  rebuild();
  if (!testid) return;
  let target = null;
  if (convId) {
    const row = container.querySelector(`[data-conversation-id="${CSS.escape(convId)}"]`);
    target = row ? byTestId(row, testid) || row.querySelector("button") : null;
  }
  target = target || byTestId(container, testid);
  if (target) target.focus();
}

// --- Messages to the operator ------------------------------------------------------

let errorTimer = null;

function showError(message) {
  const el = document.querySelector('[data-testid="error"]');
  el.textContent = message;
  el.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { el.hidden = true; }, ERROR_MS);
}

function renderBanner() {
  const el = document.querySelector('[data-testid="connection"]');
  let text = "";
  if (!navigator.onLine) text = "You are offline. The inbox reconnects when the network is back.";
  else if (state.apiDown) text = UNREACHABLE;
  else if (state.streamDown) text = state.streamDown;
  el.textContent = text;
  el.hidden = !text;
}

/** Run an API call; report a failure to the operator (and end a revoked session). */
async function attempt(work, failure = "") {
  try {
    const result = await work();
    if (state.apiDown) {
      state.apiDown = false;
      renderBanner();
    }
    return result;
  } catch (error) {
    if (error.status === 0) {
      state.apiDown = true;
      renderBanner();
    } else if (error.status === 401) {
      endSession("Your session has ended. Please sign in again.");
      return undefined;
    }
    showError(failure ? `${failure}: ${error.message}` : error.message);
    return undefined;
  }
}

// --- Signing in and out ------------------------------------------------------------

function showLogin(message = "") {
  $("inbox").hidden = true;
  $("login").hidden = false;
  const error = document.querySelector('[data-testid="login-error"]');
  error.textContent = message;
  error.hidden = !message;
  $("login-email").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const email = $("login-email").value.trim();
  const password = $("login-password").value;
  const error = document.querySelector('[data-testid="login-error"]');
  const submit = document.querySelector('[data-testid="login-submit"]');
  if (!email || !password) {
    showLogin("Enter your e-mail and password.");
    return;
  }
  submit.disabled = true;
  try {
    const app = $("login-app").value.trim();
    const code = $("login-code").value.trim();
    const answer = await signIn(email, password, app, code);
    $("login-password").value = "";
    $("login-code").value = "";
    $("login-code-field").hidden = true;
    error.hidden = true;
    const session = answer.data;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
    startInbox(session);
  } catch (e) {
    let message = e.message;
    const aboutCode = /^code:/.test(e.message || "");
    if (e.status === 400 && aboutCode) {
      // The password was right; this account signs in with a code of its app too.
      $("login-code-field").hidden = false;
      error.textContent = "Enter the code from your authenticator app.";
      error.hidden = false;
      $("login-code").focus();
      return;
    }
    if (e.status === 401 && aboutCode) {
      $("login-code").value = "";
      error.textContent = "Wrong code, or a code used already. Enter the next code.";
      error.hidden = false;
      $("login-code").focus();
      return;
    }
    if (e.status === 401) message = "Wrong e-mail or password.";
    else if (e.status === 400 && /^app:/.test(e.message || "")) {
      // The e-mail is an admin's of several apps: the operator names theirs.
      $("login-app-field").hidden = false;
      message = "This e-mail belongs to several apps: enter your app's id.";
    }
    else if (e.status === 429) message = `Too many failed attempts. Try again in ${e.retryAfter || 60} seconds.`;
    error.textContent = message;
    error.hidden = false;
    $("login-password").focus();
  } finally {
    submit.disabled = false;
  }
}

function endSession(message) {
  if ($("audit").open) $("audit").close();
  if ($("settings").open) $("settings").close();
  $("audit-open").hidden = true;
  if (state.realtime) state.realtime.stop();
  state.realtime = null;
  sessionStorage.removeItem(STORAGE_KEY);
  state.session = null;
  state.api = null;
  state.streamDown = null;
  state.apiDown = false;
  renderBanner();
  showLogin(message);
}

async function onLogout() {
  const api = state.api;
  if (api) {
    try {
      await api.signOut();
    } catch {
      // Signing out locally still forgets the token.
    }
  }
  endSession("");
}

// --- The inbox ---------------------------------------------------------------------

async function startInbox(session) {
  state.session = session;
  state.api = new Api(session);
  $("login").hidden = true;
  $("inbox").hidden = false;
  document.querySelector('[data-testid="current-admin"]').textContent = session.name;
  // The audit log is the owners' (the server refuses it to anyone else).
  $("audit-open").hidden = session.role !== "owner";
  // Subscribed first: every change committed from here on reaches the page.
  state.realtime = new Realtime({
    token: session.token,
    channels: [`conversation.${session.app}`, `conversation_typing.${session.app}`, "ping"],
    onMessage: onRealtime,
    onStatus: onStreamStatus,
    onRefused: (code) => {
      if (code === BAD_TOKEN) endSession("Your session has ended. Please sign in again.");
      else showError("Live updates were refused for this account.");
    },
  });
  state.realtime.start();
  const [admins, channels] = await Promise.all([
    attempt(() => state.api.admins(), "Could not load the operators"),
    attempt(() => state.api.channels(), "Could not load the channels"),
  ]);
  if (!state.session) return;
  state.admins = new Map((admins ? admins.data : []).map((a) => [a.id, a]));
  state.channels = channels ? channels.data : [];
  const wanted = new URLSearchParams(window.location.hash.slice(1));
  await Promise.all([refreshCounts(), selectView(wanted.get("view") || "open")]);
  if (wanted.get("c")) openConversation(wanted.get("c"));
}

function onStreamStatus({ connected, retryInMs }) {
  if (connected) {
    state.streamDown = null;
    scheduleCounts();
  } else {
    const seconds = Math.max(1, Math.round(retryInMs / 1000));
    state.streamDown = `Live updates are disconnected. Reconnecting in ${seconds} s…`;
  }
  renderBanner();
}

// --- Views and counts --------------------------------------------------------------

async function refreshCounts() {
  const api = state.api;
  const answer = await attempt(() => api.inbox({ status: "open" }, { count: 1, counts: true }));
  if (!answer || api !== state.api) return;
  state.counts = answer.data.counts;
  renderViews();
}

function scheduleCounts() {
  clearTimeout(state.countsTimer);
  state.countsTimer = setTimeout(refreshCounts, REFRESH_DELAY_MS);
}

function renderViews() {
  const counts = state.counts;
  if (!counts) return;
  const mine = counts.assignees.find((a) => a.id === state.session.admin);
  const byChannel = new Map(counts.channels.map((c) => [c.id, c.count]));
  const items = [
    ["open", counts.open], ["mine", mine ? mine.count : 0], ["unassigned", counts.unassigned],
    ["delayed", counts.delayed], ["closed", counts.closed],
  ].map(([key, count]) => [key, viewLabel(key), count]);
  const channels = state.channels.map((c) => [`channel-${c.id}`, c.name, byChannel.get(c.id) || 0]);
  const tags = counts.tags.map((t) => [`tag-${t.tag}`, `#${t.tag}`, t.count]);
  if (state.view.startsWith("tag-") && !tags.some(([key]) => key === state.view)) {
    tags.push([state.view, viewLabel(state.view), 0]); // keep the chosen view in sight
  }
  const group = (title, list) => [
    title ? h("li", { class: "views-title", "aria-hidden": "true" }, title) : null,
    ...list.map(([key, label, count]) => h(
      "li", {},
      h(
        "button",
        {
          type: "button",
          testid: `view-${key}`,
          class: "view",
          "aria-current": key === state.view && !state.query ? "page" : null,
          onclick: () => selectView(key),
        },
        h("span", { class: "view-label" }, label),
        h("span", { testid: "view-count", class: "view-count" }, String(count)),
      ),
    )),
  ];
  const nav = $("views");
  keepFocus(nav, () => fill(
    nav,
    group("", items),
    channels.length ? group("Channels", channels) : null,
    tags.length ? group("Tags", tags) : null,
  ));
}

async function selectView(key) {
  state.view = key;
  state.query = "";
  $("search").value = "";
  updateHash();
  renderViews();
  await loadList(false);
}

function updateHash() {
  const params = new URLSearchParams();
  params.set("view", state.view);
  if (state.current) params.set("c", state.current.id);
  history.replaceState(null, "", `#${params}`);
}

// --- The list ----------------------------------------------------------------------

async function loadList(more) {
  const token = ++state.listToken;
  const api = state.api;
  const position = more ? state.next : null;
  const button = $("load-more");
  button.disabled = true;
  const answer = await attempt(() => (state.query
    ? api.search(state.query, { position, count: PAGE_SIZE })
    : api.inbox(viewFilters(state.view), { position, count: PAGE_SIZE })));
  button.disabled = false;
  if (!answer || token !== state.listToken) return;
  const found = state.query ? answer.data : answer.data.conversations;
  if (more) {
    const known = new Set(state.rows.map((c) => c.id));
    state.rows = state.rows.concat(found.filter((c) => !known.has(c.id)));
  } else {
    state.rows = found;
  }
  state.next = answer.meta.next_before_position || null;
  renderList();
}

function renderList() {
  $("list-title").textContent = state.query ? `Search: “${state.query}”` : viewLabel(state.view);
  const rows = $("rows");
  keepFocus(rows, () => fill(rows, state.rows.map(rowElement)));
  $("list-empty").hidden = state.rows.length > 0;
  $("load-more").hidden = !state.next;
}

function rowElement(c) {
  const selected = state.current && state.current.id === c.id;
  const unread = c.admin_unread_count || 0;
  const typing = state.typing.get(c.id);
  return h(
    "li",
    { testid: "conversation-row", dataset: { conversationId: c.id }, class: unread ? "row unread" : "row" },
    h(
      "button",
      {
        type: "button",
        class: "row-button",
        "aria-current": selected ? "true" : null,
        onclick: () => openConversation(c.id),
        onkeydown: onRowKey,
      },
      h(
        "span", { class: "row-top" },
        h("span", { testid: "row-user", class: "row-user" }, userName(c.user)),
        timeElement(c.last_update, "row-time"),
      ),
      h("span", { testid: "row-snippet", class: "row-snippet" },
        typing ? "" : partText(c.important_part_last)),
      typing ? h("span", { class: "row-typing" }, `${typing.who} is typing…`) : null,
      c.match ? h("span", { testid: "row-match", class: "row-match" }, snippet(c.match.snippet)) : null,
      h(
        "span", { class: "row-meta" },
        h("span", { testid: "row-assignee", class: "row-assignee" },
          c.assignee ? c.assignee.name || adminName(c.assignee.id) : "Unassigned"),
        h("span", { testid: "row-tags", class: "row-tags" }, c.tags.map((t) => h("span", { class: "chip" }, t))),
        unread ? h("span", { testid: "row-unread", class: "badge", title: `${unread} unread` }, String(unread)) : null,
      ),
    ),
  );
}

function onRowKey(event) {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  event.preventDefault();
  const buttons = [...document.querySelectorAll("#rows .row-button")];
  const at = buttons.indexOf(event.currentTarget);
  const next = buttons[at + (event.key === "ArrowDown" ? 1 : -1)];
  if (next) next.focus();
}

/** Fetches of a row overlap (live updates, the operator's actions): an answer applies only
 * if no fetch of that row started after it, so a late answer never shows an older state. */
function stampRow(id) {
  const stamp = (state.rowStamps.get(id) || 0) + 1;
  state.rowStamps.set(id, stamp);
  return stamp;
}

/** Put a fresh copy of a conversation where it belongs in the list (or take it out). */
function placeRow(c) {
  const at = state.rows.findIndex((r) => r.id === c.id);
  if (state.query) {
    if (at >= 0) state.rows[at] = { ...c, match: state.rows[at].match };
    return;
  }
  if (at >= 0) state.rows.splice(at, 1);
  if (!inView(c, state.view)) return;
  let index = state.rows.findIndex((r) => newerFirst(c, r) < 0);
  if (index < 0) {
    if (state.next) return; // older than every loaded row: "load more" brings it
    index = state.rows.length;
  }
  state.rows.splice(index, 0, c);
}

// --- Search ------------------------------------------------------------------------

function onSearch(event) {
  event.preventDefault();
  const q = $("search").value.trim();
  if (!q) {
    selectView(state.view);
    return;
  }
  state.query = q;
  renderViews();
  loadList(false);
}

function onSearchKey(event) {
  if (event.key === "Escape" && $("search").value) {
    $("search").value = "";
    selectView(state.view);
  }
}

function onSearchInput() {
  // Clearing the box (its "x" included) returns to the view.
  if (!$("search").value && state.query) selectView(state.view);
}

// --- One conversation --------------------------------------------------------------

async function openConversation(id) {
  const token = ++state.openToken;
  const api = state.api;
  saveDraft();
  state.current = { id, conversation: null, parts: new Map(), partsNext: null, others: null };
  state.pendingReply = null;
  updateHash();
  renderList();
  fill($("pane"), h("p", { class: "muted empty" }, "Loading…"));
  const [conversation, parts] = await Promise.all([
    attempt(() => api.conversation(id), "Could not open the conversation"),
    attempt(() => api.parts(id), "Could not load the messages"),
  ]);
  if (token !== state.openToken) return;
  if (!conversation || !parts) {
    fill($("pane"), h("p", { class: "muted empty" }, "This conversation could not be loaded."));
    return;
  }
  const current = state.current;
  current.conversation = conversation.data;
  for (const part of parts.data) current.parts.set(part.id, part);
  current.partsNext = parts.meta.next_before_position || null;
  buildPane();
  if (current.conversation.admin_unread_count > 0) markRead(id);
  loadOtherConversations(current);
}

async function markRead(id) {
  const answer = await attempt(() => state.api.read(id), "Could not mark it read");
  if (!answer) return;
  const row = state.rows.find((r) => r.id === id);
  if (row) row.admin_unread_count = answer.data.admin_unread_count;
  if (state.current && state.current.id === id && state.current.conversation) {
    state.current.conversation.admin_unread_count = answer.data.admin_unread_count;
  }
  renderList();
}

/** Fetch the open conversation again, and its row in the list. */
async function refreshCurrent() {
  const current = state.current;
  if (!current || !current.conversation) return;
  const api = state.api;
  // Refreshes overlap (a live update, the operator's own action): only the latest started
  // may apply, so an answer that arrives late never shows an older state over a newer one.
  // The same holds for the row with the row's other fetches.
  const started = (current.refreshes = (current.refreshes || 0) + 1);
  const rowStamp = stampRow(current.conversation.id);
  const [conversation, parts] = await Promise.all([api.conversation(current.id), api.parts(current.id)]);
  if (state.current !== current || started !== current.refreshes) return;
  if (state.rowStamps.get(conversation.data.id) === rowStamp) {
    placeRow({ ...conversation.data });
    renderList();
  }
  const before = current.conversation.admin_unread_count;
  current.conversation = conversation.data;
  for (const part of parts.data) current.parts.set(part.id, part);
  renderHead();
  renderParts();
  renderCard();
  const watching = document.visibilityState === "visible" && document.hasFocus();
  if (current.conversation.admin_unread_count > 0 && watching && before !== undefined) {
    markRead(current.id);
  }
}

async function loadEarlier() {
  const current = state.current;
  if (!current || !current.partsNext) return;
  const answer = await attempt(() => state.api.parts(current.id, current.partsNext));
  if (!answer || state.current !== current) return;
  for (const part of answer.data) current.parts.set(part.id, part);
  current.partsNext = answer.meta.next_before_position || null;
  renderParts();
}

async function loadOtherConversations(current) {
  const user = current.conversation.user;
  if (!user) return;
  const answer = await attempt(() => state.api.userConversations(user.id));
  if (!answer || state.current !== current) return;
  current.others = answer.data.filter((c) => c.id !== current.id);
  renderCard();
}

function buildPane() {
  const current = state.current;
  const c = current.conversation;
  current.el = {
    head: h("div", { class: "conv-head" }),
    parts: h("ol", { class: "parts", "aria-label": "Messages" }),
    typing: h("p", { testid: "typing", class: "typing", "aria-live": "polite", hidden: true }),
    card: h("aside", { testid: "user-card", class: "user-card", "aria-label": "User" }),
  };
  const input = h("textarea", {
    testid: "reply-input",
    id: "reply-input",
    rows: 3,
    placeholder: "Write a reply… (Enter sends, Shift+Enter: new line)",
    "aria-label": "Reply",
    oninput: onDraftInput,
    onkeydown: (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send("reply_admin");
      }
    },
  });
  input.value = state.drafts.get(c.id) || "";
  current.el.input = input;
  const reply = h(
    "form", { class: "reply", onsubmit: (e) => { e.preventDefault(); send("reply_admin"); } },
    input,
    h(
      "div", { class: "reply-buttons" },
      h("button", { type: "button", testid: "send-note", class: "note-button", onclick: () => send("note") }, "Add note"),
      h("button", { type: "submit", testid: "send-reply", class: "primary" }, "Send reply"),
    ),
  );
  const earlier = h("button", { type: "button", class: "load-earlier", onclick: loadEarlier }, "Load earlier messages");
  current.el.earlier = earlier;
  fill(
    $("pane"),
    h(
      "div", { testid: "conversation", dataset: { conversationId: c.id }, class: "conversation" },
      current.el.head, earlier, current.el.parts, current.el.typing, reply,
    ),
    current.el.card,
  );
  renderHead();
  renderParts();
  renderTyping();
  renderCard();
}

function renderHead() {
  const current = state.current;
  const c = current.conversation;
  const status = statusOf(c);
  const id = c.id;
  const assignSelect = h(
    "select", { testid: "assign-select", id: "assign-select", onchange: (e) => act(() => state.api.assign(id, e.target.value), "Could not assign") },
    h("option", { value: "" }, "Unassigned"),
    [...state.admins.values()].map((a) => h("option", { value: a.id }, a.name)),
  );
  assignSelect.value = c.assignee ? c.assignee.id : "";
  const channelSelect = h(
    "select", { testid: "channel-select", id: "channel-select", onchange: (e) => act(() => state.api.moveToChannel(id, e.target.value), "Could not move it") },
    h("option", { value: "" }, "No channel"),
    state.channels.map((ch) => h("option", { value: ch.id }, ch.name)),
  );
  channelSelect.value = c.channel ? c.channel.id : "";
  // What the operator is typing survives a rebuild (a live update may come meanwhile).
  const typed = (testid) => {
    const el = byTestId(current.el.head, testid);
    return el ? el.value : null;
  };
  const snoozeInput = h("input", {
    type: "datetime-local",
    testid: "snooze-input",
    id: "snooze-input",
    min: localInputValue(Date.now() / 1000),
    value: typed("snooze-input") || localInputValue(Math.ceil(Date.now() / 3600000) * 3600 + 3600),
  });
  const tagInput = h("input", {
    type: "text", testid: "tag-input", id: "tag-input", maxlength: 255, placeholder: "New tag",
    "aria-label": "New tag",
    onkeydown: (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        addTag(id, tagInput);
      }
    },
  });
  tagInput.value = typed("tag-input") || "";
  const title = h("h2", { class: "conv-title" }, userName(c.user));
  const stateLabel = h("span", { testid: "conversation-state", class: `state state-${status}` }, status);
  const snoozed = status === "snoozed"
    ? h("span", { class: "muted" }, `until ${formatDateTime(c.delayed_until)}`) : null;
  keepFocus(current.el.head, () => fill(
    current.el.head,
    h("div", { class: "conv-title-line" }, title, stateLabel, snoozed),
    h(
      "div", { class: "actions", role: "group", "aria-label": "Actions" },
      h("button", { type: "button", testid: "assign-me", onclick: () => act(() => state.api.assign(id, state.session.admin), "Could not assign"), disabled: c.assignee && c.assignee.id === state.session.admin }, "Assign to me"),
      h("label", { for: "assign-select" }, "Assignee"), assignSelect,
      c.closed
        ? h("button", { type: "button", testid: "reopen", onclick: () => act(() => state.api.reopen(id), "Could not reopen") }, "Reopen")
        : h("button", { type: "button", testid: "close", onclick: () => act(() => state.api.close(id), "Could not close") }, "Close"),
      h("label", { for: "channel-select" }, "Channel"), channelSelect,
    ),
    h(
      "div", { class: "actions", role: "group", "aria-label": "Snooze" },
      h("label", { for: "snooze-input" }, "Snooze until"), snoozeInput,
      h("button", { type: "button", testid: "snooze", onclick: () => snooze(id, snoozeInput) }, "Snooze"),
      status === "snoozed"
        ? h("button", { type: "button", testid: "unsnooze", onclick: () => act(() => state.api.delay(id, 0), "Could not wake it") }, "Wake now")
        : null,
    ),
    h(
      "div", { class: "actions tags", role: "group", "aria-label": "Tags" },
      c.tags.map((tag) => h(
        "span", { testid: "tag", class: "chip" }, tag,
        h("button", { type: "button", testid: "tag-remove", class: "chip-remove", "aria-label": `Remove tag ${tag}`, title: `Remove tag ${tag}`, onclick: () => act(() => state.api.removeTag(id, tag), "Could not remove the tag") }),
      )),
      tagInput,
      h("button", { type: "button", testid: "tag-add", onclick: () => addTag(id, tagInput) }, "Add tag"),
    ),
  ));
}

function snooze(id, input) {
  if (!input.value) {
    showError("Choose when the conversation should come back.");
    return;
  }
  const until = new Date(input.value).getTime() / 1000; // the input is in local time
  if (!(until > Date.now() / 1000)) {
    showError("Choose a time in the future.");
    return;
  }
  act(() => state.api.delay(id, until), "Could not snooze");
}

function addTag(id, input) {
  const tag = input.value.trim();
  if (!tag) {
    input.focus();
    return;
  }
  input.value = "";
  act(() => state.api.addTag(id, tag), "Could not add the tag").then((ok) => {
    const field = byTestId(document, "tag-input");
    if (!ok && field && !field.value) field.value = tag; // not added: give it back
  });
}

/** A conversation action: on success the pane and the counts are fetched again. */
async function act(work, failure) {
  const done = await attempt(work, failure);
  if (done === undefined) {
    if (state.current) renderHead(); // put the controls back as the server has it
    return false;
  }
  await attempt(refreshCurrent); // the pane and the row, unless a newer fetch overtook it
  renderList();
  scheduleCounts();
  return true;
}

function systemText(part) {
  const who = authorName(part.from);
  switch (part.type) {
    case "assigned":
      return part.assignee ? `${who} assigned it to ${part.assignee.name}` : `${who} unassigned it`;
    case "closed":
      return `${who} closed the conversation`;
    case "opened":
      return `${who} reopened the conversation`;
    case "delayed": {
      const until = part.body_json && part.body_json.delayed_until;
      return until ? `${who} snoozed it until ${formatDateTime(until)}` : `${who} woke it up`;
    }
    case "tag_added":
      return `${who} added the tag “${part.tag}”`;
    case "tag_deleted":
      return `${who} removed the tag “${part.tag}”`;
    case "channel_changed": {
      const channel = part.body_json && part.body_json.channel;
      return channel ? `${who} moved it to ${channelName(channel)}` : `${who} took it out of its channel`;
    }
    default:
      return part.body ? operatorText(part.body) : `${who}: service update`;
  }
}

function partElement(part, user) {
  if (SYSTEM_PARTS.has(part.type)) {
    return h(
      "li", { testid: "part", dataset: { partType: part.type, partId: part.id }, class: "part system" },
      h("span", { testid: "part-body", class: "part-body" }, systemText(part)),
      " · ",
      timeElement(part.created, "part-time"),
    );
  }
  const fromUser = part.type === "reply_user";
  const kind = fromUser ? "from-user" : part.type === "note" ? "note" : "from-admin";
  const body = fromUser ? document.createTextNode(part.body) : operatorBody(part.body || "");
  const files = (part.attachments || []).map((a) => h(
    "li", {}, `📎 ${a.filename} (${Math.max(1, Math.round(a.size / 1024))} KB)`,
  ));
  return h(
    "li", { testid: "part", dataset: { partType: part.type, partId: part.id }, class: `part ${kind}` },
    h(
      "div", { class: "part-head" },
      h("span", { class: "part-author" }, fromUser ? userName(user) : authorName(part.from)),
      part.type === "note" ? h("span", { class: "note-label" }, "Internal note") : null,
      timeElement(part.created, "part-time"),
    ),
    h("div", { testid: "part-body", class: "part-body" }, body),
    files.length ? h("ul", { class: "files" }, files) : null,
    part.type === "reply_admin" && part.read ? h("span", { class: "muted seen" }, "Seen") : null,
  );
}

function renderParts() {
  const current = state.current;
  const list = current.el.parts;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const parts = [...current.parts.values()].sort((a, b) => Number(a.id) - Number(b.id));
  fill(list, parts.map((p) => partElement(p, current.conversation.user)));
  current.el.earlier.hidden = !current.partsNext;
  if (atBottom || !current.scrolled) {
    list.scrollTop = list.scrollHeight;
    current.scrolled = true;
  }
}

function renderTyping() {
  const current = state.current;
  if (!current || !current.el) return;
  const typing = state.typing.get(current.id);
  current.el.typing.textContent = typing ? `${typing.who} is typing…` : "";
  current.el.typing.hidden = !typing;
}

function renderCard() {
  const current = state.current;
  const c = current.conversation;
  const user = c.user || {};
  const props = user.props || {};
  const rows = Object.entries(props)
    .filter(([key]) => key !== "$name" && key !== "$email")
    .map(([key, value]) => [key.replace(/^\$/, ""), typeof value === "object" ? JSON.stringify(value) : String(value)]);
  const others = current.others;
  fill(
    current.el.card,
    h("h3", { class: "card-name", testid: "user-name" }, userName(user)),
    props.$email ? h("p", { testid: "user-email", class: "card-email" }, props.$email) : null,
    user.user_id ? h("p", { class: "muted" }, `Site id: ${user.user_id}`) : null,
    rows.length ? h("dl", { class: "props" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])) : null,
    h("h4", {}, "Other conversations"),
    h(
      "ul", { testid: "user-conversations", class: "others" },
      others === null ? h("li", { class: "muted" }, "Loading…")
        : others.length === 0 ? h("li", { class: "muted" }, "None")
          : others.map((o) => h(
            "li", {},
            h(
              "button", { type: "button", class: "other", dataset: { conversationId: o.id }, onclick: () => openConversation(o.id) },
              h("span", { class: "other-text" }, partText(o.important_part_last) || "(no message)"),
              h("span", { class: "muted" }, statusOf(o), " · ", timeElement(o.last_update)),
            ),
          )),
    ),
  );
}

// --- Writing -----------------------------------------------------------------------

function saveDraft() {
  const current = state.current;
  if (current && current.el && current.el.input) {
    state.drafts.set(current.id, current.el.input.value);
  }
}

function onDraftInput(event) {
  const current = state.current;
  if (!current) return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_EVERY_MS || !event.target.value.trim()) return;
  state.lastTypingSent = now;
  state.api.typing(current.id, event.target.value).catch(() => {}); // best effort
}

async function send(type) {
  const current = state.current;
  if (!current || !current.el) return;
  const input = current.el.input;
  const body = input.value;
  if (!body.trim()) {
    input.focus();
    return;
  }
  // The same text sent again (after a failure) keeps its key: never a duplicate.
  let pending = state.pendingReply;
  if (!pending || pending.body !== body || pending.type !== type || pending.id !== current.id) {
    pending = { body, type, id: current.id, randomId: randomId() };
    state.pendingReply = pending;
  }
  const buttons = current.el.head.parentElement.querySelectorAll(".reply button");
  buttons.forEach((b) => { b.disabled = true; });
  const what = type === "note" ? "The note was not saved" : "The reply was not sent";
  const answer = await attempt(() => state.api.reply(current.id, body, type, pending.randomId), what);
  buttons.forEach((b) => { b.disabled = false; });
  if (!answer) return;
  state.pendingReply = null;
  state.drafts.delete(current.id);
  if (state.current === current) {
    if (input.value === body) input.value = "";
    current.parts.set(answer.data.id, answer.data);
    renderParts();
    input.focus();
    attempt(refreshCurrent);
  }
  scheduleCounts();
}

// --- Live updates ------------------------------------------------------------------

function onRealtime(message) {
  if (message.channel === "ping") return;
  const body = message.message || {};
  if (message.channel.startsWith("conversation_typing.")) {
    onTyping(body);
    return;
  }
  const id = String(body.conversation);
  if (body.part && body.part.type === "reply_user") clearTyping(id);
  if (body.part && body.part.from && typeof body.part.from === "object") clearTyping(id);
  state.refreshIds.add(id);
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(flushRefresh, REFRESH_DELAY_MS);
  scheduleCounts();
}

async function flushRefresh() {
  const ids = [...state.refreshIds];
  state.refreshIds.clear();
  const api = state.api;
  if (!api) return;
  const stamps = ids.map(stampRow);
  const fresh = await Promise.all(ids.map((id) => api.conversation(id).then((a) => a.data, () => null)));
  if (api !== state.api) return;
  fresh.forEach((c, i) => {
    if (c && state.rowStamps.get(ids[i]) === stamps[i]) placeRow(c);
  });
  renderList();
  if (state.current && ids.includes(state.current.id)) attempt(refreshCurrent);
}

function onTyping(body) {
  const id = String(body.conversation);
  const from = body.from || {};
  if (from.kind === "admin" && String(from.id) === state.session.admin) return;
  if (!body.body) {
    clearTyping(id);
    return;
  }
  let who = "Someone";
  if (from.kind === "user") {
    const row = state.rows.find((r) => r.id === id);
    const conversation = state.current && state.current.id === id ? state.current.conversation : null;
    who = userName((row && row.user) || (conversation && conversation.user)) || "The user";
  } else if (from.kind === "admin") {
    who = adminName(from.id);
  } else {
    who = "The team";
  }
  const previous = state.typing.get(id);
  if (previous) clearTimeout(previous.timer);
  state.typing.set(id, { who, timer: setTimeout(() => clearTyping(id), TYPING_MS) });
  renderTyping();
  renderList();
}

function clearTyping(id) {
  const typing = state.typing.get(id);
  if (!typing) return;
  clearTimeout(typing.timer);
  state.typing.delete(id);
  renderTyping();
  renderList();
}

// --- Password reset (a link from `threadline password reset`: /#reset=<token>) -----

function resetToken() {
  const match = /^#reset=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
  return match ? match[1] : null;
}

function showReset() {
  $("inbox").hidden = true;
  $("login").hidden = false;
  $("login-form").hidden = true;
  $("reset-form").hidden = false;
  $("reset-password").focus();
}

async function onReset(event) {
  event.preventDefault();
  const error = document.querySelector('[data-testid="reset-error"]');
  const submit = document.querySelector('[data-testid="reset-submit"]');
  submit.disabled = true;
  try {
    await resetPassword(resetToken(), $("reset-password").value);
    $("reset-password").value = "";
    // The token leaves the address bar (and the history entry) once used.
    window.history.replaceState(null, "", window.location.pathname);
    $("reset-form").hidden = true;
    $("login-form").hidden = false;
    showLogin("Your password is set. Please sign in.");
  } catch (e) {
    error.textContent = e.message.replace(/^\w+: /, "");
    error.hidden = false;
  } finally {
    submit.disabled = false;
  }
}

// --- Start -------------------------------------------------------------------------

async function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("reset-form").addEventListener("submit", onReset);
  $("logout").addEventListener("click", onLogout);
  $("settings-open").addEventListener("click", () => {
    if (!state.api) return;
    const onChange = (twoFactor) => {
      state.session = { ...state.session, two_factor: twoFactor };
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state.session));
    };
    const onAudit = () => { if (state.api) showAudit(state.api, state.admins, $("audit")); };
    showSettings(state.api, state.session, $("settings"), onChange, onAudit);
  });
  $("audit-open").addEventListener("click", () => {
    if (state.api) showAudit(state.api, state.admins, $("audit"));
  });
  $("search-form").addEventListener("submit", onSearch);
  $("search").addEventListener("keydown", onSearchKey);
  $("search").addEventListener("input", onSearchInput);
  $("load-more").addEventListener("click", () => loadList(true));
  window.addEventListener("offline", renderBanner);
  window.addEventListener("online", () => {
    renderBanner();
    if (state.realtime) state.realtime.reconnectNow();
  });
  document.addEventListener("keydown", (event) => {
    const typingInField = event.target.closest("input, textarea, select");
    if (event.key === "/" && !typingInField && state.session) {
      event.preventDefault();
      $("search").focus();
    }
  });
  if (resetToken()) {
    showReset();
    return;
  }
  let session = null;
  try {
    session = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
  } catch {
    session = null;
  }
  if (!session || !session.token) {
    showLogin();
    return;
  }
  try {
    const who = await new Api(session).whoAmI();
    session = {
      ...session, name: who.data.name, role: who.data.role, two_factor: who.data.two_factor,
    };
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      sessionStorage.removeItem(STORAGE_KEY);
      showLogin("Your session has ended. Please sign in again.");
      return;
    }
    state.apiDown = error.status === 0;
    renderBanner();
  }
  startInbox(session);
}

boot();
