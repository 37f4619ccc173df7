import type { Events } from "./events";

type Handlers<R extends keyof Events> = { [E in keyof Events[R]]?: (payload: Events[R][E]) => void };

export const alarms: Handlers<"/sse/alarms"> = {
  alarm: (alarm) => console.log(alarm.severity),
};
