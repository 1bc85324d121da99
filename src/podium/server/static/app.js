// The dashboard: a hash router over pages; each page returns a function that stops it.
import { ApiError, call, get } from "./api.js";
import { agentsPage, alertsPage, failuresPage } from "./fleet.js";
import { runPage } from "./run.js";
import { runsPage } from "./runs.js";

const GRANTS = { admin: ["admin", "write", "read"], write: ["write", "read"], read: ["read"] };
export const session = { user: null, open: false };
export const can = (scope) => Boolean(session.user && (GRANTS[session.user.scope] || []).includes(scope));

const $ = (id) => document.getElementById(id);
let stop = null;

export function toast(text) {
  $("toast").textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { $("toast").textContent = ""; }, 5000);
}

export function failed(err) {
  toast(err instanceof ApiError ? err.message : String(err));
}

function theme(initial) {
  const root = document.documentElement;
  const dark = () => root.dataset.theme ? root.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  const label = () => $("theme").setAttribute("aria-label", dark() ? "Switch to light theme" : "Switch to dark theme");
  if (initial) root.dataset.theme = initial;
  label();
  $("theme").addEventListener("click", () => {
    root.dataset.theme = dark() ? "light" : "dark";
    try { localStorage.setItem("podium-theme", root.dataset.theme); } catch { /* private mode */ }
    label();
  });
}

async function refreshSession() {
  const doc = await get("/session");
  session.open = doc.open;
  session.user = doc.user;
  $("who").textContent = doc.open ? "open server (no tokens)" : doc.user ? `${doc.user.name} (${doc.user.scope})` : "";
  $("logout").hidden = doc.open || !doc.user;
}

function showLogin(show) {
  $("login").hidden = !show;
  $("view").hidden = show;
  if (show) $("token").focus();
}

async function route() {
  if (stop) { stop(); stop = null; }
  if (!session.open && !session.user) { showLogin(true); return; }
  showLogin(false);
  const [, page = "runs", arg] = location.hash.replace(/^#/, "").split("/");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === (page === "run" ? "runs" : page)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = $("view");
  view.replaceChildren();
  const pages = { runs: runsPage, run: runPage, agents: agentsPage, alerts: alertsPage, failures: failuresPage };
  const render = pages[page] || runsPage;
  stop = render(view, arg ? decodeURIComponent(arg) : undefined);
}

async function main() {
  let saved = null;
  try { saved = localStorage.getItem("podium-theme"); } catch { /* private mode */ }
  theme(saved);
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      await call("POST", "/session", { token: $("token").value.trim() });
      $("token").value = "";
      await refreshSession();
      route();
    } catch (err) {
      $("login-error").textContent = err instanceof ApiError && err.status === 401
        ? "That token is unknown, expired or revoked." : String(err.message || err);
    }
  });
  $("logout").addEventListener("click", async () => {
    await call("DELETE", "/session").catch(() => {});
    await refreshSession();
    route();
  });
  window.addEventListener("podium:logged-out", async () => {
    await refreshSession().catch(() => {});
    if (!session.open && !session.user) route();
  });
  window.addEventListener("hashchange", route);
  await refreshSession();
  route();
}

main().catch(failed);
