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

/** The leader's id in the page's "leader nN" text, or null. */
export function leaderIn(text) {
  const match = /leader n(\d+)/.exec(text ?? "");
  return match ? Number(match[1]) : null;
}

/** Run in the page: whether it shows three members, one of them the leader. */
export function oneLeaderTwoFollowers() {
  return (
    document.querySelectorAll('[data-testid^="member-"]').length === 3 &&
    document.querySelectorAll('[data-role="leader"]').length === 1 &&
    document.querySelectorAll('[data-role="follower"]').length === 2
  );
}

/**
 * Moves the page to a follower's console with `open(url)` if it is on the leader's, and returns
 * the leader (read with `leaderId()`): the follower's writes show both peers' acks, and killing
 * the leader leaves the page its node.
 */
export async function watchAFollower(open, leaderId) {
  const first = await leaderId();
  const watched = first === 1 ? 2 : 1;
  if (watched !== 1) await open(urls[watched - 1]);
  const leader = await leaderId();
  if (leader === null || leader === watched) throw new Error(`expected a leader other than node ${watched}`);
  return leader;
}
