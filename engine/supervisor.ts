// Sandbox worker processes, as the host sees them. Each worker is a child
// node process (with --no-node-snapshot, which isolated-vm needs) reached
// through one duplex pipe on its fd 3. A worker that dies is started again by
// the engine; what the host sends meanwhile waits here and goes out, in
// order, once the new process is ready. So do the frames the dead process had
// not started on: the host keeps every frame it sent until the worker's turn
// that took it is over (`idle`), and learns from the worker's progress log
// which of them a dead process had taken (`ProgressLog`).
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import {
  decodeWorkerMessage,
  FrameKind,
  FrameReader,
  FrameWriter,
  ProgressLog,
  type HostToWorker,
  type WorkerToHost,
} from '../bridge/protocol.js';

const WORKER_ENTRY = fileURLToPath(new URL('../bridge/main.js', import.meta.url));
const WORKER_ARGS = [
  // isolated-vm needs it.
  '--no-node-snapshot',
  // A small young generation keeps the worker's RSS down under load (the
  // strings copied in and out of isolates are short-lived): 98 -> 76 MB peak
  // at 4 KiB echo, same CPU (measured with the bench's echo load).
  '--max-semi-space-size=2',
  // Helper threads for garbage collection only contend with the host and the
  // worker's own main thread for the few cores such a machine has: about 3%
  // more echo throughput without them, measured A/B at 64 B and 4 KiB.
  '--single-threaded-gc',
  WORKER_ENTRY,
];

export interface WorkerListener {
  control(worker: SandboxWorker, message: WorkerToHost): void;
  text(worker: SandboxWorker, id: number, payload: Buffer): void;
  /** Every frame of one chunk from the worker has been handled. */
  chunkDone(): void;
  /** The process is ready; send what it must know before anything queued. */
  ready(worker: SandboxWorker): void;
  /** A frame from the worker was malformed, or handling it threw: it was dropped. */
  failed(worker: SandboxWorker, error: Error): void;
  /**
   * The process ended. `running`: the tenant whose code was running then, if
   * any; `why`: how it ended, in words ("signal SIGKILL", or that the
   * watchdog killed it).
   */
  exit(worker: SandboxWorker, exit: { pid: number | undefined; code: number | null; signal: NodeJS.Signals | null; running: string | null; why: string }): void;
}

type Frame = (writer: FrameWriter) => void;

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
/**
 * Inbound text bytes a worker may have waiting (sent or not, not yet taken)
 * before the sockets sending more are paused. A busy turn is what makes them
 * wait: far more than the echo benchmark ever has (about 0.5 MiB).
 */
const MAX_BACKLOG_BYTES = 8 * 1024 * 1024;

/** How often the watchdog looks at each worker. */
const LIVENESS_CHECK_MS = 500;

/** A socket whose reading can stop and start again (a ws WebSocket). */
export interface Pausable {
  pause(): void;
  resume(): void;
}

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

/**
 * Frames sent to the current process and not yet done with, per tenant
 * (tenant '' for frames of no tenant). When the process dies during a turn,
 * the frames each call of that turn took are dropped (`ack`); the other
 * tenants' frames of the same turn are still here to be sent again.
 */
class Unacknowledged {
  private readonly queues = new Map<string, FrameQueue>();
  private readonly bytesKept = new ReplayBytes();

  add(seq: number, tenant: string, frame: Frame): void {
    this.keep(tenant, { seq, frame, id: 0, at: this.bytesKept.next, length: 0 });
  }

  addText(seq: number, tenant: string, id: number, payload: Buffer): void {
    this.keep(tenant, { seq, frame: null, id, at: this.bytesKept.add(payload), length: payload.length });
  }

  private keep(tenant: string, kept: Kept): void {
    let queue = this.queues.get(tenant);
    if (queue === undefined) this.queues.set(tenant, (queue = { frames: [], head: 0 }));
    queue.frames.push(kept);
  }

