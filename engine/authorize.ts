// Access control at the upgrade: the embedder's `authorize(request,
// endpoint)` decides before any tenant code runs. It may be sync or async;
// whatever it does (throw, reject, never answer, return nonsense) costs only
// that upgrade: a refusal, and a `hostError` report.
import type { IncomingMessage } from 'node:http';
import type { Report } from './events.js';
import type { Endpoint } from './projects.js';
import { within } from './within.js';

/** A JSON value: what a session's `user` may be. */
export type SessionUser = null | boolean | number | string | SessionUser[] | { [key: string]: SessionUser };

/**
 * What `authorize` answers: `true` or `{ user }` accepts (the user, if
 * given, becomes the session's `user` in tenant code); `false` refuses with
 * 401; `{ status, reason }` refuses with that status (400-599).
 */
export type Verdict = boolean | { user?: SessionUser; status?: undefined } | { status: number; reason?: string };

/** A script run over HTTP (`GET /services/js/<project>/<path>`), as `authorize` is asked about it. */
export interface ServedScript {
  /** The script, relative to the root: `<project>/<path>`. */
  script: string;
  project: string;
  /** Never public: with access control, every run needs the caller's say-so. */
  public: false;
}

/** `target` is the endpoint a session would open, or the script a request would run (it has `script`). */
export type Authorize = (request: IncomingMessage, target: Endpoint | ServedScript) => Verdict | Promise<Verdict>;

/** The largest `user`, as JSON: it is copied into the tenant's isolate for every session. */
export const MAX_USER_BYTES = 16 * 1024;

/** Accepted (with the user as JSON, '' for none), or refused with a status and a reason. */
export type Decision = { user: string } | { status: number; reason: string };

const TIMED_OUT = Symbol('authorize timed out');

/** Runs `authorize` within `timeoutMs`; never throws. */
export async function decide(authorize: Authorize, req: IncomingMessage, endpoint: Endpoint | ServedScript, timeoutMs: number, report: Report): Promise<Decision> {
  let verdict: unknown;
  try {
    verdict = await within(Promise.resolve().then(() => authorize(req, endpoint)), timeoutMs, TIMED_OUT);
  } catch (error) {
    report('authorize', error);
    return { status: 500, reason: 'authorization failed' };
  }
  if (verdict === TIMED_OUT) {
    report('authorize', new Error(`authorize did not answer within ${timeoutMs} ms (authorizeTimeoutMs)`));
    return { status: 503, reason: 'authorization timed out' };
  }
  return judge(verdict, report);
}

function judge(verdict: unknown, report: Report): Decision {
  if (verdict === true) return { user: '' };
  if (verdict === false) return { status: 401, reason: 'unauthorized' };
  if (typeof verdict !== 'object' || verdict === null) return nonsense(`authorize answered ${typeof verdict}`, report);
  const { status, reason, user } = verdict as { status?: unknown; reason?: unknown; user?: unknown };
  if (status !== undefined) {
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) return nonsense(`authorize answered status ${String(status)}; a refusal is 400-599`, report);
    return { status, reason: typeof reason === 'string' && reason !== '' ? reason.slice(0, 1000) : 'refused' };
  }
  if (user === undefined) return { user: '' };
  let json: string | undefined;
  try {
    json = JSON.stringify(user);
  } catch (error) {
    return nonsense(`authorize answered a user that is not JSON (${(error as Error).message})`, report);
  }
  if (json === undefined) return nonsense('authorize answered a user that is not JSON', report);
  if (Buffer.byteLength(json) > MAX_USER_BYTES) return nonsense(`authorize answered a user of ${Buffer.byteLength(json)} bytes of JSON (at most ${MAX_USER_BYTES})`, report);
  return { user: json };
}

function nonsense(why: string, report: Report): Decision {
  report('authorize', new Error(why));
  return { status: 500, reason: 'authorization failed' };
}
