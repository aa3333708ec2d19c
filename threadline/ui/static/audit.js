// The audit log, read-only, for the app's owners: who created or removed tokens, admins
// and webhooks, changed roles, and when. Shown in a dialog over the inbox.
import { fill, formatDateTime, h } from "./dom.js";

const PAGE = 50;
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

function actor(entry, admins) {
  if (entry.actor_kind === "cli") return "Command line";
  const admin = entry.actor_admin && admins.get(String(entry.actor_admin));
  const name = admin ? admin.name : entry.actor_admin ? `admin ${entry.actor_admin}` : "";
  if (entry.actor_kind === "admin") return name || "an admin";
  const token = `token ${entry.actor_token}`;
  return name ? `${token} (issued by ${name})` : token;
}

function what(entry, admins) {
  const action = ACTIONS[entry.action] || entry.action;
  const admin = entry.object_type === "admin" && admins.get(String(entry.object_id));
  const named = admin ? ` (${admin.name})` : "";
  const target = entry.object_id ? ` ${entry.object_id}${named}` : "";
  const d = entry.details || {};
  const extra = entry.action === "admin.role" ? ` (${d.old} → ${d.new})` : "";
  return `${action}${target}${extra}`;
}

function row(entry, admins) {
  return h(
    "tr", { testid: "audit-entry", dataset: { action: entry.action } },
    h("td", {}, formatDateTime(entry.created)),
    h("td", {}, actor(entry, admins)),
    h("td", {}, what(entry, admins)),
  );
}

/** Open the dialog with the newest entries; "Older" pages on. */
export async function showAudit(api, admins, dialog) {
  const body = h("tbody");
  const more = h("button", { type: "button", testid: "audit-more", hidden: true }, "Older");
  const status = h("p", { class: "muted", role: "status" });
  let after = null;
  async function load() {
    more.disabled = true;
    try {
      const answer = await api.audit({ count: PAGE, after });
      body.append(...answer.data.map((entry) => row(entry, admins)));
      after = answer.meta.next_after;
      more.hidden = !after;
      status.textContent = body.children.length ? "" : "Nothing recorded yet.";
    } catch (error) {
      status.textContent = error.message;
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", load);
  fill(
    dialog,
    h("h2", {}, "Audit log"),
    h("table", { class: "audit-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Who"), h("th", {}, "What"))),
      body),
    status,
    h("div", { class: "audit-buttons" },
      more,
      h("button", { type: "button", testid: "audit-close", onclick: () => dialog.close() }, "Close")),
  );
  if (!dialog.open) dialog.showModal();
  await load();
}
