// The messages between the host and a sandbox worker, as control frames
// carry them (frames.ts), and the check of every message a worker sends:
// a worker runs tenant code, so the host trusts no shape it did not check.
// What a worker is doing is also written where the host reads it after a
// death (progress-log.ts).
import { LOG_LEVELS } from '../sandbox-api/wire.js';
import { isErrorCode, type WireError } from './errors.js';
import type { ResponsePart } from '../sandbox-api/wire.js';

/** Per-tenant limits, set on the engine and enforced by the worker. */
export interface TenantLimits {
  /** Heap of one tenant isolate, in MiB. */
  memoryMiB: number;
  /** WebAssembly memory one tenant isolate may make over its lifetime, in MiB (each memory at its maximum size); 0: no WebAssembly. */
  wasmMemoryMiB: number;
  /** Wall-clock budget of one call into an isolate (a batch of events, a script run, a timer), in ms. */
  callTimeoutMs: number;
  /** How long a socket's next events wait for a handler's promise that does not settle, in ms. */
  settleTimeoutMs: number;
  /** Largest text message a tenant may send or receive, in bytes. */
  maxMessageBytes: number;
  /** Most outbound clients one tenant may have open at once. */
  maxClients: number;
  /** Most pending timers one tenant may have at once. */
  maxTimers: number;
  /** Most open sessions on one tenant's endpoints (host). */
  maxSessions: number;
  /** Bytes that may wait to be sent on one socket whose peer does not read (host). */
  maxQueuedBytes: number;
  /** Bytes that may wait to be sent on all of one tenant's sockets together (host). */
  maxTenantQueuedBytes: number;
  /** Output of one call into an isolate (sends, replies, console lines, errors), in UTF-16 units of text. */
  maxOutputBytes: number;
  /** Largest bundle of one script or handler, in bytes (host). */
  maxBundleBytes: number;
  /** Messages one session's peer may send a second, in bursts of as many; 0: no limit (host). */
  messagesPerSecond: number;
  /** How long a script run over HTTP (`GET /services/js/…`) may take before it is answered 504, in ms (host). */
  scriptTimeoutMs: number;
  /** Script runs over HTTP of one tenant going at once; more are answered 503 (host). */
  maxScriptRuns: number;
  /** Bytes a script run may write through the response module, headers and body (host). */
  maxResponseBytes: number;
  /** Topics one session may be subscribed to at once (host). */
  maxTopics: number;
}

/** A socket as the worker's tenant sees it; sent again when a tenant is recreated. */
export interface SocketInfo {
  id: number;
  /** An outbound client a tenant made (`createWebsocket`), or a session on one of its endpoints. */
  kind: 'client' | 'session';
  tenant: string;
  handler: string;
  uri: string;
  engine: string;
  state: 'connecting' | 'open' | 'closing';
  /** The endpoint a session came in on; '' for a client. */
  endpoint: string;
  /** A session's `user` as `authorize` gave it, as JSON; '' for none (and for a client). */
  user: string;
  /** The cluster host a session is on; '' for this host (every client is). */
  host: string;
}

/** One tenant's use of a worker, as `stats` reports it. */
export type TenantUsage = [tenant: string, callMs: number, heapBytes: number, timeouts: number, memoryLimits: number, cpuMs: number];

/** A bundled module or script, ready to evaluate in an isolate. */
export interface BundledCode {
  /** Module id (`project/path/name`) or script path relative to the root. */
  name: string;
  /** Name the isolate compiles it under; stack frames carry it, the host maps them back. */
  file: string;
  code: string;
}

export type HostToWorker =
  /** `host`: this host's name, as sessions report it. */
  | { t: 'init'; runtime: string; root: string; limits: TenantLimits; ids: number; host: string }
  | { t: 'ids'; from: number }
  | { t: 'module'; tenant: string; module: BundledCode }
  | { t: 'moduleFailed'; tenant: string; handler: string }
  | { t: 'run'; tenant: string; run: number; script: BundledCode }
  | { t: 'adopt'; sockets: SocketInfo[] }
  | { t: 'accept'; socket: SocketInfo }
  /** Sessions on other hosts of the cluster, come (`host` set) and gone. */
  | { t: 'peers'; add: SocketInfo[]; remove: number[] }
  /** The cluster's Redis went out of reach, or came back. */
  | { t: 'cluster'; away: boolean }
  | { t: 'stats'; ask: number }
  /** The watchdog's: answered, like any frame, with the next `idle`. */
  | { t: 'ping' }
  /** The tenant is quarantined: discard its isolate (its timers with it). */
  | { t: 'evict'; tenant: string }
  /** Script run `run` is out of time (scriptTimeoutMs): it fails, and what it made is let go. */
  | { t: 'cancel'; tenant: string; run: number }
  | { t: 'event'; id: number; event: 'open' | 'close' }
  | { t: 'event'; id: number; event: 'error'; error: WireError };

export type LogLevel = (typeof LOG_LEVELS)[number];

