import type { Events } from "./events";

type Handlers<R extends keyof Events> = { [E in keyof Events[R]]?: (payload: Events[R][E]) => void };

export const alarms: Handlers<"/sse/alarms"> = {
  alert: (alarm) => console.log(alarm),
};

export const build: Handlers<"/sse/build"> = {};
