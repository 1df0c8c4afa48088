// The Engine: lifecycle and wiring. It bundles tenant code, places each
// tenant on a sandbox worker, and carries events and output between sockets
// and tenants; each of those is a part of its own (see `Parts`). Its state
// lives outside the instance, so the published typings show only the API.
import { EventEmitter } from 'node:events';
import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { asIsletError, IsletError } from '../bridge/errors.js';
import { Bundler } from './bundler.js';
import type { Cluster } from './cluster.js';
import { type Emit, failure, type Report } from './events.js';
import { Handlers } from './handlers.js';
import type { EngineEvents, EngineStats } from './index.js';
import { type EngineOptions, type ResolvedOptions, resolveOptions } from './options.js';
import type { Endpoint } from './projects.js';
import { Metrics, type TenantCounters } from './metrics.js';
import type { TenantUsage } from '../bridge/protocol.js';
import { Quarantine } from './quarantine.js';
import { Routes } from './routes.js';
import { type RunHost, Runs, startRun } from './runs.js';
import type { RunOptions, ScriptResponse } from './script-response.js';
import { Served } from './served.js';
import { Sockets } from './sockets.js';
import { within } from './within.js';
import { Workers } from './workers.js';

type State = 'new' | 'starting' | 'running' | 'closing' | 'closed';

interface Parts {
  options: ResolvedOptions;
  bundler: Bundler;
  quarantine: Quarantine;
  runs: Runs;
  /** What starts a script run: `run()` and `GET /services/js/…`. */
  runHost: RunHost;
  handlers: Handlers;
  sockets: Sockets;
  workers: Workers;
  served: Served;
  routes: Routes;
  metrics: Metrics;
  cluster: Cluster | null;
  /** What the parts tell the embedder: its events, and the host's own failures. */
  emit: Emit;
  report: Report;
  state: State;
  started: Promise<void> | null;
}

const partsOf = new WeakMap<Engine, Parts>();

function parts(engine: Engine): Parts {
  return partsOf.get(engine)!;
}

function assertRunning(p: Parts): void {
  if (p.state !== 'running') throw new IsletError('ISLET_ERR_ENGINE_CLOSED', `the engine is ${p.state}; call start() first`);
}

/**
 * Loads the Redis client only for a host that joins a cluster: importing it
 * alone changed the heap the host grew to under load (half of the 64 B echo
 * runs peaked near 245 MiB instead of 135).
 */
async function joinCluster(p: Parts, options: NonNullable<ResolvedOptions['cluster']>): Promise<void> {
  const { Cluster } = await import('./cluster.js');
  const cluster = new Cluster(options, { sockets: p.sockets, workers: () => p.workers.list, emit: p.emit, report: p.report });
  await cluster.start();
  p.cluster = cluster;
  p.sockets.presence = cluster;
}

export class Engine extends EventEmitter<EngineEvents> {
  constructor(options: EngineOptions = {}) {
    super();
    const resolved = resolveOptions(options);
    const emit: Emit = (event, ...args) => {
      this.emit(event, ...args);
    };
    const report: Report = (where, error) => this.emit('hostError', { where, error: error instanceof Error ? error : new Error(String(error)) });
    const bundler = new Bundler(resolved.root, resolved.limits.maxBundleBytes);
    const handlers = new Handlers(resolved.root, bundler);
    const quarantine = new Quarantine(resolved.quarantineMs);
    const runs = new Runs();
    const running = (): boolean => p.state === 'running';
    const metrics: Metrics = new Metrics({
      open: (): ReturnType<Sockets['openByTenant']> => sockets.openByTenant(),
      usage: async (): Promise<TenantUsage[]> => (await workers.stats()).tenants,
      cluster: () => p.cluster?.stats() ?? null,
    });
    const sockets: Sockets = new Sockets({
      loadHandler: (worker, info) => handlers.prepare(worker, info.tenant, info.handler),
      handlerFailed: (worker, info, error) => {
        worker.send({ t: 'moduleFailed', tenant: info.tenant, handler: info.handler }, info.tenant);
        this.emit('tenantError', failure(info.tenant, asIsletError(error)));
      },
      maxMessageBytes: resolved.limits.maxMessageBytes,
      maxQueuedBytes: resolved.limits.maxQueuedBytes,
      maxTenantQueuedBytes: resolved.limits.maxTenantQueuedBytes,
      handshakeTimeoutMs: resolved.handshakeTimeoutMs,
      outbound: resolved.outbound,
      heartbeatMs: resolved.heartbeatMs,
      messagesPerSecond: resolved.limits.messagesPerSecond,
      maxTopics: resolved.limits.maxTopics,
      counters: (tenant): TenantCounters => metrics.of(tenant),
    });
    const workers: Workers = new Workers({
      cluster: () => p.cluster,
      options: resolved,
      bundler,
      sockets,
      handlers,
      runs,
      quarantine,
      metrics,
      emit,
      report,
      closing: () => p.state === 'closing' || p.state === 'closed',
    });
    const served = new Served({ root: resolved.root, watch: resolved.watch, bundler, handlers, quarantine, workers: () => workers.list, emit, report, running });
    const runHost: RunHost = {
      root: resolved.root,
      maxResponseBytes: resolved.limits.maxResponseBytes,
      bundler,
      quarantine,
      runs,
      workerFor: (tenant) => workers.for(tenant),
      assertRunning: () => assertRunning(p),
    };
    const routes = new Routes({ options: resolved, served, handlers, sockets, workers, quarantine, metrics, runHost, emit, report, running });
    const p: Parts = { options: resolved, bundler, quarantine, runs, runHost, handlers, sockets, workers, served, routes, metrics, cluster: null, emit, report, state: 'new', started: null };
    partsOf.set(this, p);
  }

