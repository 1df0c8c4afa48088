// The tenant API of islet: what scripts and handler modules may import, and
// the globals they get. Reference it from a tenant's tsconfig.json
// ("types" or "files") or with `/// <reference path="…/islet.d.ts" />`.
// Nothing of Node exists in the sandbox.

declare module 'net/v4/websockets' {
  /** The handler export being served; null outside a handler call. */
  export type Method = 'onopen' | 'onmessage' | 'onerror' | 'onclose';

  /** JSON-safe description of an outbound client, as `getClients()` lists it. */
  export interface ClientMetadata {
    id: string;
    uri: string;
    /** Handler module id, e.g. "my-project/ws-handler". */
    handler: string;
    /** Engine name given to `createWebsocket` ("javascript" when omitted). */
    engine: string;
    state: 'connecting' | 'open' | 'closing';
  }

  export interface WebsocketClient {
    readonly id: string;
    readonly uri: string;
    readonly handler: string;
    readonly engine: string;
    /**
     * Sends a text message. Before the socket opens the message is queued and
     * sent, in order, once it opens. Throws on a non-string, on a message over
     * the size limit, and once the client is closing or closed.
     */
    send(message: string): void;
    /** Closes the connection; the handler's `onClose` follows. */
    close(): void;
  }

  /** A JSON value: who a session's peer is, as the host's access control said (a JWT's claims under `islet serve`). */
  export type SessionUser = null | boolean | number | string | SessionUser[] | { [key: string]: SessionUser };

  /** JSON-safe description of a session on one of the tenant's endpoints. */
  export interface SessionMetadata {
    id: string;
    endpoint: string;
    handler: string;
    state: 'connecting' | 'open' | 'closing';
    /** The session's user; null when the host's access control gave none. */
    user: SessionUser;
    /** The islet host the session is connected to (in a cluster, one of several; alone, this one). */
    host: string;
  }

  /** A connection a browser (or any client) opened to one of the tenant's endpoints. */
  export interface WebsocketSession {
    readonly id: string;
    readonly endpoint: string;
    /** The islet host the session is connected to. */
    readonly host: string;
    /** The session's user; null when the host's access control gave none. */
    readonly user: SessionUser;
    /** Sends a text message to this session, on whichever host it is. Throws on a non-string, an oversize message, or a closed session (ISLET_ERR_CLUSTER: on a host out of reach). */
    send(message: string): void;
    /** Closes the session; `code` is 1000 (default) or 3000-4999, `reason` at most 123 bytes. */
    close(code?: number, reason?: string): void;
  }

  /**
   * Exports a handler module may have; each is optional. The id is the
   * client's or the session's. A string that `onMessage` returns (or a promise
   * of one) is sent back to the session it came from. A socket's events reach
   * the handler in order and never overlap: while a returned promise is
   * pending, that socket's next event waits.
   */
  export interface WebsocketHandler {
    onOpen?(id: string): void | Promise<void>;
    onMessage?(message: string, id: string): string | void | Promise<string | void>;
    onError?(error: string, id: string): void | Promise<void>;
    onClose?(id: string): void | Promise<void>;
  }

  /**
   * Connects to a ws: or wss: URI; the events go to the exports of `handler`,
   * a module of the caller's own project. `engine` may be omitted or be
   * "javascript", "v8", "isolated-vm" (or Dirigible's "rhino", "nashorn",
   * "graalvm", "graalium", run the same way). Throws on a bad URI, an unknown
   * engine, or a handler that resolves to no file.
   */
  export function createWebsocket(uri: string, handler: string, engine?: string): WebsocketClient;
  /** Metadata of this tenant's clients, from `createWebsocket` until closed. */
  export function getClients(): ClientMetadata[];
  export function getClient(id: string): WebsocketClient | null;
  export function getClientByHandler(handler: string): WebsocketClient | null;
  /** Metadata of the open sessions on this tenant's endpoints, on every host of the cluster (never another project's). */
  export function getSessions(): SessionMetadata[];
  /** A session of this tenant's endpoints by id, on any host of the cluster, or null. */
  export function getSession(id: string): WebsocketSession | null;
  /**
   * Session `sessionId` (on any host) joins `topic`: it gets what is
   * published to it, until it unsubscribes or closes. Topics are the
   * tenant's own: another tenant's of the same name is another topic. A
   * topic name is 1 to 256 bytes; a session joins at most `maxTopics`.
   */
  export function subscribe(sessionId: string, topic: string): void;
  export function unsubscribe(sessionId: string, topic: string): void;
  /**
   * Sends `message` to every session subscribed to `topic`, on every host.
   * The message leaves the isolate once, and each host frames it once. While
   * this host has lost Redis, it reaches this host's subscribers, then
   * throws ISLET_ERR_CLUSTER.
   */
  export function publish(topic: string, message: string): void;
  /** The message, inside `onMessage`; null elsewhere. */
  export function getMessage(): string | null;
  /** The error, inside `onError`; null elsewhere. */
  export function getError(): string | null;
  export function getMethod(): Method | null;
  /** The handler module id being called; null outside a handler call. */
  export function getHandler(): string | null;
  /** The client or session id of the event being handled; null outside a handler call. */
  export function getSessionId(): string | null;
  export function isOnOpen(): boolean;
  export function isOnMessage(): boolean;
  export function isOnError(): boolean;
  export function isOnClose(): boolean;
}

