// The typed client of sse-runtime's multi-topic route: every subscription on one EventSource,
// its handlers typed per route and event from the generated `Events` map (`events.d.ts`).

/** Why a stream could not resume a topic from the client's last event id. */
export interface Reset {
  reason: "malformed-last-event-id" | "unknown-epoch" | "history-expired" | "history-exceeded" | "unknown-sequence";
  /** The id of the first event the stream sends next. */
  continueFrom: string;
}

/** Where the connection is. */
export type State = "connecting" | "live" | "reconnecting" | "closed";

/** Handlers of one route's events, typed from its entry in `Events`. */
export type Handlers<Routes, R extends keyof Routes> = {
  [E in keyof Routes[R]]?: (payload: Routes[R][E], event: MessageEvent<string>) => void;
};

/** One topic of the stream: its route (a key of `Events`), the topic's own URI when the route
 * has placeholders or a query (`/sse/devices/7`; else the route itself), and its handlers. */
export type Subscription<Routes, R extends keyof Routes = keyof Routes> = R extends keyof Routes
  ? { route: R; topic?: string; on: Handlers<Routes, R> }
  : never;

export interface Options {
  /** A topic could not be resumed: what was missed must be fetched another way. */
  onReset?: (topic: string, reset: Reset) => void;
  /** The connection's state changed. */
  onState?: (state: State) => void;
  /** How long to wait before connecting again after the server refused or the connection
   * closed for good (a browser's EventSource gives up then): in milliseconds, default 5000. */
  retryMs?: number;
}

export interface Stream {
  readonly state: State;
  /** The id the stream resumes from: a composite of every topic's position. */
  readonly lastEventId: string;
  close(): void;
}

/** Subscribes to every topic of `subscriptions` on one stream of the multi-topic route at
 * `url` (`/sse`), resuming after a cut or a refusal from the last event id. */
export function subscribe<Routes>(
  url: string,
  subscriptions: Subscription<Routes>[],
  options?: Options,
): Stream;
