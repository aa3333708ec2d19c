// The inbox's state, as signals, and every change to it. Components read the signals and
// re-render when they change; nothing else touches the page. Each conversation is kept
// once (`conversations`): its row in the list and the open pane show the same copy, so
// they never disagree, and a list is a function of the copies it holds (`rows`).
import { Api, UNREACHABLE, randomId } from "./api.js";
import { BAD_TOKEN, Realtime } from "./realtime.js";
import { batch, computed, effect, signal } from "./vendor/signals/index.js";

/**
 * @typedef {import("./api.js").Session} Session
 * @typedef {{id: string, name: string, email?: string}} Admin
 * @typedef {{id: string, name: string}} Channel
 * @typedef {{id: string, user_id?: string | null, props?: Record<string, unknown>}} User
 * @typedef {{id: string, name?: string, type?: string}} Author
 * @typedef {{id: string, filename: string, size: number, mime_type?: string}} Attachment
 * @typedef {{
 *   id: string, type: string, body?: string | null, body_html?: string, created: number, read?: boolean,
 *   from?: Author | null, assignee?: {id: string, name: string} | null, tag?: string,
 *   body_json?: Record<string, any> | null, attachments?: Attachment[]
 * }} Part
 * @typedef {{
 *   id: string, user?: User | null, last_update: number, closed: boolean, replied?: boolean,
 *   removed?: boolean, delayed_until?: number | null, assignee?: {id: string, name?: string} | null,
 *   channel?: {id: string} | null, tags: string[], admin_unread_count?: number,
 *   important_part_last?: Part | null
 * }} Conversation
 * @typedef {{
 *   open: number, unassigned: number, delayed: number, closed: number,
 *   assignees: {id: string, count: number}[], channels: {id: string, count: number}[],
 *   tags: {tag: string, count: number}[]
 * }} Counts
 * @typedef {{status?: string, assignee?: string | number, channel?: string, tag?: string}} Filters
 * @typedef {{
 *   key: string, ids: string[], matches: Map<string, string>, next: unknown,
 *   boundary: {last_update: number, id: string} | null, loading: boolean
 * }} List
 * @typedef {{
 *   id: string, status: "loading" | "ready" | "failed", parts: Map<string, Part>,
 *   partsNext: unknown, others: Conversation[] | null
 * }} Pane
 */

const STORAGE_KEY = "threadline.inbox.session";
export const PAGE_SIZE = 20;
// How long "typing…" stays without a new notice.
const TYPING_MS = 6000;
// At most one typing notice per this many ms while the operator types.
const TYPING_EVERY_MS = 2500;
// Changes arriving together are fetched once.
const REFRESH_DELAY_MS = 120;
const ERROR_MS = 10000;
export const FIXED_VIEWS = [
  ["open", "Open"],
  ["mine", "Assigned to me"],
  ["unassigned", "Unassigned"],
  ["delayed", "Snoozed"],
  ["closed", "Closed"],
];

// --- State -------------------------------------------------------------------------

/** @type {import("./vendor/signals/index.js").Signal<Session | null>} */
export const session = signal(null);
/** "starting", "login", "reset" (a password reset link) or "inbox". */
export const screen = signal("starting");
export const loginMessage = signal("");
/** @type {import("./vendor/signals/index.js").Signal<Map<string, Admin>>} */
export const admins = signal(new Map());
/** @type {import("./vendor/signals/index.js").Signal<Channel[]>} */
export const channels = signal([]);
/** @type {import("./vendor/signals/index.js").Signal<Counts | null>} */
export const counts = signal(null);
export const view = signal("open");
export const query = signal("");
/** @type {import("./vendor/signals/index.js").Signal<List>} */
export const list = signal(emptyList(""));
/** Every conversation the page knows, by id: rows and the pane show these copies. */
/** @type {import("./vendor/signals/index.js").Signal<Map<string, Conversation>>} */
export const conversations = signal(new Map());
/** @type {import("./vendor/signals/index.js").Signal<Pane | null>} */
export const pane = signal(null);
/** Who is typing in which conversation. */
/** @type {import("./vendor/signals/index.js").Signal<Map<string, string>>} */
export const typing = signal(new Map());
export const error = signal("");
export const apiDown = signal(false);
/** @type {import("./vendor/signals/index.js").Signal<string | null>} */
export const streamDown = signal(null);
export const online = signal(navigator.onLine);
/** The time snoozes are judged by (Unix seconds); moved on when the next one ends. */
export const now = signal(Date.now() / 1000);
export const auditOpen = signal(false);
export const settingsOpen = signal(false);

