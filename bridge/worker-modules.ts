// The handler bundles of the tenants on one sandbox worker, kept to define
// them in each isolate a tenant gets (its first, and one recreated after a
// memory limit). A module that failed while it loaded is kept as failed
// (null): reported once, never run again until the host sends a new bundle.
import type { WireError } from './errors.js';
import type { BundledCode, WorkerToHost } from './protocol.js';
import type { Tenant } from './tenant.js';

export class WorkerModules {
  private readonly byTenant = new Map<string, Map<string, BundledCode | null>>();

  constructor(
    private readonly send: (message: WorkerToHost) => void,
    /** An error nothing caught, of no run. */
    private readonly uncaught: (tenant: string, error: WireError) => void,
  ) {}

  /** Defines every module of the tenant in its new isolate. `step` runs before each (the watchdog counts it as progress). */
  defineAll(tenant: Tenant, step: () => void): void {
    for (const [name, module] of this.byTenant.get(tenant.name) ?? []) {
      step();
      this.define(tenant, name, module);
    }
  }

  /** Keeps a module (null: failed) and defines it in the tenant's isolate, if it has one. */
  store(tenantName: string, name: string, module: BundledCode | null, live: Tenant | undefined): void {
    let own = this.byTenant.get(tenantName);
    if (own === undefined) this.byTenant.set(tenantName, (own = new Map()));
    own.set(name, module);
    if (live !== undefined) this.define(live, name, module);
  }

  /**
   * A module failed while it loaded: reported once, and not run again in a
   * recreated isolate (the current one, if any, knows already or is told by
   * the caller: this runs inside a call into it too).
   */
  fail(tenantName: string, name: string, error: WireError): void {
    const own = this.byTenant.get(tenantName);
    const module = own?.get(name);
    if (own === undefined || module === undefined || module === null) return;
    own.set(name, null);
    this.send({ t: 'moduleFailed', tenant: tenantName, module: name, file: module.file, error });
  }

  private define(tenant: Tenant, name: string, module: BundledCode | null): void {
    if (module === null) {
      tenant.defineFailed(name);
      return;
    }
    try {
      tenant.define(module);
    } catch (error) {
      tenant.defineFailed(name);
      this.uncaught(tenant.name, { code: 'ISLET_ERR_HANDLER_FAILED', detail: `${name}: ${(error as Error).message}` });
    }
  }
}