  /** The worker started on `tenant`'s frames up to `seq` (and had taken every frame of no tenant). */
  ack(tenant: string, seq: number): void {
    this.drop(tenant, seq);
    this.drop('', seq);
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
  private drop(name: string, seq: number): Kept | null {
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
  take(): { tenant: string; frame: Frame }[] {
    const rest = [...this.queues].flatMap(([tenant, q]) => q.frames.slice(q.head).map((kept) => ({ tenant, kept })));
    this.queues.clear();
    const frames = rest
      .sort((a, b) => a.kept.seq - b.kept.seq)
      .map(({ tenant, kept }) => {
        if (kept.frame !== null) return { tenant, frame: kept.frame };
        const payload = this.bytesKept.copy(kept.at, kept.length);
        return { tenant, frame: (writer: FrameWriter) => void writer.text(FrameKind.TextIn, kept.id, payload) };
      });
    this.bytesKept.release(this.bytesKept.next);
    return frames;
  }
}

/** The file behind a worker's progress log; unlinked at once, so nothing is left behind. */
function openProgressFile(): number {
  const file = path.join(os.tmpdir(), `islet-progress-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const fd = openSync(file, 'wx+', 0o600);
  unlinkSync(file);
  return fd;
}

export class SandboxWorker {
  /** Tenants placed on this worker; they stay here across restarts. */
  readonly tenants = new Set<string>();
  /** Bundles this process has been sent, per tenant: module name → bundle file. */
  readonly modules = new Map<string, Map<string, string>>();
  private child: ChildProcess | null = null;
  private writer: FrameWriter | null = null;
  private isReady = false;
  /** Frames waiting for a process to be ready; `tenant` null: not kept for replay once written (a script run). */
  private queued: { tenant: string | null; frame: Frame }[] = [];
  /** Calls into isolates the process had started when it last ended a turn. */
  private callsAtIdle = 0;
  /** Frames written to the current process; the worker counts the same. */
  private written = 0;
  /** Frames flushed to the current process, and how many of them it has said it took. */
  private flushed = 0;
  private taken = 0;
  private readonly unacknowledged = new Unacknowledged();
  private readonly heldBack = new Set<Pausable>();
  private exited: Promise<void> = Promise.resolve();
  /** The watchdog: when the process last showed progress (an `idle`, or a new call started), and the calls it had started then. */
  private lastProgress = 0;
  private lastCalls = 0;
  private lastSteps = 0;
  private killedBecause: string | null = null;

  /** `livenessMs`: how long the process may show no progress while it has work, before the watchdog kills it. */
  constructor(
    readonly index: number,
    private readonly init: () => HostToWorker,
    private readonly listener: WorkerListener,
    private readonly livenessMs: number,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the process; resolves once it has taken its init message. */
  start(): Promise<void> {
    const progress = openProgressFile();
    const child = spawn(process.execPath, WORKER_ARGS, {
      // fd 3: the frame pipe; fd 4 (PROGRESS_FD): the progress log.
      stdio: ['ignore', 'inherit', 'inherit', 'pipe', progress],
    });
    this.child = child;
    this.callsAtIdle = 0;
    this.flushed = 0;
    this.taken = 0;
    this.lastProgress = Date.now();
    this.lastCalls = 0;
    this.lastSteps = 0;
    this.killedBecause = null;
    const watchdog = setInterval(() => this.watch(child, progress), LIVENESS_CHECK_MS).unref();
    const pipe = child.stdio[3] as Duplex;
    const writer = new FrameWriter(pipe, () => this.mayFlush());
    this.writer = writer;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let started: () => void;
    const whenReady = new Promise<void>((resolve) => (started = resolve));
    const reader = new FrameReader((kind, id, payload) => {
      try {
        this.onFrame(kind, id, payload, writer, started);
      } catch (error) {
        // One bad or failing message costs that message, never the host.
        this.listener.failed(this, error instanceof Error ? error : new Error(String(error)));
      }
    });
    pipe.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      try {
        this.listener.chunkDone();
      } catch (error) {
        this.listener.failed(this, error as Error);
      }
    });
    // A dying worker's pipe errors (EPIPE, ECONNRESET); its exit is what counts.
    pipe.on('error', () => {});
    child.once('exit', (code, signal) => {
      clearInterval(watchdog);
      const started = ProgressLog.read(progress, this.callsAtIdle);
      closeSync(progress);
      if (this.child !== child) return;
      // The calls of the turn the process died in: what they took is done with,
      // and the last one's tenant was running.
      for (const call of started) this.unacknowledged.ack(call.tenant, call.seq);
      this.child = null;
      this.writer = null;
      this.isReady = false;
      this.modules.clear();
      // What the dead process had not started on goes to the next one first.
      this.queued = [...this.unacknowledged.take(), ...this.queued];
      this.written = 0;
      this.letGo();
      const why = this.killedBecause ?? (signal !== null ? `signal ${signal}` : `code ${code}`);
      this.listener.exit(this, { pid: child.pid, code, signal, running: started.at(-1)?.tenant ?? null, why });
    });
    this.writeNow((w) => w.control(this.init()), null);
    return whenReady;
  }

  /** One frame from the current process: its own bookkeeping (`ready`, `idle`), or for the listener. */
  private onFrame(kind: number, id: number, payload: Buffer, writer: FrameWriter, started: () => void): void {
    if (kind === FrameKind.TextOut) {
      this.listener.text(this, id, payload);
      return;
    }
    if (kind !== FrameKind.Control) throw new Error(`unknown frame kind ${kind} from worker ${this.index}`);
    const message = decodeWorkerMessage(payload);
    if (message.t === 'ready') {
      this.isReady = true;
      this.listener.ready(this);
      const queued = this.queued;
      this.queued = [];
      for (const { tenant, frame } of queued) this.writeNow(frame, tenant);
      started();
      return;
    }
    if (message.t === 'idle') {
      this.lastProgress = Date.now();
      this.unacknowledged.done(message.seq);
      this.callsAtIdle = message.calls;
      this.taken = message.seq;
      writer.flush();
      if (this.unacknowledged.bytes <= MAX_BACKLOG_BYTES / 2) this.letGo();
      return;
    }
    this.listener.control(this, message);
  }

  /**
   * The second layer under the per-call budget: a process that has work and
   * shows no progress (no `idle`, no new call in its progress log) for
   * `livenessMs` is stuck where no budget reaches (a builtin that does not
   * check for interrupts, a copy, its own code) and is killed; its exit is
   * handled like any death, blaming the tenant whose call was running. A
   * process with nothing in flight is pinged, so it has something to answer.
   */
  private watch(child: ChildProcess, progress: number): void {
    if (this.child !== child || !this.isReady || this.killedBecause !== null) return;
    const now = Date.now();
    if (this.taken >= this.flushed) {
      this.lastProgress = now;
      this.writeNow((writer) => writer.control({ t: 'ping' }), null);
      return;
    }
    const calls = ProgressLog.read(progress, this.callsAtIdle).at(-1)?.calls ?? this.callsAtIdle;
    const steps = ProgressLog.steps(progress);
    if (calls !== this.lastCalls || steps !== this.lastSteps) {
      this.lastCalls = calls;
      this.lastSteps = steps;
      this.lastProgress = now;
      return;
    }
    if (now - this.lastProgress <= this.livenessMs) return;
    this.killedBecause = `it stopped answering for ${now - this.lastProgress} ms (the watchdog's bound is ${this.livenessMs} ms) and was killed`;
    child.kill('SIGKILL');
  }

  /**
   * Sends a control message concerning `tenant` ('' for none). A script run
   * waits for a starting process like everything else, but is not sent again
   * if the process that took it dies (the engine fails the run then);
   * everything else is.
   */
  send(message: HostToWorker, tenant: string): void {
    const frame: Frame = (writer) => writer.control(message);
    if (message.t !== 'run') this.write(frame, tenant);
    else if (this.isReady && this.writer !== null) this.writeNow(frame, null);
    else this.queued.push({ tenant: null, frame });
  }

  /** A text message for `tenant`'s socket `id`. */
  text(id: number, payload: Buffer, tenant: string): void {
    if (this.isReady && this.writer !== null) {
      const seq = ++this.written;
      this.unacknowledged.addText(seq, tenant, id, payload);
      this.writer.text(FrameKind.TextIn, id, payload);
    } else {
      // The process is starting again: a rare wait, the payload may be held.
      this.queued.push({ tenant, frame: (writer) => void writer.text(FrameKind.TextIn, id, payload) });
    }
  }

  /**
   * One batch in flight: while the process has not taken the last batch (it
   * is busy in a turn), frames gather here and go in one write when it has.
   * Fewer, larger writes wake it less often and give it larger batches: about
   * 10% more echo throughput at 64 B (A/B, 3 rounds), none lost when idle.
   */
  private mayFlush(): boolean {
    if (this.taken < this.flushed) return false;
    this.flushed = this.written;
    return true;
  }

  /** Has more inbound text waited for this process than it should? Then `holdBack` the source. */
  get backlogged(): boolean {
    return this.unacknowledged.bytes > MAX_BACKLOG_BYTES;
  }

  /**
   * Stops reading from `source` until this process has caught up to half the
   * limit: a client flooding a busy tenant is slowed by TCP instead of
   * filling the host's memory.
   */
  holdBack(source: Pausable): void {
    source.pause();
    this.heldBack.add(source);
  }

  private letGo(): void {
    for (const source of this.heldBack) source.resume();
    this.heldBack.clear();
  }

  /** Sends now, ahead of anything queued; only from `WorkerListener.ready` (sent again at each start). */
  sendFirst(message: HostToWorker): void {
    this.writeNow((writer) => writer.control(message), null);
  }

  /** `replayFor`: the tenant whose frame this is, kept until acknowledged. */
  private write(frame: Frame, replayFor: string): void {
    if (this.isReady && this.writer !== null) this.writeNow(frame, replayFor);
    else this.queued.push({ tenant: replayFor, frame });
  }

  private writeNow(frame: Frame, replayFor: string | null): void {
    if (this.writer === null) return;
    const seq = ++this.written;
    if (replayFor !== null) this.unacknowledged.add(seq, replayFor, frame);
    frame(this.writer);
  }

  /** Stops the process for good and waits for it to exit. */
  async stop(): Promise<void> {
    this.queued = [];
    if (this.child !== null) {
      this.writer?.flush();
      this.child.kill('SIGKILL');
    }
    await this.exited;
  }
}
