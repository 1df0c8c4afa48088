// The sandbox workers as the engine sees them: placement of tenants, socket
// id blocks, the messages workers send, and what a worker's death means
// (restart, the blame, quarantine).
import { IsletError } from '../bridge/errors.js';
import { tenantOf } from '../bridge/handler-ids.js';
import { ID_BLOCK, type TenantUsage, type WorkerToHost } from '../bridge/protocol.js';
import { MAX_TOPIC_BYTES } from '../sandbox-api/wire.js';
import { type Bundler, bundleRuntime } from './bundler.js';
import type { Cluster, Order } from './cluster.js';
import { type Emit, failure, type Report } from './events.js';
import type { Handlers } from './handlers.js';
import type { Metrics } from './metrics.js';
import type { ResolvedOptions } from './options.js';
import type { Quarantine } from './quarantine.js';
import type { Runs } from './runs.js';
import { WORKER_FRAME } from './replay.js';
import type { Sockets } from './sockets.js';
import { SandboxWorker, type WorkerListener } from './supervisor.js';

/** How long past its call budget a worker may show no progress before the watchdog kills it. */
const LIVENESS_GRACE_MS = 3000;

export interface WorkerStats {
  isolates: number;
  sockets: number;
  tenants: TenantUsage[];
}

/** What the workers need of the rest of the engine. */
export interface WorkersHost {
  options: ResolvedOptions;
  bundler: Bundler;
  sockets: Sockets;
  handlers: Handlers;
  runs: Runs;
  quarantine: Quarantine;
  metrics: Metrics;
  /** The cluster this host is in (once started); null alone. */
  cluster(): Cluster | null;
  emit: Emit;
  report: Report;
  /** The engine is closing: a worker's exit is expected. */
  closing(): boolean;
}

export class Workers {
  readonly list: SandboxWorker[] = [];
  private runtime = '';
  private nextIdBlock = 1;
  private hostIds = { next: 0, end: 0 };
  private readonly asks = new Map<number, (reply: WorkerStats) => void>();
  private nextAsk = 1;

  constructor(private readonly host: WorkersHost) {}

