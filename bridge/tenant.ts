// One tenant's isolate: its context, the trusted driver from sandbox-api, the
// bundled modules defined in it, and its timers. The tenant owns all of them
// and `dispose()` releases them. Nothing here decides policy about sockets;
// the worker does, through the `TenantHost` it passes in.
import ivm from 'isolated-vm';
import type { BundledCode, TenantLimits } from './protocol.js';

import { DISPATCHED, Event, OUTPUT_BUFFER_BYTES, OUTPUT_HEADER, Progress, TAKE_SHARED } from '../sandbox-api/wire.js';

export { Event, Op } from '../sandbox-api/wire.js';

/** Events going in: triples [kind, id, text] (sandbox-api/wire.ts). */
export type Batch = (number | string)[];

/** What a tenant's host functions may ask of the worker. */
export interface TenantHost {
  connect(tenant: Tenant, uri: unknown, handler: unknown, engine: unknown): number;
  /** A timer is due: queue a Timer event. */
  timerDue(tenant: Tenant, id: number): void;
  /** One output operation, as the runtime made it (wire.ts, `Op`); called during a call into the isolate. */
  output(tenant: Tenant, op: number, id: number, text: string): void;
  /** The runtime's dispatch loop is done (wire.ts, DISPATCHED): write out what the call made. */
  dispatched(tenant: Tenant): void;
  /** This host's name, as the tenant's sessions report it. */
  hostName(): string;
  /** The host's cluster has lost Redis (see `Tenant.clusterAway`). */
  clusterAway(): boolean;
}

const MAX_DELAY = 2 ** 31 - 1;

/** Where a call that did not finish was, read from the progress the runtime shares (host.ts, `progress`). */
export interface Stopped {
  /** Index in `lastBatch` of the event it was running, or -1. */
  at: number;
  /** The module whose code was loading, or null. */
  loading: string | null;
}

export class Tenant {
  readonly isolate: ivm.Isolate;
  private readonly context: ivm.Context;
  private readonly dispatchRef: ivm.Reference<(batch: Batch) => void>;
  private readonly defineRef: ivm.Reference<(name: string, factory: unknown, number: number) => void>;
  private readonly adoptRef: ivm.Reference<(list: string[]) => void>;
  private readonly heldRef: ivm.Reference<(run: number) => number>;
  private readonly cancelRef: ivm.Reference<(run: number) => void>;
  /** Shared with the runtime (wire.ts, `Progress`); outlive the isolate, so they can be read after a memory limit took it. */
  private readonly progress = new Int32Array(new SharedArrayBuffer(Progress.SLOTS * 4));
  private readonly outputBuffer = new SharedArrayBuffer(OUTPUT_BUFFER_BYTES);
  private readonly outputUnits = new Uint16Array(this.outputBuffer);
  private readonly outputBytes = Buffer.from(this.outputBuffer);
  /** Module names by the number the runtime puts in `progress` while one loads. */
  private readonly moduleNames: string[] = [];
  private readonly timers = new Map<number, NodeJS.Timeout>();
  /** Timers whose firing waits in `batch` for the next call. */
  private readonly timersWaiting = new Set<number>();
  /** Events waiting for the next dispatch. */
  batch: Batch = [];
  /** The events of the last dispatch, to find the one a stopped call was running. */
  lastBatch: Batch = [];

  constructor(
    readonly name: string,
    runtime: string,
    private readonly limits: TenantLimits,
    private readonly host: TenantHost,
  ) {
    this.progress[Progress.Event] = -1;
    this.clusterAway(host.clusterAway());
    this.isolate = new ivm.Isolate({ memoryLimit: limits.memoryMiB });
    try {
      this.context = this.isolate.createContextSync();
      installBridge(this.context, this, limits, host.hostName(), this.progress.buffer as SharedArrayBuffer, this.outputBuffer);
      this.isolate.compileScriptSync(runtime, { filename: 'islet:runtime' }).runSync(this.context, { release: true, ...this.budget });
      const api = this.context.global.getSync('__isletRuntime', { reference: true }) as ivm.Reference<Record<string, unknown>>;
      this.dispatchRef = api.getSync('dispatch', { reference: true }) as ivm.Reference<(batch: Batch) => void>;
      this.defineRef = api.getSync('define', { reference: true }) as ivm.Reference<(n: string, f: unknown, number: number) => void>;
      this.adoptRef = api.getSync('adopt', { reference: true }) as ivm.Reference<(list: string[]) => void>;
      this.heldRef = api.getSync('held', { reference: true }) as ivm.Reference<(run: number) => number>;
      this.cancelRef = api.getSync('cancel', { reference: true }) as ivm.Reference<(run: number) => void>;
      api.release();
      removeBootstrapGlobals(this.context);
    } catch (error) {
      this.isolate.dispose();
      throw error;
    }
  }

