// The wire between the host and a sandbox worker: one duplex pipe (the
// child's fd 3) carrying binary frames `[kind u8][id u32][length u32][bytes]`.
// Text frames carry socket payloads as raw UTF-8 so the host never decodes
// them; everything else is a JSON control message. Frames are appended to one
// buffer and flushed once per event-loop turn: one write per message costs
// too much (see DESIGN.md, "The host↔worker channel"). What a worker is
// doing is also written where the host reads it after a death (progress-log.ts).
import type { Duplex } from 'node:stream';
import { LOG_LEVELS } from '../sandbox-api/wire.js';

export const FrameKind = {
  /** A JSON control message; the id is unused. */
  Control: 0,
  /** host → worker: a text message arrived on socket `id`. */
  TextIn: 1,
  /** worker → host: send this text on socket `id`. */
  TextOut: 2,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

const HEADER = 9;
/** Written buffers a FrameWriter keeps for reuse (more are only needed while the peer is not reading), and their largest size. */
const MAX_SPARE = 4;
const MAX_SPARE_BYTES = 1024 * 1024;

/** Per-tenant limits, set on the engine and enforced by the worker. */
export interface TenantLimits {
  /** Heap of one tenant isolate, in MiB. */
  memoryMiB: number;
  /** WebAssembly memory one tenant isolate may make over its lifetime, in MiB (each memory at its maximum size); 0: no WebAssembly. */
  wasmMemoryMiB: number;
  /** Wall-clock budget of one call into an isolate (a batch of events, a script run, a timer), in ms. */
  callTimeoutMs: number;
  /** How long a socket's next events wait for a handler's promise that does not settle, in ms. */
  settleTimeoutMs: number;
  /** Largest text message a tenant may send or receive, in bytes. */
  maxMessageBytes: number;
  /** Most outbound clients one tenant may have open at once. */
  maxClients: number;
  /** Most pending timers one tenant may have at once. */
  maxTimers: number;
  /** Most open sessions on one tenant's endpoints (host). */
  maxSessions: number;
  /** Bytes that may wait to be sent on one socket whose peer does not read (host). */
  maxQueuedBytes: number;
  /** Bytes that may wait to be sent on all of one tenant's sockets together (host). */
  maxTenantQueuedBytes: number;
  /** Output of one call into an isolate (sends, replies, console lines, errors), in UTF-16 units of text. */
  maxOutputBytes: number;
  /** Largest bundle of one script or handler, in bytes (host). */
  maxBundleBytes: number;
  /** Messages one session's peer may send a second, in bursts of as many; 0: no limit (host). */
  messagesPerSecond: number;
}

/** A socket as the worker's tenant sees it; sent again when a tenant is recreated. */
export interface SocketInfo {
  id: number;
  /** An outbound client a tenant made (`createWebsocket`), or a session on one of its endpoints. */
  kind: 'client' | 'session';
  tenant: string;
  handler: string;
  uri: string;
  engine: string;
  state: 'connecting' | 'open' | 'closing';
  /** The endpoint a session came in on; '' for a client. */
  endpoint: string;
  /** A session's `user` as `authorize` gave it, as JSON; '' for none (and for a client). */
  user: string;
}

/** One tenant's use of a worker, as `stats` reports it. */
export type TenantUsage = [tenant: string, callMs: number, heapBytes: number, timeouts: number, memoryLimits: number, cpuMs: number];

/** A bundled module or script, ready to evaluate in an isolate. */
export interface BundledCode {
  /** Module id (`project/path/name`) or script path relative to the root. */
  name: string;
  /** Name the isolate compiles it under; stack frames carry it, the host maps them back. */
  file: string;
  code: string;
}

export type HostToWorker =
  | { t: 'init'; runtime: string; root: string; limits: TenantLimits; ids: number }
  | { t: 'ids'; from: number }
  | { t: 'module'; tenant: string; module: BundledCode }
  | { t: 'moduleFailed'; tenant: string; handler: string }
  | { t: 'run'; tenant: string; run: number; script: BundledCode }
  | { t: 'adopt'; sockets: SocketInfo[] }
  | { t: 'accept'; socket: SocketInfo }
  | { t: 'stats'; ask: number }
  /** The watchdog's: answered, like any frame, with the next `idle`. */
  | { t: 'ping' }
  /** The tenant is quarantined: discard its isolate (its timers with it). */
  | { t: 'evict'; tenant: string }
  | { t: 'event'; id: number; event: 'open' | 'error' | 'close'; text?: string };

export type LogLevel = (typeof LOG_LEVELS)[number];

export type WorkerToHost =
  | { t: 'ready' }
  /**
   * The turn is over: the frames up to `seq` are done with (the host may
   * forget them), `calls` calls into isolates were started so far, and no
   * tenant code runs until the next turn (see `ProgressLog`).
   */
  /** A turn ended, having taken the frames up to `seq`; `pending`: socket events left for the next turn (a stopped call's put back). */
  | { t: 'idle'; seq: number; calls: number; pending: number }
  | { t: 'needIds' }
  | { t: 'connect'; socket: SocketInfo }
  | { t: 'close'; id: number; tenant: string; code?: number; reason?: string }
  /** `handler` and `socket`: the tenant's handler that ran, and for which of its sockets. */
  | { t: 'log'; tenant: string; level: LogLevel; text: string; handler?: string; socket?: number }
  | { t: 'runDone'; run: number; error?: string }
  /** `tenants`: per tenant on the worker, [name, ms its calls took, its isolate's heap bytes, calls stopped at callTimeoutMs, isolates lost to memoryMiB, CPU ms its isolates used]. */
  | { t: 'stats'; ask: number; isolates: number; sockets: number; tenants: TenantUsage[] }
  | { t: 'tenantError'; tenant: string; error: string }
  /** A call into the tenant ran `ms`, far past its budget (see the worker's `overran`). */
  | { t: 'overran'; tenant: string; ms: number }
  /** A handler module (bundle `file`) failed while it loaded; it is not run again. */
  | { t: 'moduleFailed'; tenant: string; module: string; file: string; error: string };

type FieldType = 'number' | 'string' | 'client' | 'level' | 'usage' | 'number?' | 'string?';

/** The fields of every message a worker may send, by type: what the host checks before it acts. */
const WORKER_MESSAGES: Record<WorkerToHost['t'], Record<string, FieldType>> = {
  ready: {},
  idle: { seq: 'number', calls: 'number', pending: 'number' },
  needIds: {},
  connect: { socket: 'client' },
  close: { id: 'number', tenant: 'string', code: 'number?', reason: 'string?' },
  log: { tenant: 'string', level: 'level', text: 'string', handler: 'string?', socket: 'number?' },
  runDone: { run: 'number', error: 'string?' },
  stats: { ask: 'number', isolates: 'number', sockets: 'number', tenants: 'usage' },
  tenantError: { tenant: 'string', error: 'string' },
  moduleFailed: { tenant: 'string', module: 'string', file: 'string', error: 'string' },
  overran: { tenant: 'string', ms: 'number' },
};
const LEVELS: readonly string[] = LOG_LEVELS;
const SOCKET_FIELDS: Record<keyof SocketInfo, FieldType> = {
  id: 'number',
  kind: 'string',
  tenant: 'string',
  handler: 'string',
  uri: 'string',
  engine: 'string',
  state: 'string',
  endpoint: 'string',
  user: 'string',
};

function fieldOk(value: unknown, type: FieldType): boolean {
  switch (type) {
    case 'number':
      return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
    case 'string':
      return typeof value === 'string';
    case 'number?':
      return value === undefined || fieldOk(value, 'number');
    case 'string?':
      return value === undefined || typeof value === 'string';
    case 'usage':
      return Array.isArray(value) && value.every((u) => Array.isArray(u) && u.length === 6 && typeof u[0] === 'string' && u.slice(1).every((n) => fieldOk(n, 'number')));
    case 'level':
      return typeof value === 'string' && LEVELS.includes(value);
    case 'client': {
      // The only socket a worker makes is a new client: a session is the host's to make.
      if (typeof value !== 'object' || value === null) return false;
      const socket = value as Record<string, unknown>;
      return socket.kind === 'client' && socket.endpoint === '' && socket.user === '' && Object.entries(SOCKET_FIELDS).every(([name, t]) => fieldOk(socket[name], t));
    }
  }
}

/**
 * A control message from a worker, checked field by field: a worker runs
 * tenant code, so the host trusts no shape it did not check. Throws on
 * anything else.
 */
export function decodeWorkerMessage(payload: Buffer): WorkerToHost {
  const message = JSON.parse(payload.toString('utf8')) as unknown;
  if (typeof message !== 'object' || message === null) throw new Error('a worker message must be a JSON object');
  const type = (message as { t?: unknown }).t;
  const fields = typeof type === 'string' && Object.hasOwn(WORKER_MESSAGES, type) ? WORKER_MESSAGES[type as WorkerToHost['t']] : null;
  if (fields === null) throw new Error(`unknown worker message type ${JSON.stringify(type)?.slice(0, 40)}`);
  for (const [name, fieldType] of Object.entries(fields)) {
    if (!fieldOk((message as Record<string, unknown>)[name], fieldType)) throw new Error(`worker message "${type as string}": bad field "${name}"`);
  }
  return message as WorkerToHost;
}

/** How many socket ids the host hands a worker at a time (see `needIds`). */
export const ID_BLOCK = 65536;

/** Appends frames to one buffer and writes it once per event-loop turn. */
export class FrameWriter {
  private buffer: Buffer = Buffer.allocUnsafe(64 * 1024);
  private length = 0;
  private scheduled = false;
  /**
   * Buffers the stream has finished writing, to fill again. A buffer handed to
   * the stream is the stream's until written; taking a fresh one for each
   * turn instead made about 1 GB/s of garbage under a 4 KiB echo load.
   */
  private readonly spare: Buffer[] = [];

  /** `mayFlush`: asked before each write; false holds the batch (and what follows) until `flush` is called again. */
  constructor(
    private readonly stream: Duplex,
    private readonly mayFlush: () => boolean = () => true,
  ) {}

  control(message: HostToWorker | WorkerToHost): void {
    this.text(FrameKind.Control, 0, JSON.stringify(message));
  }

  /** Bytes handed to the stream that it has not written out yet: the reader is behind by that much. */
  get unsent(): number {
    return this.stream.writableLength;
  }

  /** Calls `then` once, when the stream has written out what it holds. */
  whenDrained(then: () => void): void {
    this.stream.once('drain', then);
  }

  /**
   * Appends a text frame; returns the payload's size in bytes, or -1 if it is
   * over `limit` bytes (then nothing is written). A string is encoded once,
   * straight into the buffer, and measured by that encoding.
   */
  text(kind: FrameKind, id: number, payload: Buffer | string, limit = Infinity): number {
    // A string takes at most 3 bytes per UTF-16 unit, and at least 1.
    if (payload.length > limit) return -1;
    this.reserve(HEADER + (typeof payload === 'string' ? payload.length * 3 : payload.length));
    const b = this.buffer;
    const at = this.length;
    const size = typeof payload === 'string' ? b.write(payload, at + HEADER, 'utf8') : payload.copy(b, at + HEADER);
    if (size > limit) return -1;
    b[at] = kind;
    b.writeUInt32LE(id, at + 1);
    b.writeUInt32LE(size, at + 5);
    this.length = at + HEADER + size;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    return size;
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.buffer.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + extra));
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
  }

  flush(): void {
    this.scheduled = false;
    if (this.length === 0 || this.stream.destroyed || !this.mayFlush()) return;
    const written = this.buffer;
    this.stream.write(written.subarray(0, this.length), () => {
      if (this.spare.length < MAX_SPARE && written.length <= MAX_SPARE_BYTES) this.spare.push(written);
    });
    this.length = 0;
    this.buffer = this.spare.pop() ?? Buffer.allocUnsafe(Math.min(written.length, MAX_SPARE_BYTES));
  }
}

