// The prompt cache end to end (node 18+, no packages): conversations against
// a running server, every turn asked twice, first with cache_prompt: false
// (the reference: a full prefill, nothing read from or left in the cache),
// then with the cache. The texts must be the same, at temperature 0 and with
// seeded sampling, streamed and not; from the second turn on the answer must
// say it reused cached tokens, and /metrics must count them.
//   usage: node conversation.mjs URL OUT.json [REFERENCE.json]
// OUT.json gets every answer; with REFERENCE.json (another server's OUT, e.g.
// one process against a cluster) the answers must be those.
import { readFileSync, writeFileSync } from 'node:fs';

const [url, outPath, refPath] = process.argv.slice(2);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };

async function post(body) {
  const r = await fetch(url + '/v1/chat/completions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: r.status, text: await r.text() };
}

// One answer: { text, usage } (streamed: the deltas joined, usage from the last chunk).
async function ask(body) {
  const r = await post(body);
  if (r.status !== 200) fail(`status ${r.status}: ${r.text}`);
  if (!body.stream) {
    const j = JSON.parse(r.text);
    return { text: j.choices[0].message.content, usage: j.usage };
  }
  let text = '', usage = null;
  for (const line of r.text.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const c = JSON.parse(line.slice(6));
    if (c.choices?.[0]?.delta?.content) text += c.choices[0].delta.content;
    if (c.usage) usage = c.usage;
  }
  if (!usage) fail('a stream with include_usage ended without usage');
  return { text, usage };
}

const questions = ['Tell me about foxes.', 'And wolves?', 'Which of the two is faster?', 'Where do they live?',
  'What do they eat?', 'Thanks. Summarise all that in one line.'];

// A conversation of questions.length turns; sampling fields in `extra`.
async function conversation(name, system, extra) {
  const messages = system ? [{ role: 'system', content: system }] : [];
  const answers = [];
  let prevPrompt = 0;
  for (let t = 0; t < questions.length; t++) {
    messages.push({ role: 'user', content: questions[t] });
    const body = { messages, max_tokens: 12, ...extra };
    const ref = await ask({ ...body, cache_prompt: false });
    const got = await ask({ ...body, cache_prompt: true });
    if (ref.usage.prompt_tokens_details?.cached_tokens !== 0)
      fail(`${name} turn ${t + 1}: cache_prompt false reported ${JSON.stringify(ref.usage)}`);
    if (got.text !== ref.text)
      fail(`${name} turn ${t + 1}: with the cache ${JSON.stringify(got.text)}, without ${JSON.stringify(ref.text)}`);
    const cached = got.usage.prompt_tokens_details.cached_tokens;
    if (!(cached >= 0 && cached < got.usage.prompt_tokens)) fail(`${name}: cached_tokens ${cached} of ${got.usage.prompt_tokens}`);
    // the previous turn's prompt is a prefix of this one's (its answer re-tokenized may differ at the end)
    if (t > 0 && cached < prevPrompt - 2)
      fail(`${name} turn ${t + 1}: ${cached} tokens reused, the previous prompt had ${prevPrompt}`);
    console.log(`${name} turn ${t + 1}: ${got.usage.prompt_tokens} prompt tokens, ${cached} cached, same text`);
    prevPrompt = got.usage.prompt_tokens;
    answers.push(got.text);
    messages.push({ role: 'assistant', content: got.text });
  }
  return answers;
}

async function metric(name) {
  const text = await (await fetch(url + '/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  if (!line) fail(`/metrics has no ${name}`);
  return Number(line.split(' ')[1]);
}

const hits0 = await metric('st_prompt_cache_lookups_total{result="hit"}');
const tokens0 = await metric('st_prompt_cache_tokens_total');
// two at once (their steps are batched together), then a seeded one, streamed
const [greedy, sys] = await Promise.all([
  conversation('greedy', null, { temperature: 0 }),
  conversation('system+greedy', 'You answer briefly.', { temperature: 0, stream: true, stream_options: { include_usage: true } }),
]);
const seeded = await conversation('seeded', null, { temperature: 0.9, top_k: 40, seed: 7, stream: true, stream_options: { include_usage: true } });

// the same prompt again: all but its last token come from the cache
const again = [{ role: 'user', content: questions[0] }];
const a1 = await ask({ messages: again, max_tokens: 4, temperature: 0 });
if (a1.usage.prompt_tokens_details.cached_tokens !== a1.usage.prompt_tokens - 1)
  fail(`a repeated prompt reused ${a1.usage.prompt_tokens_details.cached_tokens} of ${a1.usage.prompt_tokens} tokens`);

const bad = await post({ messages: again, cache_prompt: 'yes' });
if (bad.status !== 400 || !bad.text.includes('cache_prompt')) fail(`cache_prompt "yes": ${bad.status} ${bad.text}`);

const hits = (await metric('st_prompt_cache_lookups_total{result="hit"}')) - hits0;
const tokens = (await metric('st_prompt_cache_tokens_total')) - tokens0;
if (hits < 3 * (questions.length - 1)) fail(`/metrics counts ${hits} hits`);
if (!(tokens > 0)) fail(`/metrics counts ${tokens} cached tokens`);
if (!((await metric('st_prompt_cache_bytes')) > 0)) fail('the cache holds no bytes');
console.log(`/metrics: ${hits} hits, ${tokens} cached tokens`);

const out = { greedy, sys, seeded };
writeFileSync(outPath, JSON.stringify(out, null, 1));
if (refPath) {
  const ref = JSON.parse(readFileSync(refPath, 'utf8'));
  for (const k of Object.keys(ref))
    if (JSON.stringify(ref[k]) !== JSON.stringify(out[k])) fail(`${k}: the answers differ from ${refPath}`);
  console.log(`the same answers as ${refPath}`);
}