export type WorkerToHost =
  | { t: 'ready' }
  /**
   * The turn is over: the frames up to `seq` are done with (the host may
   * forget them), `calls` calls into isolates were started so far, and no
   * tenant code runs until the next turn (see `ProgressLog`).
   */
  /** A turn ended, having taken the frames up to `seq`; `pending`: socket events left for the next turn (a stopped call's put back). */
  | { t: 'idle'; seq: number; calls: number; pending: number }
  | { t: 'needIds' }
  | { t: 'connect'; socket: SocketInfo }
  | { t: 'close'; id: number; tenant: string; code?: number; reason?: string }
  | { t: 'subscribe' | 'unsubscribe'; id: number; tenant: string; topic: string }
  | { t: 'publish'; tenant: string; topic: string; text: string }
  /** `handler` and `socket`: the tenant's handler that ran, and for which of its sockets. */
  | { t: 'log'; tenant: string; level: LogLevel; text: string; handler?: string; socket?: number }
  | { t: 'runDone'; run: number; error?: WireError }
  /** Part of a script run's HTTP response, as the script wrote it. */
  | { t: 'response'; run: number; part: ResponsePart }
  /** `tenants`: per tenant on the worker, [name, ms its calls took, its isolate's heap bytes, calls stopped at callTimeoutMs, isolates lost to memoryMiB, CPU ms its isolates used]. */
  | { t: 'stats'; ask: number; isolates: number; sockets: number; tenants: TenantUsage[] }
  | { t: 'tenantError'; tenant: string; error: WireError }
  /** A call into the tenant ran `ms`, far past its budget (see the worker's `overran`). */
  | { t: 'overran'; tenant: string; ms: number }
  /** A handler module (bundle `file`) failed while it loaded; it is not run again. */
  | { t: 'moduleFailed'; tenant: string; module: string; file: string; error: WireError };

type FieldType = 'number' | 'string' | 'client' | 'level' | 'usage' | 'error' | 'part' | 'number?' | 'string?' | 'error?';

/** The fields of every message a worker may send, by type: what the host checks before it acts. */
const WORKER_MESSAGES: Record<WorkerToHost['t'], Record<string, FieldType>> = {
  ready: {},
  idle: { seq: 'number', calls: 'number', pending: 'number' },
  needIds: {},
  connect: { socket: 'client' },
  close: { id: 'number', tenant: 'string', code: 'number?', reason: 'string?' },
  subscribe: { id: 'number', tenant: 'string', topic: 'string' },
  unsubscribe: { id: 'number', tenant: 'string', topic: 'string' },
  publish: { tenant: 'string', topic: 'string', text: 'string' },
  log: { tenant: 'string', level: 'level', text: 'string', handler: 'string?', socket: 'number?' },
  runDone: { run: 'number', error: 'error?' },
  response: { run: 'number', part: 'part' },
  stats: { ask: 'number', isolates: 'number', sockets: 'number', tenants: 'usage' },
  tenantError: { tenant: 'string', error: 'error' },
  moduleFailed: { tenant: 'string', module: 'string', file: 'string', error: 'error' },
  overran: { tenant: 'string', ms: 'number' },
};
const LEVELS: readonly string[] = LOG_LEVELS;
const SOCKET_FIELDS: Record<keyof SocketInfo, FieldType> = {
  id: 'number',
  kind: 'string',
  tenant: 'string',
  handler: 'string',
  uri: 'string',
  engine: 'string',
  state: 'string',
  endpoint: 'string',
  user: 'string',
  host: 'string',
};

function fieldOk(value: unknown, type: FieldType): boolean {
  switch (type) {
    case 'number':
      return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
    case 'string':
      return typeof value === 'string';
    case 'number?':
      return value === undefined || fieldOk(value, 'number');
    case 'string?':
      return value === undefined || typeof value === 'string';
    case 'error':
      return typeof value === 'object' && value !== null && isErrorCode((value as WireError).code) && typeof (value as WireError).detail === 'string';
    case 'error?':
      return value === undefined || fieldOk(value, 'error');
    case 'part':
      return responsePartOk(value);
    case 'usage':
      return Array.isArray(value) && value.every((u) => Array.isArray(u) && u.length === 6 && typeof u[0] === 'string' && u.slice(1).every((n) => fieldOk(n, 'number')));
    case 'level':
      return typeof value === 'string' && LEVELS.includes(value);
    case 'client': {
      // The only socket a worker makes is a new client: a session is the host's to make.
      if (typeof value !== 'object' || value === null) return false;
      const socket = value as Record<string, unknown>;
      return socket.kind === 'client' && socket.endpoint === '' && socket.user === '' && socket.host === '' && Object.entries(SOCKET_FIELDS).every(([name, t]) => fieldOk(socket[name], t));
    }
  }
}

function responsePartOk(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const part = value as Record<string, unknown>;
  switch (part.kind) {
    case 'print':
    case 'bytes':
      return typeof part.text === 'string';
    case 'status':
      return typeof part.status === 'number' && Number.isInteger(part.status) && part.status >= 200 && part.status <= 599;
    case 'header':
      return typeof part.name === 'string' && typeof part.value === 'string';
    case 'close':
      return true;
    default:
      return false;
  }
}

/**
 * A control message from a worker, checked field by field: a worker runs
 * tenant code, so the host trusts no shape it did not check. Throws on
 * anything else.
 */
export function decodeWorkerMessage(payload: Buffer): WorkerToHost {
  const message = JSON.parse(payload.toString('utf8')) as unknown;
  if (typeof message !== 'object' || message === null) throw new Error('a worker message must be a JSON object');
  const type = (message as { t?: unknown }).t;
  const fields = typeof type === 'string' && Object.hasOwn(WORKER_MESSAGES, type) ? WORKER_MESSAGES[type as WorkerToHost['t']] : null;
  if (fields === null) throw new Error(`unknown worker message type ${JSON.stringify(type)?.slice(0, 40)}`);
  for (const [name, fieldType] of Object.entries(fields)) {
    if (!fieldOk((message as Record<string, unknown>)[name], fieldType)) throw new Error(`worker message "${type as string}": bad field "${name}"`);
  }
  return message as WorkerToHost;
}

/** How many socket ids the host hands a worker at a time (see `needIds`). */
export const ID_BLOCK = 65536;