export type FrameHandler = (kind: FrameKind, id: number, payload: Buffer) => void;

/** Splits a byte stream into frames; a frame may span many chunks. */
export class FrameReader {
  // Bytes of a frame not yet complete, as received. Only such a frame is
  // copied (once, when its last byte arrives); every frame that lies within
  // one chunk is handed on as a view of that chunk.
  private pending: Buffer[] = [];
  private buffered = 0;
  /**
   * The pending frame's payload length, once its header is complete; -1 until
   * then. (Not folded into one "bytes needed" count: an empty frame needs
   * exactly its header, and would look like a header still to be read.)
   */
  private length = -1;

  constructor(private readonly onFrame: FrameHandler) {}

  push(chunk: Buffer): void {
    if (this.pending.length === 0) {
      this.parse(chunk);
      return;
    }
    this.pending.push(chunk);
    this.buffered += chunk.length;
    while (this.pending.length > 0) {
      if (this.length < 0) {
        if (this.buffered < HEADER) break;
        this.length = this.take(HEADER, false).readUInt32LE(5);
      }
      if (this.buffered < HEADER + this.length) break;
      const frame = this.take(HEADER + this.length, true);
      this.length = -1;
      this.onFrame(frame[0] as FrameKind, frame.readUInt32LE(1), frame.subarray(HEADER));
      // What is left lies within the last chunk: parse it in place.
      if (this.pending.length === 1) {
        const rest = this.pending[0]!;
        this.pending = [];
        this.buffered = 0;
        this.parse(rest);
      }
    }
  }

  /** Copies the first `n` pending bytes into one buffer; `consume` removes them. */
  private take(n: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let used = 0;
    while (filled < n) {
      const chunk = this.pending[used]!;
      const part = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, part);
      filled += part;
      if (part === chunk.length) used++;
      else if (consume) this.pending[used] = chunk.subarray(part);
    }
    if (consume) {
      this.pending.splice(0, used);
      this.buffered -= n;
    }
    return out;
  }

  /** Hands on every whole frame of `data` as a view; keeps an incomplete tail. */
  private parse(data: Buffer): void {
    let at = 0;
    while (data.length - at >= HEADER) {
      const size = data.readUInt32LE(at + 5);
      if (data.length - at < HEADER + size) break;
      this.onFrame(data[at] as FrameKind, data.readUInt32LE(at + 1), data.subarray(at + HEADER, at + HEADER + size));
      at += HEADER + size;
    }
    if (at < data.length) {
      const rest = data.subarray(at);
      this.pending = [rest];
      this.buffered = rest.length;
      this.length = rest.length >= HEADER ? rest.readUInt32LE(5) : -1;
    }
  }
}