/** @type {Api | null} */
let api = null;
/** @type {Realtime | null} */
let realtime = null;
// Unsent text per conversation, kept in this tab's storage (as the session is): a reload
// brings it back; signing out forgets it.
const DRAFTS_KEY = "threadline.inbox.drafts";
/** @type {Map<string, string>} */
const drafts = savedDrafts();
/** @type {{body: string, type: string, id: string, randomId: string, file: File | null} | null} */
let pendingReply = null;
let lastTypingSent = 0;
/** @type {Set<string>} */
const refreshIds = new Set();
/** @type {ReturnType<typeof setTimeout> | undefined} */
let refreshTimer;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let countsTimer;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let errorTimer;
/** @type {Map<string, ReturnType<typeof setTimeout>>} */
const typingTimers = new Map();

/** @returns {Map<string, string>} */
function savedDrafts() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(DRAFTS_KEY) || "{}");
    return new Map(Object.entries(saved).filter(([, text]) => typeof text === "string"));
  } catch {
    return new Map();
  }
}

function keepDrafts() {
  try {
    if (drafts.size) sessionStorage.setItem(DRAFTS_KEY, JSON.stringify(Object.fromEntries(drafts)));
    else sessionStorage.removeItem(DRAFTS_KEY);
  } catch {
    // Storage full or disabled: the drafts last as long as the page.
  }
}

/** @param {string} key */
function emptyList(key) {
  return { key, ids: [], matches: new Map(), next: null, boundary: null, loading: true };
}

// --- Derived -----------------------------------------------------------------------

export const bannerText = computed(() => {
  if (!online.value) return "You are offline. The inbox reconnects when the network is back.";
  if (apiDown.value) return UNREACHABLE;
  return streamDown.value || "";
});

/** The list's key: a view, or a search. */
export const listKey = computed(() => (query.value ? `search:${query.value}` : `view:${view.value}`));

/** The rows shown: the list's conversations still in its view, newest first. */
export const rows = computed(() => {
  const current = list.value;
  if (current.key !== listKey.value) return [];
  const known = conversations.value;
  const found = /** @type {Conversation[]} */ (current.ids.map((id) => known.get(id)).filter(Boolean));
  if (query.value) return found;
  const at = now.value;
  const boundary = current.boundary;
  return found
    .filter((c) => inView(c, view.value, at))
    .filter((c) => !current.next || !boundary || newerFirst(c, boundary) <= 0)
    .sort(newerFirst);
});

export const current = computed(() => {
  const p = pane.value;
  return p ? conversations.value.get(p.id) || null : null;
});

// --- Small helpers -----------------------------------------------------------------

/** @param {User | null | undefined} user */
export function userName(user) {
  if (!user) return "Unknown user";
  const props = user.props || {};
  return String(props.$name || props.$email || user.user_id || `User ${user.id}`);
}

/** @param {Author | null | undefined} from */
export function authorName(from) {
  if (from && typeof from === "object") {
    if (from.type === "bot") return from.name || "Bot";
    return from.name || (from.type === "message_sender" ? "The team" : `Admin ${from.id}`);
  }
  return "System";
}

/** @param {string | number} id */
export function adminName(id) {
  const admin = admins.value.get(String(id));
  return admin ? admin.name : `Admin ${id}`;
}