  async start(): Promise<void> {
    this.runtime = await bundleRuntime();
    const livenessMs = this.host.options.limits.callTimeoutMs + LIVENESS_GRACE_MS;
    for (let i = 0; i < this.host.options.workers; i++) {
      this.list.push(new SandboxWorker(i, () => this.initMessage(), this.listener, livenessMs));
    }
    await Promise.all(this.list.map((w) => w.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.list.map((w) => w.stop()));
  }

  /** A tenant stays on the worker it was first placed on: the least loaded one. */
  for(tenant: string): SandboxWorker {
    for (const worker of this.list) if (worker.tenants.has(tenant)) return worker;
    let best = this.list[0]!;
    for (const worker of this.list) if (worker.tenants.size < best.tenants.size) best = worker;
    best.tenants.add(tenant);
    return best;
  }

  /** Socket ids for sessions come from blocks, like the workers' client ids. */
  allocateId(): number {
    if (this.hostIds.next >= this.hostIds.end) {
      const from = this.idBlock();
      this.hostIds = { next: from, end: from + ID_BLOCK };
    }
    return this.hostIds.next++;
  }

  /**
   * The first id of a new block. A host's ids are 2^32 of its own above its
   * cluster id slot (0 alone): unique in the cluster, with no call to Redis.
   * Past its 2^32nd id a host starts again at its first block (block 0 is
   * never used: id 0 means no socket), long after those sockets closed.
   */
  private idBlock(): number {
    const block = 1 + ((this.nextIdBlock++ - 1) % (2 ** 32 / ID_BLOCK - 1));
    return (this.host.cluster()?.slot ?? 0) * 2 ** 32 + block * ID_BLOCK;
  }

  /** Tenant isolates and sockets the workers hold now, and each tenant's use of them (only tenants placed on the worker that reports them). */
  async stats(): Promise<WorkerStats> {
    const replies = await Promise.all(
      this.list.map(
        (worker) =>
          new Promise<WorkerStats>((resolve) => {
            const ask = this.nextAsk++;
            this.asks.set(ask, resolve);
            worker.send({ t: 'stats', ask }, WORKER_FRAME);
          }),
      ),
    );
    return {
      isolates: replies.reduce((n, r) => n + r.isolates, 0),
      sockets: replies.reduce((n, r) => n + r.sockets, 0),
      tenants: replies.flatMap((r) => r.tenants),
    };
  }

  private initMessage() {
    const { root, limits, hostName } = this.host.options;
    return { t: 'init', runtime: this.runtime, root, limits, ids: this.idBlock(), host: hostName } as const;
  }

  private readonly listener: WorkerListener = {
    control: (worker, message) => this.onMessage(worker, message),
    text: (worker, id, payload) => {
      if (this.host.sockets.owns(worker, id)) this.host.sockets.send(id, payload);
      else this.toPeer(worker, ['send', '', id], payload);
    },
    chunkDone: () => this.host.sockets.uncorkAll(),
    failed: (worker, error) => this.host.report(`message from sandbox worker ${worker.index}`, error),
    ready: (worker) => {
      // A restarted worker gets its tenants' open sockets back, with their
      // handler bundles, and the sessions on other hosts, before anything
      // that was queued while it was down.
      const cluster = this.host.cluster();
      if (cluster !== null) {
        worker.sendFirst({ t: 'cluster', away: cluster.away });
        worker.sendFirst({ t: 'peers', add: cluster.peerSessions(), remove: [] });
      }
      const sockets = this.host.sockets.ofWorker(worker);
      if (sockets.length === 0) return;
      this.host.handlers.resend(worker, sockets);
      worker.sendFirst({ t: 'adopt', sockets });
    },
    exit: (worker, { pid, code, signal, running, why }) => {
      if (this.host.closing()) return;
      this.host.emit('workerExit', { worker: worker.index, pid, code, signal });
      if (running !== null) this.killedBy(running, why);
      this.host.runs.fail(
        (tenant) => worker.tenants.has(tenant),
        new IsletError('ISLET_ERR_WORKER_DIED', `sandbox worker ${worker.index} died (${why}) while running a script; it is being restarted`),
      );
      worker.start().then(
        () => {
          this.host.metrics.workerRestarts++;
          this.host.emit('workerRestart', { worker: worker.index, pid: worker.pid });
        },
        () => {},
      );
    },
  };

  /**
   * An order for a session on another host of the cluster (a send, a close,
   * a topic joined or left): only for one of a tenant on `worker`. A send's
   * tenant is the socket's, which the cluster knows.
   */
  private toPeer(worker: SandboxWorker, order: Order, payload: Buffer | string = ''): void {
    const cluster = this.host.cluster();
    if (cluster === null) return;
    const tenant = order[1] === '' ? cluster.tenantOf(order[2]) : order[1];
    if (tenant === null || !worker.tenants.has(tenant)) return;
    order[1] = tenant;
    cluster.orderFor(tenant, order, payload);
  }

  /** The worker died while `tenant`'s code ran: tell the tenant; it counts toward quarantine. */
  private killedBy(tenant: string, how: string): void {
    this.host.emit('tenantError', failure(tenant, new IsletError('ISLET_ERR_WORKER_DIED', `the sandbox worker died (${how}) while this tenant's code ran; the events of that call are lost`)));
    this.strike(tenant, how);
  }

  /**
   * The tenant's code brought its worker down, or held it far past its
   * budget: three times in a minute is quarantine. Its sockets close, and its
   * isolate is discarded with its timers (code that keeps coming back on a
   * timer would go on holding the worker).
   */
  private strike(tenant: string, how: string): void {
    const { quarantine, sockets, emit } = this.host;
    if (!quarantine.crashed(tenant, how)) return;
    this.host.metrics.of(tenant).quarantines++;
    emit('tenantQuarantined', failure(tenant, quarantine.refusal(tenant)!));
    // 1013: try again later (RFC 6455 7.4.1, IANA registry).
    sockets.closeOf(tenant, null, 1013, 'tenant quarantined');
    for (const worker of this.list) if (worker.tenants.has(tenant)) worker.send({ t: 'evict', tenant }, tenant);
  }

  /** A worker's message, checked by the supervisor's decoder; one about a tenant not placed on that worker is ignored. */
  private onMessage(worker: SandboxWorker, message: WorkerToHost): void {
    const { sockets, emit, bundler } = this.host;
    switch (message.t) {
      case 'needIds':
        worker.send({ t: 'ids', from: this.idBlock() }, WORKER_FRAME);
        break;
      case 'connect':
        if (!worker.tenants.has(message.socket.tenant)) break;
        sockets.open(worker, message.socket).catch((error: unknown) => this.host.report('opening a client', error));
        break;
      case 'close':
        if (sockets.owns(worker, message.id)) sockets.closeFor(message.id, message.code, message.reason);
        else this.toPeer(worker, ['close', message.tenant, message.id, message.code ?? null, message.reason ?? null]);
        break;
      case 'subscribe':
      case 'unsubscribe': {
        if (!worker.tenants.has(message.tenant) || !isTopic(message.topic)) break;
        const join = message.t === 'subscribe';
        if (!sockets.subscribe(message.id, message.tenant, message.topic, join)) this.toPeer(worker, [message.t, message.tenant, message.id, message.topic]);
        break;
      }
      case 'publish': {
        if (!worker.tenants.has(message.tenant) || !isTopic(message.topic)) break;
        const payload = Buffer.from(message.text);
        if (payload.length > this.host.options.limits.maxMessageBytes) break;
        sockets.publish(message.tenant, message.topic, payload);
        this.host.cluster()?.publish(message.tenant, message.topic, payload);
        break;
      }
      case 'log': {
        const at = message.handler !== undefined && message.socket !== undefined && tenantOf(message.handler) === message.tenant ? { handler: message.handler, socket: message.socket } : {};
        emit('log', { tenant: message.tenant, level: message.level, text: message.text, ...at });
        break;
      }
      case 'tenantError':
        emit('tenantError', failure(message.tenant, bundler.mapError(message.error)));
        break;
      case 'overran': {
        if (!worker.tenants.has(message.tenant)) break;
        const how = `a call ran ${message.ms} ms, over twice its budget of ${this.host.options.limits.callTimeoutMs} ms, in code the budget could not stop`;
        emit('tenantError', failure(message.tenant, new IsletError('ISLET_ERR_TIMEOUT', how)));
        this.strike(message.tenant, how);
        break;
      }
      case 'moduleFailed': {
        if (!worker.tenants.has(message.tenant) || tenantOf(message.module) !== message.tenant) break;
        // Reported once; its sockets close (1011: the server cannot go on with them), and new ones are refused until its files change.
        this.host.handlers.markFailed(message.module, message.file);
        const cause = bundler.mapError(message.error);
        emit('tenantError', failure(message.tenant, new IsletError('ISLET_ERR_HANDLER_FAILED', `${message.module} failed while it loaded; its sockets are closed: ${cause.message}`)));
        sockets.closeOf(message.tenant, message.module, 1011, `handler ${message.module} failed to load`);
        break;
      }
      case 'stats':
        this.asks.get(message.ask)?.({ isolates: message.isolates, sockets: message.sockets, tenants: message.tenants.filter(([tenant]) => worker.tenants.has(tenant)) });
        this.asks.delete(message.ask);
        break;
      case 'response':
        this.host.runs.response(message.run, message.part, worker.tenants);
        break;
      case 'runDone':
        this.host.runs.done(message.run, message.error === undefined ? undefined : bundler.mapError(message.error));
        break;
    }
  }
}

/** A topic name a worker sent is 1 to MAX_TOPIC_BYTES bytes (the isolate checked it before). */
function isTopic(topic: string): boolean {
  return topic !== '' && Buffer.byteLength(topic) <= MAX_TOPIC_BYTES;
}
