import { useEffect, useRef, useState } from "react";
import { streamUrl, useConsoleLink } from "./connection";
import { toleranceText, type Sample } from "./stream";
import { Members } from "./components/Members";
import { LineGraph } from "./components/LineGraph";
import { Journeys } from "./components/Journey";
import { Events } from "./components/Events";
import { CommandBox } from "./components/CommandBox";
import { KeyBrowser } from "./components/KeyBrowser";
import { Login } from "./components/Login";
import { answerText } from "./format";

export function App() {
  const { view, request } = useConsoleLink(streamUrl(window.location));
  const credentials = useRef<{ user: string; password: string } | null>(null);
  const [loginError, setLoginError] = useState<string | null>(null);
  const [busy, setBusy] = useState<number | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const login = async (user: string, password: string) => {
    const answer = await request({ type: "run", args: ["AUTH", user, password] });
    if (answer.type === "error") {
      setLoginError(answerText(answer));
      credentials.current = null;
    } else {
      setLoginError(null);
      credentials.current = { user, password };
    }
  };

  // After reconnecting, log in again as before.
  const needsLogin = view.connected && view.auth && !view.watching;
  useEffect(() => {
    const saved = credentials.current;
    if (needsLogin && saved) void login(saved.user, saved.password);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [needsLogin]);

  const control = async (action: "stop" | "kill" | "restart", node: number) => {
    setBusy(node);
    setNotice(`${action} node ${node}…`);
    const answer = await request({ type: "control", action, node });
    setNotice(answerText(answer));
    setBusy(null);
  };

  const tick = view.tick;
  const leader = tick?.leader;
  return (
    <div className="app">
      <header>
        <h1>kv console</h1>
        <span className={`status ${view.connected ? "up" : "down"}`} data-testid="connection">
          {view.connected ? `node ${view.node}` : "reconnecting…"}
        </span>
        {tick && (
          <>
            <span data-testid="leader">{leader ? `leader n${leader}` : "no leader"}</span>
            <span>term {tick.term ?? "–"}</span>
            <span data-testid="tolerance">{toleranceText(tick)}</span>
          </>
        )}
      </header>
      {needsLogin && <Login login={(u, p) => void login(u, p)} error={loginError} />}
      {view.watching && (
        <main>
          <section className="wide">
            <h2>Members</h2>
            {tick ? (
              <Members tick={tick} controls={view.controls} busy={busy} onControl={(a, n) => void control(a, n)} />
            ) : (
              <p className="dim">Asking the members…</p>
            )}
            {notice && <p className="notice" data-testid="notice">{notice}</p>}
          </section>
          <section>
            <h2>Throughput</h2>
            <LineGraph
              title="requests per second, all members"
              unit="/s"
              samples={view.samples}
              series={[
                { label: "writes", className: "writes", value: (s: Sample) => s.writes_per_s },
                { label: "reads", className: "reads", value: (s: Sample) => s.reads_per_s },
              ]}
            />
          </section>
          <section>
            <h2>Write latency</h2>
            <LineGraph
              title="slowest member, last second"
              unit="ms"
              samples={view.samples}
              series={[
                { label: "p50", className: "p50", value: (s: Sample) => s.write_p50_ms },
                { label: "p99", className: "p99", value: (s: Sample) => s.write_p99_ms },
              ]}
            />
          </section>
          <section>
            <h2>Command</h2>
            <CommandBox run={(line) => request({ type: "run", line })} tick={tick} />
          </section>
          <section>
            <h2>Recent writes</h2>
            <Journeys journeys={view.journeys} tick={tick} />
          </section>
          <section>
            <h2>Events</h2>
            <Events events={view.events} />
          </section>
          <section>
            <h2>Keys</h2>
            <KeyBrowser scan={(prefix, from, limit) => request({ type: "scan", prefix, from, limit })} />
          </section>
        </main>
      )}
    </div>
  );
}
