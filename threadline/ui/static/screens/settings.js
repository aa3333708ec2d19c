// The signed-in operator's own settings, in a dialog over the inbox: their password, and
// two-step sign-in (a code of an authenticator app after the password). Owners open the
// audit log from here too.
import { html } from "../html.js";
import { auditOpen, session, settingsOpen, signedInApi, twoFactorChanged } from "../store.js";
import { useEffect, useRef, useState } from "../vendor/preact/hooks.js";

/**
 * @typedef {{text: string, isError: boolean}} Status
 * @typedef {{secret: string, uri: string, qr: string}} Enrolment
 */

const NO_STATUS = { text: "", isError: false };

/**
 * An error's message without the parameter it names ("new_password: too short").
 * @param {unknown} e
 */
function reason(e) {
  const err = /** @type {Error} */ (e);
  return (err.message || "").replace(/^\w+: /, "");
}

/** @param {{testid: string, status: Status}} props */
function StatusLine({ testid, status }) {
  return html`
    <p data-testid=${testid} role="status" class=${status.isError ? "error" : "muted"}>${status.text}</p>`;
}

function PasswordSection() {
  const [busy, setBusy] = useState(false);
  const [status, setStatus] = useState(/** @type {Status} */ (NO_STATUS));
  const current = useRef(/** @type {HTMLInputElement | null} */ (null));
  const next = useRef(/** @type {HTMLInputElement | null} */ (null));

  /** @param {SubmitEvent} event */
  async function onSubmit(event) {
    event.preventDefault();
    const client = signedInApi();
    if (!client || !current.current || !next.current) return;
    setBusy(true);
    try {
      await client.changePassword(current.current.value, next.current.value);
      current.current.value = "";
      next.current.value = "";
      setStatus({ text: "Your password is changed. Your other sign-ins have ended.", isError: false });
    } catch (e) {
      setStatus({ text: reason(e), isError: true });
    } finally {
      setBusy(false);
    }
  }

  return html`
    <section aria-label="Password">
      <h3>Password</h3>
      <form class="settings-form" novalidate onSubmit=${onSubmit}>
        <label for="settings-password-current">Current password</label>
        <input id="settings-password-current" data-testid="password-current" type="password"
               autocomplete="current-password" ref=${current} />
        <label for="settings-password-new">New password (at least 10 characters)</label>
        <input id="settings-password-new" data-testid="password-new" type="password"
               autocomplete="new-password" ref=${next} />
        <${StatusLine} testid="password-status" status=${status} />
        <button type="submit" data-testid="password-submit" disabled=${busy}>Change password</button>
      </form>
    </section>`;
}

/**
 * The key to enrol, shown this once, and the code that confirms it.
 * @param {{enrolment: Enrolment, status: Status, onConfirm: (code: string) => Promise<void>}} props
 */
function Enrol({ enrolment, status, onConfirm }) {
  const [busy, setBusy] = useState(false);
  const code = useRef(/** @type {HTMLInputElement | null} */ (null));

  useEffect(() => {
    code.current?.focus();
  }, []);

  /** @param {SubmitEvent} event */
  async function onSubmit(event) {
    event.preventDefault();
    setBusy(true);
    try {
      await onConfirm(code.current?.value.trim() || "");
    } finally {
      setBusy(false);
    }
  }

  return html`
    <form class="settings-form" novalidate onSubmit=${onSubmit}>
      <p>Scan this code with your authenticator app, or type the key into it (both are shown
        this once), then enter the code the app shows.</p>
      <img src=${enrolment.qr} alt="QR code of the key" class="qr" data-testid="two-factor-qr" />
      <code class="secret" data-testid="two-factor-secret">${enrolment.secret}</code>
      <p class="muted">Or the app's link: <code class="secret" data-testid="two-factor-uri">${enrolment.uri}</code></p>
      <label for="settings-two-factor-code">Code from the app</label>
      <input id="settings-two-factor-code" data-testid="two-factor-code" inputmode="numeric"
             autocomplete="one-time-code" maxlength="20" ref=${code} />
      <${StatusLine} testid="two-factor-status" status=${status} />
      <button type="submit" class="primary" data-testid="two-factor-confirm" disabled=${busy}>Turn on</button>
    </form>`;
}

