// The embedding API of islet. The host process owns every socket and never
// runs tenant code; tenants run in isolates inside sandbox worker processes
// (DESIGN.md). An Engine bundles tenant code, places each tenant on a worker,
// and carries events and output between sockets and tenants.
import { EventEmitter } from 'node:events';
import { existsSync, realpathSync, statSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { type ErrorCode, ErrorCodes, IsletError } from '../bridge/errors.js';
import { isInside, resolveHandler, tenantOf } from '../bridge/handler-ids.js';
import { ID_BLOCK, type BundledCode, type LogLevel, type SocketInfo, type WorkerToHost } from '../bridge/protocol.js';
import { Bundler, bundleRuntime } from './bundler.js';
import { type EngineOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { DESCRIPTOR_SUFFIX, type DescriptorProblem, type Endpoint, SERVICE_PREFIX, scanProjects } from './projects.js';
import { answer, handlerFileMatcher, refuseUpgrade, requestPath, serveStatic } from './server.js';
import { Quarantine } from './quarantine.js';
import { Sockets } from './sockets.js';
import { SandboxWorker, type WorkerListener } from './supervisor.js';
import { TreeWatcher } from './watcher.js';

export { IsletError, ErrorCodes, type ErrorCode } from '../bridge/errors.js';
export { DEFAULT_LIMITS, type EngineOptions } from './options.js';
export type { OutboundOptions } from './outbound.js';
export type { TenantLimits, LogLevel } from '../bridge/protocol.js';
export type { Endpoint, DescriptorProblem } from './projects.js';

export interface EngineStats {
  sessions: number;
  clients: number;
  /** Tenant isolates alive in the workers. */
  isolates: number;
  /** Sockets the workers hold for their tenants. */
  workerSockets: number;
  /** The host process's active handles (sockets, servers, timers, child processes). */
  handles: number;
}

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
  /** A `*.websocket` descriptor is invalid; the other endpoints are served. */
  descriptorError: [DescriptorProblem];
  /** The endpoints served: after the first load, then after each reload that changed them. */
  endpoints: [Endpoint[]];
  /** Files of these tenants that islet runs changed, and were read again (descriptors, handlers, what they import). */
  reloaded: [{ tenants: string[] }];
  /** A tenant kept killing its worker: refused until its files change or the time passes. */
  tenantQuarantined: [{ tenant: string; error: IsletError }];
  /** islet's own code failed in a listener; it cost that one request, socket or worker message, and the host carries on. */
  hostError: [HostFailure];
}

export interface HostFailure {
  /** What was being handled: `request`, `upgrade`, `worker message`, … */
  where: string;
  error: Error;
}

interface PendingRun {
  tenant: string;
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

/** Module names of scripts (each run defines its script again), apart from handler ids. */
const SCRIPT_PREFIX = 'script:';
/** One shared listener for errors that need no handling (none made per socket). */
const ignore = (): void => {};
/** How long past its call budget a worker may show no progress before the watchdog kills it. */
const LIVENESS_GRACE_MS = 3000;
/** Files whose change may change a bundle (server code not bundled yet: a new import, a handler that was missing). */
const SOURCE_EXTENSIONS = new Set(['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts', '.json']);
/** How long the watcher waits for a burst of file changes to end. */
const RELOAD_DEBOUNCE_MS = 50;

type State = 'new' | 'starting' | 'running' | 'closing' | 'closed';

export class Engine extends EventEmitter<EngineEvents> {
  readonly options: ResolvedOptions;
  private readonly bundler: Bundler;
  private readonly workers: SandboxWorker[] = [];
  private readonly sockets: Sockets;
  /** Endpoints by name; loaded when the engine first serves. */
  private readonly served = new Map<string, Endpoint>();
  /** Handler bundles, kept until the watcher sees a change (only while watching). */
  private readonly handlerBundles = new Map<string, Promise<BundledCode>>();
  private wss: WebSocketServer | null = null;
  private watcher: TreeWatcher | null = null;
  private reloadTimer: NodeJS.Timeout | null = null;
  private readonly servers = new Set<http.Server>();
  /** Whether a root-relative file is an endpoint's handler source (not served as a page); set at each load. */
  private isHandlerFile: (relative: string) => boolean = () => false;
  /** The endpoints' handlers of the last load, bundled (listen() waits for them before it serves pages). */
  private handlersBundled: Promise<unknown> = Promise.resolve();
  private hostIds = { next: 0, end: 0 };
  private readonly quarantine: Quarantine;
  private readonly asks = new Map<number, (reply: { isolates: number; sockets: number }) => void>();
  private nextAsk = 1;
  /** What the last load found, to report only what changed: the endpoints (as JSON) and the descriptor problems. */
  private endpointsKey = '';
  private reportedProblems = new Set<string>();
  /** Tenants whose files changed since the last reload. */
  private readonly changed = new Set<string>();
  private readonly runs = new Map<number, PendingRun>();
  /** Handler modules that failed while they loaded, by id: the bundle file that failed. */
  private readonly failedHandlers = new Map<string, string>();
  private runtime = '';
  private nextRun = 1;
  private nextIdBlock = 1;
  private state: State = 'new';
  private started: Promise<void> | null = null;

  constructor(options: EngineOptions = {}) {
    super();
    this.options = resolveOptions(options);
    this.bundler = new Bundler(this.options.root, this.options.limits.maxBundleBytes);
    this.quarantine = new Quarantine(this.options.quarantineMs);
    this.sockets = new Sockets({
      loadHandler: (worker, info) => this.loadHandler(worker, info),
      handlerFailed: (worker, info, error) => {
        worker.send({ t: 'moduleFailed', tenant: info.tenant, handler: info.handler }, info.tenant);
        this.emit('tenantError', { tenant: info.tenant, error: error.message });
      },
      maxMessageBytes: this.options.limits.maxMessageBytes,
      maxQueuedBytes: this.options.limits.maxQueuedBytes,
      maxTenantQueuedBytes: this.options.limits.maxTenantQueuedBytes,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs,
      outbound: this.options.outbound,
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
          this.workers.push(new SandboxWorker(i, () => this.initMessage(), this.workerListener, this.options.limits.callTimeoutMs + LIVENESS_GRACE_MS));
        }
        await Promise.all(this.workers.map((w) => w.start()));
        if (this.state === 'starting') this.state = 'running';
      })();
    }
    return this.started;
  }

  /**
   * Runs a tenant script (a path relative to the root, or absolute inside it)
   * in its project's isolate. Resolves once the tenant has no outbound
   * clients and no timers left (in a long-lived engine a tenant's runs share
   * them); rejects with an IsletError on a bundle error, a refusal (limits,
   * quarantine) or an uncaught exception, its stack mapped to the tenant's
   * own lines.
   */
  async run(script: string): Promise<void> {
    this.assertRunning();
    const relative = this.scriptPath(script);
    const tenant = tenantOf(relative);
    const quarantined = this.quarantine.refusal(tenant);
    if (quarantined !== null) throw quarantined;
    const bundle = await this.bundler.bundle(relative, SCRIPT_PREFIX + relative);
    this.assertRunning();
    const worker = this.workerFor(tenant);
    const run = this.nextRun++;
    return new Promise<void>((resolve, reject) => {
      this.runs.set(run, { tenant, resolve, reject });
      worker.send({ t: 'run', tenant, run, script: bundle }, tenant);
    });
  }

  /** Closes every socket, stops the workers, fails pending runs. */
  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'closing') return;
    const wasStarting = this.started;
    this.state = 'closing';
    if (wasStarting !== null) await wasStarting.catch(() => {});
    this.failRuns(() => true, new IsletError('ISLET_ERR_ENGINE_CLOSED', 'the engine closed while the script ran'));
    this.watcher?.close();
    if (this.reloadTimer !== null) clearTimeout(this.reloadTimer);
    const servers = [...this.servers].map((server) => new Promise((resolve) => server.close(resolve)));
    await this.sockets.closeAll();
    await Promise.all(servers);
    await Promise.all(this.workers.map((w) => w.stop()));
    this.state = 'closed';
  }

  /**
   * What the engine holds now: open sessions and outbound clients (host),
   * tenant isolates and sockets known to the workers, and the host's active
   * handles. For supervision, and for tests that check counts come back down.
   */
  async stats(): Promise<EngineStats> {
    this.assertRunning();
    const replies = await Promise.all(
      this.workers.map(
        (worker) =>
          new Promise<{ isolates: number; sockets: number }>((resolve) => {
            const ask = this.nextAsk++;
            this.asks.set(ask, resolve);
            worker.send({ t: 'stats', ask }, '');
          }),
      ),
    );
    const { sessions, clients } = this.sockets.counts();
    return {
      sessions,
      clients,
      isolates: replies.reduce((n, r) => n + r.isolates, 0),
      workerSockets: replies.reduce((n, r) => n + r.sockets, 0),
      handles: (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().length,
    };
  }

  /** The endpoints served, from the `*.websocket` descriptors under the root. */
  endpoints(): Endpoint[] {
    this.serve();
    return [...this.served.values()];
  }

  /**
   * Serves the endpoints on an existing Node HTTP server (an Express or
   * Fastify app's): upgrades under /websockets/v4/service/ are islet's, every
   * other path and request is left to the server's own listeners. Static
   * project pages are opt-in there, through `handleRequest`.
   */
  attach(server: http.Server): void {
    this.assertRunning();
    this.serve();
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.guarded('upgrade', () => this.handleUpgrade(req, socket, head), () => socket.destroy());
    });
  }

  /**
   * Serves the endpoints and the projects' static pages on a new HTTP server
   * (what `islet serve` does). Any other path gets 404.
   */
  async listen(port = 8080, host = '127.0.0.1'): Promise<http.Server> {
    this.assertRunning();
    this.serve();
    await this.handlersBundled;
    const server = http.createServer({
      // A peer that never finishes its request (or upgrade) is dropped.
      headersTimeout: this.options.upgradeTimeoutMs,
      requestTimeout: this.options.upgradeTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, this.options.upgradeTimeoutMs),
    }, (req, res) => {
      this.guarded('request', () => {
        if (requestPath(req) === null) answer(res, 400, 'bad request target');
        else if (!this.handleRequest(req, res)) answer(res, 404, 'not found');
      }, () => answer(res, 500, 'internal error'));
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.guarded('upgrade', () => {
        if (requestPath(req) === null) refuseUpgrade(socket, 400, 'bad request target');
        else if (!this.handleUpgrade(req, socket, head)) refuseUpgrade(socket, 404, 'no WebSocket service at this path');
      }, () => socket.destroy());
    });
    this.servers.add(server);
    server.once('close', () => this.servers.delete(server));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server;
  }

  /** Takes an upgrade under /websockets/v4/service/; returns false for any other path. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const pathname = requestPath(req);
    if (pathname === null || !pathname.startsWith(SERVICE_PREFIX)) return false;
    socket.on('error', ignore); // a peer that resets mid-upgrade is its own loss
    if (this.state !== 'running') {
      refuseUpgrade(socket, 503, 'islet is not running');
      return true;
    }
    this.serve();
    let name: string;
    try {
      name = decodeURIComponent(pathname.slice(SERVICE_PREFIX.length));
    } catch {
      name = '';
    }
    const endpoint = this.served.get(name);
    if (endpoint === undefined) {
      // Dirigible accepted unknown endpoints silently; a client deserves to know.
      refuseUpgrade(socket, 404, `no endpoint "${name.slice(0, 200)}"`);
      return true;
    }
    const quarantined = this.quarantine.refusal(endpoint.project);
    if (quarantined !== null) {
      refuseUpgrade(socket, 503, quarantined.message);
      return true;
    }
    const sessions = this.sockets.sessionsOf(endpoint.project);
    if (sessions >= this.options.limits.maxSessions) {
      refuseUpgrade(socket, 503, `ISLET_ERR_LIMIT: tenant "${endpoint.project}" already has ${sessions} sessions (limit maxSessions)`);
      return true;
    }
    const origins = this.options.allowedOrigins;
    if (origins !== null && !origins.includes(req.headers.origin ?? '')) {
      // Cross-site WebSocket hijacking: a page of another origin riding on the user's browser.
      refuseUpgrade(socket, 403, `origin ${JSON.stringify(req.headers.origin ?? null)} is not allowed`);
      return true;
    }
    void this.acceptSession(endpoint, req, socket, head);
    return true;
  }

  /** Serves the projects' static pages; returns false for any other path. */
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    let served = true;
    this.guarded('request', () => {
      this.serve();
      served = serveStatic(this.root, (requested, real) => this.isHandlerFile(requested) || this.bundler.isServerCode(real), req, res);
    }, () => answer(res, 500, 'internal error'));
    return served;
  }

  /**
   * Runs a listener's work; an exception costs only that request or socket
   * (`fail` answers or drops it) and is reported as `hostError`, never
   * thrown into Node's event loop, where it would end the host.
   */
  private guarded(where: string, work: () => void, fail: () => void): void {
    try {
      work();
    } catch (error) {
      try {
        fail();
      } catch {
        // the request is lost already
      }
      this.reportHostError(where, error);
    }
  }

  private reportHostError(where: string, error: unknown): void {
    this.emit('hostError', { where, error: error instanceof Error ? error : new Error(String(error)) });
  }

  /**
   * An embedder's listener that throws must not break what the engine was
   * doing when it told it (a worker restart, a frame): its exception is
   * reported as `hostError`, and a throwing `hostError` listener is ignored.
   */
  override emit<K extends keyof EngineEvents>(event: K, ...args: EngineEvents[K]): boolean {
    try {
      return super.emit(event as never, ...(args as never));
    } catch (error) {
      if (event !== 'hostError') this.reportHostError(`a listener of "${String(event)}"`, error);
      return true;
    }
  }

  private async acceptSession(endpoint: Endpoint, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const worker = this.workerFor(endpoint.project);
    let failure: Error | null = null;
    try {
      await this.prepareHandler(worker, endpoint.project, endpoint.handler);
    } catch (error) {
      failure = error as Error;
      // A module that failed while it loaded was reported then, once.
      if ((error as IsletError).code !== 'ISLET_ERR_HANDLER_FAILED') this.emit('tenantError', { tenant: endpoint.project, error: failure.message });
    }
    if (socket.destroyed) return;
    // The engine began to close while the handler was being bundled.
    if (this.state !== 'running') {
      refuseUpgrade(socket, 503, 'islet is not running');
      return;
    }
    this.wss!.handleUpgrade(req, socket, head, (ws) => {
      if (failure !== null) {
        // The handler cannot run: 1011, the server cannot carry on with this session.
        ws.close(1011, `handler ${endpoint.handler} failed to load`);
        return;
      }
      this.sockets.accept(worker, {
        id: this.allocateId(),
        tenant: endpoint.project,
        handler: endpoint.handler,
        uri: endpoint.path,
        engine: endpoint.engine,
        state: 'open',
        endpoint: endpoint.name,
      }, ws);
    });
  }

  /** Loads the endpoints and starts watching the root, once. */
  private serve(): void {
    if (this.wss !== null) return;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.options.limits.maxMessageBytes, perMessageDeflate: false });
    this.loadProjects();
    if (this.options.watch) {
      this.watcher = new TreeWatcher(this.root, (relative) => {
        // Only changes to what islet runs matter: `islet serve . > islet.log` inside the root must not reload on its own output.
        if (!this.mayMatter(relative)) return;
        this.changed.add(tenantOf(relative));
        if (this.reloadTimer !== null) clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => this.guarded('reload', () => this.reload(), () => {}), RELOAD_DEBOUNCE_MS);
      });
    }
  }

  /** Whether a change to this file (relative to the root) may change what islet serves or runs. */
  private mayMatter(relative: string): boolean {
    if (relative.split('/').some((segment) => segment.startsWith('.') || segment === 'node_modules')) return false;
    return relative.endsWith(DESCRIPTOR_SUFFIX) || SOURCE_EXTENSIONS.has(path.extname(relative)) || this.bundler.isServerCode(relative);
  }

  /** Reads the descriptors; tells what changed since the last load (nothing, when nothing did). */
  private loadProjects(): void {
    const scan = scanProjects(this.root, this.served);
    this.served.clear();
    for (const [name, endpoint] of scan.endpoints) this.served.set(name, endpoint);
    this.isHandlerFile = handlerFileMatcher([...this.served.values()].map((e) => e.handler));
    // Bundled now, not at the first session: what each handler imports is server code, refused as a page from the start.
    this.handlersBundled = Promise.allSettled([...this.served.values()].map((endpoint) => this.handlerBundle(endpoint.handler)));
    const reported = this.reportedProblems;
    this.reportedProblems = new Set(scan.problems.map((problem) => problem.error.message));
    for (const problem of scan.problems) if (!reported.has(problem.error.message)) this.emit('descriptorError', problem);
    const endpoints = [...this.served.values()];
    const key = JSON.stringify(endpoints);
    if (key === this.endpointsKey) return;
    this.endpointsKey = key;
    this.emit('endpoints', endpoints);
  }

  /**
   * A file under the root changed: read the descriptors again, and send a
   * new bundle of every handler a worker holds whose code changed. The
   * tenant's isolate replaces the module: open sessions and clients carry on
   * with the new code from their next event, its module state fresh.
   */
  private reload(): void {
    this.reloadTimer = null;
    if (this.state !== 'running') return;
    // A quarantined tenant whose files changed gets another chance.
    for (const tenant of this.changed) this.quarantine.lift(tenant);
    const tenants = [...this.changed];
    this.changed.clear();
    this.handlerBundles.clear();
    this.loadProjects();
    const sent: Promise<unknown>[] = [this.handlersBundled];
    for (const worker of this.workers) {
      for (const [tenant, modules] of worker.modules) {
        for (const name of modules.keys()) {
          if (name.startsWith(SCRIPT_PREFIX)) continue;
          sent.push(
            this.handlerBundle(name).then(
              (bundle) => this.sendModule(worker, tenant, bundle),
              (error: Error) => this.emit('tenantError', { tenant, error: error.message }),
            ),
          );
        }
      }
    }
    void Promise.allSettled(sent).then(() => this.emit('reloaded', { tenants }));
  }

  /**
   * A handler's bundle. While the root is watched it is made once until the
   * next reload (a session per connection must not re-read the files);
   * otherwise the bundler checks the files' content each time.
   */
  private handlerBundle(handler: string): Promise<BundledCode> {
    const fresh = async (): Promise<BundledCode> => {
      const resolved = resolveHandler(this.root, handler, tenantOf(handler));
      return this.bundler.bundle(resolved.relative, resolved.id);
    };
    if (this.watcher === null) return fresh();
    let bundle = this.handlerBundles.get(handler);
    if (bundle === undefined) this.handlerBundles.set(handler, (bundle = fresh()));
    return bundle;
  }

  /** Socket ids for sessions come from blocks, like the workers' client ids. */
  private allocateId(): number {
    if (this.hostIds.next >= this.hostIds.end) {
      const from = this.nextIdBlock++ * ID_BLOCK;
      this.hostIds = { next: from, end: from + ID_BLOCK };
    }
    return this.hostIds.next++;
  }

  private assertRunning(): void {
    if (this.state !== 'running') {
      throw new IsletError('ISLET_ERR_ENGINE_CLOSED', `the engine is ${this.state}; call start() first`);
    }
  }

  /**
   * The script's path relative to the root. The script file itself is not
   * followed if it is a link: the bundler judges where a link really leads
   * (another project's file is not this project's code).
   */
  private scriptPath(script: string): string {
    if (typeof script !== 'string' || script.length === 0) {
      throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', 'script must be a non-empty path');
    }
    const file = path.resolve(this.root, script);
    if (!existsSync(file) || !statSync(file).isFile()) {
      throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', `script ${script} does not exist under the projects root ${this.root}`);
    }
    // Spelled inside the root, or inside it once the folders on the way are resolved.
    const realRoot = realpathSync(this.root);
    const spelled = path.resolve(realpathSync(path.dirname(file)), path.basename(file));
    const inside = isInside(this.root, file) ? path.relative(this.root, file) : isInside(realRoot, spelled) ? path.relative(realRoot, spelled) : null;
    if (inside === null) {
      throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', `script ${script} lies outside the projects root ${this.root}`);
    }
    return inside.split(path.sep).join('/');
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

  private loadHandler(worker: SandboxWorker, info: SocketInfo): Promise<void> {
    return this.prepareHandler(worker, info.tenant, info.handler);
  }

  /** Bundles a handler and sends it to the worker; throws when it cannot run (a bundle error, or it failed while it loaded). */
  private async prepareHandler(worker: SandboxWorker, tenant: string, handler: string): Promise<void> {
    const bundle = await this.handlerBundle(handler);
    if (this.failedHandlers.get(handler) === bundle.file) {
      throw new IsletError('ISLET_ERR_HANDLER_FAILED', `${handler} failed while it loaded; it runs again once its files change`);
    }
    this.sendModule(worker, tenant, bundle);
  }

  /** Sends a bundle to a worker unless it already has this version. */
  private sendModule(worker: SandboxWorker, tenant: string, bundle: BundledCode, first = false): void {
    let sent = worker.modules.get(tenant);
    if (sent === undefined) worker.modules.set(tenant, (sent = new Map()));
    if (sent.get(bundle.name) === bundle.file) return;
    sent.set(bundle.name, bundle.file);
    const message = { t: 'module', tenant, module: bundle } as const;
    if (first) worker.sendFirst(message);
    else worker.send(message, tenant);
  }

  private failRuns(match: (run: PendingRun) => boolean, error: Error): void {
    for (const [id, run] of this.runs) {
      if (!match(run)) continue;
      this.runs.delete(id);
      run.reject(error);
    }
  }

  private readonly workerListener: WorkerListener = {
    control: (worker: SandboxWorker, message: WorkerToHost): void => this.onWorkerMessage(worker, message),
    text: (worker: SandboxWorker, id: number, payload: Buffer): void => {
      if (this.sockets.owns(worker, id)) this.sockets.send(id, payload);
    },
    chunkDone: (): void => this.sockets.uncorkAll(),
    failed: (worker: SandboxWorker, error: Error): void => this.reportHostError(`message from sandbox worker ${worker.index}`, error),
    ready: (worker: SandboxWorker): void => {
      // A restarted worker gets its tenants' open sockets back, with their
      // handler bundles, before anything that was queued while it was down.
      const sockets = this.sockets.ofWorker(worker);
      if (sockets.length === 0) return;
      const handlers = new Map<string, SocketInfo>();
      for (const info of sockets) handlers.set(info.handler, info);
      for (const info of handlers.values()) {
        let bundle: BundledCode | undefined;
        try {
          bundle = this.bundler.cached(resolveHandler(this.root, info.handler, info.tenant).relative);
        } catch {
          // The handler file is gone; its sockets' events find no module.
        }
        if (bundle !== undefined) this.sendModule(worker, info.tenant, { ...bundle, name: info.handler }, true);
      }
      worker.sendFirst({ t: 'adopt', sockets });
    },
    exit: (worker: SandboxWorker, { pid, code, signal, running, why: how }): void => {
      if (this.state === 'closing' || this.state === 'closed') return;
      this.emit('workerExit', { worker: worker.index, pid, code, signal });
      if (running !== null) this.workerKilledBy(running, how);
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

  /** The worker died while `tenant`'s code ran: tell the tenant; it counts toward quarantine. */
  private workerKilledBy(tenant: string, how: string): void {
    this.emit('tenantError', {
      tenant,
      error: `ISLET_ERR_WORKER_DIED: the sandbox worker died (${how}) while this tenant's code ran; the events of that call are lost`,
    });
    this.strike(tenant, how);
  }

  /**
   * The tenant's code brought its worker down, or held it far past its
   * budget: three times in a minute is quarantine. Its sockets close, and its
   * isolate is discarded with its timers (code that keeps coming back on a
   * timer would go on holding the worker).
   */
  private strike(tenant: string, how: string): void {
    if (!this.quarantine.crashed(tenant, how)) return;
    const error = this.quarantine.refusal(tenant)!;
    this.emit('tenantQuarantined', { tenant, error });
    // 1013: try again later (RFC 6455 7.4.1, IANA registry).
    this.sockets.closeTenant(tenant, 1013, 'tenant quarantined');
    for (const worker of this.workers) if (worker.tenants.has(tenant)) worker.send({ t: 'evict', tenant }, tenant);
  }

  private onWorkerMessage(worker: SandboxWorker, message: WorkerToHost): void {
    switch (message.t) {
      case 'needIds':
        worker.send({ t: 'ids', from: this.nextIdBlock++ * ID_BLOCK }, '');
        break;
      case 'connect':
        if (!worker.tenants.has(message.socket.tenant)) break;
        this.sockets.open(worker, message.socket).catch((error: unknown) => this.reportHostError('opening a client', error));
        break;
      case 'close':
        if (this.sockets.owns(worker, message.id)) this.sockets.closeFor(message.id, message.code, message.reason);
        break;
      case 'log':
        this.emit('log', { tenant: message.tenant, level: message.level, text: message.text });
        break;
      case 'tenantError':
        this.emit('tenantError', { tenant: message.tenant, error: this.bundler.mapStack(message.error) });
        break;
      case 'overran': {
        if (!worker.tenants.has(message.tenant)) break;
        const how = `a call ran ${message.ms} ms, over twice its budget of ${this.options.limits.callTimeoutMs} ms, in code the budget could not stop`;
        this.emit('tenantError', { tenant: message.tenant, error: `ISLET_ERR_TIMEOUT: ${how}` });
        this.strike(message.tenant, how);
        break;
      }
      case 'moduleFailed': {
        if (!worker.tenants.has(message.tenant) || tenantOf(message.module) !== message.tenant) break;
        // Reported once; its sockets close (1011: the server cannot go on with them), and new ones are refused until its files change.
        this.failedHandlers.set(message.module, message.file);
        this.emit('tenantError', {
          tenant: message.tenant,
          error: `ISLET_ERR_HANDLER_FAILED: ${message.module} failed while it loaded; its sockets are closed: ${this.bundler.mapStack(message.error)}`,
        });
        this.sockets.closeHandler(message.tenant, message.module, 1011, `handler ${message.module} failed to load`);
        break;
      }
      case 'stats':
        this.asks.get(message.ask)?.({ isolates: message.isolates, sockets: message.sockets });
        this.asks.delete(message.ask);
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
