// How values, answers and acknowledgements read on the page.

import type { Answer, PeerAck } from "./stream";

export type ValueView = "text" | "json" | "hex";

/** The bytes of a JSON byte string: text as UTF-8, or base64 when `encoding` says so. */
export function bytesOf(value: string, encoding?: unknown): Uint8Array {
  if (encoding === "base64") {
    const binary = atob(value);
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }
  return new TextEncoder().encode(value);
}

/** `bytes` shown as text, pretty JSON (if they parse as JSON) or hex. */
export function showValue(bytes: Uint8Array, view: ValueView): string {
  if (view === "hex") {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
  }
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (view === "json") {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return `(not JSON) ${text}`;
    }
  }
  return text;
}

/** One peer's acknowledgement, as the shell's ack line says it. */
export function ackText(peer: PeerAck): string {
  if (peer.state === "acked") {
    return peer.ms === undefined ? `n${peer.node} acked` : `n${peer.node} acked ${peer.ms.toFixed(1)} ms`;
  }
  return `n${peer.node} ${peer.state}`;
}

/** An answer in one line, as the shell prints it. */
export function answerText(answer: Answer): string {
  switch (answer.type) {
    case "status":
      return String(answer.value);
    case "nil":
      return "(nil)";
    case "integer":
      return `(integer) ${answer.value}`;
    case "bulk":
      return answer.encoding === "base64" ? `(base64) ${answer.value}` : JSON.stringify(answer.value);
    case "error":
      return `(error) ${answer.code} ${answer.message}`;
    case "entries": {
      const entries = (answer.entries as { key: string }[]) ?? [];
      return `${entries.length} key${entries.length === 1 ? "" : "s"}${answer.more ? ", more follow" : ""}`;
    }
    case "txn":
      return answer.succeeded ? "THEN ran: every compare held" : "ELSE ran: a compare failed";
    case "array":
      return `${(answer.items as unknown[]).length} answers`;
    case "table":
      return `${(answer.rows as unknown[]).length} rows`;
    default:
      return JSON.stringify(answer);
  }
}

/** A duration in milliseconds, short. */
export function msText(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "–";
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(0)} ms`;
}

/** A time of day from milliseconds since the epoch. */
export function clock(atMs: number): string {
  return new Date(atMs).toLocaleTimeString([], { hour12: false });
}