/** @param {string | number} id */
export function channelName(id) {
  const channel = channels.value.find((c) => c.id === String(id));
  return channel ? channel.name : `Channel ${id}`;
}

/**
 * @param {Conversation} c
 * @param {number} at Unix seconds
 */
export function statusOf(c, at) {
  if (c.closed) return "closed";
  if (c.delayed_until && c.delayed_until > at) return "snoozed";
  return "open";
}

/** @param {string} key */
export function viewFilters(key) {
  /** @type {Filters} */
  let filters = { status: "open" };
  if (key === "open" || key === "delayed" || key === "closed") filters = { status: key };
  else if (key === "mine") filters = { status: "open", assignee: session.value ? session.value.admin : "" };
  else if (key === "unassigned") filters = { status: "open", assignee: 0 };
  else if (key.startsWith("channel-")) filters = { status: "open", channel: key.slice(8) };
  else if (key.startsWith("tag-")) filters = { status: "open", tag: key.slice(4) };
  return filters;
}

/** @param {string} key */
export function viewLabel(key) {
  const fixed = FIXED_VIEWS.find(([k]) => k === key);
  if (fixed) return fixed[1];
  if (key.startsWith("channel-")) return channelName(key.slice(8));
  if (key.startsWith("tag-")) return `#${key.slice(4)}`;
  return key;
}

/**
 * Does conversation `c` (as GET /conversations/{id} answers) belong to view `key`?
 * @param {Conversation} c
 * @param {string} key
 * @param {number} at
 */
function inView(c, key, at) {
  if (!c.replied || c.removed) return false;
  const f = viewFilters(key);
  const status = statusOf(c, at) === "snoozed" ? "delayed" : statusOf(c, at);
  if (f.status !== status) return false;
  const assignee = c.assignee ? c.assignee.id : null;
  if (f.assignee === 0 && assignee !== null) return false;
  if (f.assignee && assignee !== f.assignee) return false;
  if (f.channel !== undefined && (c.channel ? c.channel.id : null) !== f.channel) return false;
  if (f.tag !== undefined && !c.tags.includes(f.tag)) return false;
  return true;
}

/**
 * @param {{last_update: number, id: string}} a
 * @param {{last_update: number, id: string}} b
 */
function newerFirst(a, b) {
  if (a.last_update !== b.last_update) return b.last_update - a.last_update;
  return Number(b.id) - Number(a.id);
}

// --- Conversations: one copy each --------------------------------------------------

// Fetches of a conversation overlap (live updates, the operator's actions, list pages).
// Each fetch is numbered when it starts; an answer replaces the copy only if it started
// after the one the copy came from, so an answer that arrives late never shows an older
// state, whichever screen asked for it.
let fetches = 0;
/** @type {Map<string, number>} */
const copiedFrom = new Map();

/**
 * @param {Conversation[]} found
 * @param {number} started
 */
function keep(found, started) {
  const next = new Map(conversations.value);
  for (const c of found) {
    if ((copiedFrom.get(c.id) || 0) > started) continue;
    copiedFrom.set(c.id, started);
    next.set(c.id, c);
  }
  conversations.value = next;
}

/**
 * Change one copy in place of a fetch (an answer that says only part of it).
 * @param {string} id
 * @param {Partial<Conversation>} change
 */
function patch(id, change) {
  const c = conversations.value.get(id);
  if (!c) return;
  conversations.value = new Map(conversations.value).set(id, { ...c, ...change });
}

/**
 * Fetch a conversation again (and the open pane's messages, when it is the one open).
 * @param {string} id
 */
