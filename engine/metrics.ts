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
import type { ClusterStats } from './cluster.js';

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
  /** The cluster's state; null for a host alone (then no cluster series). */
  cluster(): ClusterStats | null;
}

export const NO_TENANT = '(none)';

/** A sample: its labels and its value. */
type Sample = [labels: Record<string, string>, value: number];

export class Metrics {
  private readonly tenants = new Map<string, TenantCounters>();
  workerRestarts = 0;
  private readonly registry = new Registry();
  /** The workers' report of the scrape in progress. */
  private usage: TenantUsage[] = [];

  constructor(private readonly sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry });
    const perTenant = (read: (c: TenantCounters) => number) => (): Sample[] => [...this.tenants].map(([tenant, c]) => [{ tenant }, read(c)]);
    const open = (pick: (o: { sessions: number; clients: number }) => number) => (): Sample[] => [...this.sources.open()].map(([tenant, o]) => [{ tenant }, pick(o)]);
    this.gauge('islet_sessions_open', 'Sessions open on the tenant\'s endpoints.', ['tenant'], open((o) => o.sessions));
    this.gauge('islet_clients_open', 'Outbound clients the tenant has open.', ['tenant'], open((o) => o.clients));
    this.counter('islet_messages_received_total', 'Messages the tenant\'s sockets received.', ['tenant'], perTenant((c) => c.messagesIn));
    this.counter('islet_received_bytes_total', 'Bytes of messages the tenant\'s sockets received.', ['tenant'], perTenant((c) => c.bytesIn));
    this.counter('islet_messages_sent_total', 'Messages the tenant sent on its sockets.', ['tenant'], perTenant((c) => c.messagesOut));
    this.counter('islet_sent_bytes_total', 'Bytes of messages the tenant sent on its sockets.', ['tenant'], perTenant((c) => c.bytesOut));
    this.counter('islet_heartbeat_timeouts_total', 'Sockets of the tenant dropped for not answering a ping.', ['tenant'], perTenant((c) => c.heartbeatTimeouts));
    this.counter('islet_quarantines_total', 'Times the tenant was quarantined.', ['tenant'], perTenant((c) => c.quarantines));
    this.counter('islet_tenant_call_seconds_total', 'Wall time the tenant\'s calls into its isolate took (its handlers, scripts and timers).', ['tenant'], () =>
      this.usage.map(([tenant, ms]) => [{ tenant }, ms / 1000]),
    );
    this.counter('islet_tenant_cpu_seconds_total', 'CPU time the tenant\'s isolates used in its calls.', ['tenant'], () =>
      this.usage.map(([tenant, , , , , cpuMs]) => [{ tenant }, cpuMs / 1000]),
    );
    this.gauge('islet_tenant_heap_bytes', 'Heap the tenant\'s isolate uses.', ['tenant'], () => this.usage.map(([tenant, , heap]) => [{ tenant }, heap]));
    this.counter('islet_limit_hits_total', 'Calls stopped, isolates lost, sessions closed or messages dropped at a limit, by limit.', ['tenant', 'limit'], () => [
      ...this.usage.flatMap(([tenant, , , timeouts, memory]): Sample[] => [
        [{ tenant, limit: 'callTimeoutMs' }, timeouts],
        [{ tenant, limit: 'memoryMiB' }, memory],
      ]).filter(([, n]) => n > 0),
      ...[...this.tenants].flatMap(([tenant, c]) => [...c.limitHits].map(([limit, n]): Sample => [{ tenant, limit }, n])),
    ]);
    this.counter('islet_upgrades_refused_total', 'Upgrades refused, by HTTP status.', ['tenant', 'status'], () =>
      [...this.tenants].flatMap(([tenant, c]) => [...c.refused].map(([status, n]): Sample => [{ tenant, status: String(status) }, n])),
    );
    this.counter('islet_worker_restarts_total', 'Sandbox workers started again after they died.', [], () => [[{}, this.workerRestarts]]);
    const cluster = (read: (c: ClusterStats) => Sample[]) => (): Sample[] => {
      const stats = this.sources.cluster();
      return stats === null ? [] : read(stats);
    };
    this.gauge('islet_cluster_hosts', 'Hosts of the cluster this host sees, itself included (1 while it has lost Redis).', [], cluster((c) => [[{}, c.hosts]]));
    this.gauge('islet_cluster_redis_connected', 'Whether this host is joined to its cluster through Redis (1) or serves alone until Redis is back (0).', [], cluster((c) => [[{}, c.connected ? 1 : 0]]));
    this.counter('islet_cluster_messages_total', 'Messages over Redis: in (heard from other hosts) and out (to them).', ['direction'], cluster((c) => [
      [{ direction: 'in' }, c.messagesIn],
      [{ direction: 'out' }, c.messagesOut],
    ]));
  }

  /** A counter whose samples are read when scraped. */
  private counter(name: string, help: string, labelNames: string[], samples: () => Sample[]): void {
    new Counter({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, value] of samples()) this.inc(labels, value);
      },
    });
  }

  /** A gauge whose samples are read when scraped. */
  private gauge(name: string, help: string, labelNames: string[], samples: () => Sample[]): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, value] of samples()) this.set(labels, value);
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
