import { useState, type FormEvent } from "react";
import type { Answer } from "../stream";
import { bytesOf, showValue, type ValueView } from "../format";

interface Entry {
  key: string;
  key_encoding?: string;
  value?: string;
  value_encoding?: string;
  create_revision: number;
  mod_revision: number;
  version: number;
}

const PAGE = 50;

/** A page of keys: key, value in the chosen view, and their revisions. */
export function EntriesTable({ answer, view }: { answer: Answer; view: ValueView }) {
  const entries = (answer.entries as Entry[]) ?? [];
  if (entries.length === 0) return <p className="dim">(no keys)</p>;
  return (
    <div className="scroll">
      <table className="entries">
        <thead>
          <tr>
            <th>key</th>
            <th>value</th>
            <th>mod rev</th>
            <th>version</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((e) => (
            <tr key={e.key} data-testid="key-row">
              <td>
                <code>{showValue(bytesOf(e.key, e.key_encoding), view === "json" ? "text" : view)}</code>
              </td>
              <td>
                <pre>{e.value === undefined ? "" : showValue(bytesOf(e.value, e.value_encoding), view)}</pre>
              </td>
              <td>{e.mod_revision}</td>
              <td>{e.version}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Browse the keys under a prefix, a page at a time. */
export function KeyBrowser({ scan }: { scan: (prefix: string, from: string | undefined, limit: number) => Promise<Answer> }) {
  const [prefix, setPrefix] = useState("");
  const [view, setView] = useState<ValueView>("text");
  const [page, setPage] = useState<Answer | null>(null);
  // Where each page shown so far began, to go back.
  const [starts, setStarts] = useState<(string | undefined)[]>([]);

  const load = async (from: string | undefined, history: (string | undefined)[]) => {
    setPage(await scan(prefix, from, PAGE));
    setStarts([...history, from]);
  };
  const search = (event: FormEvent) => {
    event.preventDefault();
    void load(undefined, []);
  };
  const next = page?.more ? (page.next as string | undefined) : undefined;
  const binaryNext = page?.next_encoding === "base64";

  return (
    <div className="key-browser">
      <form onSubmit={search}>
        <input
          data-testid="prefix-input"
          value={prefix}
          onChange={(e) => setPrefix(e.target.value)}
          placeholder="key prefix (empty: every key)"
          aria-label="key prefix"
        />
        <button type="submit">Browse</button>
        <select value={view} onChange={(e) => setView(e.target.value as ValueView)} aria-label="show values as">
          <option value="text">text</option>
          <option value="json">JSON</option>
          <option value="hex">hex</option>
        </select>
      </form>
      {page?.type === "error" && <p className="error">{`(error) ${page.code} ${page.message}`}</p>}
      {page?.type === "entries" && (
        <>
          <EntriesTable answer={page} view={view} />
          <div className="pager">
            <button disabled={starts.length < 2} onClick={() => void load(starts[starts.length - 2], starts.slice(0, -2))}>
              ← previous
            </button>
            <span className="dim">page {starts.length}</span>
            <button disabled={next === undefined || binaryNext} onClick={() => void load(next, starts)}>
              next →
            </button>
          </div>
        </>
      )}
    </div>
  );
}
