// Every socket the host holds for tenants: outbound clients (the host end of
// `createWebsocket`) and sessions on endpoints. `couple` joins one `ws`
// socket's events to its tenant's handler events, for both kinds. For a
// client, the worker has validated the request and handed out the id; here
// the handler is bundled and sent, and the socket opened. Sends and closes
// issued before a client opens wait, in order, and go out once it opens:
// Dirigible's createWebsocket blocked until open, so scripts send straight
// after it.
import { isIP, type Socket } from 'node:net';
import WebSocket from 'ws';
import type { SocketInfo } from '../bridge/protocol.js';
import { type OutboundPolicy, refused } from './outbound.js';
import type { SandboxWorker } from './supervisor.js';
import { Heartbeat } from './heartbeat.js';
import type { TenantCounters } from './metrics.js';
import { queuedBytes, TenantQueues } from './tenant-queues.js';

/** A close a tenant asked for before the socket opened. */
const CLOSE = null;
/** How long closing the engine waits for a peer to answer a close frame. */
const CLOSE_GRACE_MS = 1000;
/** Where a coupled ws socket keeps its HostSocket. */
const HOST_SOCKET = Symbol('islet host socket');

interface HostSocket {
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
}

type Coupled = WebSocket & { [HOST_SOCKET]: HostSocket };

function hostSocketOf(ws: WebSocket): HostSocket {
  return (ws as Coupled)[HOST_SOCKET];
}

export interface SocketHost {
  /** Bundles the client's handler and sends it to the worker; throws an IsletError. */
  loadHandler(worker: SandboxWorker, info: SocketInfo): Promise<void>;
  handlerFailed(worker: SandboxWorker, info: SocketInfo, error: Error): void;
  maxMessageBytes: number;
  maxQueuedBytes: number;
  maxTenantQueuedBytes: number;
  handshakeTimeoutMs: number;
  outbound: OutboundPolicy;
  /** Ping every open socket this often; 0: never. */
  heartbeatMs: number;
  /** Messages a session may send per second, in bursts of as many; 0: no limit. */
  messagesPerSecond: number;
  /** A tenant's counters. */
  counters(tenant: string): TenantCounters;
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

export class Sockets {
  private readonly sockets = new Map<number, HostSocket>();
  private readonly corked = new Set<WebSocket>();
  /** Open sessions per tenant, for maxSessions. */
  private readonly sessionCounts = new Map<string, number>();
  /** Bytes waiting on all of a tenant's sockets, and the throttle (tenant-queues.ts). */
  private readonly queues: TenantQueues;

  /**
   * The listeners of every coupled ws socket, made once: each finds its
   * HostSocket on the ws object. Closures per socket cost an idle session
   * about 200 bytes more.
   */
  private readonly listeners = this.makeListeners();

  private readonly heartbeat: Heartbeat<HostSocket>;

  constructor(private readonly host: SocketHost) {
    this.queues = new TenantQueues(host.maxTenantQueuedBytes, (tenant) => this.ofTenant(tenant));
    this.heartbeat = new Heartbeat(host.heartbeatMs, () => this.sockets.values(), (socket) => {
      const { info, worker } = socket;
      socket.counters.heartbeatTimeouts++;
      worker.send({ t: 'event', id: info.id, event: 'error', text: `ISLET_ERR_HEARTBEAT_TIMEOUT: heartbeat timeout: the peer did not answer a ping within ${host.heartbeatMs} ms; the connection was dropped` }, info.tenant);
      // Its 'close' follows: onClose runs, and the socket leaves the registry.
      socket.ws!.terminate();
    });
  }

  private *ofTenant(tenant: string): Iterable<HostSocket> {
    for (const socket of this.sockets.values()) if (socket.info.tenant === tenant) yield socket;
  }

  counts(): { sessions: number; clients: number } {
    let sessions = 0;
    for (const n of this.sessionCounts.values()) sessions += n;
    return { sessions, clients: this.sockets.size - sessions };
  }

  /** Open sessions and clients per tenant (for metrics). */
  openByTenant(): Map<string, { sessions: number; clients: number }> {
    const open = new Map<string, { sessions: number; clients: number }>();
    for (const socket of this.sockets.values()) {
      let o = open.get(socket.info.tenant);
      if (o === undefined) open.set(socket.info.tenant, (o = { sessions: 0, clients: 0 }));
      if (socket.info.kind === 'session') o.sessions++;
      else o.clients++;
    }
    return open;
  }

  sessionsOf(tenant: string): number {
    return this.sessionCounts.get(tenant) ?? 0;
  }

