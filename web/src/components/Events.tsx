import type { ClusterEvent } from "../stream";
import { clock } from "../format";

/** The cluster's timeline, newest first. */
export function Events({ events }: { events: ClusterEvent[] }) {
  if (events.length === 0) return <p className="dim">Nothing has happened yet.</p>;
  return (
    <ol className="events" data-testid="events">
      {[...events].reverse().map((event, i) => (
        <li key={`${event.at_ms}-${i}`} className={`event ${event.kind}`}>
          <span className="dim">{clock(event.at_ms)}</span> <span className={`kind ${event.kind}`}>{event.kind.replace("_", " ")}</span>{" "}
          {event.text}
          {event.term !== null && <span className="dim"> · term {event.term}</span>}
        </li>
      ))}
    </ol>
  );
}
