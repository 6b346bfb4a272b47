// The console in headless Firefox, against a running `kv-cli demo` (started by tests/console.rs
// after the Chromium journey in console.mjs, on the same cluster). Firefox is driven over WebDriver
// BiDi by puppeteer-core, since Playwright drives only its own patched build of Firefox. This
// checks what could differ between engines: the page renders, logs in over its WebSocket,
// streams the cluster, runs a command with its acks, browses keys, and fits a phone's width.
// The node controls are the same server-side actions whichever browser clicks them, and are
// driven in console.mjs. Exits non-zero, saying why, at the first thing the page does not show
// in time; saves screenshots to KV_SCREENSHOTS.
//
//   KV_CONSOLE_URLS   the demo's console URLs, comma-separated (node 1 first)
//   KV_ROOT_PASSWORD  root's password
//   KV_SCREENSHOTS    where to save the screenshots
//   FIREFOX           the browser (default /usr/bin/firefox-esr)

import puppeteer from "puppeteer-core";
import { join } from "node:path";
import { WAIT, leaderIn, oneLeaderTwoFollowers, password, shots, step, urls, watchAFollower } from "./demo.mjs";

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
  headless: true,
  acceptInsecureCerts: true,
  defaultViewport: { width: 1280, height: 1000 },
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  const byId = (id) => `[data-testid="${id}"]`;

  async function open(url) {
    step(`open ${url} and log in as root`);
    await page.goto(url);
    await page.locator(byId("login-password")).fill(password);
    await page.locator(byId("login-submit")).click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid^="member-"]').length === 3);
  }

  async function leaderId() {
    const text = await page.$eval(byId("leader"), (e) => e.textContent);
    return leaderIn(text);
  }

  async function run(command) {
    await page.locator(byId("command-input")).fill(command);
    await page.keyboard.press("Enter");
  }

  await open(urls[0]);
  step("three members, one leader");
  await page.waitForFunction(oneLeaderTwoFollowers);
  await watchAFollower(open, leaderId);

  step("SET typed into the command box answers OK with both peers' acks");
  await run("SET firefox works");
  const first = '[data-testid="command-result"]:first-child';
  await page.waitForFunction(
    (first) => {
      const answer = document.querySelector(`${first} [data-testid="command-answer"]`)?.textContent ?? "";
      const acks = document.querySelectorAll(`${first} [data-testid="ack-peer"][data-state="acked"]`).length;
      return answer.includes("OK") && acks === 2;
    },
    {},
    first,
  );
  await run("GET firefox");
  await page.waitForFunction(
    (first) =>
      (document.querySelector(`${first} [data-testid="command-answer"]`)?.textContent ?? "").includes('"works"'),
    {},
    first,
  );

  step("the key browser finds the key");
  await page.locator(byId("prefix-input")).fill("fire");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() =>
    [...document.querySelectorAll('[data-testid="key-row"]')].some((row) => row.textContent.includes("firefox")),
  );
  await page.screenshot({ path: join(shots, "firefox.png"), fullPage: true });

  step("at phone width the page still fits");
  await page.setViewport({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`the page is ${overflow} px wider than a phone's screen`);
  await page.screenshot({ path: join(shots, "firefox-phone.png") });
  step("done");
} finally {
  await browser.close();
}
