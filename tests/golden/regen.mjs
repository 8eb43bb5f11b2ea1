#!/usr/bin/env node
// Regenerates the golden llama.cpp outputs in tests/golden/ from the reference
// oracle (../shared/oracle): for each case of cases.json it makes the model with
// the oracle's make-smallthinker.mjs (and llama-quantize where asked), runs the
// oracle with flash attention off and on, and writes <name>.json with the prompt
// and greedy token ids, the top-20 teacher-forced logits per position and the
// largest logit difference between llama.cpp's two attention paths. Cases with
// "batch_spread": true also run the prompt one token at a time (--batch 1:
// matrix-vector kernels instead of the batched, repacked ones) and record the
// largest difference to the batched run as batch_max_diff: with K-quant
// weights the Q8_K activation rounding turns llama.cpp's own float-order
// differences into visible logit differences on these random models.
//
//   node tests/golden/regen.mjs [--out DIR] [--cases a,b] [--light]
//
// Needs: ORACLE (default: output of ../shared/oracle/setup), and for "quantize"
// cases LLAMA_BIN (default: output of ../shared/oracle/build-llama-tools).
// Models are cached in $ST_MODEL_CACHE/golden (default ~/.cache/st-models).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";

const here = path.dirname(new URL(import.meta.url).pathname);
const shared = path.resolve(here, "../../../shared/oracle");
const { values: a } = parseArgs({
    options: { out: { type: "string" }, cases: { type: "string" }, light: { type: "boolean" }, quiet: { type: "boolean" } },
});
const outDir = path.resolve(a.out ?? here);
const log = a.quiet ? () => {} : (...m) => console.error(...m);
const TOP = 20;

function sh(cmd, args, opts = {}) {
    return execFileSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 30, stdio: ["ignore", "pipe", "pipe"], ...opts });
}
const lastLine = (s) => s.trim().split("\n").pop();
const oracle = process.env.ORACLE ?? lastLine(sh(path.join(shared, "setup"), []));
let llamaBin = process.env.LLAMA_BIN;
const getLlamaBin = () => (llamaBin ??= lastLine(sh(path.join(shared, "build-llama-tools"), [], { timeout: 3600e3 })));

const cacheDir = path.join(process.env.ST_MODEL_CACHE ?? path.join(os.homedir(), ".cache/st-models"), "golden");
fs.mkdirSync(cacheDir, { recursive: true });
fs.mkdirSync(outDir, { recursive: true });

function makeModel(c) {
    const base = path.join(cacheDir, `${c.name}${c.quantize ? "-f32" : ""}.gguf`);
    if (!fs.existsSync(base)) {
        log(`  making ${base}`);
        sh("node", [path.join(oracle, "make-smallthinker.mjs"), "--out", base + ".tmp", "--quiet", "--no-sidecar", ...c.synth]);
        fs.renameSync(base + ".tmp", base);
    }
    if (!c.quantize) return base;
    const q = path.join(cacheDir, `${c.name}.gguf`);
    if (!fs.existsSync(q)) {
        log(`  llama-quantize ${c.quantize}`);
        sh(path.join(getLlamaBin(), "llama-quantize"), [base, q + ".tmp", c.quantize]);
        fs.renameSync(q + ".tmp", q);
    }
    return q;
}

function runOracle(c, model, flash, batch) {
    const args = [path.join(oracle, "oracle.mjs"), "--model", model, "--n", String(c.n), "--top", String(TOP),
        "--prompt-logits", "--kv-type", c.kv_type ?? "f16"];
    let tmp = null;
    if (c.tokens_seq) {
        const [n, mul, mod] = c.tokens_seq;
        args.push("--tokens", Array.from({ length: n }, (_, i) => (i * mul + 1) % mod).join(","));
    } else {
        tmp = path.join(os.tmpdir(), `st-golden-${process.pid}.txt`);
        fs.writeFileSync(tmp, c.prompt);
        args.push("--prompt-file", tmp);
    }
    if (flash) args.push("--flash-attn");
    if (batch) args.push("--batch", String(batch));
    const r = JSON.parse(sh("node", args));
    if (tmp) fs.unlinkSync(tmp);
    // rows by position in the teacher-forced sequence prompt + generated
    const rows = new Map();
    for (const s of r.prompt_steps ?? []) rows.set(s.position, s.top);
    for (const s of r.steps) rows.set(s.position, s.top);
    return { r, rows };
}

const spec = JSON.parse(fs.readFileSync(path.join(here, "cases.json"), "utf8"));
const only = a.cases ? new Set(a.cases.split(",")) : null;
for (const c of spec.cases) {
    if (only && !only.has(c.name)) continue;
    if (a.light && (c.heavy || c.quantize || c.tokens_seq)) continue;
    log(`case ${c.name}`);
    const model = makeModel(c);
    const off = runOracle(c, model, false);
    const on = runOracle(c, model, true);
    const maxDiff = (b) => {
        let m = 0;
        for (const [pos, top] of off.rows) {
            const other = new Map((b.rows.get(pos) ?? []).map((e) => [e.id, e.logit]));
            for (const e of top) if (other.has(e.id)) m = Math.max(m, Math.abs(other.get(e.id) - e.logit));
        }
        return m;
    };
    const faMax = maxDiff(on);
    const batchMax = c.batch_spread ? maxDiff(runOracle(c, model, false, 1)) : undefined;
    const positions = [...off.rows.keys()].sort((x, y) => x - y);
    const last = positions.slice(-4);
    const kept = positions.filter((p) => c.keep_from === undefined || last.includes(p) ||
        (p >= c.keep_from && (p - c.keep_from) % (c.keep_every ?? 1) === 0));
    const out = {
        name: c.name, oracle: off.r.oracle, kv_type: c.kv_type ?? "f16", n_vocab: off.r.n_vocab,
        prompt_tokens: off.r.prompt_tokens, generated_tokens: off.r.generated_tokens,
        generated_tokens_flash: on.r.generated_tokens, fa_max_diff: faMax, batch_max_diff: batchMax, top: TOP,
        rows: kept.map((p) => [p, off.rows.get(p).flatMap((e) => [e.id, e.logit])]),
    };
    const file = path.join(outDir, `${c.name}.json`);
    fs.writeFileSync(file, JSON.stringify(out) + "\n");
    log(`  ${file}: ${kept.length} rows, fa_max_diff ${faMax.toFixed(6)}${batchMax === undefined ? "" : `, batch_max_diff ${batchMax.toFixed(6)}`}, greedy ${out.generated_tokens.slice(0, 8).join(",")}...`);
}