  /** The projects root, resolved. */
  get root(): string {
    return parts(this).options.root;
  }

  /** Process ids of the sandbox workers (for supervision and tests). */
  get workerPids(): (number | undefined)[] {
    return parts(this).workers.list.map((w) => w.pid);
  }

  /** Starts the sandbox workers. Calling it again returns the same promise. */
  start(): Promise<void> {
    const p = parts(this);
    if (p.started === null) {
      p.state = 'starting';
      p.started = (async () => {
        // The cluster first: its id slot is in every socket id the workers hand out.
        if (p.options.cluster !== null) await joinCluster(p, p.options.cluster);
        await p.workers.start();
        if (p.state === 'starting') p.state = 'running';
      })();
    }
    return p.started;
  }

  /**
   * Runs a tenant script (a path relative to the root, or absolute inside it)
   * in its project's isolate. Resolves once the run is over: the timers and
   * clients its code made are done, and what their callbacks and handlers
   * made in turn (sandbox-api/run-holds.ts); rejects with an IsletError on a bundle error, a refusal (limits,
   * quarantine) or an uncaught exception, its stack mapped to the tenant's
   * own lines. Resolves to what the script wrote through Dirigible's
   * response module (`http/v4/response`); `options.onBody` hears each piece
   * of it as it is written.
   */
  async run(script: string, options: RunOptions = {}): Promise<ScriptResponse> {
    const { done } = await startRun(parts(this).runHost, script, options);
    return done;
  }

  /**
   * Drains and stops: new upgrades get 503, every session is closed with 1001
   * (going away) and every client too, each socket's onClose runs, then the
   * workers stop; pending runs fail. Done within `shutdownTimeoutMs`: past
   * it, what has not finished is cut off.
   */
  async close(): Promise<void> {
    const p = parts(this);
    if (p.state === 'closed' || p.state === 'closing') return;
    const deadline = Date.now() + p.options.shutdownTimeoutMs;
    const wasStarting = p.started;
    p.state = 'closing';
    if (wasStarting !== null) await wasStarting.catch(() => {});
    p.runs.fail(() => true, new IsletError('ISLET_ERR_ENGINE_CLOSED', 'the engine closed while the script ran'));
    p.served.close();
    const left = (): number => Math.max(0, deadline - Date.now());
    // The servers stay open meanwhile: an upgrade during the drain gets 503, not a refused connection.
    await p.sockets.closeAll(left());
    // The workers have been told of every close: their onClose handlers run before the workers stop.
    await within(Promise.all(p.workers.list.map((w) => w.caughtUp())), left(), undefined);
    await within(p.routes.close(), left(), undefined);
    await p.cluster?.stop();
    await p.workers.stop();
    p.state = 'closed';
  }

  /**
   * What the engine holds now: open sessions and outbound clients (host),
   * tenant isolates and sockets known to the workers, and the host's active
   * handles. For supervision, and for tests that check counts come back down.
   */
  async stats(): Promise<EngineStats> {
    const p = parts(this);
    assertRunning(p);
    const held = await p.workers.stats();
    const { sessions, clients } = p.sockets.counts();
    return {
      sessions,
      clients,
      isolates: held.isolates,
      workerSockets: held.sockets,
      handles: (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().length,
    };
  }

  /** The metrics in Prometheus's text format (what `islet serve --metrics-port` serves at /metrics). */
  async metrics(): Promise<string> {
    const p = parts(this);
    assertRunning(p);
    return p.metrics.text();
  }

  /** Running, and every worker answers within `timeoutMs` (what /healthz says). */
  async healthy(timeoutMs = 2000): Promise<boolean> {
    const p = parts(this);
    if (p.state !== 'running') return false;
    const answered = await within(p.workers.stats().then(() => true), timeoutMs, false);
    return answered && p.state === 'running';
  }

  /** The endpoints served, from the `*.websocket` descriptors under the root. */
  endpoints(): Endpoint[] {
    return parts(this).served.list();
  }

  /**
   * Serves the endpoints on an existing Node HTTP server (an Express or
   * Fastify app's): upgrades under /websockets/v4/service/ are islet's, every
   * other path and request is left to the server's own listeners. Static
   * project pages and scripts over HTTP are opt-in there, through `handleRequest`.
   */
  attach(server: http.Server): void {
    const p = parts(this);
    assertRunning(p);
    p.served.load();
    p.routes.attach(server);
  }

  /**
   * Serves the endpoints and the projects' static pages on a new HTTP server
   * (what `islet serve` does). Any other path gets 404.
   */
  async listen(port = 8080, host = '127.0.0.1'): Promise<http.Server> {
    const p = parts(this);
    assertRunning(p);
    return p.routes.listen(port, host);
  }

  /** Takes an upgrade under /websockets/v4/service/; returns false for any other path. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    return parts(this).routes.handleUpgrade(req, socket, head);
  }

  /** Runs scripts at /services/js/ and serves the projects' static pages; returns false for any other path. */
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    return parts(this).routes.handleRequest(req, res);
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
      if (event !== 'hostError') this.emit('hostError', { where: `a listener of "${String(event)}"`, error: error instanceof Error ? error : new Error(String(error)) });
      return true;
    }
  }
}
