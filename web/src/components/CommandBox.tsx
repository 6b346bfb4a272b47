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
                  {r.answer.type === "table" || r.answer.type === "entries" ? null : answerText(r.answer)}
                </div>
                {r.answer.type === "entries" && <EntriesTable answer={r.answer} view="text" />}
                {r.answer.type === "table" && <AnswerTable answer={r.answer} />}
                <AckPicture answer={r.answer} tick={tick} />
              </>
            )}
          </li>
        ))}
      </ol>
    </div>
  );
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
