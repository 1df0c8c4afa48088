// Sandbox worker processes, as the host sees them. Each worker is a child
// node process (with --no-node-snapshot, which isolated-vm needs) reached
// through one duplex pipe on its fd 3. A worker that dies is started again by
// the engine; what the host sends meanwhile waits here and goes out, in
// order, once the new process is ready.
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
  /** The process is ready; send what it must know before anything queued. */
  ready(worker: SandboxWorker): void;
  exit(worker: SandboxWorker, pid: number | undefined, code: number | null, signal: NodeJS.Signals | null): void;
}

type Frame = (writer: FrameWriter) => void;

export class SandboxWorker {
  /** Tenants placed on this worker; they stay here across restarts. */
  readonly tenants = new Set<string>();
  /** Bundles this process has been sent, per tenant: module name → bundle file. */
  readonly modules = new Map<string, Map<string, string>>();
  private child: ChildProcess | null = null;
  private writer: FrameWriter | null = null;
  private isReady = false;
  private queued: Frame[] = [];
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
    const child = spawn(process.execPath, ['--no-node-snapshot', WORKER_ENTRY], {
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
          for (const frame of queued) frame(writer);
          started();
          return;
        }
        this.listener.control(this, message);
      } else if (kind === FrameKind.TextOut) {
        this.listener.text(this, id, payload);
      }
    });
    pipe.on('data', (chunk: Buffer) => reader.push(chunk));
    // A dying worker's pipe errors (EPIPE, ECONNRESET); its exit is what counts.
    pipe.on('error', () => {});
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      this.writer = null;
      this.isReady = false;
      this.modules.clear();
      this.listener.exit(this, child.pid, code, signal);
    });
    writer.control(this.init());
    return whenReady;
  }

  send(message: HostToWorker): void {
    this.write((writer) => writer.control(message));
  }

  text(id: number, payload: Buffer): void {
    this.write((writer) => writer.text(FrameKind.TextIn, id, payload));
  }

  /** Sends now, ahead of anything queued; only from `WorkerListener.ready`. */
  sendFirst(message: HostToWorker): void {
    this.writer?.control(message);
  }

  private write(frame: Frame): void {
    if (this.isReady && this.writer !== null) frame(this.writer);
    else this.queued.push(frame);
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