declare module 'net/websockets' {
  export * from 'net/v4/websockets';
}

declare module 'sdk/net' {
  import type * as api from 'net/v4/websockets';
  /** Dirigible 10+ (`@aerokit/sdk/net`): the page's functions as static methods of `Websockets`; `websockets` is the same object. */
  export const Websockets: typeof api;
  /** Dirigible 9+ style: `import { websockets } from "sdk/net"`. */
  export const websockets: typeof api;
  export type Method = api.Method;
  export type ClientMetadata = api.ClientMetadata;
  export type WebsocketClient = api.WebsocketClient;
  export type SessionUser = api.SessionUser;
  export type SessionMetadata = api.SessionMetadata;
  export type WebsocketSession = api.WebsocketSession;
  export type WebsocketHandler = api.WebsocketHandler;
}

declare module '@aerokit/sdk/net' {
  export * from 'sdk/net';
}

/**
 * Dirigible's response module: a script's answer to whoever ran it (the
 * HTTP request under `GET /services/js/…`; standard output under `islet run`).
 * Each script run has its own. In a handler module every function but
 * `isValid` throws ISLET_ERR_NO_RESPONSE.
 */
declare module 'http/v4/response' {
  /** Text, as is (a non-string is turned into one). */
  export function print(value: unknown): void;
  /** Text and a line break. */
  export function println(value?: unknown): void;
  /** Bytes: a string of characters 0-255, or an array or typed array of numbers 0-255 (or -128-127). */
  export function write(bytes: string | ArrayLike<number>): void;
  /** What is written leaves at once; there is nothing to flush. */
  export function flush(): void;
  /** Ends the response: over HTTP it is sent now, even if the script's timers or clients go on. */
  export function close(): void;
  /** False once closed (and in a handler module). */
  export function isValid(): boolean;
  /** An HTTP status from 200 to 599; 200 unless set. Under `islet run`, 400 or more makes the exit code 1. */
  export function setStatus(status: number): void;
  /** A header of the answer; Content-Length, Transfer-Encoding, Connection and the like are the host's. */
  export function setHeader(name: string, value: string): void;
  export function setContentType(type: string): void;
  export const CONTINUE: 100;
  export const SWITCHING_PROTOCOLS: 101;
  export const OK: 200;
  export const CREATED: 201;
  export const ACCEPTED: 202;
  export const NON_AUTHORITATIVE_INFORMATION: 203;
  export const NO_CONTENT: 204;
  export const RESET_CONTENT: 205;
  export const PARTIAL_CONTENT: 206;
  export const MULTIPLE_CHOICES: 300;
  export const MOVED_PERMANENTLY: 301;
  export const MOVED_TEMPORARILY: 302;
  export const FOUND: 302;
  export const SEE_OTHER: 303;
  export const NOT_MODIFIED: 304;
  export const USE_PROXY: 305;
  export const TEMPORARY_REDIRECT: 307;
  export const BAD_REQUEST: 400;
  export const UNAUTHORIZED: 401;
  export const PAYMENT_REQUIRED: 402;
  export const FORBIDDEN: 403;
  export const NOT_FOUND: 404;
  export const METHOD_NOT_ALLOWED: 405;
  export const NOT_ACCEPTABLE: 406;
  export const PROXY_AUTHENTICATION_REQUIRED: 407;
  export const REQUEST_TIMEOUT: 408;
  export const CONFLICT: 409;
  export const GONE: 410;
  export const LENGTH_REQUIRED: 411;
  export const PRECONDITION_FAILED: 412;
  export const REQUEST_ENTITY_TOO_LARGE: 413;
  export const REQUEST_URI_TOO_LONG: 414;
  export const UNSUPPORTED_MEDIA_TYPE: 415;
  export const REQUESTED_RANGE_NOT_SATISFIABLE: 416;
  export const EXPECTATION_FAILED: 417;
  export const INTERNAL_SERVER_ERROR: 500;
  export const NOT_IMPLEMENTED: 501;
  export const BAD_GATEWAY: 502;
  export const SERVICE_UNAVAILABLE: 503;
  export const GATEWAY_TIMEOUT: 504;
  export const HTTP_VERSION_NOT_SUPPORTED: 505;
}

declare module 'http/response' {
  export * from 'http/v4/response';
}

declare module 'sdk/http' {
  import type * as api from 'http/v4/response';
  /** `import { response } from "sdk/http"`: the response module; `Response` is the same object. */
  export const response: typeof api;
  export const Response: typeof api;
}

declare module '@aerokit/sdk/http' {
  export * from 'sdk/http';
}

interface IsletConsole {
  log(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  trace(...args: unknown[]): void;
}
declare var console: IsletConsole;
declare function setTimeout(callback: (...args: any[]) => void, ms?: number, ...args: any[]): number;
declare function setInterval(callback: (...args: any[]) => void, ms?: number, ...args: any[]): number;
declare function clearTimeout(id: number | undefined): void;
declare function clearInterval(id: number | undefined): void;
declare function queueMicrotask(callback: () => void): void;
