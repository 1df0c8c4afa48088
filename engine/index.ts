// The embedding API of islet: the types an embedder sees, and the Engine.
// The host process owns every socket and never runs tenant code; tenants run
// in isolates inside sandbox worker processes. engine.ts wires the parts.
import type { ErrorCode } from '../bridge/errors.js';
import type { LogLevel } from '../bridge/protocol.js';
import type { DescriptorProblem, Endpoint } from './projects.js';

export { Engine } from './engine.js';
export { IsletError, ErrorCodes, type ErrorCode } from '../bridge/errors.js';
export { DEFAULT_DEAD_AFTER_MS, DEFAULT_LIMITS, DEFAULT_OPTIONS, type ClusterOptions, type EngineOptions } from './options.js';
export type { OutboundOptions } from './outbound.js';
export type { TenantLimits, LogLevel } from '../bridge/protocol.js';
export type { Endpoint, DescriptorProblem } from './projects.js';
export type { Authorize, ServedScript, SessionUser, Verdict } from './authorize.js';
export type { RunOptions, ScriptResponse } from './script-response.js';
export { jwtAuthorizer, type JwtOptions } from './jwt.js';

export interface EngineStats {
  sessions: number;
  clients: number;
  /** Tenant isolates alive in the workers. */
  isolates: number;
  /** Sockets the workers hold for their tenants. */
  workerSockets: number;
  /** The host process's active handles (sockets, servers, timers, child processes). */
  handles: number;
}

export interface TenantLog {
  tenant: string;
  level: LogLevel;
  text: string;
  /** The handler that was running, and the session's or client's id, when the line came from a handler call. */
  handler?: string;
  socket?: number;
}

export interface TenantFailure {
  tenant: string;
  /** What failed; `ISLET_ERR_UNCAUGHT` for the tenant's own exceptions. */
  code: ErrorCode;
  /** The error as a line: its code, then what happened, stack frames mapped to the tenant's own files. */
  error: string;
}

export interface WorkerExit {
  worker: number;
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface HostFailure {
  /** What was being handled: `request`, `upgrade`, `worker message`, … */
  where: string;
  error: Error;
}

/** The cluster's state changed: joined (at the start, or with Redis back), or lost (serving this host's sessions only). */
export interface ClusterChange {
  joined: boolean;
  detail: string;
}

export interface EngineEvents {
  /** This host joined its cluster, or lost it (cluster option). */
  cluster: [ClusterChange];
  /** A tenant called console.*. */
  log: [TenantLog];
  /** A tenant threw and nothing caught it (outside a script run, which rejects instead). */
  tenantError: [TenantFailure];
  /** A sandbox worker died; the engine is restarting it. */
  workerExit: [WorkerExit];
  /** A sandbox worker is back after dying. */
  workerRestart: [{ worker: number; pid: number | undefined }];
  /** A `*.websocket` descriptor is invalid; the other endpoints are served. */
  descriptorError: [DescriptorProblem];
  /** The endpoints served: after the first load, then after each reload that changed them. */
  endpoints: [Endpoint[]];
  /** Files of these tenants that islet runs changed, and were read again (descriptors, handlers, what they import). */
  reloaded: [{ tenants: string[] }];
  /** A tenant kept killing its worker: refused until its files change or the time passes. */
  tenantQuarantined: [TenantFailure];
  /** islet's own code failed in a listener; it cost that one request, socket or worker message, and the host carries on. */
  hostError: [HostFailure];
}
