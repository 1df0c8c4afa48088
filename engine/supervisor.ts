// Sandbox worker processes, as the host sees them. Each worker is a child
// node process (with --no-node-snapshot, which isolated-vm needs) reached
// through one duplex pipe on its fd 3. A worker that dies is started again by
// the engine; what the host sends meanwhile waits here and goes out, in
// order, once the new process is ready. So do the frames the dead process had
// not started on: the worker acknowledges frames (`ack`, a count) before it
// runs them, and the host keeps every frame it sent until acknowledged.
import { type ChildProcess, spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import {
  FrameKind,
  FrameReader,
  FrameWriter,
  type HostToWorker,
  type WorkerToHost,
} from '../bridge/protocol.js';

const WORKER_ENTRY = fileURLToPath(new URL('../bridge/worker.js', import.meta.url));

export interface WorkerListener {
  control(worker: SandboxWorker, message: WorkerToHost): void;
  text(worker: SandboxWorker, id: number, payload: Buffer): void;
  /** Every frame of one chunk from the worker has been handled. */
  chunkDone(): void;
  /** The process is ready; send what it must know before anything queued. */
  ready(worker: SandboxWorker): void;
  exit(worker: SandboxWorker, pid: number | undefined, code: number | null, signal: NodeJS.Signals | null): void;
}

type Frame = (writer: FrameWriter) => void;

/** Frames sent to the current process and not yet acknowledged, oldest first. */
class Unacknowledged {
  private frames: { seq: number; frame: Frame }[] = [];
  private head = 0;

  add(seq: number, frame: Frame): void {
    this.frames.push({ seq, frame });
  }

  /** The worker has started on every frame up to `seq`. */
  ack(seq: number): void {
    while (this.head < this.frames.length && this.frames[this.head]!.seq <= seq) this.head++;
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head);
      this.head = 0;
    }
  }

  take(): Frame[] {
    const rest = this.frames.slice(this.head).map((f) => f.frame);
    this.frames = [];
    this.head = 0;
    return rest;
  }
}

export class SandboxWorker {
  /** Tenants placed on this worker; they stay here across restarts. */
  readonly tenants = new Set<string>();
  /** Bundles this process has been sent, per tenant: module name → bundle file. */
  readonly modules = new Map<string, Map<string, string>>();
  private child: ChildProcess | null = null;
  private writer: FrameWriter | null = null;
  private isReady = false;
  private queued: Frame[] = [];
  /** Frames written to the current process; the worker counts the same. */
  private written = 0;
  private readonly unacknowledged = new Unacknowledged();
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly index: number,
    private readonly init: () => HostToWorker,
    private readonly listener: WorkerListener,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get ready(): boolean {
    return this.isReady;
  }

  /** Starts the process; resolves once it has taken its init message. */
  start(): Promise<void> {
    // A small young generation keeps the worker's RSS down under load (the
    // strings copied in and out of isolates are short-lived): 98 -> 76 MB peak
    // at 4 KiB echo, same CPU (measured with the bench's echo load).
    const child = spawn(process.execPath, ['--no-node-snapshot', '--max-semi-space-size=2', WORKER_ENTRY], {
      stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    });
    this.child = child;
    const pipe = child.stdio[3] as Duplex;
    const writer = new FrameWriter(pipe);
    this.writer = writer;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let started: () => void;
    const whenReady = new Promise<void>((resolve) => (started = resolve));
    const reader = new FrameReader((kind, id, payload) => {
      if (kind === FrameKind.Control) {
        const message = JSON.parse(payload.toString('utf8')) as WorkerToHost;
        if (message.t === 'ready') {
          this.isReady = true;
          this.listener.ready(this);
          const queued = this.queued;
          this.queued = [];
          for (const frame of queued) this.writeNow(frame, true);
          started();
          return;
        }
        if (message.t === 'ack') {
          this.unacknowledged.ack(message.seq);
          return;
        }
        this.listener.control(this, message);
      } else if (kind === FrameKind.TextOut) {
        this.listener.text(this, id, payload);
      }
    });
    pipe.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      this.listener.chunkDone();
    });
    // A dying worker's pipe errors (EPIPE, ECONNRESET); its exit is what counts.
    pipe.on('error', () => {});
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      this.writer = null;
      this.isReady = false;
      this.modules.clear();
      // What the dead process had not started on goes to the next one first.
      this.queued = [...this.unacknowledged.take(), ...this.queued];
      this.written = 0;
      this.listener.exit(this, child.pid, code, signal);
    });
    this.writeNow((w) => w.control(this.init()), false);
    return whenReady;
  }

  /**
   * Sends a control message. A script run is not sent again to a new process
   * if the old one died (the engine fails the run); everything else is.
   */
  send(message: HostToWorker): void {
    this.write((writer) => writer.control(message), message.t !== 'run');
  }

  text(id: number, payload: Buffer): void {
    this.write((writer) => writer.text(FrameKind.TextIn, id, payload), true);
  }

  /** Sends now, ahead of anything queued; only from `WorkerListener.ready` (sent again at each start). */
  sendFirst(message: HostToWorker): void {
    this.writeNow((writer) => writer.control(message), false);
  }

  private write(frame: Frame, replay: boolean): void {
    if (this.isReady && this.writer !== null) this.writeNow(frame, replay);
    else if (replay) this.queued.push(frame);
  }

  private writeNow(frame: Frame, replay: boolean): void {
    if (this.writer === null) return;
    const seq = ++this.written;
    if (replay) this.unacknowledged.add(seq, frame);
    frame(this.writer);
  }

  /** Kills the process (the engine decides whether it comes back). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.child?.kill(signal);
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
