// Building the page. Text from the server always goes through textContent; the only
// markup ever parsed is operator HTML and search snippets, rebuilt from an allowlist.

/** An element: h("button", {class: "x", dataset: {testid: "y"}, onclick: f}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "testid") el.dataset.testid = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "value") el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function byTestId(root, id) {
  return root.querySelector(`[data-testid="${CSS.escape(id)}"]`);
}

// --- Operator HTML -----------------------------------------------------------------

const ALLOWED = new Set([
  "p", "br", "b", "strong", "i", "em", "u", "s", "a", "ul", "ol", "li",
  "blockquote", "code", "pre", "span", "div", "mark", "h1", "h2", "h3", "h4",
]);
const SAFE_LINK = /^(https?:|mailto:)/i;
const LOOKS_LIKE_HTML = /<\/?[a-z][^>]*>|&[a-z#0-9]+;/i;

/**
 * Nodes rebuilt from `html`, keeping only allowlisted elements (no attributes except a
 * checked href) and text. DOMParser's document is inert: nothing in it loads or runs.
 */
export function sanitized(html, allowed = ALLOWED) {
  const doc = new DOMParser().parseFromString(`<body>${html}</body>`, "text/html");
  const out = document.createDocumentFragment();
  copy(doc.body, out, allowed);
  return out;
}

function copy(from, to, allowed) {
  for (const node of from.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      to.append(document.createTextNode(node.textContent));
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      const tag = node.tagName.toLowerCase();
      if (tag === "script" || tag === "style" || tag === "template") continue;
      if (!allowed.has(tag)) {
        copy(node, to, allowed); // unknown wrapper: keep its text
        continue;
      }
      const el = document.createElement(tag);
      if (tag === "a") {
        const href = node.getAttribute("href") || "";
        if (SAFE_LINK.test(href.trim())) {
          el.setAttribute("href", href.trim());
          el.setAttribute("target", "_blank");
          el.setAttribute("rel", "noopener noreferrer nofollow");
        }
      }
      copy(node, el, allowed);
      to.append(el);
    }
  }
}

/** An operator's body: sanitised HTML when it holds markup, else plain text. */
export function operatorBody(body) {
  return LOOKS_LIKE_HTML.test(body) ? sanitized(body) : document.createTextNode(body);
}

/** The plain text of an operator's body (for one-line snippets). */
export function operatorText(body) {
  if (!LOOKS_LIKE_HTML.test(body)) return body;
  return sanitized(body).textContent;
}

/** A search snippet: escaped text with the matches in <mark>. */
export function snippet(html) {
  return sanitized(html, new Set(["mark"]));
}

// --- Time, in the viewer's time zone -----------------------------------------------

const timeOnly = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});
const dateTime = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});
const full = new Intl.DateTimeFormat(undefined, {
  dateStyle: "full", timeStyle: "long",
});

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth()
    && a.getDate() === b.getDate();
}

/** A <time> for Unix seconds: "14:05" today, "Nov 26, 14:05" before; full date on hover. */
export function timeElement(seconds, testid) {
  const date = new Date(Number(seconds) * 1000);
  const text = sameDay(date, new Date()) ? timeOnly.format(date) : dateTime.format(date);
  return h("time", { testid, datetime: date.toISOString(), title: full.format(date) }, text);
}

export function formatDateTime(seconds) {
  return dateTime.format(new Date(Number(seconds) * 1000));
}

/** The value of a datetime-local input for Unix seconds, in the viewer's time zone. */
export function localInputValue(seconds) {
  const d = new Date(Number(seconds) * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
