// One socket the host holds for a tenant, client or session: what it knows
// of it beyond the `ws` object, and the small rules that concern one socket
// alone (telling its handler of an error, its rate limit, a close ws takes).
import type WebSocket from 'ws';
import { type ErrorCode, IsletError } from '../bridge/errors.js';
import type { SocketInfo } from '../bridge/protocol.js';
import type { TenantCounters } from './metrics.js';
import type { SandboxWorker } from './supervisor.js';

/** A close a tenant asked for before the socket opened. */
export const CLOSE = null;
/** Where a coupled ws socket keeps its HostSocket. */
const HOST_SOCKET = Symbol('islet host socket');

export interface HostSocket {
  info: SocketInfo;
  worker: SandboxWorker;
  ws: WebSocket | null;
  /** What a client's tenant sent or closed before it opened; made on first use. */
  waiting: (Buffer | typeof CLOSE)[] | null;
  /** Bytes in `waiting`. */
  waitingBytes: number;
  /** Messages are being dropped (maxQueuedBytes, maxTenantQueuedBytes); the tenant has been told once. */
  overflowing: boolean;
  /** The bytes of this socket counted in its tenant's queued total. */
  counted: number;
  /** Messages sent while bytes already waited, not written yet (see tenant-queues.ts, MESSAGE_COST); `sent` counts them down. */
  backlog: number;
  sent: (() => void) | null;
  /** Answered (a pong or a message) since the last heartbeat ping. */
  alive: boolean;
  /** A session's rate limit: messages it may send now, and when that was counted. */
  tokens: number;
  countedAt: number;
  /** Its tenant's counters (metrics.ts). */
  counters: TenantCounters;
  /** A session's topics (topics.ts); null until it first subscribes. */
  topics: Set<string> | null;
}

export function newHostSocket(info: SocketInfo, worker: SandboxWorker, ws: WebSocket | null, messagesPerSecond: number, counters: TenantCounters): HostSocket {
  return { info, worker, ws, waiting: null, waitingBytes: 0, overflowing: false, counted: 0, backlog: 0, sent: null, alive: true, tokens: messagesPerSecond, countedAt: performance.now(), counters, topics: null };
}

export function attach(ws: WebSocket, socket: HostSocket): void {
  (ws as WebSocket & { [HOST_SOCKET]: HostSocket })[HOST_SOCKET] = socket;
}

export function hostSocketOf(ws: WebSocket): HostSocket {
  return (ws as WebSocket & { [HOST_SOCKET]: HostSocket })[HOST_SOCKET];
}

/** The socket's handler hears of it through onError. */
export function tellError(socket: HostSocket, code: ErrorCode, detail: string): void {
  socket.worker.send({ t: 'event', id: socket.info.id, event: 'error', error: { code, detail } }, socket.info.tenant);
}

/**
 * A connection's failure, as its handler hears it: one of islet's keeps its
 * code (the outbound policy's refusal, found at lookup), ws's frame over the
 * limit is a message too large, anything else is the network's reason.
 */
export function tellFailure(socket: HostSocket, error: unknown, maxMessageBytes: number): void {
  if (error instanceof IsletError) tellError(socket, error.code, error.detail);
  else if ((error as { code?: unknown } | null)?.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
    tellError(socket, 'ISLET_ERR_MESSAGE_TOO_LARGE', `the peer sent a message over ${maxMessageBytes} bytes (limit maxMessageBytes); the connection was closed with 1009`);
  } else tellError(socket, 'ISLET_ERR_CONNECTION', error instanceof Error ? error.message : String(error));
}

/**
 * A session's token bucket (`rate` messages a second, in bursts of as many):
 * true when one more message may pass now.
 */
export function withinRate(socket: HostSocket, rate: number): boolean {
  const now = performance.now();
  socket.tokens = Math.min(rate, socket.tokens + ((now - socket.countedAt) * rate) / 1000);
  socket.countedAt = now;
  if (socket.tokens < 1) return false;
  socket.tokens -= 1;
  return true;
}

/** Largest close reason: a control frame's 125 bytes less the 2 of the code (RFC 6455 5.5). */
const MAX_CLOSE_REASON_BYTES = 123;

/** Why ws would refuse to close with this code and reason, or null. */
export function closeProblem(code: number | undefined, reason: string | undefined): string | null {
  if (code !== undefined && !(code === 1000 || (Number.isInteger(code) && code >= 3000 && code <= 4999))) {
    return `close code must be 1000 or 3000-4999, got ${code}`;
  }
  if (reason === undefined || reason === '') return null;
  if (code === undefined) return 'a close reason needs a close code';
  const bytes = Buffer.byteLength(reason, 'utf8');
  return bytes > MAX_CLOSE_REASON_BYTES ? `close reason is ${bytes} bytes of UTF-8 (at most ${MAX_CLOSE_REASON_BYTES})` : null;
}
