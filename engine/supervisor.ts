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
import { FrameKind, FrameReader, FrameWriter } from '../bridge/frames.js';
import { decodeWorkerMessage, type HostToWorker, type WorkerToHost } from '../bridge/protocol.js';
import { ProgressLog } from '../bridge/progress-log.js';
import { type Frame, type FrameOwner, Unacknowledged } from './replay.js';

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
  /** Frames waiting for a process to be ready; `replayFor` null: not kept to send again once written (a script run). */
  private queued: { replayFor: FrameOwner | null; frame: Frame }[] = [];
  /** Calls into isolates the process had started when it last ended a turn. */
  private callsAtIdle = 0;
  /** Frames written to the current process; the worker counts the same. */
  private written = 0;
  /** Frames flushed to the current process, and how many of them it has said it took. */
  private flushed = 0;
  private taken = 0;
  private readonly unacknowledged = new Unacknowledged();
  private readonly heldBack = new Set<Pausable>();
  /** Socket events the last idle said were left for the next turn. */
  private pendingAtIdle = 0;
  /** `caughtUp` callers: each waits for an idle that covers `seq`. */
  private catchUps: { seq: number; done: () => void }[] = [];
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
      // fd 3: the frame pipe; fd 4 (PROGRESS_FD): the progress log. The host's
      // stdout and stderr are not passed on: a child given them sets them
      // blocking (libuv does, for fds 0-2), for the host too, whose output to a
      // slow reader would then hold it. What a worker prints on stderr (a V8
      // fatal error) is passed on by the host.
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', progress],
    });
    child.stderr!.pipe(process.stderr, { end: false });
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
      for (const c of this.catchUps.splice(0)) c.done();
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
      for (const { replayFor, frame } of queued) this.writeNow(frame, replayFor);
      started();
      return;
    }
    if (message.t === 'idle') {
      this.lastProgress = Date.now();
      this.unacknowledged.done(message.seq);
      this.callsAtIdle = message.calls;
      this.taken = message.seq;
      this.pendingAtIdle = message.pending;
      if (message.pending === 0) this.catchUps = this.catchUps.filter((c) => (c.seq <= message.seq ? void c.done() : true));
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
   * Sends a control message concerning `owner` (a tenant, or `WORKER_FRAME`). A script run
   * waits for a starting process like everything else, but is not sent again
   * if the process that took it dies (the engine fails the run then);
   * everything else is.
   */
  send(message: HostToWorker, owner: FrameOwner): void {
    const frame: Frame = (writer) => writer.control(message);
    if (message.t !== 'run') this.write(frame, owner);
    else if (this.isReady && this.writer !== null) this.writeNow(frame, null);
    else this.queued.push({ replayFor: null, frame });
  }

  /** A text message for `tenant`'s socket `id`. */
  text(id: number, payload: Buffer, tenant: string): void {
    if (this.isReady && this.writer !== null) {
      const seq = ++this.written;
      this.unacknowledged.addText(seq, tenant, id, payload);
      this.writer.text(FrameKind.TextIn, id, payload);
    } else {
      // The process is starting again: a rare wait, the payload may be held.
      this.queued.push({ replayFor: tenant, frame: (writer) => void writer.text(FrameKind.TextIn, id, payload) });
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

  /** `replayFor`: whose frame this is; kept until acknowledged. */
  private write(frame: Frame, replayFor: FrameOwner): void {
    if (this.isReady && this.writer !== null) this.writeNow(frame, replayFor);
    else this.queued.push({ replayFor, frame });
  }

  /** `replayFor` null: sent once, not again to a restarted process. */
  private writeNow(frame: Frame, replayFor: FrameOwner | null): void {
    if (this.writer === null) return;
    const seq = ++this.written;
    if (replayFor !== null) this.unacknowledged.add(seq, replayFor, frame);
    frame(this.writer);
  }

  /**
   * Resolves once the process has taken every frame written so far and ended
   * a turn with nothing left for the next (its handlers have run, those a
   * stopped call put back too), or is gone.
   */
  caughtUp(): Promise<void> {
    const seq = this.written;
    if (this.child === null || !this.isReady || (this.taken >= seq && this.pendingAtIdle === 0)) return Promise.resolve();
    return new Promise((done) => this.catchUps.push({ seq, done }));
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
