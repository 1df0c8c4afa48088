// Script runs: where a script lies under the root, and the runs waiting for
// their tenant to be done (no clients, no timers left), by id.
import { existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { IsletError } from '../bridge/errors.js';
import { isInside } from '../bridge/handler-ids.js';

interface PendingRun {
  tenant: string;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class Runs {
  private readonly pending = new Map<number, PendingRun>();
  private next = 1;

  /** A new run of `tenant`: its id, and the promise `done` or `fail` settles. */
  add(tenant: string): { id: number; done: Promise<void> } {
    const id = this.next++;
    const done = new Promise<void>((resolve, reject) => this.pending.set(id, { tenant, resolve, reject }));
    return { id, done };
  }

  /** The worker says run `id` is over; `error`: how it failed, its frames mapped. */
  done(id: number, error?: IsletError): void {
    const run = this.pending.get(id);
    if (run === undefined) return;
    this.pending.delete(id);
    if (error === undefined) run.resolve();
    else run.reject(error);
  }

  /** Fails every pending run of a tenant that `match` picks. */
  fail(match: (tenant: string) => boolean, error: Error): void {
    for (const [id, run] of this.pending) {
      if (!match(run.tenant)) continue;
      this.pending.delete(id);
      run.reject(error);
    }
  }
}

/**
 * The script's path relative to the root. The script file itself is not
 * followed if it is a link: the bundler judges where a link really leads
 * (another project's file is not this project's code).
 */
export function scriptPath(root: string, script: string): string {
  if (typeof script !== 'string' || script.length === 0) {
    throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', 'script must be a non-empty path');
  }
  const file = path.resolve(root, script);
  if (!existsSync(file) || !statSync(file).isFile()) {
    throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', `script ${script} does not exist under the projects root ${root}`);
  }
  // Spelled inside the root, or inside it once the folders on the way are resolved.
  const realRoot = realpathSync(root);
  const spelled = path.resolve(realpathSync(path.dirname(file)), path.basename(file));
  const inside = isInside(root, file) ? path.relative(root, file) : isInside(realRoot, spelled) ? path.relative(realRoot, spelled) : null;
  if (inside === null) {
    throw new IsletError('ISLET_ERR_SCRIPT_NOT_FOUND', `script ${script} lies outside the projects root ${root}`);
  }
  return inside.split(path.sep).join('/');
}
