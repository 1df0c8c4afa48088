// The embedding API of islet. The host process owns every socket and never
// runs tenant code; tenants run in isolates inside sandbox worker processes
// (DESIGN.md). An Engine bundles tenant code, places each tenant on a worker,
// and carries events and output between sockets and tenants.
import { EventEmitter } from 'node:events';
import { existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { type ErrorCode, ErrorCodes, IsletError } from '../bridge/errors.js';
import { isInside, resolveHandler, tenantOf } from '../bridge/handler-ids.js';
import { ID_BLOCK, type BundledCode, type LogLevel, type SocketInfo, type WorkerToHost } from '../bridge/protocol.js';
import { Bundler, bundleRuntime } from './bundler.js';
import { OutboundClients } from './clients.js';
import { type EngineOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { SandboxWorker } from './supervisor.js';

export { IsletError, ErrorCodes, type ErrorCode } from '../bridge/errors.js';
export { DEFAULT_LIMITS, type EngineOptions } from './options.js';
export type { TenantLimits, LogLevel } from '../bridge/protocol.js';

export interface TenantLog {
  tenant: string;
  level: LogLevel;
  text: string;
}

export interface TenantFailure {
  tenant: string;
  /** The error, with stack frames mapped to the tenant's own files. */
  error: string;
}

export interface WorkerExit {
  worker: number;
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface EngineEvents {
  /** A tenant called console.*. */
  log: [TenantLog];
  /** A tenant threw and nothing caught it (outside a script run, which rejects instead). */
  tenantError: [TenantFailure];
  /** A sandbox worker died; the engine is restarting it. */
  workerExit: [WorkerExit];
  /** A sandbox worker is back after dying. */
  workerRestart: [{ worker: number; pid: number | undefined }];
}

interface PendingRun {
  tenant: string;
  script: string;
  resolve: () => void;
  reject: (error: Error) => void;
}

/** An error from a tenant: one islet raised keeps its code, anything else was uncaught. */
function tenantError(text: string): IsletError {
  const coded = /^(ISLET_ERR_[A-Z_]+): /.exec(text);
  if (coded !== null && coded[1]! in ErrorCodes) {
    return new IsletError(coded[1] as ErrorCode, text.slice(coded[0].length));
  }
  return new IsletError('ISLET_ERR_UNCAUGHT', text);
}

type State = 'new' | 'starting' | 'running' | 'closing' | 'closed';

export class Engine extends EventEmitter<EngineEvents> {
  readonly options: ResolvedOptions;
  private readonly bundler: Bundler;
  private readonly workers: SandboxWorker[] = [];
  private readonly clients: OutboundClients;
  private readonly runs = new Map<number, PendingRun>();
  private runtime = '';
  private nextRun = 1;
  private nextIdBlock = 1;
  private state: State = 'new';
  private started: Promise<void> | null = null;

  constructor(options: EngineOptions = {}) {
    super();
    this.options = resolveOptions(options);
    this.bundler = new Bundler(this.options.root);
    this.clients = new OutboundClients({
      loadHandler: (worker, info) => this.loadHandler(worker, info),
      handlerFailed: (worker, info, error) => {
        worker.send({ t: 'moduleFailed', tenant: info.tenant, handler: info.handler });
        this.emit('tenantError', { tenant: info.tenant, error: error.message });
      },
      maxMessageBytes: this.options.limits.maxMessageBytes,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs,
    });
  }

  get root(): string {
    return this.options.root;
  }

  /** Process ids of the sandbox workers (for supervision and tests). */
  get workerPids(): (number | undefined)[] {
    return this.workers.map((w) => w.pid);
  }

  /** Starts the sandbox workers. Calling it again returns the same promise. */
  start(): Promise<void> {
    if (this.started === null) {
      this.state = 'starting';
      this.started = (async () => {
        this.runtime = await bundleRuntime();
        for (let i = 0; i < this.options.workers; i++) {
          this.workers.push(new SandboxWorker(i, () => this.initMessage(), this.workerListener));
        }
        await Promise.all(this.workers.map((w) => w.start()));
        if (this.state === 'starting') this.state = 'running';
      })();
    }
    return this.started;
  }

  /**
   * Runs a tenant script (a path relative to the root, or absolute inside it)
   * in its project's isolate. Resolves once the script, its clients and its
   * timers are all done; rejects with an IsletError on a bundle error or an
   * uncaught exception, its stack mapped to the tenant's own lines.
   */
  async run(script: string): Promise<void> {
    this.assertRunning();
    const relative = this.scriptPath(script);
    const tenant = tenantOf(relative);
    const bundle = await this.bundler.bundle(relative, `script:${relative}`);
    this.assertRunning();
    const worker = this.workerFor(tenant);
    const run = this.nextRun++;
    return new Promise<void>((resolve, reject) => {
      this.runs.set(run, { tenant, script: relative, resolve, reject });
      worker.send({ t: 'run', tenant, run, script: bundle });
    });
  }

  /** Closes every socket, stops the workers, fails pending runs. */
  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'closing') return;
    const wasStarting = this.started;
    this.state = 'closing';
    if (wasStarting !== null) await wasStarting.catch(() => {});
    this.failRuns(() => true, new IsletError('ISLET_ERR_ENGINE_CLOSED', 'the engine closed while the script ran'));
    await this.clients.closeAll();
    await Promise.all(this.workers.map((w) => w.stop()));
    this.state = 'closed';
  }

  private assertRunning(): void {
    if (this.state !== 'running') {
      throw new IsletError('ISLET_ERR_ENGINE_CLOSED', `the engine is ${this.state}; call start() first`);
    }
  }

  private scriptPath(script: string): string {
    if (typeof script !== 'string' || script.length === 0) {
      throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', 'script must be a non-empty path');
    }
    const root = realpathSync(this.root);
    const file = path.resolve(root, script);
    if (!existsSync(file) || !statSync(file).isFile()) {
      throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', `script ${script} does not exist under the projects root ${this.root}`);
    }
    const real = realpathSync(file);
    if (!isInside(root, real)) {
      throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', `script ${script} lies outside the projects root ${this.root}`);
    }
    return path.relative(root, real).split(path.sep).join('/');
  }

  /** A tenant stays on the worker it was first placed on: the least loaded one. */
  private workerFor(tenant: string): SandboxWorker {
    for (const worker of this.workers) if (worker.tenants.has(tenant)) return worker;
    let best = this.workers[0]!;
    for (const worker of this.workers) if (worker.tenants.size < best.tenants.size) best = worker;
    best.tenants.add(tenant);
    return best;
  }

  private initMessage() {
    const ids = this.nextIdBlock++ * ID_BLOCK;
    return { t: 'init', runtime: this.runtime, root: this.root, limits: this.options.limits, ids } as const;
  }

  private async loadHandler(worker: SandboxWorker, info: SocketInfo): Promise<void> {
    const handler = resolveHandler(this.root, info.handler, info.tenant);
    this.sendModule(worker, info.tenant, await this.bundler.bundle(handler.relative, handler.id));
  }

  /** Sends a bundle to a worker unless it already has this version. */
  private sendModule(worker: SandboxWorker, tenant: string, bundle: BundledCode, first = false): void {
    let sent = worker.modules.get(tenant);
    if (sent === undefined) worker.modules.set(tenant, (sent = new Map()));
    if (sent.get(bundle.name) === bundle.file) return;
    sent.set(bundle.name, bundle.file);
    const message = { t: 'module', tenant, module: bundle } as const;
    if (first) worker.sendFirst(message);
    else worker.send(message);
  }

  private failRuns(match: (run: PendingRun) => boolean, error: Error): void {
    for (const [id, run] of this.runs) {
      if (!match(run)) continue;
      this.runs.delete(id);
      run.reject(error);
    }
  }

  private readonly workerListener = {
    control: (worker: SandboxWorker, message: WorkerToHost): void => this.onWorkerMessage(worker, message),
    text: (worker: SandboxWorker, id: number, payload: Buffer): void => {
      if (this.clients.owns(worker, id)) this.clients.send(id, payload);
    },
    ready: (worker: SandboxWorker): void => {
      // A restarted worker gets its tenants' open sockets back, with their
      // handler bundles, before anything that was queued while it was down.
      const sockets = this.clients.ofWorker(worker);
      if (sockets.length === 0) return;
      for (const info of sockets) {
        const bundle = this.bundler.cached(resolveHandler(this.root, info.handler, info.tenant).relative);
        if (bundle !== undefined) this.sendModule(worker, info.tenant, { ...bundle, name: info.handler }, true);
      }
      worker.sendFirst({ t: 'adopt', sockets });
    },
    exit: (worker: SandboxWorker, pid: number | undefined, code: number | null, signal: NodeJS.Signals | null): void => {
      if (this.state === 'closing' || this.state === 'closed') return;
      this.emit('workerExit', { worker: worker.index, pid, code, signal });
      const how = signal !== null ? `signal ${signal}` : `code ${code}`;
      this.failRuns(
        (run) => worker.tenants.has(run.tenant),
        new IsletError('ISLET_ERR_WORKER_DIED', `sandbox worker ${worker.index} died (${how}) while running a script; it is being restarted`),
      );
      worker.start().then(
        () => this.emit('workerRestart', { worker: worker.index, pid: worker.pid }),
        () => {},
      );
    },
  };

  private onWorkerMessage(worker: SandboxWorker, message: WorkerToHost): void {
    switch (message.t) {
      case 'needIds':
        worker.send({ t: 'ids', from: this.nextIdBlock++ * ID_BLOCK });
        break;
      case 'connect':
        if (!worker.tenants.has(message.socket.tenant)) break;
        void this.clients.open(worker, message.socket);
        break;
      case 'close':
        if (this.clients.owns(worker, message.id)) this.clients.close(message.id);
        break;
      case 'log':
        this.emit('log', { tenant: message.tenant, level: message.level, text: message.text });
        break;
      case 'tenantError':
        this.emit('tenantError', { tenant: message.tenant, error: this.bundler.mapStack(message.error) });
        break;
      case 'runDone': {
        const run = this.runs.get(message.run);
        if (run === undefined) break;
        this.runs.delete(message.run);
        if (message.error === undefined) run.resolve();
        else run.reject(tenantError(this.bundler.mapStack(message.error)));
        break;
      }
    }
  }
}
