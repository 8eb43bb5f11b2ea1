// The web chat as a person uses it: open the page, read the first screen
// (model, context, nodes, how to start), type a message, watch the answer
// stream in (the text grows over several frames), see the cluster view draw
// one box per node, then a second turn (multi-turn history) that the stop
// button cuts short; reload the page: the conversation is still there (kept
// in localStorage), and a third turn continues it. A screenshot is kept as
// the test's artifact.
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(process.env.ST_NPM_DIR + "/package.json");
const { chromium } = require("playwright-core");

const browser = await chromium.launch({ executablePath: process.env.ST_CHROMIUM, headless: true,
                                        args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 720 } });
  page.setDefaultTimeout(30000);
  await page.goto(process.env.ST_URL + "/");
  // the cluster view: one box per node, all up
  await page.waitForSelector("#cluster g.node.up");
  const nNodes = Number(process.env.ST_HTTP_NODES || 2);
  const boxes = await page.locator("#cluster g.node").count();
  assert.equal(boxes, nNodes, "node boxes in the cluster view");
  // the first screen says what is served, from /v1/models and /health
  const models = await (await fetch(process.env.ST_URL + "/v1/models")).json();
  assert.equal(await page.isVisible("#welcome"), true, "the first screen is shown");
  await page.waitForFunction((id) => document.querySelector("#w-model").textContent === id, models.data[0].id);
  assert.match(await page.textContent("#w-ctx"), new RegExp("^" + models.data[0].context_length + " tokens"));
  await page.waitForFunction((n) => document.querySelector("#w-nodes").textContent.includes(`${n} nodes (${n} up)`), nNodes);
  assert.match(await page.textContent("#welcome"), /Enter.*sends/);
  await page.screenshot({ path: process.env.ST_SHOT.replace(/\.png$/, "-first.png") });

  await page.fill("#max_tokens", "40");
  await page.fill("#temp", "0");
  await page.fill("#input", "Hello, who are you?");
  await page.press("#input", "Enter");
  // streamed: the answer is seen non-empty while still streaming, then done
  const lengths = new Set();
  const t0 = Date.now();
  while (Date.now() - t0 < 30000) {
    const st = await page.evaluate(() => {
      const a = document.querySelector(".msg.assistant");
      return a ? { len: a.textContent.length, done: a.classList.contains("done") } : { len: 0, done: false };
    });
    if (st.len > 0) lengths.add(st.len);
    if (st.done) break;
    await page.waitForTimeout(5);
  }
  await page.waitForSelector(".msg.assistant.done");
  const answer = await page.locator(".msg.assistant").first().textContent();
  assert.ok(answer.length > 0, "empty answer");
  console.log(`browser: answer of ${answer.length} chars seen at ${lengths.size} lengths while streaming`);

  // second turn, stopped: the history is sent (two user turns), the stop button ends the stream
  await page.fill("#max_tokens", "3000");
  await page.fill("#input", "Tell me more.");
  await page.press("#input", "Enter");
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant")[1]?.textContent.length > 0);
  await page.click("#stop");
  await page.waitForSelector(".msg.assistant:nth-of-type(4).done");
  assert.equal(await page.locator(".msg.user").count(), 2);
  assert.equal(await page.isEnabled("#send"), true, "send enabled after stop");
  assert.equal(await page.isVisible("#welcome"), false, "no first screen in a conversation");

  // a reload keeps the conversation, the stopped answer included
  const texts = () => page.$$eval("#log .msg", (ms) => ms.map((m) => m.className.split(" ")[1] + ":" + m.textContent));
  const before = await texts();
  assert.equal(before.length, 4);
  assert.ok(before[3].length > "assistant:".length, "the stopped answer has text");
  await page.reload();
  await page.waitForSelector("#log .msg.assistant.done");
  assert.deepEqual(await texts(), before, "the conversation after a reload");
  assert.equal(await page.inputValue("#max_tokens"), "3000", "settings kept too");
  assert.equal(await page.locator("#chats li").count(), 1);
  // ... and goes on: the third turn sends all of it
  await page.fill("#max_tokens", "5");
  await page.fill("#input", "Thanks.");
  await page.press("#input", "Enter");
  await page.waitForSelector(".msg.assistant:nth-of-type(6).done");
  assert.equal(await page.locator(".msg.user").count(), 3);
  // a new chat shows the first screen; the old one stays in the list and comes back
  await page.click("#reset");
  assert.equal(await page.isVisible("#welcome"), true);
  assert.equal(await page.locator("#log .msg").count(), 0);
  await page.reload();
  await page.waitForSelector("#chats li");
  await page.click("#chats li:not(.cur) span");
  await page.waitForSelector(".msg.assistant:nth-of-type(6).done");
  assert.deepEqual((await texts()).slice(0, 4), before);
  await page.fill("#max_tokens", "40");
  await page.waitForTimeout(1600); // one more cluster refresh with the new counters
  await page.screenshot({ path: process.env.ST_SHOT });
  console.log(`browser: screenshot ${process.env.ST_SHOT}`);
} finally {
  await browser.close();
}