/** @param {{onOff: (proof: string) => Promise<void>}} props */
function TurnOff({ onOff }) {
  const [busy, setBusy] = useState(false);
  const proof = useRef(/** @type {HTMLInputElement | null} */ (null));

  /** @param {SubmitEvent} event */
  async function onSubmit(event) {
    event.preventDefault();
    setBusy(true);
    try {
      await onOff(proof.current?.value.trim() || "");
    } finally {
      setBusy(false);
    }
  }

  return html`
    <form class="settings-form" novalidate onSubmit=${onSubmit}>
      <label for="settings-two-factor-proof">A code from the app, or your password</label>
      <input id="settings-two-factor-proof" data-testid="two-factor-proof" type="password"
             autocomplete="off" ref=${proof} />
      <button type="submit" data-testid="two-factor-off" disabled=${busy}>Turn off</button>
    </form>`;
}

function TwoFactorSection() {
  const on = Boolean(session.value?.two_factor);
  const [enrolment, setEnrolment] = useState(/** @type {Enrolment | null} */ (null));
  const [status, setStatus] = useState(/** @type {Status} */ (NO_STATUS));
  const [busy, setBusy] = useState(false);

  async function start() {
    const client = signedInApi();
    if (!client) return;
    setBusy(true);
    try {
      const answer = await client.enrolTwoFactor();
      setStatus(NO_STATUS);
      setEnrolment(answer.data);
    } catch (e) {
      setStatus({ text: reason(e), isError: true });
    } finally {
      setBusy(false);
    }
  }

  /** @param {string} code */
  async function confirm(code) {
    const client = signedInApi();
    if (!client) return;
    try {
      await client.confirmTwoFactor(code);
      setEnrolment(null);
      twoFactorChanged(true);
      setStatus({ text: "Two-step sign-in is on. Your other sign-ins have ended.", isError: false });
    } catch (e) {
      setStatus({ text: reason(e), isError: true });
    }
  }

  /** @param {string} proof a code (digits, spaces, dashes) or the password */
  async function turnOff(proof) {
    const client = signedInApi();
    if (!client) return;
    try {
      await client.disableTwoFactor(/^[0-9 -]{6,9}$/.test(proof) ? { code: proof } : { password: proof });
      twoFactorChanged(false);
      setStatus({ text: "Two-step sign-in is off.", isError: false });
    } catch (e) {
      setStatus({ text: reason(e), isError: true });
    }
  }

  let body;
  if (enrolment) {
    body = html`<${Enrol} enrolment=${enrolment} status=${status} onConfirm=${confirm} />`;
  } else if (on) {
    body = html`
      <p data-testid="two-factor-state">On: signing in needs a code of your authenticator app.</p>
      <${TurnOff} onOff=${turnOff} />
      <${StatusLine} testid="two-factor-status" status=${status} />`;
  } else {
    body = html`
      <p data-testid="two-factor-state">Off: your password alone signs you in.</p>
      <button type="button" data-testid="two-factor-start" disabled=${busy} onClick=${start}>Turn on</button>
      <${StatusLine} testid="two-factor-status" status=${status} />`;
  }
  return html`
    <section data-testid="two-factor" aria-label="Two-step sign-in">
      <h3>Two-step sign-in</h3>
      ${body}
    </section>`;
}

function AuditSection() {
  return html`
    <section aria-label="Audit log">
      <h3>Audit log</h3>
      <p class="muted">Who added or removed admins, tokens and webhooks, and when.</p>
      <button type="button" data-testid="settings-audit"
              onClick=${() => {
                settingsOpen.value = false;
                auditOpen.value = true;
              }}>Open the audit log</button>
    </section>`;
}

/** The dialog; its sections start afresh each time it opens. */
export function Settings() {
  const dialog = useRef(/** @type {HTMLDialogElement | null} */ (null));
  const open = settingsOpen.value;
  const owner = session.value?.role === "owner";

  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (open && !el.open) el.showModal();
    else if (!open && el.open) el.close();
  }, [open]);

  return html`
    <dialog id="settings" data-testid="settings" class="audit settings" aria-label="Settings"
            ref=${dialog} onClose=${() => {
              settingsOpen.value = false;
            }}>
      ${
        open &&
        html`
        <h2>Settings</h2>
        <${PasswordSection} />
        <${TwoFactorSection} />
        ${owner ? html`<${AuditSection} />` : null}
        <div class="audit-buttons">
          <button type="button" data-testid="settings-close"
                  onClick=${() => {
                    settingsOpen.value = false;
                  }}>Close</button>
        </div>`
      }
    </dialog>`;
}
