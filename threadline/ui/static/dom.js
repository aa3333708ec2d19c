// Text from the server, as Preact elements. Server text is always rendered as text; the
// only markup ever parsed is a part's `body_html` (already cleaned by the server) and
// search snippets, both rebuilt here from an allowlist as well.
import { html } from "./html.js";
import { h } from "./vendor/preact/index.js";

/** @typedef {import("./vendor/preact/index.js").ComponentChild} Child */

const ALLOWED = new Set([
  "p",
  "br",
  "b",
  "strong",
  "i",
  "em",
  "u",
  "s",
  "del",
  "a",
  "ul",
  "ol",
  "li",
  "blockquote",
  "code",
  "pre",
  "span",
  "div",
  "mark",
  "h1",
  "h2",
  "h3",
  "h4",
]);
const SAFE_LINK = /^(https?:|mailto:)/i;
const LOOKS_LIKE_HTML = /<\/?[a-z][^>]*>|&[a-z#0-9]+;/i;

/**
 * Elements rebuilt from `markup`, keeping only allowlisted elements (no attributes except a
 * checked href) and text. DOMParser's document is inert: nothing in it loads or runs.
 * @param {string} markup
 * @param {Set<string>} [allowed]
 * @returns {Child[]}
 */
export function sanitized(markup, allowed = ALLOWED) {
  const doc = new DOMParser().parseFromString(`<body>${markup}</body>`, "text/html");
  return copy(doc.body, allowed);
}

/**
 * @param {Node} from
 * @param {Set<string>} allowed
 * @returns {Child[]}
 */
function copy(from, allowed) {
  /** @type {Child[]} */
  const out = [];
  for (const node of from.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      out.push(node.textContent);
    } else if (node instanceof Element) {
      const tag = node.tagName.toLowerCase();
      if (tag === "script" || tag === "style" || tag === "template") continue;
      if (!allowed.has(tag)) {
        out.push(...copy(node, allowed)); // unknown wrapper: keep its text
        continue;
      }
      /** @type {Record<string, string>} */
      const props = {};
      if (tag === "a") {
        const href = (node.getAttribute("href") || "").trim();
        if (SAFE_LINK.test(href)) {
          props.href = href;
          props.target = "_blank";
          props.rel = "noopener noreferrer";
        }
      }
      out.push(h(tag, props, ...copy(node, allowed)));
    }
  }
  return out;
}

/**
 * An operator's body: sanitised HTML when it holds markup, else plain text.
 * @param {string} body
 * @returns {Child}
 */
export function operatorBody(body) {
  return LOOKS_LIKE_HTML.test(body) ? sanitized(body) : body;
}

/**
 * A part's body as shown: the server's `body_html` (a user's text escaped, an operator's
 * HTML cleaned, addresses linked), rebuilt from the allowlist again.
 * @param {{type: string, body?: string | null, body_html?: string}} part
 * @returns {Child}
 */
export function partBody(part) {
  if (typeof part.body_html === "string") return sanitized(part.body_html);
  const body = part.body || "";
  return part.type === "reply_user" ? body : operatorBody(body);
}

/**
 * The plain text of an operator's body (for one-line snippets).
 * @param {string} body
 */
export function operatorText(body) {
  if (!LOOKS_LIKE_HTML.test(body)) return body;
  const doc = new DOMParser().parseFromString(`<body>${body}</body>`, "text/html");
  for (const el of doc.body.querySelectorAll("script, style, template")) el.remove();
  return doc.body.textContent || "";
}

/**
 * A search snippet: escaped text with the matches in <mark>.
 * @param {string} markup
 */
export function snippet(markup) {
  return sanitized(markup, new Set(["mark"]));
}

// --- Time, in the viewer's time zone -----------------------------------------------

const timeOnly = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const dateTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const full = new Intl.DateTimeFormat(undefined, {
  dateStyle: "full",
  timeStyle: "long",
});

/**
 * @param {Date} a
 * @param {Date} b
 */
function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/**
 * A <time> for Unix seconds: "14:05" today, "Nov 26, 14:05" before; full date on hover.
 * @param {{seconds: number, testid?: string}} props
 */
export function Time({ seconds, testid }) {
  const date = new Date(Number(seconds) * 1000);
  const text = sameDay(date, new Date()) ? timeOnly.format(date) : dateTime.format(date);
  return html`<time data-testid=${testid} datetime=${date.toISOString()} title=${full.format(date)}>${text}</time>`;
}

/** @param {number} seconds */
export function formatDateTime(seconds) {
  return dateTime.format(new Date(Number(seconds) * 1000));
}

/**
 * The value of a datetime-local input for Unix seconds, in the viewer's time zone.
 * @param {number} seconds
 */
export function localInputValue(seconds) {
  const d = new Date(Number(seconds) * 1000);
  /** @param {number} n */
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
