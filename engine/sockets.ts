// Every socket the host holds for tenants: outbound clients (the host end of
// `createWebsocket`) and sessions on endpoints. `couple` joins one `ws`
// socket's events to its tenant's handler events, for both kinds. For a
// client, the worker has validated the request and handed out the id; here
// the handler is bundled and sent, and the socket opened. Sends and closes
// issued before a client opens wait, in order, and go out once it opens:
// Dirigible's createWebsocket blocked until open, so scripts send straight
// after it.
import type { Socket } from 'node:net';
import WebSocket, * as wsModule from 'ws';
import type { SocketInfo } from '../bridge/protocol.js';
import type { OutboundPolicy } from './outbound.js';
import type { SandboxWorker } from './supervisor.js';
import { Heartbeat } from './heartbeat.js';
import { attach, CLOSE, closeProblem, type HostSocket, hostSocketOf, newHostSocket, tellError, tellFailure, withinRate } from './host-socket.js';
import type { TenantCounters } from './metrics.js';
import { queuedBytes, TenantQueues } from './tenant-queues.js';
import { Topics } from './topics.js';

/** How long closing the engine waits for a peer to answer a close frame. */
const CLOSE_GRACE_MS = 1000;

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
  /** Most topics one session may be subscribed to. */
  maxTopics: number;
}

/** Who hears of sessions coming and going here: the cluster, which tells the other hosts. */
export interface Presence {
  opened(info: SocketInfo): void;
  closed(info: SocketInfo): void;
}

/** ws's framing of a server's text message (unmasked, one fragment), which its typings do not show. */
const { Sender } = wsModule as unknown as { Sender: { frame(data: Buffer, options: object): Buffer[] } };
/** ws's sender state when it is writing straight through (no compression or blob pending before it). */
const SENDER_IDLE = 0;