async function refresh(id) {
  const client = api;
  if (!client) return;
  const started = ++fetches;
  const open = pane.value && pane.value.id === id ? pane.value : null;
  const [conversation, parts] = await Promise.all([
    client.conversation(id).then(
      (a) => a.data,
      () => null,
    ),
    open
      ? client.parts(id).then(
          (a) => a,
          () => null,
        )
      : null,
  ]);
  if (client !== api) return;
  batch(() => {
    if (conversation) {
      keep([conversation], started);
      const shown = list.value;
      if (!query.value && shown.key === listKey.value && !shown.ids.includes(id)) {
        list.value = { ...shown, ids: [...shown.ids, id] };
      }
    }
    if (parts && open && pane.value && pane.value.id === id && pane.value.status === "ready") {
      addParts(id, parts.data, started, undefined);
    }
  });
  const c = conversations.value.get(id);
  const watching = document.visibilityState === "visible" && document.hasFocus();
  if (c && open && pane.value && pane.value.id === id && (c.admin_unread_count || 0) > 0 && watching) {
    markRead(id);
  }
}

/** @type {Map<string, number>} */
const partsCopiedFrom = new Map();

/**
 * Merge parts into the open pane (the same rule as for conversations, per part).
 * @param {string} id
 * @param {Part[]} found
 * @param {number} started
 * @param {unknown} partsNext the earlier page's position, when this answer says it
 */
function addParts(id, found, started, partsNext) {
  const p = pane.value;
  if (!p || p.id !== id) return;
  const parts = new Map(p.parts);
  for (const part of found) {
    if ((partsCopiedFrom.get(part.id) || 0) > started) continue;
    partsCopiedFrom.set(part.id, started);
    parts.set(part.id, part);
  }
  pane.value = { ...p, parts, partsNext: partsNext === undefined ? p.partsNext : partsNext };
}

// --- Messages to the operator ------------------------------------------------------

/** @param {string} message */
export function showError(message) {
  error.value = message;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => {
    error.value = "";
  }, ERROR_MS);
}

/**
 * Run an API call; report a failure to the operator (and end a revoked session).
 * @template T
 * @param {() => Promise<T>} work
 * @param {string} [failure]
 * @returns {Promise<T | undefined>}
 */
async function attempt(work, failure = "") {
  try {
    const result = await work();
    apiDown.value = false;
    return result;
  } catch (e) {
    const err = /** @type {import("./api.js").ApiError} */ (e);
    if (err.status === 0) {
      apiDown.value = true;
    } else if (err.status === 401) {
      endSession("Your session has ended. Please sign in again.");
      return undefined;
    }
    showError(failure ? `${failure}: ${err.message}` : err.message);
    return undefined;
  }
}

// --- Signing in and out ------------------------------------------------------------

/** @param {string} message */
export function showLogin(message = "") {
  batch(() => {
    screen.value = "login";
    loginMessage.value = message;
  });
}

/** @param {string} message */
export function endSession(message) {
  if (realtime) realtime.stop();
  realtime = null;
  api = null;
  sessionStorage.removeItem(STORAGE_KEY);
  drafts.clear();
  keepDrafts();
  clearTimeout(refreshTimer);
  clearTimeout(countsTimer);
  refreshIds.clear();
  batch(() => {
    auditOpen.value = false;
    settingsOpen.value = false;
    session.value = null;
    streamDown.value = null;
    apiDown.value = false;
    counts.value = null;
    pane.value = null;
    conversations.value = new Map();
    list.value = emptyList("");
    showLogin(message);
  });
}

/** @param {Session} signedIn */
export function signedIn(signedIn) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(signedIn));
  startInbox(signedIn);
}

/**
 * Two-step sign-in turned on or off from the settings: the session's copy (and the tab's
 * saved one) says so.
 * @param {boolean} on
 */
export function twoFactorChanged(on) {
  const current = session.value;
  if (!current) return;
  const changed = { ...current, two_factor: on };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(changed));
  session.value = changed;
}

export async function signOut() {
  if (api) {
    try {
      await api.signOut();
    } catch {
      // Signing out locally still forgets the token.
    }
  }
  endSession("");
}

/** The session this tab kept (a reload keeps it), or null. */
export function savedSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    return saved?.token ? /** @type {Session} */ (saved) : null;
  } catch {
    return null;
  }
}

