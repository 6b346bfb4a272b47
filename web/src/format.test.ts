import { describe, expect, it } from "vitest";
import { ackText, answerText, bytesOf, showValue } from "./format";

describe("values", () => {
  it("shows bytes as text, JSON or hex", () => {
    const bytes = bytesOf('{"a":1}');
    expect(showValue(bytes, "text")).toBe('{"a":1}');
    expect(showValue(bytes, "json")).toBe('{\n  "a": 1\n}');
    expect(showValue(bytesOf("hi"), "hex")).toBe("68 69");
    expect(showValue(bytesOf("not json"), "json")).toBe("(not JSON) not json");
  });

  it("decodes base64 byte strings", () => {
    expect(showValue(bytesOf("/wA=", "base64"), "hex")).toBe("ff 00");
  });
});

describe("answers", () => {
  it("reads like the shell", () => {
    expect(answerText({ type: "status", value: "OK" })).toBe("OK");
    expect(answerText({ type: "nil" })).toBe("(nil)");
    expect(answerText({ type: "integer", value: 3 })).toBe("(integer) 3");
    expect(answerText({ type: "bulk", value: "hello" })).toBe('"hello"');
    expect(answerText({ type: "error", code: "NOAUTH", message: "log in first" })).toBe("(error) NOAUTH log in first");
    expect(answerText({ type: "entries", entries: [{ key: "a" }], more: true })).toBe("1 key, more follow");
    expect(answerText({ type: "txn", succeeded: false, results: [] })).toBe("ELSE ran: a compare failed");
  });

  it("says each peer's acknowledgement", () => {
    expect(ackText({ node: 2, state: "acked", ms: 0.84 })).toBe("n2 acked 0.8 ms");
    expect(ackText({ node: 3, state: "unreachable" })).toBe("n3 unreachable");
  });
});
