// `net/v4/websockets` as tenant code sees it: outbound clients, sessions on
// the tenant's endpoints, their registry, and the handler context accessors. Semantics follow Eclipse
// Dirigible's v4 API (see DIRIGIBLE.md); sockets live in the host, this side
// only keeps the tenant's view of them.
import { currentRuns, hold, NO_RUNS, type Runs, without } from './run-holds.js';
import {
  clusterAway,
  config,
  emit,
  exceedsBytes,
  freeze,
  hostConnect,
  Op,
  SafeMap,
  RangeErrorCtor,
  StringCtor,
  TypeErrorCtor,
  ErrorCtor,
  jsonParse,
} from './host.js';
import { encodeClose, encodeNamed, MAX_TOPIC_BYTES } from './wire.js';
import type { ClientMetadata, Method, SessionMetadata, SessionUser, WebsocketClient, WebsocketSession } from 'net/v4/websockets';

// The types are the published contract's (islet.d.ts): one definition for
// tenants and for this implementation.
export type { Method } from 'net/v4/websockets';
export type SocketState = ClientMetadata['state'];

/** One socket of this tenant: an outbound client, or a session on one of its endpoints. */
interface SocketRecord {
  id: string;
  /** The endpoint of a session; null for a client. */
  endpoint: string | null;
  /** A session's user, as `authorize` gave it (parsed from JSON when first asked for); null for none. */
  user: string;
  /** The host of the cluster a session is on; '' for this one. */
  host: string;
  uri: string;
  handler: string;
  engine: string;
  state: SocketState;
  /** Made when tenant code first asks for it: most sessions are never looked up. */
  api: WebsocketClient | WebsocketSession | null;
  /** The script runs that made this client (none for a session): the client keeps them going until its onClose has run. */
  runs: Runs;
}

/** The event a handler call is serving; null between calls. */
interface HandlerContext {
  method: Method;
  handler: string;
  message: string | null;
  error: string | null;
  session: string;
}

const sockets = new SafeMap<string, SocketRecord>();
let context: HandlerContext | null = null;

/** The socket whose handler is running (as a number), or 0 outside any handler call. */
export function currentSocket(): number {
  return context === null ? 0 : Number(context.session);
}

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

/** Close codes a tenant may send (RFC 6455 section 7.4: 1000, or 3000-4999 for applications). */
function checkClose(code: unknown, reason: unknown): string {
  if (code === undefined) return '';
  if (typeof code !== 'number' || !(code === 1000 || (code >= 3000 && code <= 4999)) || code % 1 !== 0) {
    throw new RangeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: close code must be 1000 or 3000-4999, got ${StringCtor(code)}`);
  }
  const text = reason === undefined ? '' : checkText(reason, 'close(code, reason)');
  if (exceedsBytes(text, 123)) throw new RangeErrorCtor('ISLET_ERR_BAD_ARGUMENT: close reason is over 123 bytes');
  return encodeClose(code, text);
}

function apiOf(record: SocketRecord): WebsocketClient | WebsocketSession {
  if (record.api === null) record.api = makeApi(record);
  return record.api;
}

function makeApi(record: SocketRecord): WebsocketClient | WebsocketSession {
  const { id, endpoint, uri } = record;
  const socket = Number(id);
  const what = endpoint === null ? 'WebsocketClient' : 'WebsocketSession';
  const send = (message: string): void => {
    const text = checkText(message, `${what}.send(message)`);
    const current = sockets.get(id);
    if (current === undefined || current.state === 'closing') {
      if (record.host !== '' && clusterAway()) throw outOfReach(record);
      throw new ErrorCtor(`ISLET_ERR_CLIENT_CLOSED: ${endpoint === null ? 'client' : 'session'} ${id} (${uri}) is closed`);
    }
    // Before a client opens the host queues this and sends it on open, as
    // Dirigible's blocking createWebsocket let scripts do.
    emit(Op.Send, socket, text);
  };
  const close = (code?: number, reason?: string): void => {
    const how = checkClose(code, reason);
    const current = sockets.get(id);
    if (current === undefined && record.host !== '' && clusterAway()) throw outOfReach(record);
    if (current === undefined || current.state === 'closing') return;
    current.state = 'closing';
    emit(Op.Close, socket, how);
  };
  if (endpoint !== null) return freeze({ id, endpoint, host: hostOf(record), user: userOf(record), send, close });
  return freeze({ id, uri, handler: record.handler, engine: record.engine, send, close: () => close() });
}

/** The host a session is on, by name. */
function hostOf(record: SocketRecord): string {
  return record.host === '' ? config.host : record.host;
}

function outOfReach(record: SocketRecord): Error {
  return new ErrorCtor(`ISLET_ERR_CLUSTER: session ${record.id} is on host ${record.host}, out of reach while this host has lost Redis`);
}

function register(fields: Omit<SocketRecord, 'api' | 'runs'>, runs: Runs = NO_RUNS): SocketRecord {
  const record: SocketRecord = { ...fields, api: null, runs };
  sockets.set(fields.id, record);
  return record;
}

/**
 * Rebuilds the registry in a recreated isolate from the host's records, or
 * records a session the host accepted (state open; the endpoint is set).
 */
export function adoptSocket(id: string, uri: string, handler: string, engine: string, state: SocketState, endpoint: string, user: string, host: string): void {
  register({ id, uri, handler, engine, state, endpoint: endpoint === '' ? null : endpoint, user, host });
}

/** A session's user: its JSON parsed once, on first use (most sessions are never asked). */
const users = new SafeMap<string, SessionUser>();
function userOf(record: SocketRecord): SessionUser {
  if (record.user === '') return null;
  if (!users.has(record.id)) users.set(record.id, jsonParse(record.user) as SessionUser);
  return users.get(record.id)!;
}

/** Run `run` was cut: its clients no longer hold it, and those only it held are closed (their onClose runs as usual). */
export function cancelClientsOf(run: number): void {
  sockets.forEach((record) => {
    const rest = without(record.runs, run);
    if (rest === record.runs) return;
    record.runs = rest;
    if (rest.length > 0 || record.state === 'closing') return;
    record.state = 'closing';
    emit(Op.Close, Number(record.id), '');
  });
}

/** The script runs a socket belongs to. */
export function runsOfSocket(id: string): Runs {
  return sockets.get(id)?.runs ?? NO_RUNS;
}

/** The handler a socket's events go to, or null if it is not this tenant's (or is on another host: its events are that host's). */
export function handlerOf(id: string): string | null {
  const record = sockets.get(id);
  return record === undefined || record.host !== '' ? null : record.handler;
}

/** A session of this tenant's, on this host or another. */
function sessionRecord(id: unknown, what: string): SocketRecord {
  const record = sockets.get(StringCtor(id));
  if (record === undefined || record.endpoint === null) throw new RangeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: ${what}: no session "${StringCtor(id)}" of this tenant is open`);
  return record;
}

