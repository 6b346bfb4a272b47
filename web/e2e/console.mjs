// The console end to end, in headless Chromium, against a running `kv-cli demo` (started by
// tests/console.rs, which passes where it is). Exits non-zero, saying why, at the first thing
// the page does not show in time; saves screenshots to KV_SCREENSHOTS.
//
//   KV_CONSOLE_URLS   the demo's console URLs, comma-separated (node 1 first)
//   KV_ROOT_PASSWORD  root's password
//   KV_SCREENSHOTS    where to save the screenshots
//   CHROMIUM          the browser (default /usr/bin/chromium)

import { chromium } from "playwright-core";
import { join } from "node:path";
import { WAIT, leaderIn, oneLeaderTwoFollowers, password, shots, step, urls, watchAFollower } from "./demo.mjs";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);

  async function open(url) {
    step(`open ${url} and log in as root`);
    await page.goto(url);
    await page.getByTestId("login-password").fill(password);
    await page.getByTestId("login-submit").click();
    await page.locator('[data-testid^="member-"]').nth(2).waitFor();
  }

  async function leaderId() {
    const text = await page.getByTestId("leader").textContent();
    return leaderIn(text);
  }

  await open(urls[0]);
  step("three members, one leader");
  await page.waitForFunction(oneLeaderTwoFollowers);
  const leader = await watchAFollower(open, leaderId);

  step("SET typed into the command box answers OK with both peers' acks");
  await page.getByTestId("command-input").fill("SET console works");
  await page.getByTestId("command-input").press("Enter");
  const result = page.getByTestId("command-result").first();
  await result.getByTestId("command-answer").filter({ hasText: "OK" }).waitFor();
  await page.waitForFunction(
    () => document.querySelectorAll('[data-testid="command-result"]:first-child [data-testid="ack-peer"][data-state="acked"]').length === 2,
  );
  await page.getByTestId("command-input").fill("GET console");
  await page.getByTestId("command-input").press("Enter");
  await page.getByTestId("command-result").first().getByTestId("command-answer").filter({ hasText: '"works"' }).waitFor();

  step("a TXN shows the branch that ran and each operation's answer");
  await page.getByTestId("command-input").fill("TXN VALUE console = works THEN SET console works GET console");
  await page.getByTestId("command-input").press("Enter");
  const txn = page.getByTestId("command-result").first().getByTestId("command-answer");
  await txn.filter({ hasText: "THEN ran" }).waitFor();
  await txn.getByTestId("inner-answer").filter({ hasText: '"works"' }).waitFor();

  step("the key browser finds the key");
  await page.getByTestId("prefix-input").fill("cons");
  await page.getByTestId("prefix-input").press("Enter");
  await page.getByTestId("key-row").filter({ hasText: "console" }).waitFor();
  await page.screenshot({ path: join(shots, "console.png"), fullPage: true });

  step(`kill the leader, node ${leader}, from the page`);
  await page.getByTestId(`kill-${leader}`).click();
  await page.getByTestId("notice").filter({ hasText: `node ${leader} killed` }).waitFor();
  await page.locator(`[data-testid="member-${leader}"][data-role="unreachable"]`).waitFor();
  await page.waitForFunction(
    (old) => {
      const match = /leader n(\d+)/.exec(document.querySelector('[data-testid="leader"]')?.textContent ?? "");
      return match !== null && Number(match[1]) !== old;
    },
    leader,
  );
  const successor = await leaderId();
  step(`node ${successor} leads; the events name it`);
  await page.getByTestId("events").filter({ hasText: `node ${leader} is unreachable` }).waitFor();
  await page.getByTestId("events").filter({ hasText: `node ${successor} leads` }).waitFor();
  await page.screenshot({ path: join(shots, "leader-killed.png"), fullPage: true });

  step(`restart node ${leader}; it comes back and catches up`);
  await page.getByTestId(`restart-${leader}`).click();
  await page.locator(`[data-testid="member-${leader}"][data-role="follower"]`).waitFor({ timeout: 40_000 });
  await page.getByTestId(`lag-${leader}`).filter({ hasText: "caught up" }).waitFor();
  await page.screenshot({ path: join(shots, "restarted.png"), fullPage: true });

  step("at phone width the page still fits");
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`the page is ${overflow} px wider than a phone's screen`);
  await page.screenshot({ path: join(shots, "phone.png"), fullPage: false });
  step("done");
} finally {
  await browser.close();
}
