// Timers for tenant code. The callbacks stay here; the worker keeps the
// clock (so it knows when a tenant is idle) and sends a Timer event when one
// is due. Microtasks are V8's own; queueMicrotask is built on a promise.
import { Op, reflectApply, SafeMap, TypeErrorCtor, emit, errorText, hostClearTimer, hostSetTimer, promiseResolve, then } from './host.js';
import { asRuns, currentRuns, hold, release, type Runs, without } from './run-holds.js';

interface Timer {
  fn: (...args: unknown[]) => void;
  args: unknown[];
  repeat: boolean;
  /** The script runs whose code set it: the timer keeps them going. */
  runs: Runs;
}

const timers = new SafeMap<number, Timer>();
let lastId = 0;

function start(repeat: boolean, fn: unknown, ms: unknown, args: unknown[]): number {
  if (typeof fn !== 'function') {
    throw new TypeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: ${repeat ? 'setInterval' : 'setTimeout'} takes a function, got ${typeof fn}`);
  }
  const delay = Number(ms);
  const id = ++lastId;
  // The worker clamps the delay and refuses a timer over the tenant's limit.
  hostSetTimer(id, delay >= 0 ? delay : 0, repeat);
  const runs = currentRuns();
  timers.set(id, { fn: fn as Timer['fn'], args, repeat, runs });
  hold(runs);
  return id;
}

function clear(id: unknown): void {
  const key = Number(id);
  const timer = timers.get(key);
  if (timer === undefined) return;
  timers.delete(key);
  hostClearTimer(key);
  release(timer.runs);
}

/** Runs a due timer; the worker has already forgotten a one-shot one. */
export function fireTimer(id: number): void {
  const timer = timers.get(id);
  if (timer === undefined) return;
  if (!timer.repeat) timers.delete(id);
  try {
    asRuns(timer.runs, () => reflectApply(timer.fn, undefined, timer.args));
  } catch (error) {
    // It fails the one run whose timer it is; a timer of no run (or of several) fails them all.
    emit(Op.Error, timer.runs.length === 1 ? timer.runs[0]! : 0, errorText(error));
  } finally {
    // A one-shot timer holds its run until its callback has run: what that makes holds it on.
    if (!timer.repeat) release(timer.runs);
  }
}

/** Run `run` was cut (its time is up): its timers no longer hold it, and those only it held are cleared. */
export function cancelTimersOf(run: number): void {
  timers.forEach((timer, id) => {
    const rest = without(timer.runs, run);
    if (rest === timer.runs) return;
    timer.runs = rest;
    if (rest.length > 0) return;
    timers.delete(id);
    hostClearTimer(id);
  });
}

/** A timer of the runtime's own (it counts toward the tenant's timers); returns its cancel. */
export function watchdog(ms: number, fn: () => void): () => void {
  try {
    const id = start(false, fn, ms, []);
    return () => clear(id);
  } catch {
    return () => {}; // the tenant has used up its timers: no watchdog
  }
}

export function installTimers(global: typeof globalThis): void {
  const g = global as unknown as Record<string, unknown>;
  g.setTimeout = (fn: unknown, ms?: unknown, ...args: unknown[]) => start(false, fn, ms, args);
  g.setInterval = (fn: unknown, ms?: unknown, ...args: unknown[]) => start(true, fn, ms, args);
  g.clearTimeout = clear;
  g.clearInterval = clear;
  g.queueMicrotask = (fn: unknown): void => {
    if (typeof fn !== 'function') throw new TypeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: queueMicrotask takes a function, got ${typeof fn}`);
    then(
      promiseResolve(),
      () => {
        try {
          (fn as () => void)();
        } catch (error) {
          emit(Op.Error, 0, errorText(error));
        }
      },
      () => undefined,
    );
  };
}
