// The sandbox's side of the boundary. The worker installs a few bootstrap
// globals (the list is in bridge/tenant.ts, `installBridge`); this module
// captures them before any tenant code runs, and runtime.ts deletes them.
// Everything that leaves the isolate goes through `emit` below, as it is
// made: primitives the runtime made, never a tenant's own object, and
// nothing held back in the isolate, where a memory limit would take it along.

import { DISPATCHED, Op, OUTPUT_HEADER, Progress, SHARED_ID_MAX, SHARED_TEXT_MAX, TAKE_SHARED } from './wire.js';

declare const __isletConfig: string;
declare const __isletConnect: (uri: unknown, handler: unknown, engine: unknown) => number | HostError;
declare const __isletSetTimer: (id: number, ms: number, repeat: boolean) => void | HostError;
declare const __isletClearTimer: (id: number) => void;
declare const __isletOutput: (op: number, id: number, text: string) => void;
declare const __isletProgress: SharedArrayBuffer;
declare const __isletOutputBuffer: SharedArrayBuffer;

export interface SandboxConfig {
  tenant: string;
  maxMessageBytes: number;
  settleTimeoutMs: number;
  maxOutputBytes: number;
  wasmMemoryMiB: number;
  /** The name of the host this isolate runs on: every session of the tenant says where it is. */
  host: string;
}

/** A host function's refusal: returned, not thrown, so that no host stack frame reaches the isolate. */
interface HostError {
  isletError: string;
}

export const config: SandboxConfig = JSON.parse(__isletConfig);
const connect = __isletConnect;
const setTimer = __isletSetTimer;
export const hostClearTimer = __isletClearTimer;
const hostOutput = __isletOutput;

/** Throws, in the tenant's own stack, what a host function refused. */
function unwrap<T>(result: T | HostError): T {
  if (typeof result === 'object' && result !== null && typeof (result as HostError).isletError === 'string') {
    throw new ErrorCtor((result as HostError).isletError);
  }
  return result as T;
}

/**
 * What crosses for an argument a tenant gave: a primitive as it is, anything
 * else as a note of its type (the host names it in its error). A tenant's
 * object is never copied out: its getters and proxies would run mid-copy.
 */
function crossable(value: unknown): unknown {
  if (value === null || value === undefined) return value;
  const type = typeof value;
  return type === 'string' || type === 'number' || type === 'boolean' ? value : { isletType: type };
}

export function hostConnect(uri: unknown, handler: unknown, engine: unknown): number {
  return unwrap(connect(crossable(uri), crossable(handler), crossable(engine)));
}

export function hostSetTimer(id: number, ms: number, repeat: boolean): void {
  unwrap(setTimer(id, ms, repeat));
}

export { Op };

// Captured now: tenant code may replace globals and prototypes later, and
// that must not change what the runtime does. Methods are held uncurried
// (bound to Function.prototype.call now), so that neither a replaced method
// nor a replaced `call` reaches the runtime; the runtime's own arrays have no
// prototype, so a getter or setter planted on Array.prototype never runs on them.
const FunctionCall = Function.prototype.call;
const FunctionBind = Function.prototype.bind;
/** `fn` as a plain function of `(self, ...args)`. */
export function uncurry<A extends unknown[], R>(fn: (...args: A) => R): (self: unknown, ...args: A) => R {
  return FunctionBind.call(FunctionCall, fn) as (self: unknown, ...args: A) => R;
}

export const ErrorCtor = Error;
export const TypeErrorCtor = TypeError;
export const RangeErrorCtor = RangeError;
export const StringCtor = String;
export const freeze = Object.freeze;
export const jsonStringify = JSON.stringify;
export const jsonParse = JSON.parse;
export const reflectApply = Reflect.apply;
const setPrototypeOf = Object.setPrototypeOf;
export const promiseResolve = Promise.resolve.bind(Promise);
const promiseThen = uncurry(Promise.prototype.then as (f: (v: unknown) => unknown, r: (e: unknown) => unknown) => Promise<unknown>);
export const stringSlice = uncurry(String.prototype.slice as (start?: number, end?: number) => string);
export const stringIndexOf = uncurry(String.prototype.indexOf as (search: string, from?: number) => number);
const mapGet = uncurry(Map.prototype.get);
const mapSet = uncurry(Map.prototype.set);
const mapHas = uncurry(Map.prototype.has);
const mapDelete = uncurry(Map.prototype.delete);
const mapForEach = uncurry(Map.prototype.forEach as (fn: (value: unknown, key: unknown) => void) => void);
/** The getter of `proto[name]`, uncurried. */
export function uncurryGetter<T>(proto: object, name: string): (self: unknown) => T {
  return uncurry(Object.getOwnPropertyDescriptor(proto, name)!.get as () => T);
}
const mapSize = uncurryGetter<number>(Map.prototype, 'size');

/** A Map for the runtime's own bookkeeping, through the captured methods. */
export class SafeMap<K, V> {
  private readonly map = new Map<K, V>();

  get(key: K): V | undefined {
    return mapGet(this.map, key) as V | undefined;
  }

  set(key: K, value: V): void {
    mapSet(this.map, key, value);
  }

  has(key: K): boolean {
    return mapHas(this.map, key);
  }

  delete(key: K): void {
    mapDelete(this.map, key);
  }

