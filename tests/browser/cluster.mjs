// The web page's cluster view with 16 nodes, in headless Chromium: the page
// (server/webui/index.html, as the server embeds it) is served with a /health
// made up here (no model, no cluster: this checks layout), 16 nodes of which
// 3 are down and one is drained. Checked geometrically from the SVG: every node has a box and a
// line; no line crosses any box (only its own end may touch one, on the
// edge); no two boxes overlap; every text stays inside its box; a node that
// is down shows no memory bar, hit or prefetch rate, and says how many of its
// experts the coordinator computes; one that is up shows its hit rate and,
// beside it, its prefetch rate. The screenshot is kept for the README.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";

const require = createRequire(process.env.ST_NPM_DIR + "/package.json");
const { chromium } = require("playwright-core");
const page_html = readFileSync(new URL("../../server/webui/index.html", import.meta.url), "utf8");

const N = 16, down = new Set([3, 8, 13]), L = 24, X = 64;
const nodes = [...Array(N).keys()].map((i) => {
  const up = !down.has(i), budget = (i % 3 === 0 ? 2048 : 1024) * 2 ** 20;
  const n = { url: `tcp://10.0.0.${10 + i}:5555`, id: `pi5-rack-${String(i).padStart(2, "0")}-long-hostname`,
              version: "0.4.0 (git 1234567)", up, mem_budget: budget, store_free: 8 * 2 ** 30, threads: 4,
              experts: 96, expert_bytes: 96 * 3 * 2 ** 20, layers: [...Array(L).keys()].map((l) => 2 + (i + l) % 5), pinned: 0, n_expert: X,
              computed_here: up ? 0 : 96, requests: 1000 + i, bytes_out: 1, bytes_in: 1, timeouts: 0, errors: 0 };
  if (up)
    Object.assign(n, { mem_used: budget * 0.97, rss: budget * 0.6, rss_file: 1 << 20, expert_cache_bytes: budget / 2,
                       page_cache: 1023 << 20, cgroup_mem: budget * 0.97, temp_c: 84.6, throttled: 0x50005,
                       board_age_ms: 900, cache_hits: 10, cache_misses: 1, cache_prefetched: 1 + i, hit_rate: 0.9999,
                       prefetch_rate: (1 + i) / (12 + i), compute_ms: 1.5, rtt_ms: 123.45 });
  if (i === 5) Object.assign(n, { drained: true, state: "drained", experts: 0, expert_bytes: 0, layers: Array(L).fill(0) });
  return n;
});
const health = { status: "degraded", mode: "cluster", model: "SmallThinker-21B-A3B-Q4_K_M.gguf", version: "0.4.0",
                 uptime_s: 100, queued: 12, active: 8, parallel: 8, n_ctx: 4096, tokens_per_s: 123.4,
                 generated_tokens: 99999, prompt_cache: {}, ttft_avg_s: 0.2, rss_bytes: 3 * 2 ** 30, nodes_up: N - down.size, nodes };

