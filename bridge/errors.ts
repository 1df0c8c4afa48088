// The one catalogue of islet's error codes. Host code throws `IsletError`;
// errors raised inside an isolate (by the sandbox API or a host function)
// reach tenant code as plain `Error`s whose message starts with the code.
// test/bridge/errors.test.ts checks that every code used anywhere is listed here and
// documented in the README.

export const ErrorCodes = {
  /** An engine or CLI option has the wrong type or range. */
  ISLET_ERR_BAD_OPTION: 'an engine or CLI option is invalid',
  /** `createWebsocket` was given an engine name islet does not run. */
  ISLET_ERR_BAD_ENGINE: 'unsupported engine name',
  /** `createWebsocket` was given a URI that is not ws: or wss:. */
  ISLET_ERR_BAD_URI: 'bad WebSocket URI',
  /** A handler id is empty, absolute, contains `..`, or names another project. */
  ISLET_ERR_BAD_HANDLER_ID: 'bad handler id',
  /** A handler id resolves to no file under the projects root. */
  ISLET_ERR_HANDLER_NOT_FOUND: 'handler module not found',
  /** A handler module could not be bundled or evaluated. */
  ISLET_ERR_HANDLER_FAILED: 'handler module failed to load',
  /** A `*.websocket` descriptor is invalid (names the file and the field). */
  ISLET_ERR_DESCRIPTOR: 'invalid endpoint descriptor',
  /** A script path lies outside the projects root or does not exist. */
  ISLET_ERR_SCRIPT_NOT_FOUND: 'script not found inside the projects root',
  /** An import names a Node built-in, a package, or a path outside the project. */
  ISLET_ERR_IMPORT_REFUSED: 'import refused by the sandbox',
  /** esbuild could not bundle a tenant file (syntax error, missing file). */
  ISLET_ERR_BUNDLE: 'tenant code failed to bundle',
  /** The outbound policy refused a client's connection (names the address and why). */
  ISLET_ERR_OUTBOUND_DENIED: 'outbound connection refused by policy',
  /** A value that must be text was something else. */
  ISLET_ERR_NOT_TEXT: 'text expected',
  /** An API function got an argument of the wrong kind (a timer without a function). */
  ISLET_ERR_BAD_ARGUMENT: 'argument of the wrong type',
  /** A message exceeds the size limit. */
  ISLET_ERR_MESSAGE_TOO_LARGE: 'message over the size limit',
  /** A tenant reached a count limit (clients, timers). */
  ISLET_ERR_LIMIT: 'tenant limit reached',
  /** `send`/`close` on a client that has already closed. */
  ISLET_ERR_CLIENT_CLOSED: 'client already closed',
  /** A peer did not answer a heartbeat ping in time; its connection was dropped. */
  ISLET_ERR_HEARTBEAT_TIMEOUT: 'peer did not answer a heartbeat',
  /** A call into an isolate ran past its time budget. */
  ISLET_ERR_TIMEOUT: 'tenant code ran past its time budget',
  /** A tenant's isolate ran out of heap and was discarded. */
  ISLET_ERR_MEMORY_LIMIT: 'tenant isolate over its heap limit',
  /** A tenant script threw, or rejected, and nothing caught it. */
  ISLET_ERR_UNCAUGHT: 'uncaught error in tenant code',
  /** A sandbox worker process died; the host restarts it. */
  ISLET_ERR_WORKER_DIED: 'sandbox worker died',
  /** A tenant that kept killing its worker is in quarantine. */
  ISLET_ERR_QUARANTINED: 'tenant quarantined',
  /** The engine is not started, or is closing. */
  ISLET_ERR_ENGINE_CLOSED: 'engine not running',
  /** `require()` at run time of a module the sandbox does not provide. */
  ISLET_ERR_MODULE_NOT_FOUND: 'module not available in the sandbox',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class IsletError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, detail: string) {
    super(`${code}: ${detail}`);
    this.name = 'IsletError';
    this.code = code;
  }
}
