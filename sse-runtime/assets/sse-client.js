// The typed client of sse-runtime's multi-topic route (types: sse-client.d.ts). No build step:
// an ES module, served by `sse_runtime::contract::client_route()` or copied as a file.
//
// Every subscription shares one EventSource on `url?topic=...`. An event of topic T named E
// arrives as `T#E` (`T` alone when unnamed), its data JSON; `T#reset` also goes to `onReset`.
//
// Resuming. The browser resumes a cut stream by itself with Last-Event-ID. It gives up for
// good on any answer but a 200 event stream (a proxy's 502, a 503, a guard's 401): then this
// client asks the server why (one fetch of the same URL), stops after a 4xx that asking again
// cannot change (any but 408 and 429: bad credentials must not be hammered), and otherwise
// opens a new EventSource after a jittered exponential backoff, with the last event id in the
// `last_event_id` query parameter. The stream's position comes as a `position` event
// (`position=event`), so that id also covers topics that have sent nothing yet.
//
// One stream for all tabs. Tabs of an origin that subscribe to the same topics of the same
// URL share one stream: the tab holding a Web Lock named after them opens it and relays every
// event to the others on a BroadcastChannel of the same name. When that tab goes (closed,
// reloaded, `close()`d), the browser gives the lock to another, which opens the stream from the
// last id it was relayed: nothing is lost, and an event relayed twice across the handover is
// dropped by its id. Without Web Locks or BroadcastChannel (or with `shareTabs: false`) each
// tab has its own stream.

const LAST_EVENT_ID = "last_event_id";
/** The event that carries the stream's position (its data and id the composite id). */
const POSITION = "position";
/** The event of a refusal the browser comes back from: `{status, reason, retryAfterMs}`. */
const REFUSED = "refused";
/** How many recent ids a tab remembers to drop an event relayed twice. */
const REMEMBERED = 512;

/**
 * @typedef {{ status?: number, reason?: string, retryInMs?: number }} Detail
 * @typedef {{ kind: "event", type: string, data: string, id: string }
 *   | { kind: "state", state: string, detail: Detail, lastEventId: string }
 *   | { kind: "hello" }} Message
 */

/** Whether asking again cannot change an answer with this status. */
const final = (/** @type {number} */ status) =>
  status >= 400 && status < 500 && status !== 408 && status !== 429;

/**
 * @param {string} url
 * @param {Array<{ route: string, topic?: string, on: Record<string, ((payload: any, event: MessageEvent<string>) => void) | undefined> }>} subscriptions
 * @param {{ onReset?: (topic: string, reset: any) => void, onState?: (state: string, detail: Detail) => void, retryMs?: number, maxRetryMs?: number, lastEventId?: string, shareTabs?: boolean, withCredentials?: boolean }} [options]
 */
