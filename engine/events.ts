// How the engine's parts tell the embedder what happened: through the
// Engine's own typed `emit`, and `guarded`, which keeps an exception in
// islet's code (or an embedder's listener) from reaching Node's event loop.
import type { IsletError } from '../bridge/errors.js';
import type { EngineEvents, TenantFailure } from './index.js';

export type Emit = <K extends keyof EngineEvents>(event: K, ...args: EngineEvents[K]) => void;

/** A tenant's failure as `tenantError` and `tenantQuarantined` carry it. */
export function failure(tenant: string, error: IsletError): TenantFailure {
  return { tenant, code: error.code, error: error.message };
}

/** Reports an exception of islet's own code as `hostError`. */
export type Report = (where: string, error: unknown) => void;

/**
 * Runs a listener's work; an exception costs only that request or socket
 * (`fail` answers or drops it) and is reported, never thrown into Node's
 * event loop, where it would end the host.
 */
export function guarded(report: Report, where: string, work: () => void, fail: () => void): void {
  try {
    work();
  } catch (error) {
    try {
      fail();
    } catch {
      // the request is lost already
    }
    report(where, error);
  }
}
