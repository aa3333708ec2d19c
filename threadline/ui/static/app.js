// The operators' inbox: the page's shell (connection banner, top bar, errors) and which
// screen shows. Screens live in screens/, their state and its changes in store.js.
import { Api } from "./api.js";
import { html } from "./html.js";
import { AuditLog } from "./screens/audit.js";
import { ConversationPane } from "./screens/conversation.js";
import { ConversationList, Views } from "./screens/list.js";
import { Settings } from "./screens/settings.js";
import { ResetPassword, SignIn } from "./screens/signin.js";
import {
  apiDown,
  auditOpen,
  bannerText,
  error,
  forgetSession,
  goneOnline,
  pane,
  query,
  savedSession,
  screen,
  search,
  selectView,
  session,
  settingsOpen,
  showLogin,
  signOut,
  startInbox,
  view,
} from "./store.js";
import { render } from "./vendor/preact/index.js";
import { useEffect, useRef } from "./vendor/preact/hooks.js";

/** The one-time token of a password reset link (/#reset=<token>), if this is one. */
function resetToken() {
  const match = /^#reset=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
  return match ? match[1] : null;
}

function TopBar() {
  const box = useRef(/** @type {HTMLInputElement | null} */ (null));
  const me = session.value;
  const searching = query.value;
  const chosen = view.value;
  // Choosing a view clears the search box.
  useEffect(() => {
    if (!searching && box.current) box.current.value = "";
  }, [searching, chosen]);

  /** @param {Event} event */
  function onSubmit(event) {
    event.preventDefault();
    search(box.current ? box.current.value.trim() : "");
  }
  /** @param {KeyboardEvent} event */
  function onKeyDown(event) {
    if (event.key === "Escape" && box.current && box.current.value) {
      box.current.value = "";
      selectView(view.value);
    }
  }
  function onInput() {
    // Clearing the box (its "x" included) returns to the view.
    if (box.current && !box.current.value && query.value) selectView(view.value);
  }

  return html`
    <header class="topbar">
      <h1 class="brand">Threadline</h1>
      <form id="search-form" class="search" role="search" onSubmit=${onSubmit}>
        <label for="search" class="visually-hidden">Search conversations</label>
        <input id="search" data-testid="search" type="search" placeholder="Search messages (Enter)"
               autocomplete="off" maxlength="1000" ref=${box} onKeyDown=${onKeyDown} onInput=${onInput} />
      </form>
      <span class="who" title=${me ? me.name : ""}>
        <span class="who-label">Signed in as </span><strong data-testid="current-admin">${me ? me.name : ""}</strong>
      </span>
      <button type="button" id="settings-open" data-testid="settings-open" onClick=${() => {
        settingsOpen.value = true;
      }}>Settings</button>
      <button type="button" id="audit-open" data-testid="audit-open"
              hidden=${me?.role !== "owner"} onClick=${() => {
                auditOpen.value = true;
              }}>Audit log</button>
      <button type="button" id="logout" data-testid="logout" onClick=${signOut}>Sign out</button>
    </header>`;
}

function Inbox() {
  const message = error.value;
  return html`
    <div id="inbox" data-testid="inbox" class="inbox">
      <${TopBar} />
      <p class="error toast" data-testid="error" role="alert" hidden=${!message}>${message}</p>
      <${Views} />
      <main class=${pane.value ? "work has-pane" : "work"} data-testid="work">
        <${ConversationList} />
        <${ConversationPane} />
      </main>
      <${AuditLog} />
      <${Settings} />
    </div>`;
}

function App() {
  const banner = bannerText.value;
  const shown = screen.value;
  const token = resetToken();
  return html`
    <div class="banner" data-testid="connection" role="status" aria-live="polite" hidden=${!banner}>${banner}</div>
    ${shown === "reset" && token ? html`<${ResetPassword} token=${token} />` : null}
    ${shown === "login" ? html`<${SignIn} />` : null}
    ${shown === "inbox" ? html`<${Inbox} />` : null}`;
}

async function boot() {
  window.addEventListener("offline", goneOnline);
  window.addEventListener("online", goneOnline);
  document.addEventListener("keydown", (event) => {
    const target = /** @type {Element} */ (event.target);
    const typingInField = target.closest?.("input, textarea, select");
    if (event.key === "/" && !typingInField && session.value) {
      event.preventDefault();
      document.getElementById("search")?.focus();
    }
  });
  const root = document.getElementById("root");
  if (root) render(html`<${App} />`, root);
  if (resetToken()) {
    screen.value = "reset";
    return;
  }
  let saved = savedSession();
  if (!saved) {
    showLogin();
    return;
  }
  try {
    const who = await new Api(saved).whoAmI();
    const { name, role, two_factor, attachment_max_bytes, attachment_types } = who.data;
    saved = { ...saved, name, role, two_factor, attachment_max_bytes, attachment_types };
  } catch (e) {
    const err = /** @type {import("./api.js").ApiError} */ (e);
    if (err.status === 401 || err.status === 403) {
      forgetSession();
      showLogin("Your session has ended. Please sign in again.");
      return;
    }
    apiDown.value = err.status === 0;
  }
  startInbox(saved);
}

boot();
