import type { Alarm } from "./events";

export function isCritical(alarm: Alarm): boolean {
  return alarm.level === "critical";
}
