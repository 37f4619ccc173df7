// The typed client of sse-runtime's multi-topic route (types: sse-client.d.ts). No build step:
// an ES module, served by `sse_runtime::contract::client_route()` or copied as a file.
//
// Every subscription shares one EventSource on `url?topic=...`. An event of topic T named E
// arrives as `T#E` (`T` alone when unnamed), its data JSON; `T#reset` goes to `onReset`. The
// browser resumes a cut stream by itself with Last-Event-ID; when it gives up (the server
// refused: 429, 503, a proxy's 502), this client connects again after `retryMs`, with the last
// event id in the query, so nothing is lost.

const LAST_EVENT_ID = "last_event_id";

/**
 * @param {string} url
 * @param {Array<{ route: string, topic?: string, on: Record<string, (payload: any, event: MessageEvent<string>) => void> }>} subscriptions
 * @param {{ onReset?: (topic: string, reset: any) => void, onState?: (state: string) => void, retryMs?: number }} [options]
 */
export function subscribe(url, subscriptions, options = {}) {
  const retryMs = options.retryMs ?? 5000;
  let state = "connecting";
  let lastEventId = "";
  /** @type {EventSource | null} */
  let source = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let retry;
  let closed = false;

  const setState = (/** @type {string} */ next) => {
    if (next === state) return;
    state = next;
    options.onState?.(next);
  };

  const address = () => {
    const query = new URLSearchParams();
    for (const s of subscriptions) query.append("topic", s.topic ?? s.route);
    if (lastEventId) query.set(LAST_EVENT_ID, lastEventId);
    return `${url}?${query}`;
  };

  const connect = () => {
    const stream = (source = new EventSource(address()));
    const track = (/** @type {MessageEvent<string>} */ event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
    };
    stream.onopen = () => setState("live");
    stream.onmessage = track;
    stream.onerror = () => {
      if (closed || source !== stream) return;
      if (stream.readyState !== EventSource.CLOSED) {
        setState("reconnecting");
        return;
      }
      // The browser gave up: come back later, from where the stream was.
      setState("reconnecting");
      retry = setTimeout(connect, retryMs);
    };
    for (const s of subscriptions) {
      const topic = s.topic ?? s.route;
      for (const [name, handler] of Object.entries(s.on)) {
        if (!handler) continue;
        const type = name === "message" ? topic : `${topic}#${name}`;
        stream.addEventListener(type, (event) => {
          const message = /** @type {MessageEvent<string>} */ (event);
          track(message);
          handler(JSON.parse(message.data), message);
        });
      }
      stream.addEventListener(`${topic}#reset`, (event) => {
        const message = /** @type {MessageEvent<string>} */ (event);
        track(message);
        options.onReset?.(topic, JSON.parse(message.data));
      });
    }
  };

  connect();
  return {
    get state() {
      return state;
    },
    get lastEventId() {
      // What the browser keeps is newer than what the handlers saw (an id-only frame sets it).
      return lastEventId;
    },
    close() {
      closed = true;
      clearTimeout(retry);
      source?.close();
      setState("closed");
    },
  };
}