export function forgetSession() {
  sessionStorage.removeItem(STORAGE_KEY);
}

// --- The inbox ---------------------------------------------------------------------

/** @param {Session} started */
export async function startInbox(started) {
  const client = new Api(started);
  api = client;
  batch(() => {
    session.value = started;
    screen.value = "inbox";
    loginMessage.value = "";
  });
  // Subscribed first: every change committed from here on reaches the page.
  realtime = new Realtime({
    token: started.token,
    channels: [`conversation.${started.app}`, `conversation_typing.${started.app}`, "ping"],
    onMessage: onRealtime,
    onStatus: onStreamStatus,
    onRefused: (/** @type {number} */ code) => {
      if (code === BAD_TOKEN) endSession("Your session has ended. Please sign in again.");
      else showError("Live updates were refused for this account.");
    },
  });
  realtime.start();
  const [adminList, channelList] = await Promise.all([
    attempt(() => client.admins(), "Could not load the operators"),
    attempt(() => client.channels(), "Could not load the channels"),
  ]);
  if (client !== api) return;
  batch(() => {
    admins.value = new Map((adminList ? adminList.data : []).map((/** @type {Admin} */ a) => [a.id, a]));
    channels.value = channelList ? channelList.data : [];
  });
  const wanted = new URLSearchParams(window.location.hash.slice(1));
  await Promise.all([refreshCounts(), selectView(wanted.get("view") || "open")]);
  const open = wanted.get("c");
  if (open) openConversation(open);
}

/** @param {{connected: boolean, retryInMs?: number}} status */
function onStreamStatus({ connected, retryInMs }) {
  if (connected) {
    streamDown.value = null;
    scheduleCounts();
  } else {
    const seconds = Math.max(1, Math.round((retryInMs || 0) / 1000));
    streamDown.value = `Live updates are disconnected. Reconnecting in ${seconds} s…`;
  }
}

export function goneOnline() {
  online.value = navigator.onLine;
  if (navigator.onLine && realtime) realtime.reconnectNow();
}

// --- Views and counts --------------------------------------------------------------

export async function refreshCounts() {
  const client = api;
  if (!client) return;
  const answer = await attempt(() => client.inbox({ status: "open" }, { count: 1, counts: true }));
  if (!answer || client !== api) return;
  counts.value = answer.data.counts;
}

export function scheduleCounts() {
  clearTimeout(countsTimer);
  countsTimer = setTimeout(refreshCounts, REFRESH_DELAY_MS);
}

/** @param {string} key */
export async function selectView(key) {
  batch(() => {
    view.value = key;
    query.value = "";
  });
  updateHash();
  await loadList(false);
}

/** @param {string} q */
export async function search(q) {
  if (!q) {
    await selectView(view.value);
    return;
  }
  query.value = q;
  await loadList(false);
}

function updateHash() {
  const params = new URLSearchParams();
  params.set("view", view.value);
  if (pane.value) params.set("c", pane.value.id);
  history.replaceState(null, "", `#${params}`);
}

// --- The list ----------------------------------------------------------------------

/**
 * Load the list's first page, or (`more`) its next one. An answer applies to the list it
 * was asked for only: once the operator chose another view or search, it is dropped.
 * @param {boolean} more
 */
export async function loadList(more) {
  const client = api;
  if (!client) return;
  const key = listKey.value;
  const q = query.value;
  const filters = viewFilters(view.value);
  const shown = list.value;
  if (!more || shown.key !== key) list.value = emptyList(key);
  else list.value = { ...shown, loading: true };
  const position = more ? shown.next : null;
  const started = ++fetches;
  const answer = await attempt(() =>
    q
      ? client.search(q, { position, count: PAGE_SIZE })
      : client.inbox(filters, { position, count: PAGE_SIZE }),
  );
  const latest = list.value;
  if (client !== api || latest.key !== key) return;
  if (!answer) {
    list.value = { ...latest, loading: false };
    return;
  }
  /** @type {(Conversation & {match?: {snippet: string}})[]} */
  const found = q ? answer.data : answer.data.conversations;
  batch(() => {
    keep(found, started);
    const ids = more ? [...latest.ids] : [];
    const matches = new Map(more ? latest.matches : []);
    for (const c of found) {
      if (!ids.includes(c.id)) ids.push(c.id);
      if (c.match) matches.set(c.id, c.match.snippet);
    }
    const last = found[found.length - 1];
    list.value = {
      key,
      ids,
      matches,
      next: answer.meta.next_before_position || null,
      boundary: last ? { last_update: last.last_update, id: last.id } : latest.boundary,
      loading: false,
    };
  });
}

