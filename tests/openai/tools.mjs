// Tool calls through the official OpenAI client: tool_choice "required" and a
// named function, whole and streamed, on a model with random weights. Every
// call must come back as tool_calls with finish_reason "tool_calls", name one
// of the tools, and carry arguments that parse and satisfy the function's
// parameter schema (checked here by hand, not by the server's grammar). Then
// the call and a role "tool" result go back in the conversation.
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(process.env.ST_NPM_DIR + "/package.json");
const OpenAI = require("openai");
const client = new OpenAI({ baseURL: process.env.ST_URL + "/v1", apiKey: "unused-on-loopback", timeout: 120000, maxRetries: 0 });
const model = (await client.models.list()).data[0].id;

const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather in a city",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", maxLength: 16 },
          unit: { enum: ["celsius", "fahrenheit"] },
          days: { type: "integer", minimum: 1, maximum: 7 },
        },
        required: ["city", "unit", "days"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "set_alarm",
      parameters: {
        type: "object",
        properties: { hour: { type: "integer", minimum: 0, maximum: 23 }, label: { type: ["string", "null"] } },
        required: ["hour", "label"],
      },
    },
  },
];

// the parameter schemas above, checked by hand
function checkArgs(name, text) {
  const a = JSON.parse(text);
  assert.equal(typeof a, "object");
  if (name === "get_weather") {
    assert.deepEqual(Object.keys(a).sort(), ["city", "days", "unit"], text);
    assert.equal(typeof a.city, "string");
    assert.ok([...a.city].length <= 16, `city too long: ${text}`);
    assert.ok(["celsius", "fahrenheit"].includes(a.unit), text);
    assert.ok(Number.isInteger(a.days) && a.days >= 1 && a.days <= 7, text);
  } else {
    assert.equal(name, "set_alarm");
    assert.deepEqual(Object.keys(a).sort(), ["hour", "label"], text);
    assert.ok(Number.isInteger(a.hour) && a.hour >= 0 && a.hour <= 23, text);
    assert.ok(a.label === null || typeof a.label === "string", text);
  }
  return a;
}

const messages = [{ role: "user", content: "What is the weather in Oslo this week?" }];
let calls = 0;
for (let seed = 1; seed <= 4; seed++) {
  const r = await client.chat.completions.create({ model, messages, tools, tool_choice: "required", temperature: 1, seed, max_tokens: 200 });
  const c = r.choices[0];
  assert.equal(c.finish_reason, "tool_calls", JSON.stringify(c));
  assert.equal(c.message.tool_calls.length, 1);
  const tc = c.message.tool_calls[0];
  assert.equal(tc.type, "function");
  assert.ok(tc.id.length > 0);
  checkArgs(tc.function.name, tc.function.arguments);
  calls++;
}

// streamed, a named function: the deltas add up to one call
let streamed = null;
for (let seed = 1; seed <= 3; seed++) {
  const stream = await client.chat.completions.create({
    model, messages, tools, tool_choice: { type: "function", function: { name: "set_alarm" } },
    temperature: 1.2, seed, max_tokens: 200, stream: true,
  });
  const acc = {};
  let finish = null, content = "";
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    content += c.delta?.content ?? "";
    for (const d of c.delta?.tool_calls ?? []) {
      const t = (acc[d.index] ??= { id: "", name: "", arguments: "" });
      t.id += d.id ?? "";
      t.name += d.function?.name ?? "";
      t.arguments += d.function?.arguments ?? "";
    }
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(finish, "tool_calls");
  assert.equal(content, "", "a forced call has no content");
  assert.deepEqual(Object.keys(acc), ["0"]);
  assert.equal(acc[0].name, "set_alarm");
  streamed = { id: acc[0].id, name: acc[0].name, arguments: acc[0].arguments, args: checkArgs(acc[0].name, acc[0].arguments) };
  calls++;
}

// the same request whole gives the same call
const whole = await client.chat.completions.create({
  model, messages, tools, tool_choice: { type: "function", function: { name: "set_alarm" } }, temperature: 1.2, seed: 3, max_tokens: 200,
});
assert.equal(whole.choices[0].message.tool_calls[0].function.arguments, streamed.arguments);

// the call and its result go back; "none" answers in text
const back = [
  ...messages,
  { role: "assistant", content: null, tool_calls: [{ id: streamed.id, type: "function", function: { name: streamed.name, arguments: streamed.arguments } }] },
  { role: "tool", tool_call_id: streamed.id, content: "alarm set" },
];
const answer = await client.chat.completions.create({ model, messages: back, tools, tool_choice: "none", temperature: 0, max_tokens: 12 });
assert.ok(["stop", "length"].includes(answer.choices[0].finish_reason));
assert.equal(answer.choices[0].message.tool_calls, undefined);
assert.ok(answer.usage.prompt_tokens > 40, "the tool result is part of the prompt");
console.log(`openai client: ${calls} tool calls valid (whole and streamed), tool result round trip ok`);
