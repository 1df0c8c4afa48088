// Scripts over HTTP, as Dirigible runs them: `GET /services/js/<project>/<path>`
// runs that script in its project's isolate and answers with what it wrote
// through `http/v4/response`. Each request gets the limits of any run (call
// budget, quarantine), the access control of the endpoints, a bound on runs
// going at once per tenant, and a time limit.
import { realpathSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { asIsletError, IsletError } from '../bridge/errors.js';
import { tenantOf } from '../bridge/handler-ids.js';
import { decide, type ServedScript } from './authorize.js';
import { type Emit, failure } from './events.js';
import type { ResolvedOptions } from './options.js';
import { type RunHost, startRun } from './runs.js';
import type { ScriptResponse } from './script-response.js';
import { answer, projectFile } from './server.js';

export const SCRIPTS_PREFIX = '/services/js/';
const SCRIPT_EXTENSIONS = ['.js', '.mjs', '.ts'];

export interface ScriptsHost {
  options: ResolvedOptions;
  runHost: RunHost;
  emit: Emit;
  report: (where: string, error: unknown) => void;
}

/** What an error from starting or running a script answers. */
function statusOf(error: IsletError): number {
  switch (error.code) {
    case 'ISLET_ERR_SCRIPT_NOT_FOUND':
      return 404;
    case 'ISLET_ERR_QUARANTINED':
    case 'ISLET_ERR_ENGINE_CLOSED':
      return 503;
    case 'ISLET_ERR_TIMEOUT':
      return 504;
    default:
      return 500;
  }
}

export class ServedScripts {
  /** Runs over HTTP going now, per tenant (maxScriptRuns). */
  private readonly running = new Map<string, number>();

  constructor(private readonly host: ScriptsHost) {}

  /** Takes a request under /services/js/; returns false for any other path, or when scripts are off. */
  handle(req: IncomingMessage, res: ServerResponse, pathname: string): boolean {
    if (!pathname.startsWith(SCRIPTS_PREFIX) || !this.host.options.scripts) return false;
    const script = projectFile(req, res, pathname, {
      prefix: SCRIPTS_PREFIX,
      methods: ['GET', 'HEAD', 'POST'],
      wrongMethod: 'scripts are run with GET, HEAD or POST',
      notFound: 'not a script: /services/js/<project>/<path>.js (or .mjs, .ts)',
      refuse: (relative) => !SCRIPT_EXTENSIONS.some((e) => relative.endsWith(e)),
    });
    if (script === null) return true;
    if (!this.spelledAsItIs(script)) {
      answer(res, 404, `ISLET_ERR_SCRIPT_NOT_FOUND: no script ${script}`);
      return true;
    }
    void this.run(req, res, script, tenantOf(script));
    return true;
  }

  /**
   * Over HTTP a script is named by its own path: no linked folder on the way.
   * Else one file answers to endless spellings (a link to `.` repeated), each
   * bundled and cached on its own.
   */
  private spelledAsItIs(script: string): boolean {
    const root = this.host.options.root;
    try {
      return realpathSync(path.join(root, script)) === path.join(realpathSync(root), script);
    } catch {
      return true; // not there: the run answers 404
    }
  }

  private async run(req: IncomingMessage, res: ServerResponse, script: string, tenant: string): Promise<void> {
    const { options } = this.host;
    const going = this.running.get(tenant) ?? 0;
    if (going >= options.limits.maxScriptRuns) {
      answer(res, 503, `ISLET_ERR_LIMIT_SCRIPT_RUNS: tenant "${tenant}" already has ${going} scripts running over HTTP (limit maxScriptRuns)`);
      return;
    }
    this.running.set(tenant, going + 1);
    try {
      if (options.authorize !== null) {
        const target: ServedScript = { script, project: tenant, public: false };
        const decision = await decide(options.authorize, req, target, options.authorizeTimeoutMs, this.host.report);
        if ('status' in decision) {
          answer(res, decision.status, decision.reason);
          return;
        }
      }
      await this.answerWithRun(res, script, tenant);
    } finally {
      const left = (this.running.get(tenant) ?? 1) - 1;
      if (left > 0) this.running.set(tenant, left);
      else this.running.delete(tenant);
    }
  }

  /** Runs the script and answers: when it closes its response, or when the run is over, or at scriptTimeoutMs with 504. */
  private async answerWithRun(res: ServerResponse, script: string, tenant: string): Promise<void> {
    const { runHost, options, emit } = this.host;
    let answered = false;
    const send = (response: ScriptResponse): void => {
      if (answered) return;
      answered = true;
      if (res.destroyed) return;
      // 204 and 304 have no body, nor a length (RFC 9110 8.6); a HEAD answer has the length without the body.
      const bodiless = response.status === 204 || response.status === 304;
      const length = bodiless ? {} : { 'content-length': response.body.length };
      // The answer is held in memory until the peer has read it: one that stops reading is dropped.
      res.setTimeout(options.upgradeTimeoutMs, () => res.destroy());
      res.writeHead(response.status, { 'content-type': 'text/plain; charset=utf-8', ...response.headers, ...length, 'x-content-type-options': 'nosniff' });
      res.end(res.req.method === 'HEAD' || bodiless ? undefined : response.body);
    };
    const fail = (error: IsletError): void => {
      if (!answered) {
        answered = true;
        answer(res, statusOf(error), error.message);
      }
    };
    let run: Awaited<ReturnType<typeof startRun>>;
    try {
      run = await startRun(runHost, script, { onClose: send });
    } catch (error) {
      const islet = asIsletError(error);
      // Not the projects root's path: that is no business of whoever asked.
      fail(islet.code === 'ISLET_ERR_SCRIPT_NOT_FOUND' ? new IsletError(islet.code, `no script ${script}`) : islet);
      return;
    }
    // Out of time: answered 504 now; the worker cuts the run (its timers cleared, its clients closed), and the
    // request keeps its place in maxScriptRuns until the run is over there, so cut runs cannot pile up.
    let cut = false;
    const timer = setTimeout(() => {
      cut = true;
      const late = new IsletError('ISLET_ERR_TIMEOUT', `script ${script} did not finish within ${options.limits.scriptTimeoutMs} ms (limit scriptTimeoutMs)`);
      emit('tenantError', failure(tenant, late));
      fail(late);
      runHost.workerFor(tenant).send({ t: 'cancel', tenant, run: run.id }, tenant);
    }, options.limits.scriptTimeoutMs);
    try {
      send(await run.done);
    } catch (error) {
      const islet = asIsletError(error);
      // The operator hears of a failed run too, even one whose answer already went out (a cut one was told at the cut).
      if (!cut) emit('tenantError', failure(tenant, islet));
      fail(islet);
    } finally {
      clearTimeout(timer);
    }
  }
}
