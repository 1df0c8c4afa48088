// `net/v4/websockets` as tenant code sees it: outbound clients, the client
// registry, and the handler context accessors. Semantics follow Eclipse
// Dirigible's v4 API (see DIRIGIBLE.md); sockets live in the host, this side
// only keeps the tenant's view of them.
import {
  config,
  emit,
  exceedsBytes,
  freeze,
  hostConnect,
  MapCtor,
  Op,
  RangeErrorCtor,
  StringCtor,
  TypeErrorCtor,
  ErrorCtor,
} from './host.js';

export type Method = 'onopen' | 'onmessage' | 'onerror' | 'onclose';
export type ClientState = 'connecting' | 'open' | 'closing';

export interface ClientMetadata {
  id: string;
  uri: string;
  handler: string;
  engine: string;
  state: ClientState;
}

interface ClientRecord extends ClientMetadata {
  api: WebsocketClient;
}

export interface WebsocketClient {
  readonly id: string;
  readonly uri: string;
  readonly handler: string;
  readonly engine: string;
  send(message: string): void;
  close(): void;
}

/** The event a handler call is serving; null between calls. */
interface HandlerContext {
  method: Method;
  handler: string;
  message: string | null;
  error: string | null;
  session: string;
}

const clients = new MapCtor<string, ClientRecord>();
let context: HandlerContext | null = null;

export function withContext<T>(next: HandlerContext, call: () => T): T {
  const outer = context;
  context = next;
  try {
    return call();
  } finally {
    context = outer;
  }
}

/** Checks a message a tenant wants to send, before it leaves the isolate. */
export function checkText(message: unknown, what: string): string {
  if (typeof message !== 'string') {
    throw new TypeErrorCtor(`ISLET_ERR_NOT_TEXT: ${what} takes a string, got ${message === null ? 'null' : typeof message}`);
  }
  if (exceedsBytes(message, config.maxMessageBytes)) {
    throw new RangeErrorCtor(
      `ISLET_ERR_MESSAGE_TOO_LARGE: ${what}: message is over the limit of ${config.maxMessageBytes} bytes`,
    );
  }
  return message;
}

function makeClient(id: string, uri: string, handler: string, engine: string): WebsocketClient {
  const socket = Number(id);
  const api: WebsocketClient = freeze({
    id,
    uri,
    handler,
    engine,
    send(message: string): void {
      const text = checkText(message, 'WebsocketClient.send(message)');
      const record = clients.get(id);
      if (record === undefined || record.state === 'closing') {
        throw new ErrorCtor(`ISLET_ERR_CLIENT_CLOSED: client ${id} (${uri}) is closed`);
      }
      // Before the socket opens the host queues this and sends it on open,
      // as Dirigible's blocking createWebsocket let scripts do.
      emit(Op.Send, socket, text);
    },
    close(): void {
      const record = clients.get(id);
      if (record === undefined || record.state === 'closing') return;
      record.state = 'closing';
      emit(Op.Close, socket, '');
    },
  });
  return api;
}

function register(id: string, uri: string, handler: string, engine: string, state: ClientState): WebsocketClient {
  const api = makeClient(id, uri, handler, engine);
  clients.set(id, { id, uri, handler, engine, state, api });
  return api;
}

/** Rebuilds the registry in a recreated isolate from the host's records. */
export function adoptClient(id: string, uri: string, handler: string, engine: string, state: ClientState): void {
  register(id, uri, handler, engine, state);
}

/** The handler a socket's events go to, or null if it is not this tenant's. */
export function handlerOf(id: string): string | null {
  const record = clients.get(id);
  return record === undefined ? null : record.handler;
}

export function markOpen(id: string): void {
  const record = clients.get(id);
  if (record !== undefined && record.state === 'connecting') record.state = 'open';
}

/** Dirigible removes a client from the registry before `onClose` runs. */
export function forget(id: string): void {
  clients.delete(id);
}

function metadata(record: ClientRecord): ClientMetadata {
  return { id: record.id, uri: record.uri, handler: record.handler, engine: record.engine, state: record.state };
}

export const websockets = freeze({
  createWebsocket(uri: string, handler: string, engine?: string): WebsocketClient {
    // The worker validates all three (engine name, ws:/wss: URI, handler file
    // inside this project) and throws an Error naming what is wrong.
    const id = StringCtor(hostConnect(uri, handler, engine));
    const name = engine === undefined || engine === null ? 'javascript' : StringCtor(engine);
    return register(id, StringCtor(uri), StringCtor(handler), name, 'connecting');
  },
  getClients(): ClientMetadata[] {
    const list: ClientMetadata[] = [];
    for (const record of clients.values()) list[list.length] = metadata(record);
    return list;
  },
  getClient(id: string): WebsocketClient | null {
    const record = clients.get(StringCtor(id));
    return record === undefined ? null : record.api;
  },
  getClientByHandler(handler: string): WebsocketClient | null {
    for (const record of clients.values()) if (record.handler === handler) return record.api;
    return null;
  },
  getMessage(): string | null {
    return context === null ? null : context.message;
  },
  getError(): string | null {
    return context === null ? null : context.error;
  },
  getMethod(): Method | null {
    return context === null ? null : context.method;
  },
  getHandler(): string | null {
    return context === null ? null : context.handler;
  },
  getSessionId(): string | null {
    return context === null ? null : context.session;
  },
  isOnOpen(): boolean {
    return context !== null && context.method === 'onopen';
  },
  isOnMessage(): boolean {
    return context !== null && context.method === 'onmessage';
  },
  isOnError(): boolean {
    return context !== null && context.method === 'onerror';
  },
  isOnClose(): boolean {
    return context !== null && context.method === 'onclose';
  },
});

// The implementation must satisfy the contract published to tenants in
// islet.d.ts; this fails to type-check when the two drift apart.
type Satisfies<T extends typeof import('net/v4/websockets')> = T;
export type ContractCheck = Satisfies<typeof websockets>;
