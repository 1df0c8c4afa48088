// Tenants whose code keeps killing their sandbox worker. Three deaths within a
// minute while the tenant's code ran put it in quarantine: its endpoints
// answer 503, its scripts are refused, its sockets are closed, until its
// files change or the quarantine time has passed. A change of its files
// lifts one quarantine per quarantine time, and does not clear the count of
// deaths: a tenant that rewrites its own files could otherwise start its
// attack again and again.
import { IsletError } from '../bridge/errors.js';

export const CRASHES = 3;
export const WINDOW_MS = 60_000;

export class Quarantine {
  private readonly crashes = new Map<string, number[]>();
  private readonly held = new Map<string, { until: number; why: string }>();
  /** When a change of its files last lifted a tenant's quarantine. */
  private readonly liftedAt = new Map<string, number>();

  constructor(private readonly durationMs: number) {}

  /** Records a death during the tenant's code; true when it now goes into quarantine. */
  crashed(tenant: string, how: string, now = Date.now()): boolean {
    const recent = (this.crashes.get(tenant) ?? []).filter((at) => now - at < WINDOW_MS);
    recent.push(now);
    this.crashes.set(tenant, recent);
    if (recent.length < CRASHES) return false;
    this.crashes.delete(tenant);
    const until = now + this.durationMs;
    const way = this.liftable(tenant, now) ? 'change its files or wait' : 'a change of its files lifted its last quarantine, so it waits';
    this.held.set(tenant, {
      until,
      why: `tenant "${tenant}" is quarantined until ${new Date(until).toISOString()}: its code brought its sandbox worker down, or held it far past its budget, ${CRASHES} times within ${WINDOW_MS / 1000} s (last: ${how}); ${way}`,
    });
    return true;
  }

  private liftable(tenant: string, now: number): boolean {
    const last = this.liftedAt.get(tenant);
    return last === undefined || now - last >= this.durationMs;
  }

  /** The error for a quarantined tenant, or null. */
  refusal(tenant: string, now = Date.now()): IsletError | null {
    const entry = this.held.get(tenant);
    if (entry === undefined) return null;
    if (entry.until <= now) {
      this.held.delete(tenant);
      return null;
    }
    return new IsletError('ISLET_ERR_QUARANTINED', entry.why);
  }

  /** The tenant's files changed: its quarantine is lifted, unless a change lifted one within the quarantine time. */
  lift(tenant: string, now = Date.now()): void {
    if (!this.held.has(tenant) || !this.liftable(tenant, now)) return;
    this.held.delete(tenant);
    this.liftedAt.set(tenant, now);
  }
}
