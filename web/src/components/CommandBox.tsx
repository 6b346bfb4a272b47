import { useState, type FormEvent, type KeyboardEvent } from "react";
import type { Answer, Tick } from "../stream";
import { answerText } from "../format";
import { AckPicture } from "./Journey";
import { EntriesTable } from "./KeyBrowser";

interface Ran {
  n: number;
  line: string;
  answer: Answer | null;
}

/** Runs any command through the node this page came from, as the shell would. */
export function CommandBox({ run, tick }: { run: (line: string) => Promise<Answer>; tick: Tick | null }) {
  const [line, setLine] = useState("");
  const [ran, setRan] = useState<Ran[]>([]);
  const [back, setBack] = useState(0);
  const history = ran.map((r) => r.line);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const text = line.trim();
    if (!text) return;
    const n = (ran[0]?.n ?? 0) + 1;
    setRan((previous) => [{ n, line: text, answer: null }, ...previous].slice(0, 20));
    setLine("");
    setBack(0);
    const answer = await run(text);
    setRan((previous) => previous.map((r) => (r.n === n ? { ...r, answer } : r)));
  };

  const recall = (event: KeyboardEvent<HTMLInputElement>) => {
    if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
    event.preventDefault();
    const next = Math.max(0, Math.min(history.length, back + (event.key === "ArrowUp" ? 1 : -1)));
    setBack(next);
    setLine(next === 0 ? "" : history[next - 1]);
  };

  return (
    <div className="command-box">
      <form onSubmit={submit}>
        <input
          data-testid="command-input"
          value={line}
          onChange={(e) => setLine(e.target.value)}
          onKeyDown={recall}
          placeholder="SET greeting hello · GET greeting · SCAN PREFIX user/ · HELP"
          autoComplete="off"
          spellCheck={false}
          aria-label="command"
        />
        <button type="submit">Run</button>
      </form>
      <ol className="ran">
        {ran.map((r) => (
          <li key={r.n} data-testid="command-result">
            <code>&gt; {r.line}</code>
            {r.answer === null ? (
              <div className="dim">waiting…</div>
            ) : (
              <>
                <div data-testid="command-answer" className={r.answer.type === "error" ? "error" : "ok"}>
                  <AnswerView answer={r.answer} />
                </div>
                <AckPicture answer={r.answer} tick={tick} />
              </>
            )}
          </li>
        ))}
      </ol>
    </div>
  );
}

/** An answer in full, as the shell shows it: pages of keys and tables as tables, and the answers
 * inside another (`MGET`'s values, each operation's of a `TXN`) as a numbered list. */
export function AnswerView({ answer }: { answer: Answer }) {
  switch (answer.type) {
    case "entries":
      return <EntriesTable answer={answer} view="text" />;
    case "table":
      return <AnswerTable answer={answer} />;
    case "array":
    case "txn": {
      const inner = ((answer.type === "array" ? answer.items : answer.results) as Answer[] | undefined) ?? [];
      const heading = answer.type === "txn" ? answerText(answer) : inner.length === 0 ? "(empty array)" : null;
      return (
        <div>
          {heading !== null && <div>{heading}</div>}
          {inner.length > 0 && (
            <ol className="inner-answers">
              {inner.map((item, i) => (
                <li key={i} data-testid="inner-answer" className={item.type === "error" ? "error" : undefined}>
                  <AnswerView answer={item} />
                </li>
              ))}
            </ol>
          )}
        </div>
      );
    }
    default:
      return <>{answerText(answer)}</>;
  }
}

function AnswerTable({ answer }: { answer: Answer }) {
  const columns = answer.columns as string[];
  const rows = answer.rows as unknown[][];
  return (
    <div className="scroll">
      <table>
        <thead>
          <tr>{columns.map((c) => <th key={c}>{c}</th>)}</tr>
        </thead>
        <tbody>
          {rows.map((row, i) => (
            <tr key={i}>{row.map((cell, j) => <td key={j}>{cell === null ? "–" : String(cell)}</td>)}</tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
