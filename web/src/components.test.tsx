import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { Members } from "./components/Members";
import { AckPicture } from "./components/Journey";
import { AnswerView } from "./components/CommandBox";
import { paths } from "./components/LineGraph";
import type { Member, Tick } from "./stream";

afterEach(cleanup);

function member(id: number, role: string | null, last = 10): Member {
  return {
    id,
    address: `127.0.0.1:700${id}`,
    voter: id !== 4,
    status:
      role === null
        ? null
        : { id, role, term: 3, last_log_index: last, applied_index: last, committed_index: last, snapshot_index: 5, purged_index: 2, leader: 1, served: null },
    lag: role === null ? null : 10 - last,
    last_contact_ms: role === null ? 9000 : 4,
    problem: null,
  };
}

const tick: Tick = {
  at_ms: 0,
  node: 2,
  leader: 1,
  term: 3,
  failure_tolerance: 0,
  members: [member(1, "leader"), member(2, "follower", 8), member(3, null)],
  sample: { at_ms: 0, reads_per_s: 0, writes_per_s: 0, write_p50_ms: null, write_p99_ms: null },
};

describe("Members", () => {
  it("shows each member's role, marks the unreachable one and this page's node", () => {
    render(<Members tick={tick} controls={false} busy={null} onControl={() => {}} />);
    expect(screen.getByTestId("member-1").dataset.role).toBe("leader");
    expect(screen.getByTestId("member-3").dataset.role).toBe("unreachable");
    expect(screen.getByTestId("member-2").textContent).toContain("this page");
    expect(screen.getByTestId("lag-2").textContent).toBe("2 behind");
    expect(screen.queryByTestId("kill-1")).toBeNull();
  });

  it("offers kill for running nodes and restart for the others, in the demo", () => {
    const onControl = vi.fn();
    render(<Members tick={tick} controls={true} busy={null} onControl={onControl} />);
    fireEvent.click(screen.getByTestId("kill-1"));
    fireEvent.click(screen.getByTestId("restart-3"));
    expect(onControl.mock.calls).toEqual([
      ["kill", 1],
      ["restart", 3],
    ]);
    expect(screen.queryByTestId("restart-1")).toBeNull();
  });
});

describe("AckPicture", () => {
  it("shows the leader, the index and each peer, settling pending ones from later reports", () => {
    const answer = {
      type: "status",
      value: "OK",
      leader: 1,
      revision: 7,
      replication: { term: 3, index: 10, peers: [{ node: 2, state: "acked" as const, ms: 1.25 }, { node: 3, state: "pending" as const }] },
    };
    const later: Tick = { ...tick, members: [member(1, "leader"), member(2, "follower"), member(3, "follower", 10)] };
    const { rerender } = render(<AckPicture answer={answer} tick={tick} />);
    const states = () => screen.getAllByTestId("ack-peer").map((e) => `${e.textContent}:${e.dataset.state}`);
    expect(screen.getByTestId("ack-picture").textContent).toContain("index 10");
    expect(states()).toEqual(["n2 acked 1.3 ms:acked", "n3 pending:pending"]);
    rerender(<AckPicture answer={answer} tick={later} />);
    expect(states()).toEqual(["n2 acked 1.3 ms:acked", "n3 acked later:acked"]);
  });
});

describe("LineGraph", () => {
  it("breaks a line where a sample has no value", () => {
    const samples = [1, 2, 3, 4].map((at_ms) => ({ at_ms, reads_per_s: 0, writes_per_s: 0, write_p50_ms: null, write_p99_ms: null }));
    const values = [1, null, 2, 2];
    expect(paths(samples, (s) => values[s.at_ms - 1], 2)).toHaveLength(2);
  });
});

describe("AnswerView", () => {
  it("lists MGET's values and a TXN's results, a scan inside one as a table", () => {
    const mget = { type: "array", items: [{ type: "bulk", value: "1" }, { type: "nil" }] };
    const { unmount } = render(<AnswerView answer={mget} />);
    expect(screen.getAllByTestId("inner-answer").map((li) => li.textContent)).toEqual(['"1"', "(nil)"]);
    unmount();

    const page = { type: "entries", more: false, entries: [{ key: "a", value: "x", create_revision: 1, mod_revision: 2, version: 2 }] };
    const txn = { type: "txn", succeeded: true, results: [{ type: "status", value: "OK" }, page, { type: "error", code: "NOT_INTEGER", message: "m" }] };
    render(<AnswerView answer={txn} />);
    expect(screen.getByText("THEN ran: every compare held")).toBeTruthy();
    const inner = screen.getAllByTestId("inner-answer");
    expect(inner).toHaveLength(3);
    expect(inner[0].textContent).toBe("OK");
    expect(inner[1].querySelectorAll('[data-testid="key-row"]')).toHaveLength(1);
    expect(inner[2].textContent).toBe("(error) NOT_INTEGER m");
    expect(inner[2].className).toBe("error");
  });

  it("says so when MGET answers nothing", () => {
    render(<AnswerView answer={{ type: "array", items: [] }} />);
    expect(screen.getByText("(empty array)")).toBeTruthy();
  });
});
