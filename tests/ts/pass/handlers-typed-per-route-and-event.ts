// A consumer of the contract: handlers typed per route and event name.
import type { Events, Level } from "./events";

type Handlers<R extends keyof Events> = { [E in keyof Events[R]]?: (payload: Events[R][E]) => void };

const alarms: Handlers<"/sse/alarms"> = {
  alarm: (alarm) => {
    const level: Level = alarm.level;
    console.log(alarm.device.toUpperCase(), level === "high");
  },
  reset: (reset) => console.log(reset.continueFrom, reset.reason),
};

const build: Handlers<"/sse/builds/{id}"> = {
  build: (build) => console.log(build.id + 1, build.done),
  "build-error": (error) => console.log(error.statusCode, error.message),
  end: (end) => console.log(end.reason === "finished"),
};

// A payload without a schema is `unknown`: it must be checked before use.
const notes: Handlers<"/sse/notes"> = {
  message: (note) => console.log(typeof note === "object"),
};

export { alarms, build, notes };
