// One conversation: its state and actions, its messages, the reply box, and the user card.
import { Time, formatDateTime, localInputValue, operatorText, partBody } from "../dom.js";
import { html } from "../html.js";
import {
  addTag,
  admins,
  assign,
  authorName,
  channelName,
  channels,
  close,
  closeConversation,
  current,
  delay,
  draftOf,
  drafted,
  fetchFile,
  fileProblem,
  loadEarlier,
  moveToChannel,
  now,
  openConversation,
  pane,
  readableSize,
  removeTag,
  reopen,
  send,
  session,
  showError,
  statusOf,
  typing,
  userName,
} from "../store.js";
import { useEffect, useLayoutEffect, useRef, useState } from "../vendor/preact/hooks.js";
import { partText } from "./list.js";

/**
 * @typedef {import("../store.js").Conversation} Conversation
 * @typedef {import("../store.js").Part} Part
 * @typedef {import("../store.js").User} User
 * @typedef {import("../store.js").Attachment} Attachment
 */

// Shown as pictures (the server serves these inline); any other file is a download.
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/**
 * Save a blob under a file name (a link to an object URL, clicked).
 * @param {Blob} blob
 * @param {string} filename
 */
function saveBlob(blob, filename) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

/**
 * One attachment: a picture's preview, and a download link for every file. The bytes are
 * fetched with the session's token, so no token ever goes into a URL.
 * @param {{file: Attachment}} props
 */
