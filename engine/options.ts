// Engine options: every default in one place, validated once, in the
// Engine's constructor.
import { statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IsletError } from '../bridge/errors.js';
import type { TenantLimits } from '../bridge/protocol.js';
import type { Authorize } from './authorize.js';
import { type OutboundOptions, OutboundPolicy } from './outbound.js';

export interface EngineOptions {
  /** Projects root: each folder in it is a project (a tenant). Default: the current folder. */
  root?: string;
  /** Sandbox worker processes holding the tenant isolates. Default: 1. */
  workers?: number;
  /** Per-tenant limits; see `DEFAULT_LIMITS`. */
  limits?: Partial<TenantLimits>;
  /** Time an outbound client may take to finish its handshake, in ms. Default: 10000. */
  handshakeTimeoutMs?: number;
  /**
   * Origins (e.g. "https://app.example") whose pages may open sessions on the
   * endpoints; other browsers' pages get 403. Default: null, any origin.
   */
  allowedOrigins?: string[] | null;
  /** Reload descriptors and handlers when files under the root change. Default: true. */
  watch?: boolean;
  /**
   * Where outbound clients may connect. Default: anywhere but loopback,
   * private, link-local (cloud metadata) and other special addresses.
   */
  outbound?: OutboundOptions;
  /** How long a tenant that killed its worker 3 times in a minute stays quarantined, in ms. Default: 300000. */
  quarantineMs?: number;
  /** How long `listen()`'s server waits for a request's (or upgrade's) headers, in ms. Default: 10000. */
  upgradeTimeoutMs?: number;
  /**
   * Decides each upgrade before any tenant code runs (see authorize.ts's
   * `Verdict`): accept, optionally with the session's `user`, or refuse.
   * Default: null, every upgrade is accepted.
   */
  authorize?: Authorize | null;
  /** How long `authorize` may take before the upgrade gets 503, in ms. Default: 5000. */
  authorizeTimeoutMs?: number;
  /** How long `close()` (and SIGTERM for `islet serve`) may take to drain: close every socket, run their onClose. Default: 10000. */
  shutdownTimeoutMs?: number;
  /** Every open session and client is pinged this often; one that has not answered by the next ping is dropped. 0: off. Default: 30000. */
  heartbeatMs?: number;
  /**
   * `listen()`'s server runs a script for `GET /services/js/<project>/<path>`
   * and answers with what it wrote through `http/v4/response`, as Dirigible
   * does. Default: true.
   */
  scripts?: boolean;
  /**
   * Joins the host to a cluster: every host with the same Redis and the
   * same projects root acts as one islet (cluster.ts). Default: null, alone.
   */
  cluster?: ClusterOptions | null;
}

export interface ClusterOptions {
  /** The Redis every host of the cluster shares, as `redis://HOST:PORT`. */
  redis: string;
  /** This host's name, as sessions' `host` says it; unique in the cluster. Default: the machine's host name and the process id. */
  name?: string;
  /** A host that stops (killed, cut off) leaves the other hosts' `getSessions()` within this many ms. Default: 10000. */
  deadAfterMs?: number;
}

export interface ResolvedCluster {
  redis: string;
  name: string;
  deadAfterMs: number;
}

/** The numeric engine options' defaults: the README's table and the CLI's help are tested against these. */
export const DEFAULT_OPTIONS = {
  workers: 1,
  handshakeTimeoutMs: 10_000,
  upgradeTimeoutMs: 10_000,
  authorizeTimeoutMs: 5000,
  shutdownTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  quarantineMs: 300_000,
} as const;

/** How long a host that stopped stays in the other hosts' listings, at most. */
export const DEFAULT_DEAD_AFTER_MS = 10_000;

export const DEFAULT_LIMITS: TenantLimits = {
  memoryMiB: 64,
  wasmMemoryMiB: 16,
  callTimeoutMs: 1000,
  settleTimeoutMs: 30_000,
  maxMessageBytes: 1024 * 1024,
  maxClients: 100,
  maxTimers: 1000,
  maxSessions: 20_000,
  maxQueuedBytes: 4 * 1024 * 1024,
  maxTenantQueuedBytes: 64 * 1024 * 1024,
  maxOutputBytes: 32 * 1024 * 1024,
  maxBundleBytes: 8 * 1024 * 1024,
  messagesPerSecond: 0,
  scriptTimeoutMs: 30_000,
  maxScriptRuns: 16,
  maxResponseBytes: 8 * 1024 * 1024,
  maxTopics: 64,
};

export interface ResolvedOptions {
  root: string;
  workers: number;
  limits: TenantLimits;
  handshakeTimeoutMs: number;
  allowedOrigins: string[] | null;
  watch: boolean;
  outbound: OutboundPolicy;
  quarantineMs: number;
  upgradeTimeoutMs: number;
  authorize: Authorize | null;
  authorizeTimeoutMs: number;
  heartbeatMs: number;
  shutdownTimeoutMs: number;
  scripts: boolean;
  cluster: ResolvedCluster | null;
  /** The name sessions give as their `host`: the cluster's name for this host, or the machine's. */
  hostName: string;
}