  /** Sockets of the tenants on `worker`, for a restarted worker to adopt. */
  ofWorker(worker: SandboxWorker): SocketInfo[] {
    const list: SocketInfo[] = [];
    for (const socket of this.sockets.values()) if (socket.worker === worker) list.push(socket.info);
    return list;
  }

  /** Takes a session the endpoint server accepted; the worker's handler is already loaded. */
  accept(worker: SandboxWorker, info: SocketInfo, ws: WebSocket): void {
    const socket: HostSocket = { info, worker, ws, waiting: null, waitingBytes: 0, overflowing: false, counted: 0, backlog: 0, sent: null, alive: true, tokens: this.host.messagesPerSecond, countedAt: performance.now(), counters: this.host.counters(info.tenant) };
    this.sockets.set(info.id, socket);
    this.sessionCounts.set(info.tenant, this.sessionsOf(info.tenant) + 1);
    worker.send({ t: 'accept', socket: info }, info.tenant);
    this.couple(socket, ws);
  }

  /** Opens an outbound client a tenant asked for. */
  async open(worker: SandboxWorker, info: SocketInfo): Promise<void> {
    const socket: HostSocket = { info, worker, ws: null, waiting: null, waitingBytes: 0, overflowing: false, counted: 0, backlog: 0, sent: null, alive: true, tokens: this.host.messagesPerSecond, countedAt: performance.now(), counters: this.host.counters(info.tenant) };
    this.sockets.set(info.id, socket);
    try {
      await this.host.loadHandler(worker, info);
    } catch (error) {
      this.host.handlerFailed(worker, info, error as Error);
      this.ended(socket, (error as Error).message);
      return;
    }
    if (this.sockets.get(info.id) !== socket) return;
    let host: string;
    try {
      host = new URL(info.uri).hostname.replace(/^\[(.*)\]$/, '$1');
    } catch {
      this.ended(socket, `ISLET_ERR_BAD_URI: uri "${info.uri.slice(0, 200)}" is not a valid URL`);
      return;
    }
    if (isIP(host) !== 0) {
      const why = this.host.outbound.refusal(host, host);
      if (why !== null) {
        this.ended(socket, refused(info.uri, why).message);
        return;
      }
    }
    let ws: WebSocket;
    try {
      ws = new WebSocket(info.uri, {
        maxPayload: this.host.maxMessageBytes,
        handshakeTimeout: this.host.handshakeTimeoutMs,
        perMessageDeflate: false,
        followRedirects: false,
        // Names are checked against the address they resolve to, and the socket connects to that address.
        lookup: this.host.outbound.lookup(info.uri),
      });
    } catch (error) {
      this.ended(socket, (error as Error).message);
      return;
    }
    socket.ws = ws;
    this.couple(socket, ws);
  }

  /** Joins one `ws` socket to its tenant's handler, both ways. */
  private couple(socket: HostSocket, ws: WebSocket): void {
    (ws as Coupled)[HOST_SOCKET] = socket;
    // A session is open already; only a client waits for its handshake.
    if (socket.info.kind === 'client') ws.on('open', this.listeners.open);
    ws.on('message', this.listeners.message);
    ws.on('pong', this.listeners.pong);
    ws.on('error', this.listeners.error);
    ws.on('close', this.listeners.close);
    if (this.queues.isThrottled(socket.info.tenant)) ws.pause();
  }

  private makeListeners() {
    const sockets = this;
    return {
      open(this: WebSocket): void {
        const socket = hostSocketOf(this);
        const { info, worker } = socket;
        info.state = 'open';
        worker.send({ t: 'event', id: info.id, event: 'open' }, info.tenant);
        const waiting = socket.waiting ?? [];
        socket.waiting = null;
        socket.waitingBytes = 0;
        for (const item of waiting) {
          if (item === CLOSE) sockets.close(info.id);
          else this.send(item, { binary: false });
        }
      },
      message(this: WebSocket, data: Buffer, isBinary: boolean): void {
        const socket = hostSocketOf(this);
        const { info, worker } = socket;
        socket.alive = true;
        socket.counters.messagesIn++;
        socket.counters.bytesIn += data.length;
        if (info.kind === 'session' && sockets.host.messagesPerSecond > 0 && !sockets.withinRate(socket)) return;
        if (isBinary) {
          // The API is text only (RFC 6455 7.4.1: 1003, unsupported data). A
          // session is closed; a client's handler is told, as the server is not ours.
          if (info.kind === 'session') {
            this.close(1003, 'islet endpoints take text frames only');
            return;
          }
          worker.send({ t: 'event', id: info.id, event: 'error', text: `binary frame of ${data.length} bytes ignored: islet clients take text only` }, info.tenant);
          return;
        }
        worker.text(info.id, data, info.tenant);
        if (worker.backlogged) worker.holdBack(this);
      },
      pong(this: WebSocket): void {
        hostSocketOf(this).alive = true;
      },
      error(this: WebSocket, error: Error): void {
        const { info, worker } = hostSocketOf(this);
        worker.send({ t: 'event', id: info.id, event: 'error', text: error.message }, info.tenant);
      },
      close(this: WebSocket): void {
        // ws reports a failed connection as 'error' then 'close': onError, then
        // onClose, and the client leaves the registry, as in Dirigible.
        const socket = hostSocketOf(this);
        sockets.forget(socket);
        socket.worker.send({ t: 'event', id: socket.info.id, event: 'close' }, socket.info.tenant);
      },
    };
  }

