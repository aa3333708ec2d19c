// The Threadline API as the inbox uses it: every id as a string, times with their
// microseconds (rows are ordered by them), errors as ApiError.

/**
 * @typedef {{
 *   token: string, app: string, admin: string, name: string, role: string, two_factor?: boolean,
 *   attachment_max_bytes?: number, attachment_types?: string[]
 * }} Session
 * @typedef {{meta: Record<string, any>, data: any}} Answer
 * @typedef {Record<string, string | number | boolean | null | undefined>} Query
 */

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} name
   * @param {string} message
   */
  constructor(status, name, message) {
    super(message);
    this.status = status; // 0: the server could not be reached
    this.name = name;
    /** @type {number | null} seconds, from Retry-After */
    this.retryAfter = null;
  }
}

export const UNREACHABLE =
  "Cannot reach the Threadline server. Check your connection; the inbox keeps trying.";

/**
 * @param {string} method
 * @param {string} path
 * @param {{token?: string, query?: Query, body?: Record<string, unknown> | FormData}} [options]
 * @returns {Promise<Answer>}
 */
async function call(method, path, { token, query, body } = {}) {
  const url = new URL(path, window.location.origin);
  url.searchParams.set("id_as_string", "true");
  url.searchParams.set("precise_times", "true");
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Token ${token}`;
  /** @type {string | FormData | undefined} */
  let payload;
  if (body instanceof FormData) {
    body.set("id_as_string", "true");
    payload = body; // multipart: the browser sets the Content-Type with its boundary
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify({ ...body, id_as_string: true });
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload, cache: "no-store" });
  } catch {
    throw new ApiError(0, "Unreachable", UNREACHABLE);
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // A proxy's error page, or a server that went away mid-answer.
  }
  if (!response.ok || !answer) {
    const meta = answer?.meta || {};
    const message =
      meta.error_message || (response.status >= 500 ? "The server had a problem; try again." : UNREACHABLE);
    const error = new ApiError(response.status, meta.error || "Error", message);
    error.retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw error;
  }
  return answer;
}

/** A fresh idempotency key: a retry with it never writes twice. */
export function randomId() {
  const [hi, lo] = crypto.getRandomValues(new Uint32Array(2));
  return String((hi & 0xfffff) * 2 ** 32 + lo + 1);
}

/**
 * @param {string} email
 * @param {string} password
 * @param {string} [app]
 * @param {string} [code] a code of the account's authenticator app (two-step sign-in)
 */
export function signIn(email, password, app, code) {
  /** @type {Record<string, string>} */
  const body = { email, password };
  if (app) body.app = app;
  if (code) body.code = code;
  return call("POST", "/ui/session", { body });
}

/**
 * Set a password with the one-time token of a reset link.
 * @param {string} token
 * @param {string} newPassword
 */
export function resetPassword(token, newPassword) {
  return call("POST", "/ui/password/reset", { body: { token, new_password: newPassword } });
}

/** Everything the signed-in inbox asks, with its token. */
export class Api {
  /** @param {Session} session */
  constructor(session) {
    this.session = session;
    this.token = session.token;
    this.app = session.app;
  }

  /** @param {string} path @param {Query} [query] */
  get(path, query) {
    return call("GET", path, { token: this.token, query });
  }
  /** @param {string} path @param {Record<string, unknown>} [body] */
  post(path, body = {}) {
    return call("POST", path, { token: this.token, body });
  }
  /** @param {string} path @param {FormData} form */
  postForm(path, form) {
    return call("POST", path, { token: this.token, body: form });
  }
  /** @param {string} path @param {Record<string, unknown>} [body] */
  delete(path, body = {}) {
    return call("DELETE", path, { token: this.token, body });
  }

  whoAmI() {
    return this.get("/ui/session");
  }
  signOut() {
    return this.delete("/ui/session");
  }
  /** @param {string} current @param {string} next */
  changePassword(current, next) {
    return this.post("/ui/password", { current_password: current, new_password: next });
  }
  /** A new key to enrol in two-step sign-in: {secret, uri, qr}, shown this once. */
  enrolTwoFactor() {
    return this.post("/ui/two-factor");
  }
  /** @param {string} code */
  confirmTwoFactor(code) {
    return this.post("/ui/two-factor/confirm", { code });
  }
  /** @param {{code: string} | {password: string}} proof */
  disableTwoFactor(proof) {
    return this.delete("/ui/two-factor", proof);
  }
  admins() {
    return this.get(`/ext/apps/${this.app}/admins`);
  }
  channels() {
    return this.get(`/apps/${this.app}/channels`);
  }
  /** @param {{count: number, after?: string | null}} page */
  audit({ count, after }) {
    return this.get(`/ext/apps/${this.app}/audit`, { count, after: after || undefined });
  }

  /**
   * A page of an inbox view (`filters`: status, assignee, channel, tag).
   * @param {Query} filters
   * @param {{position?: unknown, count?: number, counts?: boolean}} [page]
   */
  inbox(filters, { position, count = 20, counts = false } = {}) {
    return this.get(`/ext/apps/${this.app}/inbox`, {
      ...filters,
      counts,
      paginate_count: count,
      paginate_position: position ? JSON.stringify(position) : undefined,
    });
  }

  /**
   * @param {string} q
   * @param {{position?: unknown, count?: number}} [page]
   */
  search(q, { position, count = 20 } = {}) {
    return this.get(`/ext/apps/${this.app}/search`, {
      q,
      paginate_count: count,
      paginate_position: position ? JSON.stringify(position) : undefined,
    });
  }

  /** @param {string} id */
  conversation(id) {
    return this.get(`/conversations/${id}`);
  }
  /** @param {string} id @param {unknown} [position] */
  parts(id, position) {
    return this.get(`/conversations/${id}/parts`, {
      paginate_count: 50,
      paginate_position: position ? JSON.stringify(position) : undefined,
    });
  }
  /** @param {string} userId */
  userConversations(userId) {
    return this.get(`/users/${userId}/conversations`, { paginate_count: 10, recipient_type: "all" });
  }

  me() {
    return this.session.admin;
  }
  /**
   * A reply or a note, with a file when one is given (sent as a multipart form).
   * @param {string} id @param {string} body @param {string} type @param {string} random_id
   * @param {File | null} [file]
   */
  reply(id, body, type, random_id, file = null) {
    const path = `/conversations/${id}/reply`;
    if (!file) return this.post(path, { body, type, random_id, from_admin: this.me() });
    const form = new FormData();
    form.set("body", body);
    form.set("type", type);
    form.set("random_id", random_id);
    form.set("from_admin", this.me());
    form.set("attachment", file, file.name);
    return this.postForm(path, form);
  }
  /**
   * An attachment's bytes (fetched with the session's token: no token goes into a URL).
   * @param {string} attachmentId
   * @returns {Promise<Blob>}
   */
  async file(attachmentId) {
    let response;
    try {
      // A file never changes under its id: the browser's private cache may answer.
      response = await fetch(`/ext/attachments/${attachmentId}`, {
        headers: { Authorization: `Token ${this.token}` },
      });
    } catch {
      throw new ApiError(0, "Unreachable", UNREACHABLE);
    }
    if (!response.ok) {
      let message = "The file could not be loaded.";
      try {
        message = (await response.json()).meta.error_message || message;
      } catch {
        // not JSON
      }
      throw new ApiError(response.status, "Error", message);
    }
    return response.blob();
  }
  /** @param {string} id */
  read(id) {
    return this.post(`/ext/conversations/${id}/read`, { by: "admin" });
  }
  /** @param {string} id @param {string} body */
  typing(id, body) {
    return this.post(`/ext/conversations/${id}/typing`, { body, from_admin: this.me() });
  }
  /** @param {string} id @param {string} admin "" or 0: nobody */
  assign(id, admin) {
    return this.post(`/conversations/${id}/assign`, {
      admin: admin || 0,
      from_admin: this.me(),
      random_id: randomId(),
    });
  }
  /** @param {string} id */
  close(id) {
    return this.post(`/conversations/${id}/close`, { from_admin: this.me(), random_id: randomId() });
  }
  /** @param {string} id */
  reopen(id) {
    return this.post(`/ext/conversations/${id}/reopen`, { from_admin: this.me(), random_id: randomId() });
  }
  /** @param {string} id @param {number} until Unix seconds; 0 wakes it */
  delay(id, until) {
    return this.post(`/ext/conversations/${id}/delay`, {
      until,
      from_admin: this.me(),
      random_id: randomId(),
    });
  }
  /** @param {string} id @param {string} tag */
  addTag(id, tag) {
    return this.post(`/conversations/${id}/tag`, { tag, from_admin: this.me(), random_id: randomId() });
  }
  /** @param {string} id @param {string} tag */
  removeTag(id, tag) {
    return this.delete(`/conversations/${id}/tag`, { tag, from_admin: this.me(), random_id: randomId() });
  }
  /** @param {string} id @param {string} channel "" or 0: none */
  moveToChannel(id, channel) {
    return this.post(`/ext/conversations/${id}/channel`, {
      channel: channel || 0,
      from_admin: this.me(),
      random_id: randomId(),
    });
  }
}
