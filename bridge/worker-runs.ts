// Script runs pending on one sandbox worker, per tenant: a run ends when it
// holds nothing (no timer or client its code made is left), or fails with
// the first error nothing caught.
import type { WireError } from './errors.js';
import type { WorkerToHost } from './protocol.js';
import { type Batch, Event } from './tenant.js';

export class WorkerRuns {
  private readonly pending = new Map<string, Set<number>>();
  /** Runs whose script has not run yet (its event waits in a batch): none of them is over, whatever it holds. */
  private readonly notStarted = new Set<number>();

  constructor(private readonly send: (message: WorkerToHost) => void) {}

  add(tenant: string, run: number): void {
    let runs = this.pending.get(tenant);
    if (runs === undefined) this.pending.set(tenant, (runs = new Set()));
    runs.add(run);
    this.notStarted.add(run);
  }

  /** The scripts of the batch's first `end` entries have run (their top-level code is over). */
  startedIn(batch: Batch, end: number): void {
    for (let i = 0; i + 2 < batch.length && i < end; i += 3) if (batch[i] === Event.Run) this.notStarted.delete(batch[i + 1] as number);
  }

  /** Is run `run` the tenant's, and still going? */
  owns(tenant: string, run: number): boolean {
    return this.pending.get(tenant)?.has(run) ?? false;
  }

  has(tenant: string): boolean {
    return (this.pending.get(tenant)?.size ?? 0) > 0;
  }

  /** An error nothing caught fails the run it came from, else every pending run, else is reported. */
  uncaught(tenant: string, run: number, error: WireError): void {
    const runs = this.pending.get(tenant);
    if (run !== 0 && runs?.delete(run)) {
      this.notStarted.delete(run);
      this.send({ t: 'runDone', run, error });
      return;
    }
    if (runs !== undefined && runs.size > 0) {
      this.fail(tenant, error);
      return;
    }
    this.send({ t: 'tenantError', tenant, error });
  }

  /** Fails every pending run of a tenant. */
  fail(tenant: string, error: WireError): void {
    const runs = this.pending.get(tenant);
    if (runs === undefined) return;
    for (const id of runs) {
      this.notStarted.delete(id);
      this.send({ t: 'runDone', run: id, error });
    }
    runs.clear();
  }

  /** The tenant's runs that `over` says are over are done. */
  finish(tenant: string, over: (run: number) => boolean): void {
    const runs = this.pending.get(tenant);
    if (runs === undefined) return;
    for (const run of runs) {
      if (this.notStarted.has(run) || !over(run)) continue;
      runs.delete(run);
      this.send({ t: 'runDone', run });
    }
  }
}
