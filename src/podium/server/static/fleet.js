// Agents, alerts and failures: what the fleet is doing, what is wrong, what fails most.
import { can, failed, toast } from "./app.js";
import { get, post } from "./api.js";
import { badge, fill, h, table, when } from "./dom.js";

function polled(view, title, load, ms = 3000) {
  const body = h("div");
  view.append(h("h1", {}, title), body);
  const tick = async () => { try { fill(body, ...await load()); } catch (err) { failed(err); } };
  tick();
  const timer = setInterval(tick, ms);
  const stop = () => clearInterval(timer);
  stop.tick = tick;
  return stop;
}

const pct = (x) => (x === null || x === undefined ? "" : `${(x * 100).toFixed(1)} %`);
const card = (label, value) => h("div", { class: "card" }, h("div", { class: "muted" }, label), h("div", { class: "v" }, value));

export function agentsPage(view) {
  return polled(view, "Agents", async () => {
    const doc = await get("/agents");
    return [
      h("div", { class: "cards" }, card("Overall", badge(doc.overall)),
        ...Object.entries(doc.totals).map(([k, v]) => card(k, v)),
        doc.region ? card("Region", doc.region) : null),
      table(["Agent", "Health", "In flight", "Circuit", "Region", "Latency", "Error rate", "Calls"],
        doc.agents.map((a) => h("tr", { "data-agent": a.id },
          h("td", {}, a.id, h("div", { class: "muted" }, a.capabilities.join(", "))),
          h("td", {}, badge(a.status)),
          h("td", {}, `${a.inflight}${a.max_concurrency ? ` / ${a.max_concurrency}` : ""}`),
          h("td", {}, badge(a.circuit)), h("td", {}, a.region || ""),
          h("td", {}, a.latency_ms === null ? "" : `${a.latency_ms} ms`),
          h("td", {}, pct(a.error_rate)), h("td", {}, `${a.calls} (${a.failures} failed)`))),
        { id: "agents" }),
    ];
  });
}

export function alertsPage(view) {
  const stop = polled(view, "Alerts", async () => {
    const alerts = await get("/alerts");
    if (!alerts.length) return [h("p", { class: "muted" }, "No alerts.")];
    return [table(["Alert", "Status", "Severity", "Escalation level", "Fired", "Acknowledged", ""],
      alerts.map((a) => h("tr", { "data-alert": a.key },
        h("td", {}, h("strong", {}, a.rule), h("div", {}, a.summary), h("div", { class: "muted mono" }, a.key)),
        h("td", {}, badge(a.status)), h("td", {}, a.severity),
        h("td", {}, a.level < 0 ? "not yet notified" : String(a.level)),
        h("td", {}, when(a.fired_at)),
        h("td", {}, a.acked_at ? `${a.acked_by} at ${when(a.acked_at)}` : ""),
        h("td", {}, a.status === "firing" && !a.acked_at && can("write") ? h("button", {
          type: "button", "aria-label": `Acknowledge alert ${a.rule}`, class: "ack",
          onclick: async (ev) => {
            ev.currentTarget.disabled = true;
            try { await post(`/alerts/${encodeURIComponent(a.key)}/ack`, {}); toast(`Acknowledged ${a.rule}`); }
            catch (err) { failed(err); }
          },
        }, "Acknowledge") : ""))), { id: "alerts" })];
  }, 2000);
  return stop;
}

export function failuresPage(view) {
  const since = h("select", { id: "since", "aria-label": "Time window" },
    [["3600", "last hour"], ["86400", "last day"], ["604800", "last week"]].map(([v, t]) => h("option", { value: v }, t)));
  const by = h("select", { id: "by", "aria-label": "Group by" },
    ["type", "agent", "step", "workflow"].map((v) => h("option", { value: v }, `by ${v}`)));
  const toolbar = h("div", { class: "toolbar" },
    h("div", {}, h("label", { for: "since" }, "Window"), since),
    h("div", {}, h("label", { for: "by" }, "Group"), by));
  const stop = polled(view, "Failures", async () => {
    const doc = await get(`/failures?since_s=${since.value}&by=${by.value}`);
    return [
      h("div", { class: "cards" }, card("Attempts", doc.attempts), card("Failed", doc.failures), card("Success rate", pct(doc.success_rate))),
      h("h2", {}, `By ${doc.by}`),
      table([doc.by, "Calls", "Failures", "Success rate", "Top error"], doc.groups.map((g) => h("tr", {},
        h("td", {}, g[doc.by] ?? g.key ?? ""), h("td", {}, g.calls), h("td", {}, g.failures), h("td", {}, pct(g.success_rate)),
        h("td", {}, g.top_errors.length ? `${g.top_errors[0].message} (${g.top_errors[0].count})` : "")))),
      h("h2", {}, "Top errors"),
      table(["Type", "Message", "Count"], doc.top_errors.map((e) => h("tr", {},
        h("td", {}, e.type), h("td", {}, e.message), h("td", {}, e.count))), { id: "top-errors" }),
      h("h2", {}, "Recent failures"),
      table(["When", "Run", "Step", "Agent", "Attempt", "Error"], doc.recent.map((r) => h("tr", {},
        h("td", {}, when(r.ts * 1000)), h("td", {}, h("a", { href: `#/run/${encodeURIComponent(r.run_id)}`, class: "mono" }, r.run_id)),
        h("td", {}, r.step), h("td", {}, r.agent || ""), h("td", {}, r.attempt), h("td", {}, `${r.type}: ${r.message}`)))),
    ];
  });
  view.insertBefore(toolbar, view.children[1]);  // under the page's title
  for (const el of [since, by]) el.addEventListener("change", () => stop.tick());
  return stop;
}
