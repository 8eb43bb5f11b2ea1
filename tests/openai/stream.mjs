// The official OpenAI client library against our server: lists the model,
// streams a chat answer at temperature 0 and checks it equals the
// non-streamed answer, that chunks came one by one, and the finish reason;
// with stream_options.include_usage, the usage in a last chunk of its own.
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(process.env.ST_NPM_DIR + "/package.json");
const OpenAI = require("openai");
const client = new OpenAI({ baseURL: process.env.ST_URL + "/v1", apiKey: "unused-on-loopback", timeout: 60000, maxRetries: 0 });

const models = await client.models.list();
const model = models.data[0].id;
assert.ok(model.endsWith(".gguf"), `model id ${model}`);

const messages = [{ role: "user", content: "Write a haiku about small computers" }];
const stream = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 20, stream: true });
let text = "", chunks = 0, finish = null;
for await (const chunk of stream) {
  const c = chunk.choices[0];
  if (c?.delta?.content) { text += c.delta.content; chunks++; }
  if (c?.finish_reason) finish = c.finish_reason;
}
const whole = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 20 });
assert.equal(text, whole.choices[0].message.content, "streamed text differs from the whole answer");
assert.ok(chunks >= 5, `only ${chunks} content chunks`);
assert.ok(finish === "length" || finish === "stop", `finish_reason ${finish}`);
assert.equal(whole.usage.completion_tokens <= 20, true);
// stream_options.include_usage: the client exposes the last chunk's usage (no
// choices), the same counts as the whole answer's; without it no chunk has usage.
const withUsage = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 20, stream: true,
  stream_options: { include_usage: true } });
let usage = null, usageChunks = 0, afterUsage = 0;
for await (const chunk of withUsage) {
  if (usage) afterUsage++;
  if (chunk.usage) { usage = chunk.usage; usageChunks++; assert.deepEqual(chunk.choices, [], "the usage chunk has choices"); }
}
assert.equal(usageChunks, 1, `${usageChunks} chunks with usage`);
assert.equal(afterUsage, 0, "chunks after the usage chunk");
assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
assert.equal(typeof usage.prompt_tokens_details?.cached_tokens, "number", "no prompt_tokens_details.cached_tokens");
for await (const chunk of await client.chat.completions.create({ model, messages, max_tokens: 3, stream: true }))
  assert.ok(!chunk.usage, "usage in a stream that did not ask for it");
console.log(`openai client: ${chunks} chunks, ${text.length} chars, finish_reason ${finish}`);
