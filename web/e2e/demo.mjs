// What both browser scripts (console.mjs, firefox.mjs) take from tests/console.rs: the demo
// they run against, where to save screenshots, and how long to wait for anything.

import { mkdirSync } from "node:fs";

/** The demo's console URLs, node 1 first (KV_CONSOLE_URLS, comma-separated). */
export const urls = process.env.KV_CONSOLE_URLS.split(",");
/** root's password (KV_ROOT_PASSWORD). */
export const password = process.env.KV_ROOT_PASSWORD;
/** Where screenshots go (KV_SCREENSHOTS), created if missing. */
export const shots = process.env.KV_SCREENSHOTS;
mkdirSync(shots, { recursive: true });
/** How long, in milliseconds, the page may take to show anything. */
export const WAIT = 20_000;

/** Says what the script checks next, so that a failure's output shows where it stopped. */
export function step(text) {
  console.log(`- ${text}`);
}
