// The web chat as a person uses it: open the page, type a message, watch the
// answer stream in (the text grows over several frames), see the cluster
// view draw one box per node, then a second turn (multi-turn history) that
// the stop button cuts short. A screenshot is kept as the test's artifact.
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
  const boxes = await page.locator("#cluster g.node").count();
  assert.equal(boxes, Number(process.env.ST_HTTP_NODES || 2), "node boxes in the cluster view");

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
  await page.waitForTimeout(1600); // one more cluster refresh with the new counters
  await page.screenshot({ path: process.env.ST_SHOT });
  console.log(`browser: screenshot ${process.env.ST_SHOT}`);
} finally {
  await browser.close();
}
