// A conversation that outgrows the context (node 18+, no packages), against
// two servers on the same model and --ctx: PLAIN refuses it with 400 and the
// numbers; DROP (--drop-old-turns) answers, having left out the oldest whole
// turns. The reference for DROP's answer is PLAIN's answer to the same
// conversation without its k oldest turns, for the smallest k that PLAIN
// accepts: same prompt tokens, same text (temperature 0).
//   usage: node context.mjs PLAIN_URL DROP_URL
const [plain, drop] = process.argv.slice(2);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };

async function post(url, messages, max_tokens) {
  const r = await fetch(url + '/v1/chat/completions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages, max_tokens, temperature: 0 }),
  });
  return { status: r.status, body: await r.json() };
}

const sys = { role: 'system', content: 'You answer briefly.' };
const turns = [];
for (let t = 0; t < 12; t++)
  turns.push({ role: 'user', content: `Question ${t + 1}: what about the fox, the wolf and the river number ${t}?` },
    { role: 'assistant', content: `Answer ${t + 1}: the fox runs, the wolf follows, the river ${t} flows on quietly.` });
const last = { role: 'user', content: 'Now summarise everything in one line.' };
const convo = (k) => [sys, ...turns.slice(2 * k), last];
const MAX = 24;

const refused = await post(plain, convo(0), MAX);
if (refused.status !== 400) fail(`PLAIN answered ${refused.status} to a conversation longer than its context`);
const msg = refused.body.error.message;
if (!/(prompt \(\d+ tokens\) \+ max_tokens \(24\) exceed the context of \d+ tokens|the prompt has \d+ tokens; the context holds \d+)/.test(msg) ||
    !msg.includes('--drop-old-turns'))
  fail(`PLAIN's 400 does not give the numbers and the flag: ${msg}`);
console.log(`PLAIN: 400 "${msg}"`);

let k = 0, ref;
while ((ref = await post(plain, convo(k), MAX)).status !== 200) if (++k > 12) fail('PLAIN refuses even the last turn');
const got = await post(drop, convo(0), MAX);
if (got.status !== 200) fail(`DROP answered ${got.status}: ${JSON.stringify(got.body)}`);
if (got.body.usage.prompt_tokens !== ref.body.usage.prompt_tokens)
  fail(`DROP's prompt has ${got.body.usage.prompt_tokens} tokens, the conversation without its ${k} oldest turns ${ref.body.usage.prompt_tokens}`);
if (got.body.choices[0].message.content !== ref.body.choices[0].message.content)
  fail('DROP answered another text than PLAIN to the conversation without its oldest turns');
console.log(`DROP: left out the ${k} oldest of 12 turns (${got.body.usage.prompt_tokens} prompt tokens), the same answer as PLAIN to the rest`);

// the last turn alone too long: both refuse, DROP with its own numbers
const huge = [sys, { role: 'user', content: 'fox '.repeat(400) }];
const h = await post(drop, huge, MAX);
if (h.status !== 400 || !/last turn .* has \d+ tokens; with 24 for the answer it does not fit the context of \d+ tokens/.test(h.body.error.message))
  fail(`DROP on a last turn too long: ${h.status} ${JSON.stringify(h.body)}`);
console.log(`DROP: 400 "${h.body.error.message}"`);
