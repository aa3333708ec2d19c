// The audit log, read-only, for the app's owners: who created or removed tokens, admins
// and webhooks, changed roles, and when. Shown in a dialog over the inbox.
import { html } from "../html.js";
import { formatDateTime } from "../dom.js";
import { admins, signedInApi, auditOpen } from "../store.js";
import { useEffect, useRef, useState } from "../vendor/preact/hooks.js";

/**
 * @typedef {{
 *   action: string, created: number, actor_kind: string, actor_admin?: string | null,
 *   actor_token?: string | null, object_type?: string, object_id?: string | null,
 *   details?: Record<string, any> | null
 * }} Entry
 * @typedef {Map<string, import("../store.js").Admin>} Admins
 */

const PAGE = 50;
/** @type {Record<string, string>} */
const ACTIONS = {
  "admin.create": "added admin",
  "admin.remove": "removed admin",
  "admin.role": "changed the role of admin",
  "admin.totp_on": "turned on two-step sign-in of admin",
  "admin.totp_off": "turned off two-step sign-in of admin",
  "admin.totp_reset": "reset two-step sign-in of admin",
  "token.create": "created token",
  "token.revoke": "revoked token",
  "token.reown": "re-owned token",
  "webhook.create": "added webhook",
  "webhook.remove": "removed webhook",
  "conversation.as_admin": "wrote as admin",
};

/** @param {Entry} entry @param {Admins} known */
function actor(entry, known) {
  if (entry.actor_kind === "cli") return "Command line";
  const admin = entry.actor_admin && known.get(String(entry.actor_admin));
  const name = admin ? admin.name : entry.actor_admin ? `admin ${entry.actor_admin}` : "";
  if (entry.actor_kind === "admin") return name || "an admin";
  const token = `token ${entry.actor_token}`;
  return name ? `${token} (issued by ${name})` : token;
}

/** @param {Entry} entry @param {Admins} known */
function what(entry, known) {
  const action = ACTIONS[entry.action] || entry.action;
  const admin = entry.object_type === "admin" && known.get(String(entry.object_id));
  const named = admin ? ` (${admin.name})` : "";
  const target = entry.object_id ? ` ${entry.object_id}${named}` : "";
  const d = entry.details || {};
  const extra = entry.action === "admin.role" ? ` (${d.old} → ${d.new})` : "";
  return `${action}${target}${extra}`;
}

/** The dialog: the newest entries first; "Older" pages on. */
export function AuditLog() {
  const dialog = useRef(/** @type {HTMLDialogElement | null} */ (null));
  const [entries, setEntries] = useState(/** @type {Entry[]} */ ([]));
  const [after, setAfter] = useState(/** @type {string | null} */ (null));
  const [status, setStatus] = useState("");
  const [busy, setBusy] = useState(false);
  const open = auditOpen.value;

  /** @param {string | null} from @param {Entry[]} shown */
  async function load(from, shown) {
    const client = signedInApi();
    if (!client) return;
    setBusy(true);
    try {
      const answer = await client.audit({ count: PAGE, after: from });
      const all = shown.concat(answer.data);
      setEntries(all);
      setAfter(answer.meta.next_after || null);
      setStatus(all.length ? "" : "Nothing recorded yet.");
    } catch (e) {
      setStatus(/** @type {Error} */ (e).message);
    } finally {
      setBusy(false);
    }
  }

  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (open) {
      if (!el.open) el.showModal();
      setEntries([]);
      setAfter(null);
      setStatus("");
      load(null, []);
    } else if (el.open) {
      el.close();
    }
  }, [open]);

  const known = admins.value;
  return html`
    <dialog id="audit" data-testid="audit" class="audit" aria-label="Audit log" ref=${dialog}
            onClose=${() => {
              auditOpen.value = false;
            }}>
      ${
        open &&
        html`
        <h2>Audit log</h2>
        <table class="audit-table">
          <thead><tr><th>When</th><th>Who</th><th>What</th></tr></thead>
          <tbody>
            ${entries.map(
              (entry, i) => html`
              <tr key=${i} data-testid="audit-entry" data-action=${entry.action}>
                <td>${formatDateTime(entry.created)}</td>
                <td>${actor(entry, known)}</td>
                <td>${what(entry, known)}</td>
              </tr>`,
            )}
          </tbody>
        </table>
        <p class="muted" role="status">${status}</p>
        <div class="audit-buttons">
          <button type="button" data-testid="audit-more" hidden=${!after} disabled=${busy}
                  onClick=${() => load(after, entries)}>Older</button>
          <button type="button" data-testid="audit-close"
                  onClick=${() => {
                    auditOpen.value = false;
                  }}>Close</button>
        </div>`
      }
    </dialog>`;
}