// --- One conversation --------------------------------------------------------------

/** @param {string} id */
export async function openConversation(id) {
  const client = api;
  if (!client) return;
  pendingReply = null;
  pane.value = { id, status: "loading", parts: new Map(), partsNext: null, others: null };
  updateHash();
  const started = ++fetches;
  const [conversation, parts] = await Promise.all([
    attempt(() => client.conversation(id), "Could not open the conversation"),
    attempt(() => client.parts(id), "Could not load the messages"),
  ]);
  const p = pane.value;
  if (client !== api || !p || p.id !== id || p.status !== "loading") return;
  if (!conversation || !parts) {
    pane.value = { ...p, status: "failed" };
    return;
  }
  batch(() => {
    keep([conversation.data], started);
    pane.value = { ...p, status: "ready" };
    addParts(id, parts.data, started, parts.meta.next_before_position || null);
  });
  const c = conversations.value.get(id);
  if (c && (c.admin_unread_count || 0) > 0) markRead(id);
  loadOtherConversations(id);
}

/** Back to the list alone (below 1024 px the list and the conversation share a column). */
export function closeConversation() {
  pendingReply = null;
  pane.value = null;
  updateHash();
}

/** @param {string} id */
async function markRead(id) {
  const client = api;
  if (!client) return;
  const answer = await attempt(() => client.read(id), "Could not mark it read");
  if (!answer || client !== api) return;
  patch(id, { admin_unread_count: answer.data.admin_unread_count });
}

export async function loadEarlier() {
  const client = api;
  const p = pane.value;
  if (!client || !p?.partsNext) return;
  const started = ++fetches;
  const answer = await attempt(() => client.parts(p.id, p.partsNext));
  if (!answer) return;
  addParts(p.id, answer.data, started, answer.meta.next_before_position || null);
}

/** @param {string} id */
async function loadOtherConversations(id) {
  const client = api;
  const c = conversations.value.get(id);
  if (!client || !c?.user) return;
  const user = c.user;
  const answer = await attempt(() => client.userConversations(user.id));
  const p = pane.value;
  if (!answer || !p || p.id !== id) return;
  pane.value = { ...p, others: answer.data.filter((/** @type {Conversation} */ o) => o.id !== id) };
}

/**
 * A conversation action: on success the conversation and the counts are fetched again.
 * @param {(client: Api) => Promise<unknown>} work
 * @param {string} failure
 * @returns {Promise<boolean>}
 */
export async function act(work, failure) {
  const client = api;
  const p = pane.value;
  if (!client || !p) return false;
  const done = await attempt(() => work(client), failure);
  if (done === undefined) {
    // The controls show the server's state again (a select the operator moved goes back).
    const c = conversations.value.get(p.id);
    if (c) patch(p.id, {});
    return false;
  }
  await refresh(p.id);
  scheduleCounts();
  return true;
}

/** @param {string} id @param {string} value */
export const assign = (id, value) => act((c) => c.assign(id, value), "Could not assign");
/** @param {string} id */
export const close = (id) => act((c) => c.close(id), "Could not close");
/** @param {string} id */
export const reopen = (id) => act((c) => c.reopen(id), "Could not reopen");
/** @param {string} id @param {number} until Unix seconds; 0 wakes it */
export const delay = (id, until) =>
  act((c) => c.delay(id, until), until ? "Could not snooze" : "Could not wake it");
