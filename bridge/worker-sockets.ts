// The sockets of the tenants on one sandbox worker: which tenant owns each
// id (all a tenant may touch), how many outbound clients each has, and the
// blocks of ids the host hands out for new clients.
import { IsletError } from './errors.js';
import { checkEngine, resolveHandler, typeName } from './handler-ids.js';
import { ID_BLOCK, type SocketInfo, type TenantLimits } from './protocol.js';

const MAX_URI_LENGTH = 4096;

export class WorkerSockets {
  private readonly byId = new Map<number, SocketInfo>();
  /** Open outbound clients per tenant, kept with `byId`. */
  private readonly clients = new Map<string, number>();
  /** Sockets closed since the last turn ended: their onClose still runs, and its console lines name them. */
  private readonly closed = new Map<number, SocketInfo>();
  private readonly idBlocks: number[] = [];
  private nextId = 0;
  private lastId = -1;
  private askedForIds = false;

  /** `needIds`: ask the host for another block; `limits` is read when a client is made. */
  constructor(
    private readonly needIds: () => void,
    private readonly limits: () => TenantLimits,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  get(id: number): SocketInfo | undefined {
    return this.byId.get(id);
  }

  /** Whether socket `id` is `tenant`'s: output to any other is dropped. */
  owns(tenant: string, id: number): boolean {
    return this.byId.get(id)?.tenant === tenant;
  }

  clientCount(tenant: string): number {
    return this.clients.get(tenant) ?? 0;
  }

  /** A tenant's sockets, as a recreated isolate adopts them. */
  of(tenant: string): SocketInfo[] {
    return [...this.byId.values()].filter((socket) => socket.tenant === tenant);
  }

  /** Records a socket; the registry is only changed here and in `drop`. */
  keep(socket: SocketInfo): void {
    if (this.byId.has(socket.id)) this.drop(socket.id);
    this.byId.set(socket.id, socket);
    if (socket.kind === 'client') this.clients.set(socket.tenant, this.clientCount(socket.tenant) + 1);
  }

  drop(id: number): void {
    const socket = this.byId.get(id);
    if (socket === undefined) return;
    this.byId.delete(id);
    this.closed.set(id, socket);
    if (socket.kind !== 'client') return;
    const left = this.clientCount(socket.tenant) - 1;
    if (left > 0) this.clients.set(socket.tenant, left);
    else this.clients.delete(socket.tenant);
  }

  /** The handler of socket `id` if it is (or, this turn, was) `tenant`'s, for naming its console lines. */
  handlerOf(tenant: string, id: number): string | null {
    const socket = this.byId.get(id) ?? this.closed.get(id);
    return socket?.tenant === tenant ? socket.handler : null;
  }

  /** A turn ended: the sockets closed before it are forgotten. */
  turnEnded(): void {
    this.closed.clear();
  }

  addIdBlock(from: number): void {
    this.idBlocks.push(from);
  }

  /** A tenant's `createWebsocket`: checks what it passed and its client limit, and records the new client. */
  newClient(root: string, tenant: string, uri: unknown, handler: unknown, engine: unknown): SocketInfo {
    const engineName = checkEngine(engine);
    if (typeof uri !== 'string') throw new IsletError('ISLET_ERR_BAD_URI', `uri must be a string, got ${typeName(uri)}`);
    if (uri.length > MAX_URI_LENGTH) throw new IsletError('ISLET_ERR_BAD_URI', `uri is longer than ${MAX_URI_LENGTH} characters`);
    let parsed: URL;
    try {
      parsed = new URL(uri);
    } catch {
      throw new IsletError('ISLET_ERR_BAD_URI', `uri "${uri}" is not a valid URL`);
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
      throw new IsletError('ISLET_ERR_BAD_URI', `uri "${uri}" must use ws: or wss:, not ${parsed.protocol}`);
    }
    const resolved = resolveHandler(root, handler, tenant);
    const maxClients = this.limits().maxClients;
    if (this.clientCount(tenant) >= maxClients) {
      throw new IsletError('ISLET_ERR_LIMIT_CLIENTS', `tenant "${tenant}" already has ${maxClients} clients (limit maxClients)`);
    }
    const socket: SocketInfo = { id: this.allocateId(), kind: 'client', tenant, handler: resolved.id, uri, engine: engineName, state: 'connecting', endpoint: '', user: '', host: '' };
    this.keep(socket);
    return socket;
  }

  private allocateId(): number {
    if (this.nextId > this.lastId) {
      const from = this.idBlocks.shift();
      if (from === undefined) throw new IsletError('ISLET_ERR_TRY_AGAIN', 'no socket ids left on this worker; try again');
      this.nextId = from;
      this.lastId = from + ID_BLOCK - 1;
      this.askedForIds = false;
    }
    if (!this.askedForIds && this.idBlocks.length === 0 && this.lastId - this.nextId < ID_BLOCK / 2) {
      this.askedForIds = true;
      this.needIds();
    }
    return this.nextId++;
  }
}

/** Sockets as a recreated isolate adopts them (wire.ts, `ADOPT_FIELDS`). */
export function adoptList(list: SocketInfo[]): string[] {
  return list.flatMap((socket) => [String(socket.id), socket.uri, socket.handler, socket.engine, socket.state, socket.endpoint, socket.user, socket.host]);
}
