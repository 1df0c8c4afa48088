// The framing of the pipe between the host and a sandbox worker (the
// child's fd 3): binary frames `[kind u8][id u48][length u32][bytes]` (a socket id
// is 48 bits: a cluster host's slot above a 32-bit id of its own). Text
// frames carry socket payloads as raw UTF-8 so the host never decodes them;
// a control frame carries one JSON message of protocol.ts. Frames are
// appended to one buffer and flushed once per event-loop turn: one write per
// message costs too much (see DESIGN.md, "The host↔worker channel").
import type { Duplex } from 'node:stream';
import type { HostToWorker, WorkerToHost } from './protocol.js';

export const FrameKind = {
  /** A JSON control message; the id is unused. */
  Control: 0,
  /** host → worker: a text message arrived on socket `id`. */
  TextIn: 1,
  /** worker → host: send this text on socket `id`. */
  TextOut: 2,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

const HEADER = 11;
/** Where a frame's length sits in its header. */
const LENGTH_AT = 7;
/** Written buffers a FrameWriter keeps for reuse (more are only needed while the peer is not reading), and their largest size. */
const MAX_SPARE = 4;
const MAX_SPARE_BYTES = 1024 * 1024;

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
    b.writeUIntLE(id, at + 1, 6);
    b.writeUInt32LE(size, at + LENGTH_AT);
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
        this.length = this.take(HEADER, false).readUInt32LE(LENGTH_AT);
      }
      if (this.buffered < HEADER + this.length) break;
      const frame = this.take(HEADER + this.length, true);
      this.length = -1;
      this.onFrame(frame[0] as FrameKind, frame.readUIntLE(1, 6), frame.subarray(HEADER));
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
      const size = data.readUInt32LE(at + LENGTH_AT);
      if (data.length - at < HEADER + size) break;
      this.onFrame(data[at] as FrameKind, data.readUIntLE(at + 1, 6), data.subarray(at + HEADER, at + HEADER + size));
      at += HEADER + size;
    }
    if (at < data.length) {
      const rest = data.subarray(at);
      this.pending = [rest];
      this.buffered = rest.length;
      this.length = rest.length >= HEADER ? rest.readUInt32LE(LENGTH_AT) : -1;
    }
  }
}
