// What each tenant of one sandbox worker has used, across its isolates, for
// the host's `stats`: the ms its calls took, the CPU ms its isolates used in
// them, calls stopped at the budget, isolates lost to the heap limit.
import type { TenantUsage } from './protocol.js';
import type { Tenant } from './tenant.js';

interface Used {
  ms: number;
  cpuMs: number;
  timeouts: number;
  memoryLimits: number;
}

export class WorkerUsage {
  private readonly byTenant = new Map<string, Used>();

  private of(name: string): Used {
    let used = this.byTenant.get(name);
    if (used === undefined) this.byTenant.set(name, (used = { ms: 0, cpuMs: 0, timeouts: 0, memoryLimits: 0 }));
    return used;
  }

  /** A call took `ms` and `cpuNs` of its isolate's CPU (0 or less: the isolate was lost in it, and its CPU is not known). */
  called(name: string, ms: number, cpuNs: bigint): void {
    const used = this.of(name);
    used.ms += ms;
    if (cpuNs > 0n) used.cpuMs += Number(cpuNs) / 1e6;
  }

  timeout(name: string): void {
    this.of(name).timeouts++;
  }

  memoryLimit(name: string): void {
    this.of(name).memoryLimits++;
  }

  /** Per tenant, with its live isolate's heap. */
  list(live: (name: string) => Tenant | undefined): TenantUsage[] {
    return [...this.byTenant].map(([name, u]) => {
      const isolate = live(name)?.isolate;
      const heap = isolate === undefined || isolate.isDisposed ? 0 : isolate.getHeapStatisticsSync().used_heap_size;
      return [name, Math.round(u.ms), heap, u.timeouts, u.memoryLimits, Math.round(u.cpuMs)];
    });
  }
}