/** @param {string} id @param {string} tag */
export const addTag = (id, tag) => act((c) => c.addTag(id, tag), "Could not add the tag");
/** @param {string} id @param {string} tag */
export const removeTag = (id, tag) => act((c) => c.removeTag(id, tag), "Could not remove the tag");
/** @param {string} id @param {string} channel */
export const moveToChannel = (id, channel) => act((c) => c.moveToChannel(id, channel), "Could not move it");

// --- Writing -----------------------------------------------------------------------

/** @param {string} id */
export function draftOf(id) {
  return drafts.get(id) || "";
}

/**
 * The operator typed in the reply box: keep the draft, tell the others (at most so often).
 * @param {string} id
 * @param {string} text
 */
export function drafted(id, text) {
  if (text) drafts.set(id, text);
  else drafts.delete(id);
  keepDrafts();
  const at = Date.now();
  if (!api || at - lastTypingSent < TYPING_EVERY_MS || !text.trim()) return;
  lastTypingSent = at;
  api.typing(id, text).catch(() => {}); // best effort
}

/**
 * Why `file` cannot be sent (the settings' size limit and types), or "" when it can.
 * @param {File} file
 */
export function fileProblem(file) {
  const me = session.value;
  if (!me) return "";
  if (!file.size) return `${file.name} is empty.`;
  if (me.attachment_max_bytes && file.size > me.attachment_max_bytes) {
    return `${file.name} is ${readableSize(file.size)}: files up to ${readableSize(me.attachment_max_bytes)} can be sent.`;
  }
  const types = me.attachment_types;
  const type = (file.type || "application/octet-stream").toLowerCase();
  if (types && !types.some((pattern) => globMatches(pattern, type))) {
    return `${file.name} cannot be sent: files of type ${type} are not accepted.`;
  }
  return "";
}

/**
 * Whether a MIME type matches a pattern of the settings (`image/*`, `application/vnd.*`),
 * as the server's `fnmatch` does.
 * @param {string} pattern
 * @param {string} type
 */
