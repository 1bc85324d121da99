// One run: its plan drawn and coloured live (the run's event stream), the timeline of
// attempts, a step's input, output and error, and the buttons a write token may use.
import { can, failed, toast } from "./app.js";
import { get, post } from "./api.js";
import { badge, fill, h, json, seconds, table, when } from "./dom.js";
import { drawGraph } from "./graph.js";

const LIVE = new Set(["pending", "running", "waiting"]);
const LEGEND = ["pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled", "compensated"];

export function runPage(view, runId) {
  let run = null, graph = null, selected = null, stream = null, pending = null, stopped = false;
  const head = h("div");
  const graphBox = h("div", { class: "graph", id: "graph" });
  const steps = h("div");
  const detail = h("div", { class: "panel", id: "step-detail", "aria-live": "polite" },
    h("p", { class: "muted" }, "Select a step to see its input, output and error."));
  const timeline = h("div");
  view.append(head,
    h("div", { class: "grid2" },
      h("div", {}, h("h2", {}, "Graph"), graphBox,
        h("div", { class: "legend", "aria-label": "Colours" }, LEGEND.map(badge)),
        h("h2", {}, "Steps"), steps),
      h("div", {}, h("h2", {}, "Step"), detail)),
    h("h2", {}, "Timeline"), timeline);

  const select = (id) => { selected = id; draw(); };

  const draw = () => {
    if (!run || !graph) return;
    for (const n of graph.nodes) {
      const s = run.steps[n.id];
      if (s) { n.status = s.status; n.attempts = s.attempts; }
    }
    fill(head, 
      h("h1", {}, "Run ", h("span", { class: "mono" }, run.run_id), " ", badge(run.status)),
      h("p", { class: "muted" }, `${run.workflow} v${run.version} · created ${when(run.created_at)}`,
        run.finished_at ? ` · finished ${when(run.finished_at)}` : ""),
      actions(),
      run.error ? errorBlock(run.error, "Run error") : null,
      run.output !== null && run.output !== undefined ? h("details", {}, h("summary", {}, "Run output"), json(run.output)) : null);
    fill(graphBox, drawGraph(graph, { selected, onSelect: select }));
    fill(steps, table(["Step", "Status", "Attempts", "Agent", "Started", "Finished"],
      graph.nodes.map((n) => {
        const s = run.steps[n.id] || {};
        return h("tr", { class: selected === n.id ? "selected" : null, "data-step": n.id },
          h("td", {}, h("button", { type: "button", class: "linkish", "aria-label": `Show step ${n.id}`, onclick: () => select(n.id) }, n.id)),
          h("td", {}, badge(s.status || "pending")), h("td", {}, s.attempts || 0),
          h("td", {}, s.agent || n.agent || ""), h("td", {}, when(s.started_at)), h("td", {}, when(s.finished_at)));
      }), { id: "steps" }));
    fill(detail, ...stepDetail());
    fill(timeline, timelineTable());
  };

  const actions = () => {
    if (!can("write")) return null;
    const live = LIVE.has(run.status);
    const act = (label, verb, cls, show) => show ? h("button", {
      type: "button", class: cls, id: `${verb}-run`, "aria-label": `${label} run ${run.run_id}`,
      onclick: async (ev) => {
        ev.currentTarget.disabled = true;
        try { await post(`/runs/${encodeURIComponent(run.run_id)}/${verb}`); toast(`${label}: requested`); follow(); }
        catch (err) { failed(err); }
        refresh();
      },
    }, label) : null;
    return h("div", { class: "actions" },
      act("Cancel", "cancel", "danger", live),
      act("Resume", "resume", "", run.status === "failed" || run.status === "cancelled"),
      act("Roll back", "rollback", "", !live && run.status !== "rolled_back"));
  };

  const stepDetail = () => {
    if (!selected) return [h("p", { class: "muted" }, "Select a step to see its input, output and error.")];
    const s = run.steps[selected] || { status: "pending", attempts: 0 };
    const defined = graph.nodes.find((x) => x.id === selected) || {};
    return [
      h("h3", {}, selected, " ", badge(s.status)),
      h("p", {}, `${s.attempts || 0} attempt(s)`, s.agent ? ` · agent ${s.agent}` : ""),
      h("h4", {}, "Input (as defined)"), json(defined.input ?? null),
      h("h4", {}, "Output"), json(s.output ?? null),
      s.error ? errorBlock(s.error, "Error") : null,
    ];
  };

  const timelineTable = () => {
    const start = run.timeline.length ? Date.parse(run.timeline[0].ts) : 0;
    const rows = run.timeline.map((e) => h("tr", { class: `t-${e.type}` },
      h("td", { class: "mono" }, `+${seconds((Date.parse(e.ts) - start) / 1000) || "0 ms"}`),
      h("td", {}, e.step_id || ""), h("td", {}, e.type.replaceAll("_", " ")),
      h("td", {}, e.attempt ?? ""), h("td", {}, describe(e))));
    return table(["At", "Step", "Event", "Attempt", "Detail"], rows, { class: "timeline", id: "timeline" });
  };

  const refresh = async () => {
    try {
      const id = encodeURIComponent(runId);
      [run, graph] = await Promise.all([get(`/runs/${id}?verbose=true`), graph ? Promise.resolve(graph) : get(`/runs/${id}/graph`)]);
      if (!selected) selected = firstFailed(run);
      draw();
    } catch (err) { failed(err); }
  };
  // Every event of the stream asks for the run again, at most every 200 ms: the page
  // shows the store's state, never one it pieced together from events.
  const soon = () => { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 200); };
  const follow = () => {
    if (stream || stopped) return;
    stream = new EventSource(`/runs/${encodeURIComponent(runId)}/events?after=${run ? run.timeline.length : 0}`);
    stream.onmessage = soon;
    for (const type of ["run_started", "run_finished", "run_waiting", "run_cancel_requested", "step_ready", "step_started",
      "step_succeeded", "step_attempt_failed", "step_retry_scheduled", "step_failed", "step_skipped",
      "step_cancelled", "step_waiting", "step_map_started", "rollback_started", "compensation_started",
      "compensation_succeeded", "compensation_failed"]) stream.addEventListener(type, soon);
    stream.addEventListener("end", () => { stream.close(); stream = null; soon(); });
  };
  refresh().then(() => { if (run && LIVE.has(run.status)) follow(); });
  return () => { stopped = true; if (stream) stream.close(); clearTimeout(pending); };
}

function errorBlock(error, title) {
  return h("div", { class: "error-block", role: "region", "aria-label": title },
    h("h4", { class: "error" }, `${title}: ${error.type}`),
    h("p", { class: "error" }, error.message),
    error.traceback ? h("details", { class: "traceback", open: true }, h("summary", {}, "Traceback"), h("pre", { class: "mono" }, error.traceback)) : null);
}

function describe(e) {
  if (e.type === "step_retry_scheduled") return `retry in ${seconds(e.delay_s)}`;
  if (e.error) return `${e.error.type}: ${e.error.message}`;
  if (e.duration_s !== undefined && e.duration_s !== null) return `took ${seconds(e.duration_s)}`;
  if (e.agent_id) return `agent ${e.agent_id}`;
  if (e.reason) return String(e.reason);
  if (e.status) return String(e.status);
  return "";
}

function firstFailed(run) {
  for (const [id, s] of Object.entries(run.steps)) if (s.status === "failed") return id;
  return null;
}
