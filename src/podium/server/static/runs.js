// Runs: newest first, polled; status filter, text search, and a form to submit one.
import { can, failed, toast } from "./app.js";
import { get, post } from "./api.js";
import { badge, fill, h, seconds, table, when } from "./dom.js";

const STATUSES = ["", "pending", "running", "waiting", "succeeded", "failed", "cancelled", "rolled_back", "rollback_failed"];
const POLL_MS = 2000;

export function runsPage(view) {
  const status = h("select", { id: "status-filter", "aria-label": "Filter by status" },
    STATUSES.map((s) => h("option", { value: s }, s || "any status")));
  const search = h("input", { id: "search", type: "search", placeholder: "run id or workflow", "aria-label": "Search runs by id or workflow" });
  const body = h("tbody");
  const count = h("p", { class: "muted", "aria-live": "polite" });
  let runs = [];

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = runs.filter((r) => !q || r.run_id.toLowerCase().includes(q) || r.workflow.toLowerCase().includes(q));
    fill(body, ...shown.map((r) => h("tr", { "data-run": r.run_id },
      h("td", {}, h("a", { href: `#/run/${encodeURIComponent(r.run_id)}`, class: "mono" }, r.run_id)),
      h("td", {}, r.workflow, h("span", { class: "muted" }, ` v${r.version}`)),
      h("td", {}, badge(r.status)),
      h("td", { class: "hide-narrow" }, when(r.created_at)),
      h("td", { class: "hide-narrow" }, seconds(r.duration_s)),
      h("td", { class: "hide-narrow error" }, r.error ? r.error.message : ""))));
    count.textContent = `${shown.length} of ${runs.length} runs shown`;
  };
  const load = async () => {
    const q = status.value ? `?limit=200&status=${encodeURIComponent(status.value)}` : "?limit=200";
    try { runs = (await get(`/runs${q}`)).runs; draw(); } catch (err) { failed(err); }
  };
  status.addEventListener("change", load);
  search.addEventListener("input", draw);

  view.append(
    h("h1", {}, "Runs"),
    h("div", { class: "toolbar", role: "search" },
      h("div", {}, h("label", { for: "status-filter" }, "Status"), status),
      h("div", {}, h("label", { for: "search" }, "Search"), search)),
    count,
    h("div", { class: "table-wrap" }, h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status"].map((t) => h("th", { scope: "col" }, t)),
        ["Created", "Duration", "Error"].map((t) => h("th", { scope: "col", class: "hide-narrow" }, t)))),
      body)),
    can("write") ? submitForm(load) : null);
  load();
  const timer = setInterval(load, POLL_MS);
  return () => clearInterval(timer);
}

function submitForm(reload) {
  const def = h("textarea", { id: "definition", spellcheck: "false", placeholder: '{"name": "hello", "steps": [...]}' });
  const name = h("input", { id: "workflow-name", placeholder: "a registered workflow" });
  const input = h("textarea", { id: "run-input", spellcheck: "false", placeholder: "{}", rows: 3 });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { id: "submit-form", "aria-labelledby": "submit-title" },
    h("div", {}, h("label", { for: "definition" }, "Definition (JSON)"), def),
    h("div", { class: "toolbar" }, h("div", {}, h("label", { for: "workflow-name" }, "or registered workflow"), name)),
    h("div", {}, h("label", { for: "run-input" }, "Input (JSON)"), input),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Submit run")),
    error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = {};
    try {
      if (def.value.trim()) body.definition = JSON.parse(def.value);
      if (name.value.trim()) body.workflow = name.value.trim();
      if (input.value.trim()) body.input = JSON.parse(input.value);
    } catch (err) {
      error.textContent = `Not JSON: ${err.message}`;
      return;
    }
    try {
      const doc = await post("/runs", body);
      toast(`Run ${doc.run_id} started`);
      location.hash = `#/run/${encodeURIComponent(doc.run_id)}`;
    } catch (err) {
      error.textContent = err.message;
      reload();
    }
  });
  return h("details", { class: "panel", open: true },
    h("summary", { id: "submit-title" }, "Submit a run"), form);
}