const browser = await chromium.launch({ executablePath: process.env.ST_CHROMIUM, headless: true,
                                        args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1400 } });
  page.setDefaultTimeout(30000);
  await page.route("http://st.test/**", (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/") return route.fulfill({ contentType: "text/html", body: page_html });
    if (path === "/health") return route.fulfill({ contentType: "application/json", body: JSON.stringify(health) });
    if (path === "/v1/models")
      return route.fulfill({ contentType: "application/json", body: JSON.stringify({ data: [{ id: health.model, context_length: 4096 }] }) });
    return route.fulfill({ status: 404, body: "{}" });
  });
  await page.goto("http://st.test/");
  await page.waitForFunction((n) => document.querySelectorAll("#cluster g.node").length === n, N);

  const geo = await page.evaluate(() => {
    const box = (r) => { const b = r.getBBox(); return { x: b.x, y: b.y, w: b.width, h: b.height }; };
    const nodes = [...document.querySelectorAll("#cluster g.node")].map((g) => ({
      up: g.classList.contains("up"),
      box: box(g.querySelector("rect.box")),
      texts: [...g.querySelectorAll("text")].map((t) => ({ text: t.textContent, ...box(t) })),
      mem: g.querySelectorAll("rect.mem").length,
    }));
    const boxes = [...document.querySelectorAll("#cluster rect.box")].map(box);
    const lines = [...document.querySelectorAll("#cluster line")].map((l) =>
      ["x1", "y1", "x2", "y2"].map((k) => Number(l.getAttribute(k))));
    const coord = { box: box(document.querySelector("#cluster rect.coord")),
                    texts: [...document.querySelectorAll("#cluster text.coord")].map((t) => ({ text: t.textContent, ...box(t) })) };
    return { nodes, boxes, lines, coord };
  });

  // a segment crosses a box when some part of it lies strictly inside (Liang-Barsky clipping
  // against the box shrunk by eps: touching the edge at an end is how a line reaches its box)
  const eps = 0.5;
  function crosses([x1, y1, x2, y2], b) {
    const dx = x2 - x1, dy = y2 - y1;
    let t0 = 0, t1 = 1;
    for (const [p, q] of [[-dx, x1 - (b.x + eps)], [dx, b.x + b.w - eps - x1], [-dy, y1 - (b.y + eps)], [dy, b.y + b.h - eps - y1]]) {
      if (p === 0) { if (q < 0) return false; continue; }
      const r = q / p;
      if (p < 0) { if (r > t1) return false; if (r > t0) t0 = r; } else { if (r < t0) return false; if (r < t1) t1 = r; }
    }
    return t1 - t0 > 1e-9;
  }
  assert.equal(geo.boxes.length, N + 1, "a box per node and the coordinator's");
  assert.ok(geo.lines.length >= N, "a line per node");
  let checks = 0;
  for (const l of geo.lines)
    for (const b of geo.boxes) {
      assert.ok(!crosses(l, b), `line ${l} crosses the box at ${JSON.stringify(b)}`);
      checks++;
    }
  // the check itself can fail: a line from the coordinator straight to the last box crosses others
  const last = geo.nodes[N - 1].box;
  assert.ok(geo.boxes.some((b) => crosses([175, 44, last.x + last.w / 2, last.y], b)), "the crossing test detects a crossing");
  // every node is reached: some line ends on its box's edge
  for (const [i, n] of geo.nodes.entries()) {
    const b = n.box, on = (x, y) => x >= b.x - eps && x <= b.x + b.w + eps && y >= b.y - eps && y <= b.y + b.h + eps;
    assert.ok(geo.lines.some(([x1, y1, x2, y2]) => on(x1, y1) || on(x2, y2)), `no line reaches node ${i}`);
  }
  for (let i = 0; i < geo.boxes.length; i++)
    for (let j = i + 1; j < geo.boxes.length; j++) {
      const a = geo.boxes[i], b = geo.boxes[j];
      assert.ok(a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y, `boxes ${i} and ${j} overlap`);
    }
  for (const [i, n] of [...geo.nodes, geo.coord].entries()) {
    for (const t of n.texts)
      assert.ok(t.x >= n.box.x && t.x + t.w <= n.box.x + n.box.w && t.y >= n.box.y && t.y + t.h <= n.box.y + n.box.h,
                `node ${i}: text "${t.text}" (${t.x.toFixed(1)}..${(t.x + t.w).toFixed(1)}) leaves its box`);
    if (i === N) break; /* the coordinator's */
    const all = n.texts.map((t) => t.text).join(" | ");
    if (down.has(i)) {
      assert.equal(n.up, false);
      assert.equal(n.mem, 0, `node ${i} is down: no memory bar`);
      assert.doesNotMatch(all, /hit|prefetch|rtt|used|°C/, `node ${i} is down: no stale figures (${all})`);
      assert.match(all, /96 computed by coordinator/);
    } else {
      assert.equal(n.mem, 1, `node ${i}: its real memory against its budget`);
      assert.match(all, new RegExp(`used ${i % 3 === 0 ? "1.9 GiB of 2.0 GiB" : "993 MiB of 1.0 GiB"}`), all);
      assert.match(all, /of it page cache 1.0 GiB \| 85 °C · throttled 0x50005/, all);
      const pre = Math.round((100 * (1 + i)) / (12 + i)); /* 8% for node 0 .. 44% for node 15 */
      assert.match(all, new RegExp(`hit 100% · prefetched ${pre}% \\| rtt 123.45 ms`), all);
      if (i === 5) assert.match(all, /^\(drained\) pi5-rack-05.* 0 experts/, `a drained node says so: ${all}`);
    }
  }
  console.log(`cluster view: ${N} nodes, ${geo.lines.length} lines x ${geo.boxes.length} boxes (${checks} pairs): no crossing`);
  await page.locator("#cluster").screenshot({ path: process.env.ST_SHOT });
  console.log(`cluster view: screenshot ${process.env.ST_SHOT}`);
} finally {
  await browser.close();
}
