import { subscribe } from "./sse-client";
import type { Events } from "./events";

subscribe<Events>("/sse", [
  { route: "/sse/alarms", on: { alarm: (alarm) => console.log(alarm.severity) } },
  { route: "/sse/alarm", on: {} },
  { route: "/sse/builds/{id}", on: { alarm: () => {} } },
]);
