// Which script run the code running now belongs to, and what each run still
// holds: its timers and its clients, and through them what their callbacks
// and handlers make in turn. A run is over when it holds nothing, whatever
// else its tenant keeps going (an endpoint's interval, another run).
import { SafeMap } from './host.js';

/** The run of the code running now; 0: none (a session's handler, a module's own timer). */
let current = 0;
/** The last run whose code ran in this call: microtasks after the call's events are taken as its. */
let lastInCall = 0;
const holds = new SafeMap<number, number>();

export function currentRun(): number {
  return current;
}

/** Runs `fn` as code of `run` (0: of none). */
export function asRun<T>(run: number, fn: () => T): T {
  const outer = current;
  current = run;
  if (run !== 0) lastInCall = run;
  try {
    return fn();
  } finally {
    current = outer;
  }
}

/** A call begins: no run's code is running yet. */
export function callStarts(): void {
  current = 0;
  lastInCall = 0;
}

/** The call's events are done: what its microtasks make belongs to the last run that ran. */
export function eventsDone(): void {
  current = lastInCall;
}

export function hold(run: number): void {
  if (run !== 0) holds.set(run, (holds.get(run) ?? 0) + 1);
}

export function release(run: number): void {
  if (run === 0) return;
  const left = (holds.get(run) ?? 0) - 1;
  if (left > 0) holds.set(run, left);
  else holds.delete(run);
}

/** What run `run` holds: 0 when it is over. */
export function held(run: number): number {
  return holds.get(run) ?? 0;
}