/** One text frame for many sockets: framed once, written to each as it is. */
function frameText(payload: Buffer): Buffer {
  return Buffer.concat(Sender.frame(payload, { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: true }));
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
  /** Topics of this host's sessions. */
  private readonly topics: Topics<HostSocket>;
  presence: Presence | null = null;

  constructor(private readonly host: SocketHost) {
    this.topics = new Topics(host.maxTopics);
    this.queues = new TenantQueues(host.maxTenantQueuedBytes, (tenant) => this.ofTenant(tenant));
    this.heartbeat = new Heartbeat(host.heartbeatMs, () => this.sockets.values(), (socket) => {
      socket.counters.heartbeatTimeouts++;
      tellError(socket, 'ISLET_ERR_HEARTBEAT_TIMEOUT', `heartbeat timeout: the peer did not answer a ping within ${host.heartbeatMs} ms; the connection was dropped`);
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
    const socket = newHostSocket(info, worker, ws, this.host.messagesPerSecond, this.host.counters(info.tenant));
    this.sockets.set(info.id, socket);
    this.sessionCounts.set(info.tenant, this.sessionsOf(info.tenant) + 1);
    worker.send({ t: 'accept', socket: info }, info.tenant);
    this.couple(socket, ws);
    this.presence?.opened(info);
  }

  /** A socket of this host's, by id. */
  local(id: number): HostSocket | undefined {
    return this.sockets.get(id);
  }

  /** This host's sessions, as the cluster lists them. */
  *sessions(): Iterable<SocketInfo> {
    for (const socket of this.sockets.values()) if (socket.info.kind === 'session') yield socket.info;
  }

  /** Opens an outbound client a tenant asked for. */
  async open(worker: SandboxWorker, info: SocketInfo): Promise<void> {
    const socket = newHostSocket(info, worker, null, this.host.messagesPerSecond, this.host.counters(info.tenant));
    this.sockets.set(info.id, socket);
    try {
      await this.host.loadHandler(worker, info);
    } catch (error) {
      this.host.handlerFailed(worker, info, error as Error);
      this.ended(socket, error);
      return;
    }
    if (this.sockets.get(info.id) !== socket) return;
    try {
      socket.ws = this.host.outbound.dial(info.uri, { maxPayload: this.host.maxMessageBytes, handshakeTimeout: this.host.handshakeTimeoutMs });
    } catch (error) {
      this.ended(socket, error);
      return;
    }
    this.couple(socket, socket.ws);
  }

  /** Joins one `ws` socket to its tenant's handler, both ways. */
  private couple(socket: HostSocket, ws: WebSocket): void {
    attach(ws, socket);
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
        if (info.kind === 'session' && sockets.host.messagesPerSecond > 0 && !withinRate(socket, sockets.host.messagesPerSecond)) {
          sockets.overRate(socket);
          return;
        }
        if (isBinary) {
          // The API is text only (RFC 6455 7.4.1: 1003, unsupported data). A
          // session is closed; a client's handler is told, as the server is not ours.
          if (info.kind === 'session') {
            this.close(1003, 'islet endpoints take text frames only');
            return;
          }
          tellError(socket, 'ISLET_ERR_NOT_TEXT', `binary frame of ${data.length} bytes ignored: islet clients take text only`);
          return;
        }
        worker.text(info.id, data, info.tenant);
        if (worker.backlogged) worker.holdBack(this);
      },
      pong(this: WebSocket): void {
        hostSocketOf(this).alive = true;
      },
      error(this: WebSocket, error: Error): void {
        tellFailure(hostSocketOf(this), error, sockets.host.maxMessageBytes);
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

  /** A session's peer sent over messagesPerSecond: it is closed with 1008 (policy violation), its handler told, the message dropped. */
  private overRate(socket: HostSocket): void {
    socket.counters.hit('messagesPerSecond');
    if (socket.info.state === 'closing') return;
    tellError(socket, 'ISLET_ERR_LIMIT_RATE', `the peer sent more than ${this.host.messagesPerSecond} messages a second (limit messagesPerSecond); the session is closed with 1008`);
    this.close(socket.info.id, 1008, 'message rate limit exceeded');
  }

  /** A socket that never opened: report the reason, then the close. */
  private ended(socket: HostSocket, error: unknown): void {
    if (this.sockets.get(socket.info.id) !== socket) return;
    this.forget(socket);
    tellFailure(socket, error, this.host.maxMessageBytes);
    socket.worker.send({ t: 'event', id: socket.info.id, event: 'close' }, socket.info.tenant);
  }

  /**
   * Corks a socket until `uncorkAll`: the replies of one batch from a worker
   * leave in one write per socket instead of one each. ws has no public
   * cork, so this reaches its underlying net.Socket. A batch that no worker
   * chunk ends (messages from other hosts of the cluster) is uncorked at the
   * end of this event-loop turn.
   */
  private cork(ws: WebSocket): void {
    if (this.corked.has(ws)) return;
    (ws as unknown as { _socket: Socket })._socket.cork();
    if (this.corked.size === 0) setImmediate(this.uncorkLater);
    this.corked.add(ws);
  }

  private readonly uncorkLater = (): void => this.uncorkAll();

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
    this.topics.leaveAll(socket);
    this.presence?.closed(socket.info);
  }

  /** Session `id` of `tenant`'s joins or leaves a topic; over maxTopics its handler is told. False: no such session here. */
  subscribe(id: number, tenant: string, topic: string, join: boolean): boolean {
    const socket = this.sockets.get(id);
    if (socket === undefined || socket.info.tenant !== tenant || socket.info.kind !== 'session') return false;
    if (!join) this.topics.leave(socket, topic);
    else if (!this.topics.join(socket, topic)) {
      tellError(socket, 'ISLET_ERR_LIMIT_TOPICS', `session ${id} is already subscribed to ${this.host.maxTopics} topics (limit maxTopics); it did not join "${topic}"`);
    }
    return true;
  }

  /** Sends `payload` to every session of `tenant`'s here subscribed to `topic`, framed once. */
  publish(tenant: string, topic: string, payload: Buffer): void {
    const subscribers = this.topics.subscribers(tenant, topic);
    if (subscribers === undefined) return;
    const frame = frameText(payload);
    for (const socket of subscribers) this.deliver(socket, payload, frame);
  }

  /** Does `worker` own socket `id`? Output for anything else is dropped. */
  owns(worker: SandboxWorker, id: number): boolean {
    return this.sockets.get(id)?.worker === worker;
  }

  send(id: number, payload: Buffer): void {
    const socket = this.sockets.get(id);
    if (socket !== undefined) this.deliver(socket, payload, null);
  }

  /** One message to one socket, within its queue limits; `frame`: the message already framed (a topic's), or null. */
  private deliver(socket: HostSocket, payload: Buffer, frame: Buffer | null): void {
    const id = socket.info.id;
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
        tellError(socket, 'ISLET_ERR_LIMIT_QUEUED', `${over}; messages are dropped until it drains`);
      }
      return;
    }
    this.queues.checkThrottle(socket.info.tenant, this.queues.count(socket, queued + payload.length));
    socket.overflowing = false;
    socket.counters.messagesOut++;
    socket.counters.bytesOut += payload.length;
    if (open) {
      // Behind already: this one is counted until it is written (one callback per socket, made once).
      const sent = queued === 0 ? undefined : (socket.backlog++, (socket.sent ??= () => void socket.backlog--));
      const internals = ws as unknown as { _sender: { _state: number }; _socket: Socket };
      // A topic's frame is one write already: corking it would only add a writev.
      if (frame !== null && internals._sender._state === SENDER_IDLE) internals._socket.write(frame, sent);
      else {
        this.cork(ws!);
        ws!.send(payload, { binary: false }, sent);
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
      tellError(socket, 'ISLET_ERR_BAD_ARGUMENT', `close refused: ${problem}`);
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

  /**
   * Closes every socket of a tenant, or of one of its handlers (it failed to
   * load, the tenant was quarantined): sessions with `code`, clients with 1001.
   */
  closeOf(tenant: string, handler: string | null, code: number, reason: string): void {
    for (const socket of this.sockets.values()) {
      if (socket.info.tenant !== tenant || (handler !== null && socket.info.handler !== handler)) continue;
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
