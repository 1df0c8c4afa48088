// Script runs: where a script lies under the root, starting one, and the
// runs waiting to be over (nothing their code made is left: the worker asks
// the isolate), by id, each with what it wrote through the response module.
import { existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { IsletError } from '../bridge/errors.js';
import { isInside, tenantOf } from '../bridge/handler-ids.js';
import type { ResponsePart } from '../sandbox-api/wire.js';
import type { Bundler } from './bundler.js';
import { SCRIPT_PREFIX } from './handlers.js';
import type { Quarantine } from './quarantine.js';
import { ResponseSink, type RunOptions, type ScriptResponse } from './script-response.js';
import type { SandboxWorker } from './supervisor.js';

interface PendingRun {
  tenant: string;
  response: ResponseSink;
  resolve: (response: ScriptResponse) => void;
  reject: (error: Error) => void;
}

export class Runs {
  private readonly pending = new Map<number, PendingRun>();
  private next = 1;

  /** A new run of `tenant`: its id, and the promise `done` or `fail` settles. */
  add(tenant: string, response: ResponseSink): { id: number; done: Promise<ScriptResponse> } {
    const id = this.next++;
    const done = new Promise<ScriptResponse>((resolve, reject) => this.pending.set(id, { tenant, response, resolve, reject }));
    return { id, done };
  }

  /** Part of run `id`'s response, from a worker that holds one of `tenants`. */
  response(id: number, part: ResponsePart, tenants: Set<string>): void {
    const run = this.pending.get(id);
    if (run !== undefined && tenants.has(run.tenant)) run.response.take(part);
  }

  /** The worker says run `id` is over; `error`: how it failed, its frames mapped. */
  done(id: number, error?: IsletError): void {
    const run = this.pending.get(id);
    if (run === undefined) return;
    this.pending.delete(id);
    const failure = error ?? run.response.failure;
    if (failure === null) run.resolve(run.response.result());
    else run.reject(failure);
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

export interface RunHost {
  root: string;
  maxResponseBytes: number;
  bundler: Bundler;
  quarantine: Quarantine;
  runs: Runs;
  workerFor(tenant: string): SandboxWorker;
  /** Throws ISLET_ERR_ENGINE_CLOSED unless the engine runs. */
  assertRunning(): void;
}

/** Starts a script run in its project's isolate: its id, and its end (see `Engine.run`). */
export async function startRun(host: RunHost, script: string, options: RunOptions): Promise<{ id: number; done: Promise<ScriptResponse> }> {
  host.assertRunning();
  const relative = scriptPath(host.root, script);
  const tenant = tenantOf(relative);
  const quarantined = host.quarantine.refusal(tenant);
  if (quarantined !== null) throw quarantined;
  const bundle = await host.bundler.bundle(relative, SCRIPT_PREFIX + relative);
  host.assertRunning();
  const worker = host.workerFor(tenant);
  const run = host.runs.add(tenant, new ResponseSink(host.maxResponseBytes, options));
  worker.send({ t: 'run', tenant, run: run.id, script: bundle }, tenant);
  return run;
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