  /**
   * Every call into the isolate has the same budget: the runtime's own
   * functions too, since tenant code that ran before may have left the
   * isolate in any state. Nothing is copied out of a call: output leaves
   * through the output callback, as primitives the runtime made.
   */
  private get budget(): { timeout: number } {
    return { timeout: this.limits.callTimeoutMs };
  }

  /** Tells the runtime, through the memory it shares, whether calls to other hosts of the cluster would be lost. */
  clusterAway(away: boolean): void {
    this.progress[Progress.ClusterAway] = away ? 1 : 0;
  }

  /** Evaluates a bundle's module wrapper and defines it under its name. Throws on a compile error or a stopped call. */
  define(module: BundledCode): void {
    // The wrapper sits on a line of its own, and lineOffset -1 keeps the
    // bundle's own line numbers, which its source map refers to.
    const script = this.isolate.compileScriptSync(`(function (exports, require, module) {\n${module.code}\n})`, {
      filename: module.file,
      lineOffset: -1,
    });
    const factory = script.runSync(this.context, { reference: true, release: true, ...this.budget });
    try {
      this.defineRef.applySync(undefined, [module.name, factory.derefInto(), this.numberOf(module.name)], this.budget);
    } finally {
      factory.release();
    }
  }

  /** Marks a module that failed to load, so its events are skipped. */
  defineFailed(name: string): void {
    this.defineRef.applySync(undefined, [name, null, this.numberOf(name)], this.budget);
  }

  private numberOf(name: string): number {
    const known = this.moduleNames.indexOf(name);
    return known >= 0 ? known : this.moduleNames.push(name) - 1;
  }

  adopt(list: string[]): void {
    this.adoptRef.applySync(undefined, [list], { arguments: { copy: true }, ...this.budget });
  }

  /** What script run `run` still holds (its timers and clients; runtime's run-holds.ts): 0 when it is over. No tenant code runs. */
  held(run: number): number {
    const held = this.heldRef.applySync(undefined, [run], this.budget);
    return typeof held === 'number' ? held : 0;
  }

  /** Cuts script run `run`: its timers are cleared and its clients closed, unless another run holds them too. No tenant code runs. */
  cancel(run: number): void {
    // A Run event still waiting in the batch is taken out: that script never runs.
    for (let i = 0; i + 2 < this.batch.length; i += 3) {
      if (this.batch[i] === Event.Run && this.batch[i + 1] === run) {
        this.batch.splice(i, 3);
        break;
      }
    }
    this.cancelRef.applySync(undefined, [run], this.budget);
    this.takeShared();
  }

  /** Runs the queued events in one call; their output reaches `TenantHost.output` in order, whether or not the call finishes. */
  dispatch(): void {
    const batch = this.batch;
    this.batch = [];
    this.lastBatch = batch;
    this.timersWaiting.clear();
    try {
      this.dispatchRef.applySync(undefined, [batch], { arguments: { copy: true }, ...this.budget });
    } finally {
      this.takeShared();
    }
  }

  /** The runtime's `createWebsocket`. */
  connect(uri: unknown, handler: unknown, engine: unknown): number {
    return this.host.connect(this, uri, handler, engine);
  }

  /** The runtime's output callback: what the shared buffer holds goes first, then this operation. */
  output(op: unknown, id: unknown, text: unknown): void {
    this.takeShared();
    if (op === DISPATCHED) {
      this.host.dispatched(this);
      return;
    }
    // The runtime passes primitives it made; anything else is dropped, not trusted.
    if (op !== TAKE_SHARED && typeof op === 'number' && typeof id === 'number' && typeof text === 'string') this.host.output(this, op, id, text);
  }

  /** Hands on, in order, the operations the runtime wrote into the shared output buffer, and empties it. */
  private takeShared(): void {
    const end = Math.min(this.progress[Progress.Output]!, this.outputUnits.length);
    if (end <= 0) return;
    this.progress[Progress.Output] = 0;
    const units = this.outputUnits;
    for (let at = 0; at + OUTPUT_HEADER <= end; ) {
      const text = at + OUTPUT_HEADER;
      const next = text + units[at + 4]!;
      if (next > end) break;
      const id = units[at + 1]! + units[at + 2]! * 0x10000 + units[at + 3]! * 0x100000000;
      this.host.output(this, units[at]!, id, this.outputBytes.toString('utf16le', text * 2, next * 2));
      at = next;
    }
  }

