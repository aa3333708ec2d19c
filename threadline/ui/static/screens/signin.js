// Signing in, and setting a password from a reset link (/#reset=<token>).
import { resetPassword, signIn } from "../api.js";
import { html } from "../html.js";
import { loginMessage, showLogin, signedIn } from "../store.js";
import { useEffect, useRef, useState } from "../vendor/preact/hooks.js";

/** @typedef {import("../api.js").ApiError} ApiError */

export function SignIn() {
  const [busy, setBusy] = useState(false);
  const [askApp, setAskApp] = useState(false);
  // The account signs in with a code of its authenticator app too; `codeTurn` moves the
  // focus to the code field each time it is asked for.
  const [askCode, setAskCode] = useState(false);
  const [codeTurn, setCodeTurn] = useState(0);
  const [localError, setLocalError] = useState(/** @type {string | null} */ (null));
  const email = useRef(/** @type {HTMLInputElement | null} */ (null));
  const password = useRef(/** @type {HTMLInputElement | null} */ (null));
  const app = useRef(/** @type {HTMLInputElement | null} */ (null));
  const code = useRef(/** @type {HTMLInputElement | null} */ (null));
  const message = localError ?? loginMessage.value;

  // Shown anew (a first visit, after signing out): the e-mail field has the focus.
  useEffect(() => {
    email.current?.focus();
  }, []);
  useEffect(() => {
    if (codeTurn) code.current?.focus();
  }, [codeTurn]);

  /** @param {SubmitEvent} event */
  async function onSubmit(event) {
    event.preventDefault();
    const emailText = email.current?.value.trim() || "";
    const passwordText = password.current?.value || "";
    if (!emailText || !passwordText) {
      setLocalError("Enter your e-mail and password.");
      email.current?.focus();
      return;
    }
    setBusy(true);
    try {
      const answer = await signIn(
        emailText,
        passwordText,
        app.current?.value.trim() || undefined,
        code.current?.value.trim() || undefined,
      );
      if (password.current) password.current.value = "";
      if (code.current) code.current.value = "";
      setAskCode(false);
      setLocalError(null);
      signedIn(answer.data);
    } catch (e) {
      const err = /** @type {ApiError} */ (e);
      const aboutCode = /^code:/.test(err.message || "");
      if (err.status === 400 && aboutCode) {
        // The password was right; this account signs in with a code of its app too.
        setAskCode(true);
        setLocalError("Enter the code from your authenticator app.");
        setCodeTurn((turn) => turn + 1);
        return;
      }
      if (err.status === 401 && aboutCode) {
        if (code.current) code.current.value = "";
        setLocalError("Wrong code, or a code used already. Enter the next code.");
        setCodeTurn((turn) => turn + 1);
        return;
      }
      let text = err.message;
      if (err.status === 401) text = "Wrong e-mail or password.";
      else if (err.status === 400 && /^app:/.test(err.message || "")) {
        // The e-mail is an admin's of several apps: the operator names theirs.
        setAskApp(true);
        text = "This e-mail belongs to several apps: enter your app's id.";
      } else if (err.status === 429) {
        text = `Too many failed attempts. Try again in ${err.retryAfter || 60} seconds.`;
      }
      setLocalError(text);
      password.current?.focus();
    } finally {
      setBusy(false);
    }
  }

  return html`
    <main id="login" class="login">
      <form id="login-form" class="login-card" novalidate onSubmit=${onSubmit}>
        <h1>Threadline</h1>
        <p class="muted">Sign in to the operators' inbox.</p>
        <label for="login-email">E-mail</label>
        <input id="login-email" data-testid="login-email" type="email" name="email"
               autocomplete="username" required ref=${email} />
        <label for="login-password">Password</label>
        <input id="login-password" data-testid="login-password" type="password" name="password"
               autocomplete="current-password" required ref=${password} />
        <div id="login-code-field" hidden=${!askCode}>
          <label for="login-code">Code from your authenticator app</label>
          <input id="login-code" data-testid="login-code" name="code" inputmode="numeric"
                 autocomplete="one-time-code" maxlength="20" ref=${code} />
        </div>
        <div id="login-app-field" hidden=${!askApp}>
          <label for="login-app">App id</label>
          <input id="login-app" data-testid="login-app" name="app" inputmode="numeric"
                 autocomplete="off" ref=${app} />
        </div>
        <p class="error" data-testid="login-error" role="alert" hidden=${!message}>${message}</p>
        <button type="submit" data-testid="login-submit" class="primary" disabled=${busy}>Sign in</button>
      </form>
    </main>`;
}

/** @param {{token: string}} props */
export function ResetPassword({ token }) {
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState("");
  const password = useRef(/** @type {HTMLInputElement | null} */ (null));

  useEffect(() => {
    password.current?.focus();
  }, []);

  /** @param {SubmitEvent} event */
  async function onSubmit(event) {
    event.preventDefault();
    setBusy(true);
    try {
      await resetPassword(token, password.current?.value || "");
      if (password.current) password.current.value = "";
      // The token leaves the address bar (and the history entry) once used.
      window.history.replaceState(null, "", window.location.pathname);
      showLogin("Your password is set. Please sign in.");
    } catch (e) {
      setMessage(/** @type {ApiError} */ (e).message.replace(/^\w+: /, ""));
    } finally {
      setBusy(false);
    }
  }

  return html`
    <main id="login" class="login">
      <form id="reset-form" class="login-card" novalidate onSubmit=${onSubmit}>
        <h1>Threadline</h1>
        <p class="muted">Choose a new password (at least 10 characters).</p>
        <label for="reset-password">New password</label>
        <input id="reset-password" data-testid="reset-password" type="password"
               name="new_password" autocomplete="new-password" required ref=${password} />
        <p class="error" data-testid="reset-error" role="alert" hidden=${!message}>${message}</p>
        <button type="submit" data-testid="reset-submit" class="primary" disabled=${busy}>Set password</button>
      </form>
    </main>`;
}
