// What the host keeps of the frames it sent a sandbox worker until the worker
// is done with them: if the process dies, what it had not taken goes to the
// next one, in order (supervisor.ts decides when).
import { FrameKind, type FrameWriter } from '../bridge/frames.js';

/** A frame, as a write into the channel. */
export type Frame = (writer: FrameWriter) => void;

/**
 * A frame kept until the process is done with it. A text frame's payload is
 * a copy in `ReplayBytes` (`at`, `length`), not the buffer ws handed us:
 * holding that view kept ws's whole read chunk alive across collections, and
 * under a 4 KiB echo load the host's peak RSS was about 27 MB higher.
 */
interface Kept {
  seq: number;
  /** A control frame; null for a text frame. */
  frame: Frame | null;
  id: number;
  /** Where the payload starts in `ReplayBytes`; for a control frame, where the next one would. */
  at: number;
  length: number;
}

/** The first size of the buffer of kept payloads. */
const REPLAY_BYTES = 1024 * 1024;
/** One tenant's frames, oldest first. */
interface FrameQueue {
  frames: Kept[];
  head: number;
}

/**
 * The payloads of kept text frames, appended in order into one buffer that is
 * reused: positions only grow, and what lies before the oldest kept frame is
 * dropped when the space is needed.
 */
class ReplayBytes {
  private buffer = Buffer.allocUnsafe(REPLAY_BYTES);
  /** Position of buffer[0], of the oldest byte still needed, and of the next byte. */
  private shift = 0;
  private start = 0;
  private end = 0;

  add(payload: Buffer): number {
    if (this.end + payload.length - this.shift > this.buffer.length) this.makeRoom(payload.length);
    payload.copy(this.buffer, this.end - this.shift);
    const at = this.end;
    this.end += payload.length;
    return at;
  }

  /**
   * Moves the bytes still needed to the front. The buffer stays unless it is
   * too small for them and `extra`, or four times too big after a burst; a
   * new one is twice their size (and not below the first size).
   */
  private makeRoom(extra: number): void {
    const wanted = Math.max(REPLAY_BYTES, 2 * (this.end - this.start + extra));
    const next = wanted > this.buffer.length || wanted * 4 <= this.buffer.length ? Buffer.allocUnsafe(wanted) : this.buffer;
    this.buffer.copy(next, 0, this.start - this.shift, this.end - this.shift);
    this.buffer = next;
    this.shift = this.start;
  }

  get next(): number {
    return this.end;
  }

  /** Bytes still kept. */
  get size(): number {
    return this.end - this.start;
  }

  /** A copy: the buffer is written over once the bytes are released. */
  copy(at: number, length: number): Buffer {
    return Buffer.from(this.buffer.subarray(at - this.shift, at - this.shift + length));
  }

  /** Nothing before `position` is needed any more. */
  release(position: number): void {
    this.start = position;
  }
}

/** Whose a frame is: a tenant's, or the worker's own (stats, id blocks), which any call's start acknowledges. */
export const WORKER_FRAME: unique symbol = Symbol('a frame of no tenant');
export type FrameOwner = string | typeof WORKER_FRAME;

/**
 * Frames sent to the current process and not yet done with, per owner. When the process dies during a turn,
 * the frames each call of that turn took are dropped (`ack`); the other
 * tenants' frames of the same turn are still here to be sent again.
 */
export class Unacknowledged {
  private readonly queues = new Map<FrameOwner, FrameQueue>();
  private readonly bytesKept = new ReplayBytes();

  add(seq: number, owner: FrameOwner, frame: Frame): void {
    this.keep(owner, { seq, frame, id: 0, at: this.bytesKept.next, length: 0 });
  }

  addText(seq: number, tenant: string, id: number, payload: Buffer): void {
    this.keep(tenant, { seq, frame: null, id, at: this.bytesKept.add(payload), length: payload.length });
  }

  private keep(owner: FrameOwner, kept: Kept): void {
    let queue = this.queues.get(owner);
    if (queue === undefined) this.queues.set(owner, (queue = { frames: [], head: 0 }));
    queue.frames.push(kept);
  }

  /** The worker started on `tenant`'s frames up to `seq` (and had taken every frame of no tenant). */
  ack(tenant: string, seq: number): void {
    this.drop(tenant, seq);
    this.drop(WORKER_FRAME, seq);
  }

  /** A turn is over: every frame up to `seq` is done with. */
  done(seq: number): void {
    let oldest = this.bytesKept.next;
    for (const name of this.queues.keys()) {
      const head = this.drop(name, seq);
      if (head !== null && head.at < oldest) oldest = head.at;
    }
    this.bytesKept.release(oldest);
  }

  /** Drops `name`'s frames up to `seq`; returns the oldest one left. */
  private drop(name: FrameOwner, seq: number): Kept | null {
    const queue = this.queues.get(name);
    if (queue === undefined) return null;
    while (queue.head < queue.frames.length && queue.frames[queue.head]!.seq <= seq) queue.head++;
    if (queue.head === queue.frames.length) {
      this.queues.delete(name);
      return null;
    }
    if (queue.head > 1024 && queue.head * 2 > queue.frames.length) {
      queue.frames = queue.frames.slice(queue.head);
      queue.head = 0;
    }
    return queue.frames[queue.head]!;
  }

  /** Payload bytes the process has not taken yet. */
  get bytes(): number {
    return this.bytesKept.size;
  }

  /** Everything not acknowledged, in the order it was sent. */
  take(): { replayFor: FrameOwner; frame: Frame }[] {
    const rest: { replayFor: FrameOwner; kept: Kept }[] = [...this.queues].flatMap(([replayFor, q]) => q.frames.slice(q.head).map((kept) => ({ replayFor, kept })));
    this.queues.clear();
    const frames: { replayFor: FrameOwner; frame: Frame }[] = rest
      .sort((a, b) => a.kept.seq - b.kept.seq)
      .map(({ replayFor, kept }): { replayFor: FrameOwner; frame: Frame } => {
        if (kept.frame !== null) return { replayFor, frame: kept.frame };
        const payload = this.bytesKept.copy(kept.at, kept.length);
        return { replayFor, frame: (writer: FrameWriter) => void writer.text(FrameKind.TextIn, kept.id, payload) };
      });
    this.bytesKept.release(this.bytesKept.next);
    return frames;
  }
}
