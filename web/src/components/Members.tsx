import { lagText, roleOf, type Member, type Tick } from "../stream";
import { msText } from "../format";

interface Props {
  tick: Tick;
  controls: boolean;
  onControl: (action: "stop" | "kill" | "restart", node: number) => void;
  busy: number | null;
}

const index = (n: number | null | undefined) => (n === null || n === undefined ? "–" : String(n));

/** Every member as its own report says, with the leader's view of its lag and contact. */
export function Members({ tick, controls, onControl, busy }: Props) {
  return (
    <div className="scroll">
      <table className="members">
        <thead>
          <tr>
            <th>node</th>
            <th>role</th>
            <th>term</th>
            <th title="last log / committed / applied">log · commit · applied</th>
            <th>snapshot · purged</th>
            <th>lag</th>
            <th>contact</th>
            {controls && <th>demo</th>}
          </tr>
        </thead>
        <tbody>
          {tick.members.map((member: Member) => {
            const role = roleOf(member);
            const s = member.status;
            return (
              <tr key={member.id} data-testid={`member-${member.id}`} data-role={role} className={`role-${role}`}>
                <td>
                  <strong>n{member.id}</strong> <span className="dim">{member.address}</span>
                  {member.id === tick.node && <span className="badge">this page</span>}
                  {!member.voter && <span className="badge">learner</span>}
                </td>
                <td>
                  <span className={`pill ${role}`}>{role}</span>
                  {member.problem && <div className="problem">{member.problem}</div>}
                </td>
                <td>{s ? s.term : "–"}</td>
                <td>
                  {index(s?.last_log_index)} · {index(s?.committed_index)} · {index(s?.applied_index)}
                </td>
                <td>
                  {index(s?.snapshot_index)} · {index(s?.purged_index)}
                </td>
                <td data-testid={`lag-${member.id}`}>{lagText(member)}</td>
                <td>{member.id === tick.leader ? "leader" : msText(member.last_contact_ms)}</td>
                {controls && (
                  <td className="controls">
                    {s ? (
                      <>
                        <button data-testid={`stop-${member.id}`} disabled={busy !== null} onClick={() => onControl("stop", member.id)}>
                          stop
                        </button>
                        <button data-testid={`kill-${member.id}`} disabled={busy !== null} onClick={() => onControl("kill", member.id)}>
                          kill -9
                        </button>
                      </>
                    ) : (
                      <button data-testid={`restart-${member.id}`} disabled={busy !== null} onClick={() => onControl("restart", member.id)}>
                        restart
                      </button>
                    )}
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
