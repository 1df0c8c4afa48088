// The wire between the host and a sandbox worker: one duplex pipe (the
// child's fd 3) carrying binary frames `[kind u8][id u32][length u32][bytes]`.
// Text frames carry socket payloads as raw UTF-8 so the host never decodes
// them; everything else is a JSON control message. Frames are appended to one
// buffer and flushed once per event-loop turn: one write per message costs
// too much (see DESIGN.md, "The host↔worker channel").
import type { Duplex } from 'node:stream';

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

/** Per-tenant limits, set on the engine and enforced by the worker. */
export interface TenantLimits {
  /** Heap of one tenant isolate, in MiB. */
  memoryMiB: number;
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
  /** Largest bundle of one script or handler, in bytes (host). */
  maxBundleBytes: number;
}

/** A socket as the worker's tenant sees it; sent again when a tenant is recreated. */
export interface SocketInfo {
  id: number;
  tenant: string;
  handler: string;
  uri: string;
  engine: string;
  state: 'connecting' | 'open' | 'closing';
  /** The endpoint a session came in on; '' for an outbound client. */
  endpoint: string;
}

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
  | { t: 'event'; id: number; event: 'open' | 'error' | 'close'; text?: string };

export type LogLevel = 'log' | 'info' | 'warn' | 'error' | 'debug';

export type WorkerToHost =
  | { t: 'ready' }
  /**
   * The worker has received `seq` frames and starts on them now (the host may
   * forget them): it is about to call into `tenant`'s isolate.
   */
  | { t: 'ack'; seq: number; tenant: string }
  /** The turn is over: no tenant code runs until the next ack. */
  | { t: 'idle'; seq: number }
  | { t: 'needIds' }
  | { t: 'connect'; socket: SocketInfo }
  | { t: 'close'; id: number; tenant: string; code?: number; reason?: string }
  | { t: 'log'; tenant: string; level: LogLevel; text: string }
  | { t: 'runDone'; run: number; error?: string }
  | { t: 'stats'; ask: number; isolates: number; sockets: number }
  | { t: 'tenantError'; tenant: string; error: string };

/** How many socket ids the host hands a worker at a time (see `needIds`). */
export const ID_BLOCK = 65536;

/** Appends frames to one buffer and writes it once per event-loop turn. */
export class FrameWriter {
  private buffer = Buffer.allocUnsafe(64 * 1024);
  private length = 0;
  private scheduled = false;

  constructor(private readonly stream: Duplex) {}

  control(message: HostToWorker | WorkerToHost): void {
    this.frame(FrameKind.Control, 0, JSON.stringify(message));
  }

  text(kind: FrameKind, id: number, payload: Buffer | string): void {
    this.frame(kind, id, payload);
  }

  private frame(kind: FrameKind, id: number, payload: Buffer | string): void {
    const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
    this.reserve(HEADER + size);
    const b = this.buffer;
    let at = this.length;
    b[at] = kind;
    b.writeUInt32LE(id, at + 1);
    b.writeUInt32LE(size, at + 5);
    at += HEADER;
    if (typeof payload === 'string') b.write(payload, at, 'utf8');
    else payload.copy(b, at);
    this.length = at + size;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.buffer.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + extra));
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
  }

  flush(): void {
    this.scheduled = false;
    if (this.length === 0 || this.stream.destroyed) return;
    this.stream.write(this.buffer.subarray(0, this.length));
    this.length = 0;
    // Usually the pipe takes the whole batch at once and our buffer is free
    // again; if part of it is still queued, the stream holds the buffer, so
    // start a new one. No copy of the batch either way.
    if (this.stream.writableLength > 0) this.buffer = Buffer.allocUnsafe(this.buffer.length);
  }
}

export type FrameHandler = (kind: FrameKind, id: number, payload: Buffer) => void;

/** Splits a byte stream into frames; a frame may span many chunks. */
export class FrameReader {
  // Chunks not yet consumed; joined only once a whole frame has arrived, so a
  // large frame arriving in many chunks is copied once, not once per chunk.
  private chunks: Buffer[] = [];
  private buffered = 0;
  private needed = HEADER;

  constructor(private readonly onFrame: FrameHandler) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered < this.needed) return;
    const data = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    let at = 0;
    while (data.length - at >= HEADER) {
      const size = data.readUInt32LE(at + 5);
      if (data.length - at < HEADER + size) break;
      const kind = data[at] as FrameKind;
      const id = data.readUInt32LE(at + 1);
      this.onFrame(kind, id, data.subarray(at + HEADER, at + HEADER + size));
      at += HEADER + size;
    }
    const rest = data.subarray(at);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    this.needed = rest.length >= HEADER ? HEADER + rest.readUInt32LE(5) : HEADER;
  }
}