  forEach(fn: (value: V, key: K) => void): void {
    mapForEach(this.map, fn as (value: unknown, key: unknown) => void);
  }

  get size(): number {
    return mapSize(this.map);
  }
}

/** An array of the runtime's own, with no prototype: indexing it never reaches Array.prototype. */
export function newList<T>(): T[] {
  return setPrototypeOf([], null) as T[];
}

/** `value.then(onFulfilled, onRejected)` through the captured builtin; undefined if it throws. */
export function then(
  value: PromiseLike<unknown>,
  onFulfilled: (v: unknown) => unknown,
  onRejected: (e: unknown) => unknown,
): PromiseLike<unknown> | undefined {
  try {
    return promiseThen(promiseResolve(value), onFulfilled, onRejected) as PromiseLike<unknown>;
  } catch {
    // A thenable whose then throws is the tenant's own business.
    return undefined;
  }
}

/**
 * Where the runtime is, shared with the worker (slots: wire.ts, `Progress`),
 * which reads it after a call was stopped or its isolate died, and the
 * buffer short output is written into. Stores into them run no tenant code.
 */
export const progress = new Int32Array(__isletProgress);

/** The host is in a cluster whose Redis is out of reach: a call to another host would be lost. */
export function clusterAway(): boolean {
  return progress[Progress.ClusterAway] === 1;
}
const outputBuffer = new Uint16Array(__isletOutputBuffer);
export const charCodeAt = uncurry(String.prototype.charCodeAt);

/**
 * What each operation counts against maxOutputBytes beyond its text: the
 * worker and the host spend as much on an empty line as on a short one, and
 * a million empty console lines in one call held a worker for 4 s.
 */
const OP_COST = 256;

/** What this call has output so far: its texts' length and OP_COST an operation. */
let callOutput = 0;
/** This call's output went over maxOutputBytes: the rest is dropped, and that was said once. */
let overflowed = false;

/**
 * Hands one operation to the worker, now: output never waits in the
 * isolate's heap, so a call that is stopped, throws a stray rejection or
 * loses its isolate has lost none of what it did before. `text` is a
 * primitive string; false when it was dropped. The output of one call is bounded here, by its length
 * (known without reading the text): one 64 KiB string logged a thousand
 * times costs the isolate almost nothing, but 64 MB in the worker.
 */
export function emit(op: number, id: number, text: string): boolean {
  if (overflowed) return false;
  let handedOver = true;
  if (callOutput + text.length + OP_COST > config.maxOutputBytes) {
    overflowed = true;
    handedOver = false;
    text = `ISLET_ERR_LIMIT_OUTPUT: the output of one call is over ${config.maxOutputBytes} (limit maxOutputBytes, each send, reply or console line counting ${OP_COST} more than its text); the rest of its sends, replies and console lines were dropped`;
    // An error of no run: it fails the tenant's pending runs, whose responses may have lost parts with the rest.
    op = Op.Error;
    id = 0;
  }
  callOutput += text.length + OP_COST;
  const length = text.length;
  if (length > SHARED_TEXT_MAX || id > SHARED_ID_MAX) {
    hostOutput(op, id, text);
    return handedOver;
  }
  let at = progress[Progress.Output]!;
  if (at + OUTPUT_HEADER + length > outputBuffer.length) {
    hostOutput(TAKE_SHARED, 0, '');
    at = 0;
  }
  outputBuffer[at] = op;
  // Plain arithmetic (no Math, which tenant code may have replaced): exact for integers below 2 ** 53.
  const low = id % 0x10000;
  const rest = (id - low) / 0x10000;
  const mid = rest % 0x10000;
  outputBuffer[at + 1] = low;
  outputBuffer[at + 2] = mid;
  outputBuffer[at + 3] = (rest - mid) / 0x10000;
  outputBuffer[at + 4] = length;
  for (let i = 0; i < length; i++) outputBuffer[at + OUTPUT_HEADER + i] = charCodeAt(text, i);
  // Only now is it the worker's: an isolate lost mid-write leaves no half operation.
  progress[Progress.Output] = at + OUTPUT_HEADER + length;
  return handedOver;
}

/** The dispatch loop is done: the worker writes out what it has (wire.ts, DISPATCHED). */
export function dispatched(): void {
  hostOutput(DISPATCHED, 0, '');
}

/** A dispatch begins: its output is counted afresh. */
export function newCall(): void {
  callOutput = 0;
  overflowed = false;
}

/** Text of an error for logs and traces, whatever a tenant threw. */
export function errorText(error: unknown): string {
  try {
    if (error instanceof ErrorCtor) {
      const stack = error.stack;
      return typeof stack === 'string' ? stack : StringCtor(error.message);
    }
    return 'Uncaught ' + StringCtor(error);
  } catch {
    return 'Uncaught exception (it could not be turned into text)';
  }
}

/** The message of an error, as Dirigible hands it to `onError`. */
export function errorMessage(error: unknown): string {
  try {
    if (error instanceof ErrorCtor) return StringCtor(error.message);
    return StringCtor(error);
  } catch {
    return 'exception (it could not be turned into text)';
  }
}

/** UTF-8 length of a string, computed only when it could exceed `limit`. */
export function exceedsBytes(text: string, limit: number): boolean {
  if (text.length > limit) return true;
  if (text.length * 3 <= limit) return false;
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 4;
      i++;
    } else bytes += 3;
    if (bytes > limit) return true;
  }
  return false;
}
