// The one catalogue of islet's error codes: each code once, with the text the
// README's table carries (test/bridge/errors.test.ts holds the two equal).
// Host code throws `IsletError`. Between the processes an error crosses as a
// `WireError`, `{code, detail}`. Only what comes out of a tenant's isolate is
// text, because errors there are plain `Error`s whose message starts with the
// code: `fromIsolate` is the one place that text is read back.

export const ErrorCodes = {
  ISLET_ERR_BAD_OPTION: 'an engine or CLI option is invalid (names the option and its range)',
  ISLET_ERR_BAD_ENGINE: '`createWebsocket` got an engine name islet does not run',
  ISLET_ERR_BAD_URI: '`createWebsocket` got a URI that is not a valid `ws:`/`wss:` URL',
  ISLET_ERR_BAD_HANDLER_ID: 'a handler id is empty, absolute, has `.`/`..` segments, or names another project',
  ISLET_ERR_HANDLER_NOT_FOUND: 'a handler id resolves to no file (names the paths tried)',
  ISLET_ERR_HANDLER_FAILED: 'a handler module could not be evaluated',
  ISLET_ERR_DESCRIPTOR:
    'a `*.websocket` descriptor is not JSON, lacks or has a bad `handler`/`endpoint`/`engine`/`description`/`public`, or repeats another descriptor\'s endpoint (names the file and field)',
  ISLET_ERR_SCRIPT_NOT_FOUND: 'a script does not exist or lies outside the projects root',
  ISLET_ERR_IMPORT_REFUSED:
    'an import names a Node built-in, a package, a file outside the project (links followed), or a computed path; or a script or handler file is a link out of its project',
  ISLET_ERR_BUNDLE: 'tenant code failed to bundle (syntax error; names file, line, column)',
  ISLET_ERR_OUTBOUND_DENIED:
    "the outbound policy refused a client's connection: loopback, private, link-local (cloud metadata) or another special address, or a deny-listed host (reported to `onError`, then `onClose`)",
  ISLET_ERR_CONNECTION: "an outbound client's connection failed or broke (the detail is the network's reason; `onClose` follows)",
  ISLET_ERR_NOT_TEXT: 'a message that must be a string was something else (a binary frame to a client is dropped with it)',
  ISLET_ERR_BAD_ARGUMENT: 'an API function got an argument of the wrong type (a timer without a function), or a close code or reason ws would refuse',
  ISLET_ERR_MESSAGE_TOO_LARGE: 'a message is over `limits.maxMessageBytes`',
  ISLET_ERR_LIMIT_SESSIONS: "a tenant's endpoints have `limits.maxSessions` sessions open: the upgrade is answered 503",
  ISLET_ERR_LIMIT_CLIENTS: 'a tenant has `limits.maxClients` clients open',
  ISLET_ERR_LIMIT_TIMERS: 'a tenant has `limits.maxTimers` timers pending',
  ISLET_ERR_LIMIT_QUEUED:
    "a socket's peer is not reading and `limits.maxQueuedBytes` wait on it, or `limits.maxTenantQueuedBytes` on all of its tenant's sockets: messages are dropped until it drains",
  ISLET_ERR_LIMIT_OUTPUT: 'one call made more than `limits.maxOutputBytes` of output: the rest of its sends, replies and console lines were dropped',
  ISLET_ERR_LIMIT_BUNDLE: 'a script or handler bundles to more than `limits.maxBundleBytes`',
  ISLET_ERR_LIMIT_WASM_MEMORY: 'a WebAssembly memory would take the tenant over `limits.wasmMemoryMiB`',
  ISLET_ERR_LIMIT_RATE: "a session's peer sent more than `limits.messagesPerSecond`: it is closed with 1008",
  ISLET_ERR_LIMIT_RESPONSE: 'a script wrote more than `limits.maxResponseBytes` through the response module: the run fails (500 over HTTP)',
  ISLET_ERR_LIMIT_TOPICS: 'a session is subscribed to `limits.maxTopics` topics: it does not join another (its handler hears of it through `onError`)',
  ISLET_ERR_LIMIT_SCRIPT_RUNS: "a tenant has `limits.maxScriptRuns` scripts running over HTTP: the request is answered 503",
  ISLET_ERR_NO_RESPONSE: 'a handler module used `http/v4/response`: only a script run has a response',
  ISLET_ERR_RESPONSE_CLOSED: 'a script wrote to its response after `close()`',
  ISLET_ERR_CLUSTER:
    "a call to another host of the cluster cannot be made: this host has lost Redis (a publish then reached this host's subscribers only), or Redis cannot be reached when the engine starts",
  ISLET_ERR_TRY_AGAIN: 'a worker has no socket ids left for the moment; more are on their way',
  ISLET_ERR_CLIENT_CLOSED: '`send` on a client that is closing or closed',
  ISLET_ERR_HEARTBEAT_TIMEOUT: "a session's or client's peer did not answer a ping within `heartbeatMs`; the connection was dropped (`onClose` follows)",
  ISLET_ERR_TIMEOUT:
    'a call into a tenant ran past `limits.callTimeoutMs` and was stopped (the handler hears of it through `onError`, a script through its failure, and the events after it still run), or a handler\'s promise did not settle within `limits.settleTimeoutMs`',
  ISLET_ERR_MEMORY_LIMIT:
    "a tenant's isolate ran out of `limits.memoryMiB`; it was discarded and is recreated (with its handlers and open clients) on its next event",
  ISLET_ERR_UNCAUGHT: "a tenant's code threw, or rejected, and none of its own code caught it (the detail is the trace, mapped to the tenant's files)",
  ISLET_ERR_WORKER_DIED: "the sandbox worker running a tenant's code died; that call's events are lost",
  ISLET_ERR_QUARANTINED:
    "the tenant's code brought its sandbox worker down, or held it over twice its call budget in code the budget cannot stop, 3 times within a minute: its endpoints answer 503, its scripts are refused, until its files change or `quarantineMs` passes",
  ISLET_ERR_ENGINE_CLOSED: 'the engine is not started, or closed while a script ran',
  ISLET_ERR_MODULE_NOT_FOUND: '`require()` at run time of a module the sandbox does not provide',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** An error as it crosses between the host and a worker. */
export interface WireError {
  code: ErrorCode;
  detail: string;
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ErrorCodes, code);
}