  /** CPU time the isolate has used, in ns (0 once it is gone). */
  cpuNs(): bigint {
    try {
      return this.isolate.cpuTime;
    } catch {
      return 0n;
    }
  }

  /** After a call that did not finish (stopped, or its isolate lost): where it was. Resets the progress for the next call. */
  takeStopped(): Stopped {
    const at = this.progress[Progress.Event]!;
    const loading = this.progress[Progress.Loading]! > 0 ? (this.moduleNames[this.progress[Progress.Loading]! - 1] ?? null) : null;
    this.progress[Progress.Event] = -1;
    this.progress[Progress.Loading] = 0;
    return { at, loading };
  }

  setTimer(id: number, ms: number, repeat: boolean): void {
    if (this.timers.has(id)) return;
    if (this.timers.size >= this.limits.maxTimers) {
      throw new Error(`ISLET_ERR_LIMIT_TIMERS: tenant "${this.name}" already has ${this.limits.maxTimers} timers (limit maxTimers)`);
    }
    const delay = Math.min(Math.max(Number.isFinite(ms) ? ms : 0, repeat ? 1 : 0), MAX_DELAY);
    const due = (): void => {
      if (!repeat) this.timers.delete(id);
      // An interval whose last firing still waits for its call is not queued again: firings do not pile up
      // while the tenant waits (25 of them at once made one call of a flooding timer 32 MiB).
      if (this.timersWaiting.has(id)) return;
      this.timersWaiting.add(id);
      this.host.timerDue(this, id);
    };
    this.timers.set(id, repeat ? setInterval(due, delay) : setTimeout(due, delay));
  }

  clearTimer(id: number): void {
    const timer = this.timers.get(id);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.timers.delete(id);
  }

  dispose(): void {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.dispatchRef.release();
    this.defineRef.release();
    this.adoptRef.release();
    this.heldRef.release();
    this.cancelRef.release();
    if (!this.isolate.isDisposed) this.isolate.dispose();
  }
}

// The boundary: these globals are all that the worker puts into an isolate,
// and the sandbox runtime captures them before tenant code runs. Only
// primitives cross through them; sockets and ivm objects never do.
const BOOTSTRAP_GLOBALS = [
  '__isletConfig',
  '__isletConnect',
  '__isletSetTimer',
  '__isletClearTimer',
  '__isletOutput',
  '__isletOutputBuffer',
  '__isletProgress',
  '__isletRuntime',
] as const;

function installBridge(context: ivm.Context, tenant: Tenant, limits: TenantLimits, hostName: string, progress: SharedArrayBuffer, output: SharedArrayBuffer): void {
  const global = context.global;
  global.setSync(
    '__isletConfig',
    JSON.stringify({ tenant: tenant.name, host: hostName, maxMessageBytes: limits.maxMessageBytes, settleTimeoutMs: limits.settleTimeoutMs, maxOutputBytes: limits.maxOutputBytes, wasmMemoryMiB: limits.wasmMemoryMiB }),
  );
  global.setSync(
    '__isletConnect',
    new ivm.Callback(refusalsAsValues((uri: unknown, handler: unknown, engine: unknown) => tenant.connect(uri, handler, engine))),
  );
  global.setSync(
    '__isletSetTimer',
    new ivm.Callback(refusalsAsValues((id: unknown, ms: unknown, repeat: unknown) => tenant.setTimer(Number(id), Number(ms), repeat === true))),
  );
  global.setSync('__isletClearTimer', new ivm.Callback((id: unknown) => tenant.clearTimer(Number(id))));
  global.setSync('__isletOutput', new ivm.Callback((op: unknown, id: unknown, text: unknown) => tenant.output(op, id, text)));
  // A SharedArrayBuffer is shared, not copied: the worker reads what the runtime wrote even after the isolate is gone.
  global.setSync('__isletProgress', new ivm.ExternalCopy(progress).copyInto({ release: true }));
  global.setSync('__isletOutputBuffer', new ivm.ExternalCopy(output).copyInto({ release: true }));
}

/**
 * A host function whose errors come back as `{isletError: message}` values;
 * the sandbox throws them in the tenant's own stack. Thrown, they would carry
 * this process's stack frames (file paths of the host) into the isolate.
 */
function refusalsAsValues<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R | { isletError: string } {
  return (...args) => {
    try {
      return fn(...args);
    } catch (error) {
      return { isletError: error instanceof Error ? error.message : String(error) };
    }
  };
}

function removeBootstrapGlobals(context: ivm.Context): void {
  for (const name of BOOTSTRAP_GLOBALS) context.global.deleteSync(name);
}
