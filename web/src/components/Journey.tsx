import { settle, type Answer, type Journey, type Tick } from "../stream";
import { ackText, answerText, clock } from "../format";

/** A write's trip: the leader, term and index, then each peer's acknowledgement. */
export function AckPicture({ answer, tick }: { answer: Answer; tick: Tick | null }) {
  const replication = answer.replication;
  if (!replication) return null;
  const peers = settle(replication, tick);
  return (
    <div className="acks" data-testid="ack-picture">
      <span className="ack leader">leader n{answer.leader ?? "?"}</span>
      <span className="ack">term {replication.term}</span>
      <span className="ack">index {replication.index}</span>
      {answer.revision !== undefined && <span className="ack">rev {answer.revision}</span>}
      {peers.map((peer) => (
        <span
          key={peer.node}
          className={`ack ${peer.state}`}
          data-testid="ack-peer"
          data-state={peer.state}
          title={peer.later ? "acknowledged after the answer was sent (seen in its report)" : undefined}
        >
          {peer.later ? `n${peer.node} acked later` : ackText(peer)}
        </span>
      ))}
    </div>
  );
}

/** The recent writes, newest first. */
export function Journeys({ journeys, tick }: { journeys: Journey[]; tick: Tick | null }) {
  if (journeys.length === 0) return <p className="dim">No writes seen yet. Try SET greeting hello below.</p>;
  return (
    <ol className="journeys">
      {[...journeys].reverse().map((journey) => (
        <li key={`${journey.at_ms}-${journey.answer.replication?.index}`}>
          <span className="dim">{clock(journey.at_ms)}</span> <strong>{journey.command}</strong>{" "}
          <span>{answerText(journey.answer)}</span>
          <AckPicture answer={journey.answer} tick={tick} />
        </li>
      ))}
    </ol>
  );
}