const LIMIT_RANGES: Record<keyof TenantLimits, [number, number]> = {
  memoryMiB: [8, 16384],
  wasmMemoryMiB: [0, 65536],
  // Shorter budgets can stop V8 mid-setup, where isolated-vm may fail to terminate the call and hang the worker.
  callTimeoutMs: [10, 3_600_000],
  settleTimeoutMs: [1, 86_400_000],
  maxMessageBytes: [1, 256 * 1024 * 1024],
  maxClients: [0, 1_000_000],
  maxTimers: [0, 10_000_000],
  maxSessions: [0, 10_000_000],
  maxQueuedBytes: [1024, 1024 * 1024 * 1024],
  maxTenantQueuedBytes: [1024, 16 * 1024 * 1024 * 1024],
  maxOutputBytes: [1024, 1024 * 1024 * 1024],
  maxBundleBytes: [1024, 1024 * 1024 * 1024],
  messagesPerSecond: [0, 1_000_000],
  scriptTimeoutMs: [10, 86_400_000],
  maxScriptRuns: [0, 1_000_000],
  maxResponseBytes: [0, 1024 * 1024 * 1024],
  maxTopics: [0, 100_000],
};

function integer(name: string, value: unknown, [min, max]: [number, number]): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', `${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function flag(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new IsletError('ISLET_ERR_BAD_OPTION', `${name} must be true or false, got ${String(value)}`);
  return value;
}

function origins(value: unknown): string[] | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value) || !value.every((o) => typeof o === 'string' && o.length > 0)) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', 'allowedOrigins must be an array of origins like "https://app.example", or null');
  }
  return [...value];
}

function authorizer(value: unknown): Authorize | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'function') throw new IsletError('ISLET_ERR_BAD_OPTION', 'authorize must be a function (request, endpoint) => verdict, or null');
  return value as Authorize;
}

/** A host name goes into Redis keys and into the text of isolate events: printable, no newline. */
function hostName(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 200 || [...value].some((c) => c <= ' ' || c === '\x7f')) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', `cluster.name must be 1 to 200 printable characters with no space, got ${JSON.stringify(value)}`);
  }
  return value;
}

function cluster(value: unknown): ResolvedCluster | null {
  if (value === undefined || value === null) return null;
  const options = value as ClusterOptions;
  if (typeof options !== 'object' || typeof options.redis !== 'string' || !/^rediss?:\/\/[^\s]+$/.test(options.redis)) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', `cluster.redis must be a Redis URL like redis://127.0.0.1:6379, got ${JSON.stringify(options?.redis)}`);
  }
  return {
    redis: options.redis,
    name: hostName(options.name ?? `${os.hostname()}:${process.pid}`),
    deadAfterMs: integer('cluster.deadAfterMs', options.deadAfterMs ?? DEFAULT_DEAD_AFTER_MS, [500, 3_600_000]),
  };
}

export function resolveOptions(options: EngineOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', 'options must be an object');
  }
  const root = path.resolve(options.root ?? process.cwd());
  let isDir = false;
  try {
    isDir = statSync(root).isDirectory();
  } catch {
    // reported below
  }
  if (!isDir) throw new IsletError('ISLET_ERR_BAD_OPTION', `root ${root} is not a folder`);
  const limits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(options.limits ?? {})) {
    if (!Object.hasOwn(LIMIT_RANGES, key)) {
      throw new IsletError('ISLET_ERR_BAD_OPTION', `limits.${key} is not a limit; known: ${Object.keys(LIMIT_RANGES).join(', ')}`);
    }
    if (value === undefined) continue;
    const name = key as keyof TenantLimits;
    limits[name] = integer(`limits.${name}`, value, LIMIT_RANGES[name]);
  }
  const clustered = cluster(options.cluster);
  return {
    root,
    workers: integer('workers', options.workers ?? DEFAULT_OPTIONS.workers, [1, 64]),
    limits,
    handshakeTimeoutMs: integer('handshakeTimeoutMs', options.handshakeTimeoutMs ?? DEFAULT_OPTIONS.handshakeTimeoutMs, [1, 600_000]),
    allowedOrigins: origins(options.allowedOrigins),
    watch: options.watch ?? true,
    outbound: new OutboundPolicy(options.outbound ?? {}, false),
    quarantineMs: integer('quarantineMs', options.quarantineMs ?? DEFAULT_OPTIONS.quarantineMs, [0, 86_400_000]),
    upgradeTimeoutMs: integer('upgradeTimeoutMs', options.upgradeTimeoutMs ?? DEFAULT_OPTIONS.upgradeTimeoutMs, [100, 600_000]),
    authorize: authorizer(options.authorize),
    authorizeTimeoutMs: integer('authorizeTimeoutMs', options.authorizeTimeoutMs ?? DEFAULT_OPTIONS.authorizeTimeoutMs, [1, 600_000]),
    heartbeatMs: integer('heartbeatMs', options.heartbeatMs ?? DEFAULT_OPTIONS.heartbeatMs, [0, 3_600_000]),
    shutdownTimeoutMs: integer('shutdownTimeoutMs', options.shutdownTimeoutMs ?? DEFAULT_OPTIONS.shutdownTimeoutMs, [0, 600_000]),
    scripts: flag('scripts', options.scripts ?? true),
    cluster: clustered,
    hostName: clustered?.name ?? os.hostname(),
  };
}