function FileItem({ file }) {
  const image = IMAGE_TYPES.has(file.mime_type || "");
  const [src, setSrc] = useState(/** @type {string | null} */ (null));
  useEffect(() => {
    if (!image) return undefined;
    let url = "";
    let live = true;
    fetchFile(file.id).then((blob) => {
      if (!live || !blob) return;
      url = URL.createObjectURL(blob);
      setSrc(url);
    });
    return () => {
      live = false;
      if (url) URL.revokeObjectURL(url);
    };
  }, [file.id, image]);
  /** @param {Event} event */
  async function download(event) {
    event.preventDefault();
    const blob = await fetchFile(file.id);
    if (blob) saveBlob(blob, file.filename);
  }
  const size = readableSize(file.size);
  return html`
    <li data-testid="attachment" data-attachment-id=${file.id} class=${image ? "file image" : "file"}>
      ${
        image
          ? html`<span class="preview">${src ? html`<img data-testid="attachment-preview" src=${src} alt=${file.filename} />` : null}</span>`
          : null
      }
      <a data-testid="attachment-link" href=${`#attachment-${file.id}`} download=${file.filename} onClick=${download}
         aria-label=${`Download ${file.filename} (${size})`}>📎 ${file.filename}</a>
      <span class="muted">${size}</span>
    </li>`;
}

const SYSTEM_PARTS = new Set([
  "assigned",
  "closed",
  "opened",
  "delayed",
  "tag_added",
  "tag_deleted",
  "channel_changed",
  "service",
]);

/** @param {Part} part */
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
      const until = part.body_json?.delayed_until;
      return until ? `${who} snoozed it until ${formatDateTime(until)}` : `${who} woke it up`;
    }
    case "tag_added":
      return `${who} added the tag “${part.tag}”`;
    case "tag_deleted":
      return `${who} removed the tag “${part.tag}”`;
    case "channel_changed": {
      const channel = part.body_json?.channel;
      return channel ? `${who} moved it to ${channelName(channel)}` : `${who} took it out of its channel`;
    }
    default:
      return part.body ? operatorText(part.body) : `${who}: service update`;
  }
}

/** @param {{part: Part, user: User | null | undefined}} props */
function PartItem({ part, user }) {
  if (SYSTEM_PARTS.has(part.type)) {
    return html`
      <li data-testid="part" data-part-type=${part.type} data-part-id=${part.id} class="part system">
        <span data-testid="part-body" class="part-body">${systemText(part)}</span>
        ${" · "}
        <${Time} seconds=${part.created} testid="part-time" />
      </li>`;
  }
  const fromUser = part.type === "reply_user";
  const kind = fromUser ? "from-user" : part.type === "note" ? "note" : "from-admin";
  const files = part.attachments || [];
  return html`
    <li data-testid="part" data-part-type=${part.type} data-part-id=${part.id} class=${`part ${kind}`}>
      <div class="part-head">
        <span class="part-author">${fromUser ? userName(user) : authorName(part.from)}</span>
        ${part.type === "note" ? html`<span class="note-label">Internal note</span>` : null}
        <${Time} seconds=${part.created} testid="part-time" />
      </div>
      <div data-testid="part-body" class="part-body" dir="auto" hidden=${!part.body && files.length > 0}>${partBody(part)}</div>
      ${
        files.length
          ? html`
        <ul class="files" aria-label="Attachments">
          ${files.map((a) => html`<${FileItem} key=${a.id} file=${a} />`)}
        </ul>`
          : null
      }
      ${part.type === "reply_admin" && part.read ? html`<span class="muted seen">Seen</span>` : null}
    </li>`;
}

/** @param {{c: Conversation}} props */
function Head({ c }) {
  const me = session.value;
  const status = statusOf(c, now.value);
  const id = c.id;
  // What the operator types here is theirs until used: live updates re-render around it.
  const [snoozeDefault] = useState(() => ({
    min: localInputValue(Date.now() / 1000),
    value: localInputValue(Math.ceil(Date.now() / 3600000) * 3600 + 3600),
  }));
  const snoozeInput = useRef(/** @type {HTMLInputElement | null} */ (null));
  const tagInput = useRef(/** @type {HTMLInputElement | null} */ (null));

  function snooze() {
    const value = snoozeInput.current ? snoozeInput.current.value : "";
    if (!value) {
      showError("Choose when the conversation should come back.");
      return;
    }
    const until = new Date(value).getTime() / 1000; // the input is in local time
    if (!(until > Date.now() / 1000)) {
      showError("Choose a time in the future.");
      return;
    }
    delay(id, until);
  }

  async function addTyped() {
    const field = tagInput.current;
    if (!field) return;
    const tag = field.value.trim();
    if (!tag) {
      field.focus();
      return;
    }
    field.value = "";
    const ok = await addTag(id, tag);
    if (!ok && !field.value) field.value = tag; // not added: give it back
  }

  return html`
    <div class="conv-head">
      <div class="conv-title-line">
        <h2 class="conv-title" title=${userName(c.user)}>${userName(c.user)}</h2>
        <span data-testid="conversation-state" class=${`state state-${status}`}>${status}</span>
        ${
          status === "snoozed" && c.delayed_until
            ? html`<span class="muted">until ${formatDateTime(c.delayed_until)}</span>`
            : null
        }
      </div>
      <div class="actions" role="group" aria-label="Actions">
        <button type="button" data-testid="assign-me"
                disabled=${Boolean(me && c.assignee && c.assignee.id === me.admin)}
                onClick=${() => me && assign(id, me.admin)}>Assign to me</button>
        <label for="assign-select">Assignee</label>
        <select data-testid="assign-select" id="assign-select" value=${c.assignee ? c.assignee.id : ""}
                onChange=${(/** @type {Event} */ e) => assign(id, /** @type {HTMLSelectElement} */ (e.currentTarget).value)}>
          <option value="">Unassigned</option>
          ${[...admins.value.values()].map((a) => html`<option key=${a.id} value=${a.id}>${a.name}</option>`)}
        </select>
        ${
          c.closed
            ? html`<button type="button" data-testid="reopen" onClick=${() => reopen(id)}>Reopen</button>`
            : html`<button type="button" data-testid="close" onClick=${() => close(id)}>Close</button>`
        }
        <label for="channel-select">Channel</label>
        <select data-testid="channel-select" id="channel-select" value=${c.channel ? c.channel.id : ""}
                onChange=${(/** @type {Event} */ e) => moveToChannel(id, /** @type {HTMLSelectElement} */ (e.currentTarget).value)}>
          <option value="">No channel</option>
          ${channels.value.map((ch) => html`<option key=${ch.id} value=${ch.id}>${ch.name}</option>`)}
        </select>
      </div>
      <div class="actions" role="group" aria-label="Snooze">
        <label for="snooze-input">Snooze until</label>
        <input type="datetime-local" data-testid="snooze-input" id="snooze-input" ref=${snoozeInput}
               min=${snoozeDefault.min} defaultValue=${snoozeDefault.value} />
        <button type="button" data-testid="snooze" onClick=${snooze}>Snooze</button>
        ${
          status === "snoozed"
            ? html`<button type="button" data-testid="unsnooze" onClick=${() => delay(id, 0)}>Wake now</button>`
            : null
        }
      </div>
      <div class="actions tags" role="group" aria-label="Tags">
        ${c.tags.map(
          (tag) => html`
          <span key=${tag} data-testid="tag" class="chip" title=${tag}><span class="chip-text">${tag}</span>
            <button type="button" data-testid="tag-remove" class="chip-remove"
                    aria-label=${`Remove tag ${tag}`} title=${`Remove tag ${tag}`}
                    onClick=${() => removeTag(id, tag)}></button>
          </span>`,
        )}
        <input type="text" data-testid="tag-input" id="tag-input" maxlength="255" placeholder="New tag"
               aria-label="New tag" ref=${tagInput}
               onKeyDown=${(/** @type {KeyboardEvent} */ e) => {
                 if (e.key === "Enter") {
                   e.preventDefault();
                   addTyped();
                 }
               }} />
        <button type="button" data-testid="tag-add" onClick=${addTyped}>Add tag</button>
      </div>
    </div>`;
}

/**
 * The messages: a log the keyboard scrolls too (it takes the focus, then the arrow keys and
 * Page Up/Down move it), announced as new ones arrive.
 * @param {{c: Conversation, parts: Map<string, Part>}} props
 */
function Parts({ c, parts }) {
  const logRef = useRef(/** @type {HTMLDivElement | null} */ (null));
  // Following the newest message unless the operator scrolled up to read older ones.
  const atBottom = useRef(true);
  const sorted = [...parts.values()].sort((a, b) => Number(a.id) - Number(b.id));
  useLayoutEffect(() => {
    const el = logRef.current;
    if (el && atBottom.current) el.scrollTop = el.scrollHeight;
  }, [parts]);
  function onScroll() {
    const el = logRef.current;
    if (el) atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }
  return html`
    <div class="parts" data-testid="parts" role="log" aria-label="Messages" tabindex="0" ref=${logRef}
         onScroll=${onScroll}>
      <ol class="parts-list">
        ${sorted.map((p) => html`<${PartItem} key=${p.id} part=${p} user=${c.user} />`)}
      </ol>
    </div>`;
}

/** @typedef {"reply_admin" | "note"} Mode */

const MODES = /** @type {const} */ ([
  ["reply_admin", "Reply", "mode-reply"],
  ["note", "Note", "mode-note"],
]);

/**
 * The reply box, in one of two modes chosen with tabs (as in Intercom and Chatwoot): a
 * reply goes to the user; a note stays with the team, and the whole box turns the notes'
 * colour while in that mode. Enter (and the button) sends in the mode shown. A file is
 * attached by the button, by dropping it on the box or by pasting it.
 * @param {{id: string}} props
 */
function Composer({ id }) {
  const input = useRef(/** @type {HTMLTextAreaElement | null} */ (null));
  const picker = useRef(/** @type {HTMLInputElement | null} */ (null));
  const [sending, setSending] = useState(false);
  const [mode, setMode] = useState(/** @type {Mode} */ ("reply_admin"));
  const [file, setFile] = useState(/** @type {File | null} */ (null));
  const [dragging, setDragging] = useState(false);
  const note = mode === "note";
  // The draft kept for this conversation comes back when it is opened again.
  useLayoutEffect(() => {
    if (input.current) input.current.value = draftOf(id);
  }, [id]);

  /** @param {File | null | undefined} chosen */
  function attach(chosen) {
    if (!chosen) return;
    const problem = fileProblem(chosen);
    if (problem) {
      showError(problem);
      return;
    }
    setFile(chosen);
    input.current?.focus();
  }

  /** @param {Mode} next */
  function choose(next) {
    setMode(next);
    input.current?.focus();
  }

  async function submit() {
    const field = input.current;
    if (!field) return;
    const body = field.value;
    if (!body.trim() && !file) {
      field.focus();
      return;
    }
    setSending(true);
    const ok = await send(id, body, mode, file);
    setSending(false);
    if (!ok) return;
    if (field.value === body) field.value = "";
    setFile(null);
    field.focus();
  }

  /** @param {KeyboardEvent} e */
  function onTabKey(e) {
    if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
    e.preventDefault();
    const next = note ? "reply_admin" : "note";
    setMode(next);
    const form = /** @type {HTMLElement} */ (e.currentTarget).closest("form");
    /** @type {HTMLElement | null | undefined} */ (form?.querySelector(`[data-mode="${next}"]`))?.focus();
  }

  return html`
    <form data-testid="composer" data-mode=${mode} class=${`reply${note ? " note-mode" : ""}${dragging ? " dragging" : ""}`}
          onSubmit=${(/** @type {Event} */ e) => {
            e.preventDefault();
            submit();
          }}
          onDragOver=${(/** @type {DragEvent} */ e) => {
            if (!e.dataTransfer?.types.includes("Files")) return;
            e.preventDefault();
            setDragging(true);
          }}
          onDragLeave=${() => setDragging(false)}
          onDrop=${(/** @type {DragEvent} */ e) => {
            setDragging(false);
            const dropped = e.dataTransfer?.files[0];
            if (!dropped) return;
            e.preventDefault();
            attach(dropped);
          }}>
      <div class="composer-tabs" role="tablist" aria-label="Write a">
        ${MODES.map(
          ([value, label, testid]) => html`
          <button key=${value} type="button" role="tab" data-testid=${testid} data-mode=${value}
                  class="composer-tab" aria-selected=${mode === value ? "true" : "false"}
                  aria-controls="reply-input" tabindex=${mode === value ? 0 : -1}
                  onClick=${() => choose(value)} onKeyDown=${onTabKey}>${label}</button>`,
        )}
      </div>
      <textarea data-testid="reply-input" id="reply-input" rows="3" ref=${input} dir="auto"
                placeholder=${
                  note
                    ? "Write an internal note: only your team sees it… (Enter adds it)"
                    : "Write a reply… (Enter sends, Shift+Enter: new line)"
                }
                aria-label=${note ? "Internal note" : "Reply"}
                onInput=${(/** @type {Event} */ e) => drafted(id, /** @type {HTMLTextAreaElement} */ (e.currentTarget).value)}
                onPaste=${(/** @type {ClipboardEvent} */ e) => {
                  const pasted = e.clipboardData?.files[0];
                  if (!pasted) return;
                  e.preventDefault();
                  attach(pasted);
                }}
                onKeyDown=${(/** @type {KeyboardEvent} */ e) => {
                  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                    e.preventDefault();
                    submit();
                  }
                }}></textarea>
      ${
        file
          ? html`
        <p data-testid="pending-file" class="pending-file">
          📎 ${file.name} <span class="muted">(${readableSize(file.size)})</span>
          <button type="button" data-testid="pending-file-remove" class="chip-remove"
                  aria-label=${`Remove ${file.name}`} title=${`Remove ${file.name}`} onClick=${() => setFile(null)}></button>
        </p>`
          : null
      }
      <div class="reply-buttons">
        <input type="file" data-testid="file-input" ref=${picker} hidden
               onChange=${(/** @type {Event} */ e) => {
                 const field = /** @type {HTMLInputElement} */ (e.currentTarget);
                 attach(field.files?.[0]);
                 field.value = "";
               }} />
        <button type="button" data-testid="attach" class="attach-button" onClick=${() => picker.current?.click()}>Attach a file</button>
        <button type="submit" data-testid=${note ? "send-note" : "send-reply"} class=${note ? "note-button" : "primary"}
                disabled=${sending}>${note ? "Add note" : "Send reply"}</button>
      </div>
    </form>`;
}

/** @param {{c: Conversation, others: Conversation[] | null}} props */
function UserCard({ c, others }) {
  const user = c.user || /** @type {User} */ ({ id: "" });
  const props = user.props || {};
  const rows = Object.entries(props)
    .filter(([key]) => key !== "$name" && key !== "$email")
    .map(([key, value]) => [
      key.replace(/^\$/, ""),
      typeof value === "object" ? JSON.stringify(value) : String(value),
    ]);
  const at = now.value;
  return html`
    <aside data-testid="user-card" class="user-card" aria-label="User">
      <h3 class="card-name" data-testid="user-name">${userName(c.user)}</h3>
      ${props.$email ? html`<p data-testid="user-email" class="card-email">${String(props.$email)}</p>` : null}
      ${user.user_id ? html`<p class="muted">Site id: ${user.user_id}</p>` : null}
      ${rows.length ? html`<dl class="props">${rows.map(([k, v]) => [html`<dt>${k}</dt>`, html`<dd>${v}</dd>`])}</dl>` : null}
      <h4>Other conversations</h4>
      <ul data-testid="user-conversations" class="others">
        ${
          others === null
            ? html`<li class="muted">Loading…</li>`
            : others.length === 0
              ? html`<li class="muted">None</li>`
              : others.map(
                  (o) => html`
              <li key=${o.id}>
                <button type="button" class="other" data-conversation-id=${o.id} onClick=${() => openConversation(o.id)}>
                  <span class="other-text">${partText(o.important_part_last) || "(no message)"}</span>
                  <span class="muted">${statusOf(o, at)} · <${Time} seconds=${o.last_update} /></span>
                </button>
              </li>`,
                )
        }
      </ul>
    </aside>`;
}

/**
 * Below 1024 px the list and the conversation share one column: back to the list, with the
 * keyboard focus on the conversation's row.
 */
function backToList() {
  const id = pane.value?.id;
  closeConversation();
  requestAnimationFrame(() => {
    if (!id) return;
    const row = document.querySelector(
      `[data-testid="conversation-row"][data-conversation-id="${CSS.escape(id)}"] .row-button`,
    );
    /** @type {HTMLElement | null} */ (row)?.focus();
  });
}

export function ConversationPane() {
  const p = pane.value;
  const c = current.value;
  let content;
  if (!p) content = html`<p class="muted empty">Choose a conversation.</p>`;
  else if (p.status === "loading") content = html`<p class="muted empty">Loading…</p>`;
  else if (p.status === "failed" || !c)
    content = html`<p class="muted empty">This conversation could not be loaded.</p>`;
  else {
    const who = typing.value.get(c.id);
    content = html`
      <div key=${c.id} data-testid="conversation" data-conversation-id=${c.id} class="conversation">
        <${Head} key=${`head-${c.id}`} c=${c} />
        <button type="button" class="load-earlier" hidden=${!p.partsNext} onClick=${loadEarlier}>Load earlier messages</button>
        <${Parts} key=${`parts-${c.id}`} c=${c} parts=${p.parts} />
        <p data-testid="typing" class="typing" aria-live="polite" hidden=${!who}>${who ? `${who} is typing…` : ""}</p>
        <${Composer} key=${`reply-${c.id}`} id=${c.id} />
      </div>
      <${UserCard} key=${`card-${c.id}`} c=${c} others=${p.others} />`;
  }
  return html`
    <section class="pane" id="pane" aria-label="Conversation">
      ${
        p
          ? html`<button type="button" class="back" data-testid="back-to-list" onClick=${backToList}>
              <span aria-hidden="true">← </span>Conversations</button>`
          : null
      }
      ${content}
    </section>`;
}
