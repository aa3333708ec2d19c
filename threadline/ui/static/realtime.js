// The realtime stream: one WebSocket, resumed with the last tag after any drop, so no
// event is missed or repeated; retries back off up to half a minute.

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;
// The vendor's close codes: the token is not valid / a channel is not allowed.
export const BAD_TOKEN = 3401;
export const CHANNEL_NOT_ALLOWED = 3403;

/**
 * @typedef {{id?: string, channel: string, message?: any, tag?: string, time?: number}} Message
 * @typedef {{connected: boolean, resumed?: boolean, retryInMs?: number, code?: number | null}} Status
 */

export class Realtime {
  /**
   * onMessage(message): every `{id, channel, message, tag, time}`;
   * onStatus({connected, retryInMs, code}): the connection's state for the banner;
   * onRefused(code): the server refused the token or a channel (no retry).
   * @param {{
   *   token: string, channels: string[], onMessage: (message: Message) => void,
   *   onStatus: (status: Status) => void, onRefused: (code: number, reason: string) => void
   * }} options
   */
  constructor({ token, channels, onMessage, onStatus, onRefused }) {
    this.token = token;
    this.channels = channels;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    /** @type {string | null} */
    this.tag = null;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.retryMs = FIRST_RETRY_MS;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    this.stopped = false;
  }

  url() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const path = this.channels.map(encodeURIComponent).join("/");
    const url = new URL(`${scheme}//${window.location.host}/websocket/${path}`);
    url.searchParams.set("id_as_string", "true");
    if (this.tag) url.searchParams.set("tag", this.tag);
    return url.toString();
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
    this.socket = null;
  }

  /** Drop the connection now and reconnect at once (after the network came back). */
  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.retryMs = FIRST_RETRY_MS;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    let socket;
    try {
      // The token goes as a subprotocol, not in the URL (URLs end up in access logs).
      socket = new WebSocket(this.url(), ["threadline", `token.${this.token}`]);
    } catch {
      this.retry(null);
      return;
    }
    this.socket = socket;
    const resumed = this.tag !== null;
    socket.addEventListener("open", () => {
      this.retryMs = FIRST_RETRY_MS;
      this.onStatus({ connected: true, resumed });
    });
    socket.addEventListener("message", (event) => {
      /** @type {Message} */
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.tag) this.tag = message.tag;
      this.onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (event.code === BAD_TOKEN || event.code === CHANNEL_NOT_ALLOWED) {
        this.onRefused(event.code, event.reason);
        return;
      }
      this.retry(event.code);
    });
  }

  /** @param {number | null} code */
  retry(code) {
    const wait = Math.min(this.retryMs, MAX_RETRY_MS);
    // Jitter keeps many inboxes from reconnecting in lockstep after a restart.
    const jittered = Math.round(wait * (0.75 + Math.random() * 0.5));
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    this.onStatus({ connected: false, retryInMs: jittered, code });
    this.timer = setTimeout(() => this.connect(), jittered);
  }
}