function globMatches(pattern, type) {
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${source}$`).test(type);
}

/** @param {number} bytes */
export function readableSize(bytes) {
  for (const [unit, scale] of /** @type {[string, number][]} */ ([
    ["GB", 2 ** 30],
    ["MB", 2 ** 20],
    ["KB", 2 ** 10],
  ])) {
    if (bytes >= scale) {
      const value = bytes / scale;
      return `${value >= 10 || Number.isInteger(value) ? value.toFixed(0) : value.toFixed(1)} ${unit}`;
    }
  }
  return `${bytes} bytes`;
}

/**
 * An attachment's bytes, fetched with the session's token.
 * @param {string} attachmentId
 * @returns {Promise<Blob | null>}
 */
export async function fetchFile(attachmentId) {
  const client = api;
  if (!client) return null;
  return (await attempt(() => client.file(attachmentId), "Could not load the file")) || null;
}

/**
 * Send a reply or a note, with a file when one is given. Resolves true once it is stored.
 * @param {string} id
 * @param {string} body
 * @param {"reply_admin" | "note"} type
 * @param {File | null} [file]
 */
export async function send(id, body, type, file = null) {
  const client = api;
  if (!client) return false;
  // The same text sent again (after a failure) keeps its key: never a duplicate.
  let pending = pendingReply;
  if (
    !pending ||
    pending.body !== body ||
    pending.type !== type ||
    pending.id !== id ||
    pending.file !== file
  ) {
    pending = { body, type, id, randomId: randomId(), file };
    pendingReply = pending;
  }
  const key = pending.randomId;
  const what = type === "note" ? "The note was not saved" : "The reply was not sent";
  const started = ++fetches;
  const answer = await attempt(() => client.reply(id, body, type, key, file), what);
  if (!answer || client !== api) return false;
  pendingReply = null;
  drafts.delete(id);
  keepDrafts();
  addParts(id, [answer.data], started, undefined);
  refresh(id);
  scheduleCounts();
  return true;
}

// --- Live updates ------------------------------------------------------------------

/** @param {{channel: string, message?: any}} message */
function onRealtime(message) {
  if (message.channel === "ping") return;
  const body = message.message || {};
  if (message.channel.startsWith("conversation_typing.")) {
    onTyping(body);
    return;
  }
  const id = String(body.conversation);
  if (body.part && body.part.type === "reply_user") clearTyping(id);
  if (body.part?.from && typeof body.part.from === "object") clearTyping(id);
  refreshIds.add(id);
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(flushRefresh, REFRESH_DELAY_MS);
  scheduleCounts();
}

function flushRefresh() {
  const ids = [...refreshIds];
  refreshIds.clear();
  for (const id of ids) refresh(id);
}

/** @param {{conversation: string | number, body?: string, from?: {kind?: string, id?: string | number}}} body */
function onTyping(body) {
  const id = String(body.conversation);
  const from = body.from || {};
  const me = session.value;
  if (from.kind === "admin" && me && String(from.id) === me.admin) return;
  if (!body.body) {
    clearTyping(id);
    return;
  }
  let who = "The team";
  if (from.kind === "user") {
    const c = conversations.value.get(id);
    who = c?.user ? userName(c.user) : "The user";
  } else if (from.kind === "admin" && from.id !== undefined) {
    who = adminName(from.id);
  }
  clearTimeout(typingTimers.get(id));
  typingTimers.set(
    id,
    setTimeout(() => clearTyping(id), TYPING_MS),
  );
  typing.value = new Map(typing.value).set(id, who);
}

/** @param {string} id */
function clearTyping(id) {
  clearTimeout(typingTimers.get(id));
  typingTimers.delete(id);
  if (!typing.value.has(id)) return;
  const next = new Map(typing.value);
  next.delete(id);
  typing.value = next;
}

// --- Snoozes end by themselves -----------------------------------------------------

// `now` moves on when the next known snooze ends: the pane, the rows and their views are
// computed from it, so they show the conversation open again; the counts and the list are
// fetched again, as the server now counts it open.
/** @type {ReturnType<typeof setTimeout> | undefined} */
let snoozeTimer;
effect(() => {
  const at = now.value;
  let next = Number.POSITIVE_INFINITY;
  for (const c of conversations.value.values()) {
    if (!c.closed && c.delayed_until && c.delayed_until > at) next = Math.min(next, c.delayed_until);
  }
  clearTimeout(snoozeTimer);
  if (next === Number.POSITIVE_INFINITY) return;
  // setTimeout's longest wait is about 24.8 days; a later snooze is looked at again then.
  const wait = Math.min((next - Date.now() / 1000) * 1000 + 50, 2 ** 31 - 1);
  snoozeTimer = setTimeout(
    () => {
      now.value = Date.now() / 1000;
      if (api) {
        scheduleCounts();
        refreshFirstPage();
      }
    },
    Math.max(0, wait),
  );
});

/** Fetch the list's first page again, keeping what is loaded (a woken conversation joins). */
async function refreshFirstPage() {
  const client = api;
  if (!client || query.value) return;
  const key = listKey.value;
  const started = ++fetches;
  const answer = await attempt(() => client.inbox(viewFilters(view.value), { count: PAGE_SIZE }));
  const shown = list.value;
  if (!answer || client !== api || shown.key !== key) return;
  /** @type {Conversation[]} */
  const found = answer.data.conversations;
  batch(() => {
    keep(found, started);
    const ids = [...shown.ids];
    for (const c of found) if (!ids.includes(c.id)) ids.push(c.id);
    list.value = { ...shown, ids };
  });
}

/**
 * The signed-in API client, for screens that fetch or change what only they show (the
 * audit log, the operator's own settings).
 */
export function signedInApi() {
  return api;
}
