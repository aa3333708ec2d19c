// The inbox's left side: the views with their live counts, and the list of conversations.
import { html } from "../html.js";
import { Time, operatorText, snippet } from "../dom.js";
import {
  adminName,
  channels,
  counts,
  list,
  listKey,
  loadList,
  openConversation,
  pane,
  query,
  rows,
  selectView,
  session,
  typing,
  userName,
  view,
  viewLabel,
} from "../store.js";

/** @typedef {import("../store.js").Conversation} Conversation */
/** @typedef {import("../store.js").Part} Part */

/**
 * A part as one line of text (a row's snippet, another conversation in the user card).
 * @param {Part | null | undefined} part
 */
export function partText(part) {
  if (!part) return "";
  const files = (part.attachments || []).map((a) => `📎 ${a.filename}`).join(" ");
  const body = part.type === "reply_user" ? part.body || "" : operatorText(part.body || "");
  return [body.trim(), files].filter(Boolean).join(" ");
}

/** @typedef {[key: string, label: string, count: number]} ViewItem */

export function Views() {
  const known = counts.value;
  const me = session.value;
  const chosen = view.value;
  const searching = Boolean(query.value);
  if (!known || !me) return html`<nav class="views" aria-label="Inbox views"><ul id="views"></ul></nav>`;
  const mine = known.assignees.find((a) => a.id === me.admin);
  const byChannel = new Map(known.channels.map((c) => [c.id, c.count]));
  /** @type {ViewItem[]} */
  const items = [
    ["open", viewLabel("open"), known.open],
    ["mine", viewLabel("mine"), mine ? mine.count : 0],
    ["unassigned", viewLabel("unassigned"), known.unassigned],
    ["delayed", viewLabel("delayed"), known.delayed],
    ["closed", viewLabel("closed"), known.closed],
  ];
  /** @type {ViewItem[]} */
  const byChannelItems = channels.value.map((c) => [`channel-${c.id}`, c.name, byChannel.get(c.id) || 0]);
  /** @type {ViewItem[]} */
  const tags = known.tags.map((t) => [`tag-${t.tag}`, `#${t.tag}`, t.count]);
  if (chosen.startsWith("tag-") && !tags.some(([key]) => key === chosen)) {
    tags.push([chosen, viewLabel(chosen), 0]); // keep the chosen view in sight
  }
  /** @param {string} title @param {ViewItem[]} group */
  const groupOf = (title, group) => [
    title ? html`<li key=${`title-${title}`} class="views-title" aria-hidden="true">${title}</li>` : null,
    ...group.map(
      ([key, label, count]) => html`
      <li key=${key}>
        <button type="button" data-testid=${`view-${key}`} class="view"
                aria-current=${key === chosen && !searching ? "page" : undefined}
                onClick=${() => selectView(key)}>
          <span class="view-label">${label}</span>
          <span data-testid="view-count" class="view-count">${String(count)}</span>
        </button>
      </li>`,
    ),
  ];
  return html`
    <nav class="views" aria-label="Inbox views">
      <ul id="views">
        ${groupOf("", items)}
        ${byChannelItems.length ? groupOf("Channels", byChannelItems) : null}
        ${tags.length ? groupOf("Tags", tags) : null}
      </ul>
    </nav>`;
}

/**
 * A conversation's address: the inbox opens it there (after signing in, in a new tab).
 * @param {string} id
 */
function conversationHref(id) {
  return `#${new URLSearchParams({ view: view.value, c: id })}`;
}

/** Where the list and the conversation share one column (inbox.css says the same). */
const ONE_COLUMN = "(max-width: 1023.98px)";

/** @param {KeyboardEvent} event */
function onRowKey(event) {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  event.preventDefault();
  const here = /** @type {HTMLElement} */ (event.currentTarget);
  const buttons = [...(here.closest("ul")?.querySelectorAll(".row-button") || [])];
  const next = /** @type {HTMLElement | undefined} */ (
    buttons[buttons.indexOf(here) + (event.key === "ArrowDown" ? 1 : -1)]
  );
  if (next) next.focus();
}

/** @param {{c: Conversation, selected: boolean, typist: string | undefined, match: string | undefined}} props */
function Row({ c, selected, typist, match }) {
  const unread = c.admin_unread_count || 0;
  return html`
    <li data-testid="conversation-row" data-conversation-id=${c.id} class=${unread ? "row unread" : "row"}>
      <a class="row-button" href=${conversationHref(c.id)} aria-current=${selected ? "true" : undefined}
         onClick=${(/** @type {MouseEvent} */ e) => {
           // With a modifier (or the middle button) the browser opens its own tab or window.
           if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
           e.preventDefault();
           openConversation(c.id);
           // Below 1024 px the conversation takes the list's place: the focus goes with it.
           if (window.matchMedia(ONE_COLUMN).matches) {
             requestAnimationFrame(() => {
               /** @type {HTMLElement | null} */ (
                 document.querySelector('[data-testid="back-to-list"]')
               )?.focus();
             });
           }
         }}
         onKeyDown=${onRowKey}>
        <span class="row-top">
          <span data-testid="row-user" class="row-user" title=${userName(c.user)}>${userName(c.user)}</span>
          <${Time} seconds=${c.last_update} testid="row-time" />
        </span>
        <span class="row-line">
          ${
            !typist && c.important_part_last?.type === "note"
              ? html`<span data-testid="row-note" class="row-note" title="The last message is an internal note">Note</span>`
              : null
          }
          <span data-testid="row-snippet" class="row-snippet" dir="auto">${typist ? "" : partText(c.important_part_last)}</span>
        </span>
        ${typist ? html`<span class="row-typing">${typist} is typing…</span>` : null}
        ${match ? html`<span data-testid="row-match" class="row-match">${snippet(match)}</span>` : null}
        <span class="row-meta">
          <span data-testid="row-assignee" class="row-assignee">
            ${c.assignee ? c.assignee.name || adminName(c.assignee.id) : "Unassigned"}
          </span>
          <span data-testid="row-tags" class="row-tags">
            ${c.tags.map((t) => html`<span key=${t} class="chip" title=${t}><span class="chip-text">${t}</span></span>`)}
          </span>
          ${unread ? html`<span data-testid="row-unread" class="badge" title=${`${unread} unread`}>${String(unread)}</span>` : null}
        </span>
      </a>
    </li>`;
}

export function ConversationList() {
  const shown = list.value;
  const ready = shown.key === listKey.value;
  const found = rows.value;
  const openId = pane.value ? pane.value.id : null;
  const typists = typing.value;
  const title = query.value ? `Search: “${query.value}”` : viewLabel(view.value);
  return html`
    <section class="list" aria-label="Conversations">
      <h2 id="list-title" class="list-title">${title}</h2>
      <ul id="rows" class="rows">
        ${found.map(
          (c) => html`<${Row} key=${c.id} c=${c} selected=${c.id === openId}
          typist=${typists.get(c.id)} match=${shown.matches.get(c.id)} />`,
        )}
      </ul>
      <p id="list-empty" class="muted empty" hidden=${!ready || shown.loading || found.length > 0}>No conversations here.</p>
      <button type="button" id="load-more" data-testid="load-more" hidden=${!ready || !shown.next}
              disabled=${shown.loading} onClick=${() => loadList(true)}>Load more</button>
    </section>`;
}