  /**
   * A session's token bucket (messagesPerSecond, bursts of as many): true
   * when this message may pass. A peer over it is closed with 1008 (policy
   * violation) and its handler's onError is told; the message is dropped.
   */
  private withinRate(socket: HostSocket): boolean {
    const rate = this.host.messagesPerSecond;
    const now = performance.now();
    socket.tokens = Math.min(rate, socket.tokens + ((now - socket.countedAt) * rate) / 1000);
    socket.countedAt = now;
    if (socket.tokens >= 1) {
      socket.tokens -= 1;
      return true;
    }
    socket.counters.hit('messagesPerSecond');
    if (socket.info.state !== 'closing') {
      const { info, worker } = socket;
      worker.send({ t: 'event', id: info.id, event: 'error', text: `ISLET_ERR_LIMIT: the peer sent more than ${rate} messages a second (limit messagesPerSecond); the session is closed with 1008` }, info.tenant);
      this.close(info.id, 1008, 'message rate limit exceeded');
    }
    return false;
  }

  /** A socket that never opened: report the reason, then the close. */
  private ended(socket: HostSocket, reason: string): void {
    if (this.sockets.get(socket.info.id) !== socket) return;
    this.forget(socket);
    socket.worker.send({ t: 'event', id: socket.info.id, event: 'error', text: reason }, socket.info.tenant);
    socket.worker.send({ t: 'event', id: socket.info.id, event: 'close' }, socket.info.tenant);
  }

  /**
   * Corks a socket until `uncorkAll`: the replies of one batch from a worker
   * leave in one write per socket instead of one each. ws has no public
   * cork, so this reaches its underlying net.Socket.
   */
  private cork(ws: WebSocket): void {
    if (this.corked.has(ws)) return;
    (ws as unknown as { _socket: Socket })._socket.cork();
    this.corked.add(ws);
  }

  uncorkAll(): void {
    for (const ws of this.corked) (ws as unknown as { _socket: Socket })._socket.uncork();
    this.corked.clear();
  }

  private forget(socket: HostSocket): void {
    if (this.sockets.get(socket.info.id) !== socket) return;
    this.sockets.delete(socket.info.id);
    this.queues.count(socket, 0);
    if (socket.info.kind === 'client') return;
    const left = this.sessionsOf(socket.info.tenant) - 1;
    if (left > 0) this.sessionCounts.set(socket.info.tenant, left);
    else this.sessionCounts.delete(socket.info.tenant);
  }

  /** Does `worker` own socket `id`? Output for anything else is dropped. */
  owns(worker: SandboxWorker, id: number): boolean {
    return this.sockets.get(id)?.worker === worker;
  }

