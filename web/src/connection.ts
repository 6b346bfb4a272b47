// The WebSocket to the node that served the page: the view it streams, and requests that get
// answers (commands, key pages, demo controls). Reconnects after losing the node.

import { useEffect, useReducer, useRef, useState } from "react";
import { apply, initialView, type Answer, type Message, type View } from "./stream";

export type Outgoing =
  | { type: "run"; line: string }
  | { type: "run"; args: string[] }
  | { type: "scan"; prefix: string; from?: string; limit: number }
  | { type: "control"; action: "stop" | "kill" | "restart"; node: number };

type Action = { kind: "message"; message: Message } | { kind: "closed" };

function reduce(view: View, action: Action): View {
  if (action.kind === "closed") return { ...view, connected: false, watching: false };
  return apply(view, action.message);
}

export interface ConsoleLink {
  view: View;
  /** Sends a request; resolves with its answer (or an error answer if the link drops). */
  request: (message: Outgoing) => Promise<Answer>;
}

export function streamUrl(location: Location): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/console/ws`;
}

export function useConsoleLink(url: string): ConsoleLink {
  const [view, dispatch] = useReducer(reduce, initialView);
  const socket = useRef<WebSocket | null>(null);
  const pending = useRef(new Map<number, (answer: Answer) => void>());
  const nextId = useRef(1);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const ws = new WebSocket(url);
    socket.current = ws;
    const waiting = pending.current;
    let retry: ReturnType<typeof setTimeout> | undefined;
    ws.onmessage = (event) => {
      const message = JSON.parse(String(event.data)) as Message;
      if (message.type === "answer") {
        waiting.get(message.id)?.(message.answer);
        waiting.delete(message.id);
      } else {
        dispatch({ kind: "message", message });
      }
    };
    ws.onclose = () => {
      dispatch({ kind: "closed" });
      for (const resolve of waiting.values()) {
        resolve({ type: "error", code: "DISCONNECTED", message: "the connection to the node was lost" });
      }
      waiting.clear();
      retry = setTimeout(() => setAttempt((n) => n + 1), Math.min(1000 * (attempt + 1), 5000));
    };
    return () => {
      clearTimeout(retry);
      ws.onclose = null;
      ws.close();
    };
  }, [url, attempt]);

  const request = (message: Outgoing): Promise<Answer> =>
    new Promise((resolve) => {
      const ws = socket.current;
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        resolve({ type: "error", code: "DISCONNECTED", message: "not connected to the node" });
        return;
      }
      const id = nextId.current++;
      pending.current.set(id, resolve);
      ws.send(JSON.stringify({ ...message, id }));
    });

  return { view, request };
}
