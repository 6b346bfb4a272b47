import { describe, expect, it } from "vitest";
import { apply, initialView, lagText, LIMITS, settle, toleranceText, type Member, type Message, type Tick } from "./stream";

function member(id: number, role: string | null, last = 10, term = 2): Member {
  return {
    id,
    address: `127.0.0.1:700${id}`,
    voter: true,
    status:
      role === null
        ? null
        : {
            id,
            role,
            term,
            last_log_index: last,
            applied_index: last,
            committed_index: last,
            snapshot_index: null,
            purged_index: null,
            leader: 1,
            served: null,
          },
    lag: role === null ? null : 0,
    last_contact_ms: 5,
    problem: null,
  };
}

function tick(members: Member[], at_ms = 1000, tolerance: number | null = 1): Tick {
  return {
    at_ms,
    node: 1,
    leader: 1,
    term: 2,
    failure_tolerance: tolerance,
    members,
    sample: { at_ms, reads_per_s: 10, writes_per_s: 5, write_p50_ms: 0.5, write_p99_ms: 2 },
  };
}

describe("apply", () => {
  it("starts watching with the state, then adds ticks, events and journeys", () => {
    let view = apply(initialView, { type: "hello", node: 2, auth: true, controls: true, version: "0.1.0" });
    expect(view).toMatchObject({ connected: true, node: 2, auth: true, controls: true, watching: false });
    const first = tick([member(1, "leader")]);
    view = apply(view, { type: "state", tick: first, samples: [first.sample], events: [], journeys: [] });
    expect(view.watching).toBe(true);
    const second = tick([member(1, "leader"), member(2, "follower")], 2000);
    view = apply(view, { type: "tick", ...second });
    expect(view.tick?.members).toHaveLength(2);
    expect(view.samples.map((s) => s.at_ms)).toEqual([1000, 2000]);
    expect(view.tick).not.toHaveProperty("type");
    view = apply(view, { type: "event", at_ms: 3, kind: "leader", node: 1, term: 2, text: "node 1 leads in term 2" });
    expect(view.events.map((e) => e.kind)).toEqual(["leader"]);
    view = apply(view, { type: "journey", at_ms: 4, command: "SET", answer: { type: "status", value: "OK" } });
    expect(view.journeys).toHaveLength(1);
    const answer: Message = { type: "answer", id: 1, answer: { type: "nil" } };
    expect(apply(view, answer)).toBe(view);
  });

  it("keeps a bounded history however long the stream runs", () => {
    let view = apply(initialView, { type: "state", tick: null, samples: [], events: [], journeys: [] });
    for (let i = 0; i < LIMITS.samples + 50; i++) view = apply(view, { type: "tick", ...tick([], i) });
    for (let i = 0; i < LIMITS.events + 50; i++) {
      view = apply(view, { type: "event", at_ms: i, kind: "leader", node: 1, term: 1, text: "" });
    }
    expect(view.samples).toHaveLength(LIMITS.samples);
    expect(view.samples[0].at_ms).toBe(50);
    expect(view.events).toHaveLength(LIMITS.events);
  });
});

describe("settle", () => {
  const replication = {
    term: 2,
    index: 42,
    peers: [
      { node: 2, state: "acked" as const, ms: 0.8 },
      { node: 3, state: "pending" as const },
    ],
  };

  it("shows a pending peer as acknowledged once its report holds the index", () => {
    expect(settle(replication, tick([member(3, "follower", 41)]))[1].state).toBe("pending");
    expect(settle(replication, tick([member(3, "follower", 42)]))[1]).toEqual({ node: 3, state: "acked", later: true });
    expect(settle(replication, null)[1].state).toBe("pending");
  });

  it("does not count an entry held in an older term", () => {
    expect(settle(replication, tick([member(3, "follower", 50, 1)]))[1].state).toBe("pending");
  });
});

describe("words", () => {
  it("says the failure tolerance and the lag", () => {
    expect(toleranceText(tick([], 0, 1))).toBe("can lose 1 more voter");
    expect(toleranceText(tick([], 0, 0))).toBe("cannot lose any voter");
    expect(toleranceText(tick([], 0, null))).toBe("no leader: writes wait");
    expect(lagText({ ...member(2, "follower"), lag: 0 })).toBe("caught up");
    expect(lagText({ ...member(2, "follower"), lag: 7 })).toBe("7 behind");
    expect(lagText(member(2, null))).toBe("–");
  });
});
