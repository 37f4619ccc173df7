// The typed client of sse-runtime's multi-topic route: every subscription on one EventSource,
// its handlers typed per route and event from the generated `Events` map (`events.d.ts`).

/** Why a stream could not resume a topic from the client's last event id. */
export interface Reset {
  reason: "malformed-last-event-id" | "unknown-epoch" | "history-expired" | "history-exceeded" | "unknown-sequence" | "history-lost";
  /** The id of the first event the stream sends next. */
  continueFrom: string;
}

/** Where the connection is: `closed` after `close()`, or after an answer that asking again
 * cannot change (a 4xx but 408 and 429: bad credentials, a malformed request). */
export type State = "connecting" | "live" | "reconnecting" | "closed";

/** What goes with a state: the status the server answered, its reason (a refusal at a cap
 * or at shutdown), and when the client tries again. */
export interface StateDetail {
  status?: number;
  reason?: string;
  retryInMs?: number;
}

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
  onState?: (state: State, detail: StateDetail) => void;
  /** The first delay before opening the stream again after the browser gave up on it (a
   * proxy's 502, a 503): in milliseconds, default 1000, doubled on each failed attempt up to
   * `maxRetryMs` (default 30000), half of it random. */
  retryMs?: number;
  maxRetryMs?: number;
  /** Resume from this id (one `lastEventId` of an earlier stream of the same topics). */
  lastEventId?: string;
  /** Share one stream among the tabs of the origin that subscribe to the same topics
   * (default true; needs Web Locks and BroadcastChannel, else each tab has its own). */
  shareTabs?: boolean;
  /** Send cookies to another origin (EventSource's `withCredentials`). */
  withCredentials?: boolean;
}

export interface Stream {
  readonly state: State;
  /** The id the stream resumes from: a composite of every topic's position. */
  readonly lastEventId: string;
  /** Whether this tab holds the stream (else another tab relays its events). */
  readonly leads: boolean;
  /** Ends this tab's subscription; if it held the stream, another tab takes it over. */
  close(): void;
}

/** Subscribes to every topic of `subscriptions` on one stream of the multi-topic route at
 * `url` (`/sse`), shared by the origin's tabs, resuming after a cut, a refusal or a restart
 * from the last event id. */
export function subscribe<Routes>(
  url: string,
  subscriptions: Subscription<Routes>[],
  options?: Options,
): Stream;
