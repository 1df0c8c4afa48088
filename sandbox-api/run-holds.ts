// Which script runs the code running now belongs to, and what each run still
// holds: its timers and its clients, and through them what their callbacks
// and handlers make in turn. A run is over when it holds nothing, whatever
// else its tenant keeps going (an endpoint's interval, another run).
import { newList, SafeMap } from './host.js';

/** Runs, as the runtime's own prototype-less lists. */
export type Runs = number[];

export const NO_RUNS: Runs = newList();
/** The runs of the code running now; empty: none (a session's handler, a module's own timer). */
let current: Runs = NO_RUNS;
/**
 * The runs whose code ran in this call. Microtasks run after the call's
 * events, where no one knows whose continuation each is: what they make
 * belongs to all of these (a run may then last as long as another of the
 * same call, never shorter than its own work).
 */
const inCall: Runs = newList();
const holds = new SafeMap<number, number>();

/** The runs of the code running now, as a list of its own (the call's list still grows). */
export function currentRuns(): Runs {
  if (current.length === 0) return NO_RUNS;
  const copy: Runs = newList();
  for (let i = 0; i < current.length; i++) copy[i] = current[i]!;
  return copy;
}

/** A list of one run (none for 0). */
export function only(run: number): Runs {
  const list: Runs = newList();
  if (run !== 0) list[0] = run;
  return list;
}

/** Runs `fn` as code of `runs`. */
export function asRuns<T>(runs: Runs, fn: () => T): T {
  const outer = current;
  current = runs;
  for (let i = 0; i < runs.length; i++) if (!includes(inCall, runs[i]!)) inCall[inCall.length] = runs[i]!;
  try {
    return fn();
  } finally {
    current = outer;
  }
}

function includes(list: Runs, run: number): boolean {
  for (let i = 0; i < list.length; i++) if (list[i] === run) return true;
  return false;
}

/** A call begins: no run's code is running yet. */
export function callStarts(): void {
  current = NO_RUNS;
  // Nothing keeps the last call's list: timers and clients keep copies (`currentRuns`).
  inCall.length = 0;
}

/** The call's events are done: what its microtasks make belongs to the runs that ran in it. */
export function eventsDone(): void {
  current = inCall;
}

export function hold(runs: Runs): void {
  for (let i = 0; i < runs.length; i++) holds.set(runs[i]!, (holds.get(runs[i]!) ?? 0) + 1);
}

export function release(runs: Runs): void {
  for (let i = 0; i < runs.length; i++) {
    const left = (holds.get(runs[i]!) ?? 0) - 1;
    if (left > 0) holds.set(runs[i]!, left);
    else holds.delete(runs[i]!);
  }
}

/** `runs` without `run`, as a new list (`runs` itself when it has not got it). */
export function without(runs: Runs, run: number): Runs {
  if (!includes(runs, run)) return runs;
  const rest: Runs = newList();
  for (let i = 0; i < runs.length; i++) if (runs[i] !== run) rest[rest.length] = runs[i]!;
  release(only(run));
  return rest;
}

/** What run `run` holds: 0 when it is over. */
export function held(run: number): number {
  return holds.get(run) ?? 0;
}
