// The signed-in operator's own settings, in a dialog over the inbox: their password, and
// two-step sign-in (a code of an authenticator app after the password).
import { fill, h } from "./dom.js";

function field(label, attrs) {
  const input = h("input", attrs);
  const id = `settings-${attrs.testid}`;
  input.id = id;
  return [h("label", { for: id }, label), input];
}

function message(testid) {
  return h("p", { testid, role: "status", class: "muted" });
}

function say(el, text, isError = false) {
  el.textContent = text;
  el.className = isError ? "error" : "muted";
}

function withoutParam(text) {
  return (text || "").replace(/^\w+: /, "");
}

function passwordSection(api) {
  const [currentLabel, current] = field("Current password", {
    type: "password", testid: "password-current", autocomplete: "current-password",
  });
  const [nextLabel, next] = field("New password (at least 10 characters)", {
    type: "password", testid: "password-new", autocomplete: "new-password",
  });
  const status = message("password-status");
  const submit = h("button", { type: "submit", testid: "password-submit" }, "Change password");
  const form = h("form", { class: "settings-form", novalidate: true },
    currentLabel, current, nextLabel, next, status, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      await api.changePassword(current.value, next.value);
      current.value = "";
      next.value = "";
      say(status, "Your password is changed. Your other sign-ins have ended.");
    } catch (error) {
      say(status, withoutParam(error.message), true);
    } finally {
      submit.disabled = false;
    }
  });
  return h("section", { "aria-label": "Password" }, h("h3", {}, "Password"), form);
}

function twoFactorSection(api, session, onChange) {
  const section = h("section", { testid: "two-factor", "aria-label": "Two-step sign-in" });
  const status = message("two-factor-status");

  function showOff() {
    const start = h("button", { type: "button", testid: "two-factor-start" }, "Turn on");
    start.addEventListener("click", async () => {
      start.disabled = true;
      try {
        const answer = await api.enrolTwoFactor();
        showEnrol(answer.data);
      } catch (error) {
        say(status, withoutParam(error.message), true);
        start.disabled = false;
      }
    });
    fill(section, h("h3", {}, "Two-step sign-in"),
      h("p", { testid: "two-factor-state" }, "Off: your password alone signs you in."),
      start, status);
  }

  function showEnrol({ secret, uri, qr }) {
    const [codeLabel, code] = field("Code from the app", {
      testid: "two-factor-code", inputmode: "numeric", autocomplete: "one-time-code",
      maxlength: "20",
    });
    const confirm = h("button", { type: "submit", class: "primary", testid: "two-factor-confirm" },
      "Turn on");
    const form = h("form", { class: "settings-form", novalidate: true },
      h("p", {}, "Scan this code with your authenticator app, or type the key into it (both "
        + "are shown this once), then enter the code the app shows."),
      h("img", { src: qr, alt: "QR code of the key", class: "qr", testid: "two-factor-qr" }),
      h("code", { class: "secret", testid: "two-factor-secret" }, secret),
      h("p", { class: "muted" }, "Or the app's link: ",
        h("code", { class: "secret", testid: "two-factor-uri" }, uri)),
      codeLabel, code, status, confirm);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      confirm.disabled = true;
      try {
        await api.confirmTwoFactor(code.value.trim());
        onChange(true);
        showOn();
        say(status, "Two-step sign-in is on. Your other sign-ins have ended.");
      } catch (error) {
        say(status, withoutParam(error.message), true);
        confirm.disabled = false;
      }
    });
    fill(section, h("h3", {}, "Two-step sign-in"), form);
    code.focus();
  }

  function showOn() {
    const [proofLabel, proof] = field("A code from the app, or your password", {
      type: "password", testid: "two-factor-proof", autocomplete: "off",
    });
    const off = h("button", { type: "submit", testid: "two-factor-off" }, "Turn off");
    const form = h("form", { class: "settings-form", novalidate: true },
      proofLabel, proof, off);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      off.disabled = true;
      const value = proof.value.trim();
      try {
        await api.disableTwoFactor(/^[0-9 -]{6,9}$/.test(value) ? { code: value } : { password: value });
        onChange(false);
        showOff();
        say(status, "Two-step sign-in is off.");
      } catch (error) {
        say(status, withoutParam(error.message), true);
        off.disabled = false;
      }
    });
    fill(section, h("h3", {}, "Two-step sign-in"),
      h("p", { testid: "two-factor-state" }, "On: signing in needs a code of your authenticator app."),
      form, status);
  }

  if (session.two_factor) showOn();
  else showOff();
  return section;
}

function auditSection(dialog, onAudit) {
  const open = h("button", { type: "button", testid: "settings-audit" }, "Open the audit log");
  open.addEventListener("click", () => {
    dialog.close();
    onAudit();
  });
  return h("section", { "aria-label": "Audit log" },
    h("h3", {}, "Audit log"),
    h("p", { class: "muted" }, "Who added or removed admins, tokens and webhooks, and when."),
    open);
}

/**
 * Open the settings dialog. `onChange(twoFactor)` keeps the session's copy current;
 * `onAudit()` opens the audit log (offered to owners, whose it is).
 */
export function showSettings(api, session, dialog, onChange, onAudit) {
  fill(
    dialog,
    h("h2", {}, "Settings"),
    passwordSection(api),
    twoFactorSection(api, session, onChange),
    session.role === "owner" ? auditSection(dialog, onAudit) : null,
    h("div", { class: "audit-buttons" },
      h("button", { type: "button", testid: "settings-close", onclick: () => dialog.close() },
        "Close")),
  );
  if (!dialog.open) dialog.showModal();
}
