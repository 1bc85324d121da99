// A plan drawn as SVG: steps in layers by their depth of dependencies, left to right.
import { svg } from "./dom.js";

const W = 150, H = 46, GX = 60, GY = 18, PAD = 16;

export function layout(nodes, edges) {
  const deps = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) deps.get(e.to)?.push(e.from);
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...deps.get(id).map((p) => depthOf(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  const layers = [];
  for (const n of nodes) (layers[depthOf(n.id)] ||= []).push(n.id);
  const pos = new Map();
  layers.forEach((ids, x) => ids.forEach((id, y) => pos.set(id, {
    x: PAD + x * (W + GX), y: PAD + y * (H + GY),
  })));
  const rows = Math.max(1, ...layers.map((l) => l.length));
  return { pos, width: PAD * 2 + layers.length * (W + GX) - GX, height: PAD * 2 + rows * (H + GY) - GY };
}

export function drawGraph(graph, { selected, onSelect }) {
  const { pos, width, height } = layout(graph.nodes, graph.edges);
  const root = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `Steps of ${graph.workflow}`,
  });
  for (const e of graph.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    root.append(svg("path", {
      class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 4},${y2}`,
      "stroke-dasharray": e.trigger === "all_success" ? null : "4 3",
    }));
    root.append(svg("path", { class: "edge", d: `M${x2 - 8},${y2 - 4} L${x2},${y2} L${x2 - 8},${y2 + 4}` }));
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const what = n.agent || (n.workflow ? `workflow ${n.workflow}` : n.waits ? `waits: ${n.waits}` : "");
    const label = `${n.id}: ${n.status}${n.attempts > 1 ? `, ${n.attempts} attempts` : ""}`;
    const g = svg("g", {
      class: `node n-${n.status}${selected === n.id ? " sel" : ""}`, tabindex: 0, role: "button",
      "aria-label": `Step ${label}`, "data-step": n.id, "data-status": n.status,
      transform: `translate(${p.x},${p.y})`,
      onclick: () => onSelect(n.id),
      onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onSelect(n.id); } },
    },
    svg("title", {}, label),
    svg("rect", { width: W, height: H, rx: 8, "stroke-width": selected === n.id ? 4 : 2 }),
    svg("text", { x: 10, y: 19 }, clip(n.id, 18)),
    svg("text", { x: 10, y: 36, class: "sub" },
      clip(`${n.status}${n.attempts > 1 ? ` ×${n.attempts}` : ""}${what ? ` · ${what}` : ""}`, 24)));
    root.append(g);
  }
  return root;
}

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
