// The typed client: one stream, handlers typed per route and event.
import { subscribe } from "./sse-client";
import type { Events } from "./events";

const stream = subscribe<Events>(
  "/sse",
  [
    { route: "/sse/alarms", on: { alarm: (alarm) => console.log(alarm.device, alarm.level) } },
    {
      route: "/sse/builds/{id}",
      topic: "/sse/builds/7",
      on: {
        build: (build, event) => console.log(build.done, event.lastEventId),
        "build-error": (error) => console.log(error.statusCode),
        end: (end) => console.log(end.reason),
      },
    },
  ],
  {
    onReset: (topic, reset) => console.log(topic, reset.reason, reset.continueFrom),
    onState: (state) => console.log(state === "live"),
    retryMs: 1000,
  },
);
console.log(stream.state, stream.lastEventId);
stream.close();