  send(id: number, payload: Buffer): void {
    const socket = this.sockets.get(id);
    if (socket === undefined) return;
    const ws = socket.ws;
    const open = ws?.readyState === WebSocket.OPEN;
    if (!open && ws !== null && ws.readyState !== WebSocket.CONNECTING) return; // closing: the close event is on its way
    // A peer that does not read must not make the host hold unbounded memory:
    // not one socket's, nor all of one tenant's sockets together.
    const queued = queuedBytes(socket);
    const tenantQueued = this.queues.count(socket, queued);
    let over: string | null = null;
    if (queued + payload.length > this.host.maxQueuedBytes) {
      socket.counters.hit('maxQueuedBytes');
      over = `${queued} bytes already wait to be sent on ${socket.info.kind} ${id}, whose peer is not reading (limit maxQueuedBytes ${this.host.maxQueuedBytes})`;
    } else if (tenantQueued + payload.length > this.host.maxTenantQueuedBytes) {
      // The running total may count sockets that drained since: counted again before it refuses.
      const recounted = this.queues.recount(socket.info.tenant);
      if (recounted + payload.length > this.host.maxTenantQueuedBytes) {
        socket.counters.hit('maxTenantQueuedBytes');
        over = `${recounted} bytes already wait to be sent on tenant "${socket.info.tenant}"'s sockets, whose peers are not reading (limit maxTenantQueuedBytes ${this.host.maxTenantQueuedBytes})`;
      }
    }
    if (over !== null) {
      if (!socket.overflowing) {
        socket.overflowing = true;
        socket.worker.send({ t: 'event', id, event: 'error', text: `ISLET_ERR_LIMIT: ${over}; messages are dropped until it drains` }, socket.info.tenant);
      }
      return;
    }
    this.queues.checkThrottle(socket.info.tenant, this.queues.count(socket, queued + payload.length));
    socket.overflowing = false;
    socket.counters.messagesOut++;
    socket.counters.bytesOut += payload.length;
    if (open) {
      this.cork(ws!);
      if (queued === 0) ws!.send(payload, { binary: false });
      else {
        // Behind already: this one is counted until it is written (one callback per socket, made once).
        socket.backlog++;
        ws!.send(payload, { binary: false }, (socket.sent ??= () => void socket.backlog--));
      }
    } else {
      (socket.waiting ??= []).push(payload);
      socket.waitingBytes += payload.length;
    }
  }

  /**
   * A close a tenant asked for. The code and reason are checked here as ws
   * will encode them (RFC 6455 7.4: 1000 or 3000-4999; a reason of at most
   * 123 bytes of UTF-8, a lone surrogate counting as the 3 bytes of U+FFFD):
   * ws throws on anything else. A refused close is the tenant's error, and
   * the socket stays open.
   */
  closeFor(id: number, code: number | undefined, reason: string | undefined): void {
    const socket = this.sockets.get(id);
    if (socket === undefined) return;
    const problem = closeProblem(code, reason);
    if (problem !== null) {
      socket.worker.send({ t: 'event', id, event: 'error', text: `ISLET_ERR_BAD_ARGUMENT: close refused: ${problem}` }, socket.info.tenant);
      return;
    }
    this.close(id, code, reason);
  }

  close(id: number, code = 1000, reason = ''): void {
    const socket = this.sockets.get(id);
    if (socket === undefined) return;
    socket.info.state = 'closing';
    if (socket.ws?.readyState === WebSocket.OPEN) socket.ws.close(code, reason);
    else if (socket.ws === null || socket.ws.readyState === WebSocket.CONNECTING) (socket.waiting ??= []).push(CLOSE);
  }

  /** Closes every socket of a tenant's handler (it failed to load): sessions with `code`, clients with 1001. */
  closeHandler(tenant: string, handler: string, code: number, reason: string): void {
    for (const socket of this.sockets.values()) {
      if (socket.info.tenant !== tenant || socket.info.handler !== handler) continue;
      this.close(socket.info.id, socket.info.kind === 'session' ? code : 1001, reason);
    }
  }

  /** Closes every socket of a tenant (it was quarantined): sessions with `code`, clients with 1001. */
  closeTenant(tenant: string, code: number, reason: string): void {
    for (const socket of this.sockets.values()) {
      if (socket.info.tenant !== tenant) continue;
      this.close(socket.info.id, socket.info.kind === 'session' ? code : 1001, reason);
    }
  }

  /** Closes every socket (the engine is closing) and waits for them, at most `graceMs` for a peer to answer its close. */
  async closeAll(graceMs: number): Promise<void> {
    this.queues.stop();
    this.heartbeat.stop();
    const closing: Promise<void>[] = [];
    for (const socket of this.sockets.values()) {
      const ws = socket.ws;
      if (ws === null || ws.readyState === WebSocket.CLOSED) continue;
      closing.push(new Promise((resolve) => ws.once('close', () => resolve())));
      if (ws.readyState === WebSocket.CONNECTING) {
        ws.terminate();
        continue;
      }
      // 1001: going away, for sessions and clients alike.
      ws.close(1001, 'islet engine closing');
      // A peer that never answers the close frame must not hold the engine open.
      setTimeout(() => ws.terminate(), Math.min(CLOSE_GRACE_MS, graceMs)).unref();
    }
    this.sockets.clear();
    await Promise.all(closing);
  }
}
