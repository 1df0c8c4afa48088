// What an operator can see, per tenant, in Prometheus's text format (made
// with prom-client): sockets open, messages and bytes each way, the time its
// calls took, its isolate's heap, limits it hit, refused upgrades, heartbeat
// timeouts, quarantines; and host-wide worker restarts and prom-client's
// process metrics. The hot paths only add to plain counters (one object per
// tenant, held by each socket); prom-client reads them when scraped. The
// `tenant` label is a project name, or "(none)" for an upgrade to no
// endpoint: nothing a peer sends becomes a label.
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { TenantUsage } from '../bridge/protocol.js';

/** Limits a tenant can hit, as metric label values. */
export type LimitName = 'callTimeoutMs' | 'memoryMiB' | 'messagesPerSecond' | 'maxQueuedBytes' | 'maxTenantQueuedBytes';

export class TenantCounters {
  messagesIn = 0;
  bytesIn = 0;
  messagesOut = 0;
  bytesOut = 0;
  heartbeatTimeouts = 0;
  quarantines = 0;
  readonly limitHits = new Map<LimitName, number>();
  readonly refused = new Map<number, number>();

  hit(limit: LimitName): void {
    this.limitHits.set(limit, (this.limitHits.get(limit) ?? 0) + 1);
  }
}

/** What a scrape asks of the rest of the engine. */
export interface MetricsSources {
  /** Open sessions and clients per tenant. */
  open(): Map<string, { sessions: number; clients: number }>;
  /** Each tenant's use of the workers. */
  usage(): Promise<TenantUsage[]>;
}

export const NO_TENANT = '(none)';

export class Metrics {
  private readonly tenants = new Map<string, TenantCounters>();
  workerRestarts = 0;
  private readonly registry = new Registry();
  /** The workers' report of the scrape in progress. */
  private usage: TenantUsage[] = [];

  constructor(private readonly sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry });
    // prom-client calls collect() with the metric as `this`.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const metrics = this;
    const perTenant = (name: string, help: string, read: (c: TenantCounters) => number): void => {
      new Counter({
        name,
        help,
        labelNames: ['tenant'],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [tenant, counters] of metrics.tenants) this.inc({ tenant }, read(counters));
        },
      });
    };
    const open = (name: string, help: string, pick: (o: { sessions: number; clients: number }) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['tenant'],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [tenant, o] of metrics.sources.open()) this.set({ tenant }, pick(o));
        },
      });
    };
    open('islet_sessions_open', 'Sessions open on the tenant\'s endpoints.', (o) => o.sessions);
    open('islet_clients_open', 'Outbound clients the tenant has open.', (o) => o.clients);
    perTenant('islet_messages_received_total', 'Messages the tenant\'s sockets received.', (c) => c.messagesIn);
    perTenant('islet_received_bytes_total', 'Bytes of messages the tenant\'s sockets received.', (c) => c.bytesIn);
    perTenant('islet_messages_sent_total', 'Messages the tenant sent on its sockets.', (c) => c.messagesOut);
    perTenant('islet_sent_bytes_total', 'Bytes of messages the tenant sent on its sockets.', (c) => c.bytesOut);
    perTenant('islet_heartbeat_timeouts_total', 'Sockets of the tenant dropped for not answering a ping.', (c) => c.heartbeatTimeouts);
    perTenant('islet_quarantines_total', 'Times the tenant was quarantined.', (c) => c.quarantines);
    new Counter({
      name: 'islet_tenant_call_seconds_total',
      help: 'Time the tenant\'s calls into its isolate took (its handlers, scripts and timers).',
      labelNames: ['tenant'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [tenant, ms] of metrics.usage) this.inc({ tenant }, ms / 1000);
      },
    });
    new Gauge({
      name: 'islet_tenant_heap_bytes',
      help: 'Heap the tenant\'s isolate uses.',
      labelNames: ['tenant'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [tenant, , heap] of metrics.usage) this.set({ tenant }, heap);
      },
    });
    new Counter({
      name: 'islet_limit_hits_total',
      help: 'Calls stopped, isolates lost, sessions closed or messages dropped at a limit, by limit.',
      labelNames: ['tenant', 'limit'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [tenant, , , timeouts, memory] of metrics.usage) {
          if (timeouts > 0) this.inc({ tenant, limit: 'callTimeoutMs' }, timeouts);
          if (memory > 0) this.inc({ tenant, limit: 'memoryMiB' }, memory);
        }
        for (const [tenant, counters] of metrics.tenants) for (const [limit, n] of counters.limitHits) this.inc({ tenant, limit }, n);
      },
    });
    new Counter({
      name: 'islet_upgrades_refused_total',
      help: 'Upgrades refused, by HTTP status.',
      labelNames: ['tenant', 'status'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [tenant, counters] of metrics.tenants) for (const [status, n] of counters.refused) this.inc({ tenant, status: String(status) }, n);
      },
    });
    new Counter({
      name: 'islet_worker_restarts_total',
      help: 'Sandbox workers started again after they died.',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(metrics.workerRestarts);
      },
    });
  }

  of(tenant: string): TenantCounters {
    let counters = this.tenants.get(tenant);
    if (counters === undefined) this.tenants.set(tenant, (counters = new TenantCounters()));
    return counters;
  }

  /** The Prometheus text: asks the workers first, then reads every counter. */
  async text(): Promise<string> {
    this.usage = await this.sources.usage();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