function checkTopic(topic: unknown, what: string): string {
  if (typeof topic !== 'string' || topic === '') throw new TypeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: ${what} takes a topic name, a string that is not empty`);
  if (exceedsBytes(topic, MAX_TOPIC_BYTES)) throw new RangeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: ${what}: topic name is over ${MAX_TOPIC_BYTES} bytes`);
  return topic;
}

/** Joins or leaves a topic; a session on another host is told through its host. */
function subscription(op: number, sessionId: unknown, topic: unknown, what: string): void {
  const name = checkTopic(topic, what);
  const record = sessionRecord(sessionId, what);
  emit(op, Number(record.id), name);
}

export function isSession(id: string): boolean {
  const record = sockets.get(id);
  return record !== undefined && record.endpoint !== null;
}

export function markOpen(id: string): void {
  const record = sockets.get(id);
  if (record !== undefined && record.state === 'connecting') record.state = 'open';
}

/** A session on another host is gone. */
export function forgetPeer(id: string): void {
  const record = sockets.get(id);
  if (record !== undefined && record.host !== '') forget(id);
}

/** Dirigible removes a client from the registry before `onClose` runs. */
export function forget(id: string): void {
  sockets.delete(id);
  users.delete(id);
}

export const websockets = freeze({
  createWebsocket(uri: string, handler: string, engine?: string): WebsocketClient {
    // The worker validates all three (engine name, ws:/wss: URI, handler file
    // inside this project) and throws an Error naming what is wrong.
    const id = StringCtor(hostConnect(uri, handler, engine));
    const name = engine === undefined || engine === null ? 'javascript' : StringCtor(engine);
    const runs = currentRuns();
    hold(runs);
    return apiOf(register({ id, uri: StringCtor(uri), handler: StringCtor(handler), engine: name, state: 'connecting', endpoint: null, user: '', host: '' }, runs)) as WebsocketClient;
  },
  getClients(): ClientMetadata[] {
    const list: ClientMetadata[] = [];
    sockets.forEach((r) => {
      if (r.endpoint === null) list[list.length] = { id: r.id, uri: r.uri, handler: r.handler, engine: r.engine, state: r.state };
    });
    return list;
  },
  getClient(id: string): WebsocketClient | null {
    const record = sockets.get(StringCtor(id));
    return record === undefined || record.endpoint !== null ? null : (apiOf(record) as WebsocketClient);
  },
  getClientByHandler(handler: string): WebsocketClient | null {
    let found: SocketRecord | null = null;
    sockets.forEach((r) => {
      if (found === null && r.endpoint === null && r.handler === handler) found = r;
    });
    return found === null ? null : (apiOf(found) as WebsocketClient);
  },
  /** Sessions open on this tenant's endpoints, on every host of the cluster, for a handler that broadcasts. */
  getSessions(): SessionMetadata[] {
    const list: SessionMetadata[] = [];
    sockets.forEach((r) => {
      if (r.endpoint !== null) list[list.length] = { id: r.id, endpoint: r.endpoint, handler: r.handler, state: r.state, user: userOf(r), host: hostOf(r) };
    });
    return list;
  },
  getSession(id: string): WebsocketSession | null {
    const record = sockets.get(StringCtor(id));
    return record === undefined || record.endpoint === null ? null : (apiOf(record) as WebsocketSession);
  },
  subscribe(sessionId: string, topic: string): void {
    subscription(Op.Subscribe, sessionId, topic, 'subscribe(sessionId, topic)');
  },
  unsubscribe(sessionId: string, topic: string): void {
    subscription(Op.Unsubscribe, sessionId, topic, 'unsubscribe(sessionId, topic)');
  },
  /** Sends `message` to every session of this tenant's subscribed to `topic`, on every host; it leaves the isolate once. */
  publish(topic: string, message: string): void {
    const name = checkTopic(topic, 'publish(topic, message)');
    const text = checkText(message, 'publish(topic, message)');
    emit(Op.Publish, 0, encodeNamed(name, text));
    if (clusterAway()) throw new ErrorCtor('ISLET_ERR_CLUSTER: the message reached the subscribers on this host only: it has lost Redis, and with it the other hosts');
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
