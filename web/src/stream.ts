// What the node's console stream carries (docs/CONSOLE.md), and how each message changes what
// the page shows. Pure functions: the components only render the `View` built here.

export interface Served {
  reads: number;
  writes: number;
  write_p50_us: number | null;
  write_p99_us: number | null;
}

export interface NodeStatus {
  id: number;
  role: string;
  term: number;
  last_log_index: number | null;
  applied_index: number | null;
  committed_index: number | null;
  snapshot_index: number | null;
  purged_index: number | null;
  leader: number | null;
  served: Served | null;
}

export interface Member {
  id: number;
  address: string;
  voter: boolean;
  status: NodeStatus | null;
  lag: number | null;
  last_contact_ms: number | null;
  problem: string | null;
}

export interface Sample {
  at_ms: number;
  reads_per_s: number;
  writes_per_s: number;
  write_p50_ms: number | null;
  write_p99_ms: number | null;
}

export interface Tick {
  at_ms: number;
  node: number;
  leader: number | null;
  term: number | null;
  failure_tolerance: number | null;
  members: Member[];
  sample: Sample;
}

export interface ClusterEvent {
  at_ms: number;
  kind: string;
  node: number | null;
  term: number | null;
  text: string;
}

export interface PeerAck {
  node: number;
  state: "acked" | "pending" | "unreachable";
  ms?: number;
}

export interface Replication {
  term: number;
  index: number;
  peers: PeerAck[];
}

/** An answer in the JSON form `kv-cli --json` prints. */
export interface Answer {
  type: string;
  value?: unknown;
  code?: string;
  message?: string;
  leader?: number;
  revision?: number;
  replication?: Replication;
  [field: string]: unknown;
}

export interface Journey {
  at_ms: number;
  command: string;
  answer: Answer;
}

export type Message =
  | { type: "hello"; node: number; auth: boolean; controls: boolean; version: string }
  | { type: "state"; tick: Tick | null; samples: Sample[]; events: ClusterEvent[]; journeys: Journey[] }
  | ({ type: "tick" } & Tick)
  | ({ type: "event" } & ClusterEvent)
  | ({ type: "journey" } & Journey)
  | { type: "answer"; id: number; answer: Answer };

/** Everything the page shows from the stream. */
export interface View {
  connected: boolean;
  node: number | null;
  /** The node needs a login before it streams. */
  auth: boolean;
  /** Whether the node can stop, kill and restart demo nodes. */
  controls: boolean;
  watching: boolean;
  tick: Tick | null;
  samples: Sample[];
  events: ClusterEvent[];
  journeys: Journey[];
}

/** How many of each the page keeps (the node sends at most this many too). */
export const LIMITS = { samples: 300, events: 200, journeys: 20 };

export const initialView: View = {
  connected: false,
  node: null,
  auth: false,
  controls: false,
  watching: false,
  tick: null,
  samples: [],
  events: [],
  journeys: [],
};

function keepLast<T>(items: T[], limit: number): T[] {
  return items.length > limit ? items.slice(items.length - limit) : items;
}

/** The view after `message`; answers are not part of it (they go to whoever asked). */
export function apply(view: View, message: Message): View {
  switch (message.type) {
    case "hello":
      return { ...view, connected: true, node: message.node, auth: message.auth, controls: message.controls };
    case "state":
      return {
        ...view,
        watching: true,
        tick: message.tick,
        samples: keepLast(message.samples, LIMITS.samples),
        events: keepLast(message.events, LIMITS.events),
        journeys: keepLast(message.journeys, LIMITS.journeys),
      };
    case "tick": {
      const { type: _type, ...tick } = message;
      void _type;
      return { ...view, tick, samples: keepLast([...view.samples, tick.sample], LIMITS.samples) };
    }
    case "event": {
      const { type: _type, ...event } = message;
      void _type;
      return { ...view, events: keepLast([...view.events, event], LIMITS.events) };
    }
    case "journey": {
      const { type: _type, ...journey } = message;
      void _type;
      return { ...view, journeys: keepLast([...view.journeys, journey], LIMITS.journeys) };
    }
    case "answer":
      return view;
  }
}

/** A member's role as shown: its own report, or `unreachable` when it sent none. */
export function roleOf(member: Member): string {
  return member.status?.role ?? "unreachable";
}

/** How many entries a member lacks against the leader, for the table. */
export function lagText(member: Member): string {
  if (member.lag === null) return "–";
  return member.lag === 0 ? "caught up" : `${member.lag} behind`;
}

/** The failure tolerance in words. */
export function toleranceText(tick: Tick | null): string {
  if (!tick || tick.failure_tolerance === null) return "no leader: writes wait";
  const n = tick.failure_tolerance;
  return n === 0 ? "cannot lose any voter" : `can lose ${n} more voter${n === 1 ? "" : "s"}`;
}

/** A peer's acknowledgement as the page shows it: `later` when it came after the answer. */
export interface ShownAck extends PeerAck {
  later?: boolean;
}

/**
 * A write's peers, updated by what the members report since: a peer that was pending when the
 * write was answered and now holds the write's index is shown as having acknowledged it later.
 */
export function settle(replication: Replication, tick: Tick | null): ShownAck[] {
  return replication.peers.map((peer) => {
    if (peer.state === "acked" || !tick) return peer;
    const member = tick.members.find((m) => m.id === peer.node);
    const held = member?.status?.last_log_index ?? -1;
    const sameTerm = (member?.status?.term ?? 0) >= replication.term;
    return held >= replication.index && sameTerm ? { node: peer.node, state: "acked", later: true } : peer;
  });
}
