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
  }

  /** A connection a browser (or any client) opened to one of the tenant's endpoints. */
  export interface WebsocketSession {
    readonly id: string;
    readonly endpoint: string;
    /** The session's user; null when the host's access control gave none. */
    readonly user: SessionUser;
    /** Sends a text message to this session. Throws on a non-string, an oversize message, or a closed session. */
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
  /** Metadata of the open sessions on this tenant's endpoints (never another project's). */
  export function getSessions(): SessionMetadata[];
  /** A session of this tenant's endpoints by id, or null. */
  export function getSession(id: string): WebsocketSession | null;
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
  /** Dirigible 9+ style: `import { websockets } from "sdk/net"`. */
  export const websockets: typeof import('net/v4/websockets');
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