export function subscribe(url, subscriptions, options = {}) {
  const firstDelay = options.retryMs ?? 1000;
  const maxDelay = Math.max(firstDelay, options.maxRetryMs ?? 30000);
  const topics = subscriptions.map((s) => s.topic ?? s.route);

  /** @type {Map<string, (data: string, event: MessageEvent<string>) => void>} */
  const handlers = new Map();
  subscriptions.forEach((s, index) => {
    const topic = topics[index];
    for (const [name, handler] of Object.entries(s.on)) {
      if (!handler || name === "reset") continue;
      const type = name === "message" ? topic : `${topic}#${name}`;
      handlers.set(type, (data, event) => handler(JSON.parse(data), event));
    }
    const onReset = s.on.reset;
    handlers.set(`${topic}#reset`, (data, event) => {
      const reset = JSON.parse(data);
      onReset?.(reset, event);
      options.onReset?.(topic, reset);
    });
  });

  let state = "connecting";
  /** @type {Detail} */
  let detail = {};
  let lastEventId = options.lastEventId ?? "";
  let closed = false;
  let attempts = 0;
  /** @type {EventSource | null} */
  let source = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  /** @type {((message: Message) => void) | null} */
  let relay = null;
  /** @type {Set<string>} */
  const recent = new Set();

  const setState = (/** @type {string} */ next, /** @type {Detail} */ why = {}) => {
    if (next === state && JSON.stringify(why) === JSON.stringify(detail)) return;
    state = next;
    detail = why;
    relay?.({ kind: "state", state, detail, lastEventId });
    options.onState?.(state, detail);
  };

  /** An event, from this tab's stream or relayed by the tab that holds it. */
  const deliver = (/** @type {string} */ type, /** @type {string} */ data, /** @type {string} */ id) => {
    if (type === POSITION) {
      if (id) lastEventId = id;
      return;
    }
    if (type === REFUSED) {
      const refused = JSON.parse(data);
      setState("reconnecting", {
        status: refused.status,
        reason: refused.reason,
        retryInMs: refused.retryAfterMs,
      });
      return;
    }
    if (id) {
      if (recent.has(id)) return;
      recent.add(id);
      if (recent.size > REMEMBERED) recent.delete(recent.values().next().value ?? "");
      lastEventId = id;
    }
    if (state !== "live") setState("live");
    handlers.get(type)?.(data, new MessageEvent(type, { data, lastEventId: id }));
  };

  const address = () => {
    const query = new URLSearchParams();
    for (const topic of topics) query.append("topic", topic);
    query.set(POSITION, "event");
    if (lastEventId) query.set(LAST_EVENT_ID, lastEventId);
    return `${url}?${query}`;
  };

  /** Opens this tab's own stream. */
  const open = () => {
    if (closed) return;
    const stream = (source = new EventSource(address(), {
      withCredentials: options.withCredentials ?? false,
    }));
    const receive = (/** @type {Event} */ event) => {
      const { type, data, lastEventId: id } = /** @type {MessageEvent<string>} */ (event);
      relay?.({ kind: "event", type, data, id });
      deliver(type, data, id);
    };
    for (const type of [...handlers.keys(), POSITION, REFUSED]) {
      stream.addEventListener(type, receive);
    }
    stream.onopen = () => {
      attempts = 0;
      setState("live");
    };
    stream.onerror = () => {
      if (closed || source !== stream) return;
      if (stream.readyState !== EventSource.CLOSED) {
        if (state !== "reconnecting") setState("reconnecting");
        return;
      }
      source = null;
      void reopen();
    };
  };

  /** The browser gave up on the stream: find out why, then come back later or stop. */
  const reopen = async () => {
    setState("reconnecting");
    const status = await probe();
    if (closed) return;
    if (final(status)) {
      // The tabs this one relays to are told: they share its credentials and its answer.
      stop({ status }, true);
      return;
    }
    // Equal jitter: half the delay fixed, half random, so a refused crowd spreads out.
    const ceiling = Math.min(maxDelay, firstDelay * 2 ** attempts++);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    setState("reconnecting", status ? { status, retryInMs: delay } : { retryInMs: delay });
    timer = setTimeout(open, delay);
  };

  /** The status the stream's URL answers now (0: no answer); a stream it opens is closed. */
  const probe = async () => {
    const abort = new AbortController();
    try {
      const response = await fetch(address(), {
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        credentials: options.withCredentials ? "include" : "same-origin",
        signal: abort.signal,
      });
      abort.abort();
      return response.status;
    } catch {
      return 0;
    }
  };

  /** @type {(() => void) | undefined} */
  let release;
  /** @type {BroadcastChannel | undefined} */
  let channel;
  /** @type {AbortController | undefined} */
  let waiting;
  /** Ends this tab's part for good: its stream, its place in the queue for the lock (or the
   * lock, which goes to another tab), its channel. `tell`: the relayed tabs hear why. */
  const stop = (/** @type {Detail} */ why, /** @type {boolean} */ tell) => {
    if (closed) return;
    if (!tell) relay = null;
    setState("closed", why);
    relay = null;
    closed = true;
    clearTimeout(timer);
    source?.close();
    source = null;
    waiting?.abort();
    release?.();
    channel?.close();
  };
  const locks = typeof navigator === "object" ? navigator.locks : undefined;
  if (options.shareTabs === false || typeof BroadcastChannel !== "function" || !locks) {
    open();
  } else {
    const name = `sse-runtime ${new URL(url, location.href).href} ${JSON.stringify(topics)}`;
    const shared = (channel = new BroadcastChannel(name));
    shared.onmessage = (/** @type {MessageEvent<Message>} */ { data: message }) => {
      if (message.kind === "event") {
        deliver(message.type, message.data, message.id);
      } else if (relay) {
        // This tab holds the stream: a tab that just came asks where it is.
        if (message.kind === "hello") relay({ kind: "state", state, detail, lastEventId });
      } else if (message.kind === "state" && message.state === "closed") {
        // The stream's holder got an answer that asking again cannot change.
        stop(message.detail, false);
      } else if (message.kind === "state") {
        // A tab that came late starts where the stream is, as a new subscriber would.
        if (message.lastEventId && !lastEventId) lastEventId = message.lastEventId;
        setState(message.state, message.detail);
      }
    };
    waiting = new AbortController();
    locks
      .request(name, { signal: waiting.signal }, () => {
        if (closed) return undefined;
        relay = (message) => shared.postMessage(message);
        open();
        // Held until this tab closes the stream or goes away.
        return new Promise((resolve) => (release = () => resolve(undefined)));
      })
      .catch(() => {
        // `close()` withdrew the request.
      });
    shared.postMessage({ kind: "hello" });
  }

  return {
    get state() {
      return state;
    },
    get lastEventId() {
      return lastEventId;
    },
    get leads() {
      return relay !== null || !channel;
    },
    close() {
      // The other tabs are not told: one of them takes the stream over.
      stop({}, false);
    },
  };
}