export class IsletError extends Error {
  readonly code: ErrorCode;
  /** The message after its code. */
  readonly detail: string;

  constructor(code: ErrorCode, detail: string) {
    super(`${code}: ${detail}`);
    this.name = 'IsletError';
    this.code = code;
    this.detail = detail;
  }

  static from(wire: WireError): IsletError {
    return new IsletError(wire.code, wire.detail);
  }

  get wire(): WireError {
    return { code: this.code, detail: this.detail };
  }
}

/** An error islet's own code caught: one of islet's keeps its code; anything else is a fault of islet's, reported as the tenant's uncaught error. */
export function asIsletError(error: unknown): IsletError {
  return error instanceof IsletError ? error : new IsletError('ISLET_ERR_UNCAUGHT', error instanceof Error ? error.message : String(error));
}

/** How an error reads where a tenant's handler or a log line shows it. */
export function errorLine(error: WireError): string {
  return `${error.code}: ${error.detail}`;
}

/**
 * Text out of a tenant's isolate: islet's own failures there (a settle
 * timeout, the output limit) start with their code; anything else is the
 * tenant's exception, its trace as text.
 */
export function fromIsolate(text: string): WireError {
  const colon = text.indexOf(': ');
  const code = colon < 0 ? '' : text.slice(0, colon);
  return isErrorCode(code) ? { code, detail: text.slice(colon + 2) } : { code: 'ISLET_ERR_UNCAUGHT', detail: text };
}

/** The error with more said about it (`more` starts with its own separator). */
export function withMore(error: WireError, more: string): WireError {
  return { code: error.code, detail: error.detail + more };
}
