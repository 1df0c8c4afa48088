// Outbound clients: the host end of `createWebsocket`. The worker has already
// validated the request and handed out the id; here the handler is bundled
// and sent to the worker, the socket is opened, and `couple` joins the `ws`
// events to the tenant's handler events. Sends and closes issued before the
// socket opens wait, in order, and go out once it opens: Dirigible's
// createWebsocket blocked until open, so scripts send straight after it.
import WebSocket from 'ws';
import type { SocketInfo } from '../bridge/protocol.js';
import type { SandboxWorker } from './supervisor.js';

/** A close a tenant asked for before the socket opened. */
const CLOSE = null;
/** How long closing the engine waits for a peer to answer a close frame. */
const CLOSE_GRACE_MS = 1000;

interface ClientSocket {
  info: SocketInfo;
  worker: SandboxWorker;
  ws: WebSocket | null;
  waiting: (Buffer | typeof CLOSE)[];
}

export interface ClientHost {
  /** Bundles the client's handler and sends it to the worker; throws an IsletError. */
  loadHandler(worker: SandboxWorker, info: SocketInfo): Promise<void>;
  handlerFailed(worker: SandboxWorker, info: SocketInfo, error: Error): void;
  maxMessageBytes: number;
  handshakeTimeoutMs: number;
}

export class OutboundClients {
  private readonly sockets = new Map<number, ClientSocket>();

  constructor(private readonly host: ClientHost) {}

  get size(): number {
    return this.sockets.size;
  }

  /** Sockets of the tenants on `worker`, for a restarted worker to adopt. */
  ofWorker(worker: SandboxWorker): SocketInfo[] {
    const list: SocketInfo[] = [];
    for (const socket of this.sockets.values()) if (socket.worker === worker) list.push(socket.info);
    return list;
  }

  async open(worker: SandboxWorker, info: SocketInfo): Promise<void> {
    const socket: ClientSocket = { info, worker, ws: null, waiting: [] };
    this.sockets.set(info.id, socket);
    try {
      await this.host.loadHandler(worker, info);
    } catch (error) {
      this.host.handlerFailed(worker, info, error as Error);
      this.ended(socket, (error as Error).message);
      return;
    }
    if (this.sockets.get(info.id) !== socket) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(info.uri, {
        maxPayload: this.host.maxMessageBytes,
        handshakeTimeout: this.host.handshakeTimeoutMs,
        perMessageDeflate: false,
        followRedirects: false,
      });
    } catch (error) {
      this.ended(socket, (error as Error).message);
      return;
    }
    socket.ws = ws;
    this.couple(socket, ws);
  }

  /** Joins one `ws` client socket to its tenant's handler, both ways. */
  private couple(socket: ClientSocket, ws: WebSocket): void {
    const { worker, info } = socket;
    ws.on('open', () => {
      info.state = 'open';
      worker.send({ t: 'event', id: info.id, event: 'open' });
      const waiting = socket.waiting;
      socket.waiting = [];
      for (const item of waiting) {
        if (item === CLOSE) this.close(info.id);
        else ws.send(item, { binary: false });
      }
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        // The API is text only; tell the handler rather than drop it silently.
        worker.send({ t: 'event', id: info.id, event: 'error', text: `binary frame of ${data.length} bytes ignored: islet clients take text only` });
        return;
      }
      worker.text(info.id, data);
    });
    ws.on('error', (error: Error) => {
      worker.send({ t: 'event', id: info.id, event: 'error', text: error.message });
    });
    ws.on('close', () => {
      // ws reports a failed connection as 'error' then 'close': onError, then
      // onClose, and the client leaves the registry, as in Dirigible.
      this.sockets.delete(info.id);
      worker.send({ t: 'event', id: info.id, event: 'close' });
    });
  }

  /** A socket that never opened: report the reason, then the close. */
  private ended(socket: ClientSocket, reason: string): void {
    if (this.sockets.get(socket.info.id) !== socket) return;
    this.sockets.delete(socket.info.id);
    socket.worker.send({ t: 'event', id: socket.info.id, event: 'error', text: reason });
    socket.worker.send({ t: 'event', id: socket.info.id, event: 'close' });
  }

  /** Does `worker` own socket `id`? Output for anything else is dropped. */
  owns(worker: SandboxWorker, id: number): boolean {
    return this.sockets.get(id)?.worker === worker;
  }

  send(id: number, payload: Buffer): void {
    const socket = this.sockets.get(id);
    if (socket === undefined) return;
    if (socket.ws?.readyState === WebSocket.OPEN) socket.ws.send(payload, { binary: false });
    else if (socket.ws === null || socket.ws.readyState === WebSocket.CONNECTING) socket.waiting.push(payload);
    // Closing or closed: the close event is on its way to the tenant.
  }

  close(id: number): void {
    const socket = this.sockets.get(id);
    if (socket === undefined) return;
    socket.info.state = 'closing';
    if (socket.ws?.readyState === WebSocket.OPEN) socket.ws.close(1000);
    else if (socket.ws === null || socket.ws.readyState === WebSocket.CONNECTING) socket.waiting.push(CLOSE);
  }

  /** Closes every client (the engine is closing) and waits for them. */
  async closeAll(): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const socket of this.sockets.values()) {
      const ws = socket.ws;
      if (ws === null || ws.readyState === WebSocket.CLOSED) continue;
      closing.push(new Promise((resolve) => ws.once('close', () => resolve())));
      if (ws.readyState === WebSocket.CONNECTING) {
        ws.terminate();
        continue;
      }
      ws.close(1001, 'islet engine closing');
      // A peer that never answers the close frame must not hold the engine open.
      setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
    }
    this.sockets.clear();
    await Promise.all(closing);
  }
}
