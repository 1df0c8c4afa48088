// The trusted driver inside each tenant isolate. The worker calls three
// functions: `define` (a bundled module's factory), `dispatch` (a batch of
// events as a flat copied array of triples) and `adopt` (the sockets of a
// recreated isolate). Output leaves through `emit` (host.ts) as it is made.
// Each event is handled and caught on its own, so one failing handler never
// costs the rest of the batch.
import { installConsole } from './console.js';
import {
  config,
  ErrorCtor,
  newList,
  reflectApply,
  SafeMap,
  StringCtor,
  emit,
  errorMessage,
  errorText,
  freeze,
  dispatched,
  newCall,
  progress,
  stringIndexOf,
  stringSlice,
  then,
} from './host.js';
import { ADOPT_FIELDS, decodeSessionOpen, encodeModuleFailed, Event, Op, Progress } from './wire.js';
import { cancelTimersOf, fireTimer, installTimers, watchdog } from './timers.js';
import { installWasm } from './wasm.js';
import { newResponse, noResponse } from './response.js';
import { asRuns, callStarts, eventsDone, held, only, release, type Runs } from './run-holds.js';
import {
  type Method,
  type SocketState,
  adoptSocket,
  checkText,
  forget,
  handlerOf,
  isSession,
  markOpen,
  websockets,
  cancelClientsOf,
  runsOfSocket,
  withContext,
} from './websockets.js';

type Factory = (this: unknown, exports: object, require: (name: string) => unknown, module: { exports: unknown }) => void;
interface ModuleRecord {
  /** null: the module failed to load (reported once) and is not run again. */
  factory: Factory | null;
  /** The worker's number for it, put in `progress` while its code loads. */
  number: number;
  exports: unknown;
  loaded: boolean;
}

const modules = new SafeMap<string, ModuleRecord>();
// Every generation's module ids (the list the bundler leaves to the sandbox: engine/bundler.ts, SANDBOX_MODULES).
// Dirigible 10's SDK has a class `Websockets` of static methods, and `websockets` as its alias: here both are the one API object.
const sdkNet = freeze({ websockets, Websockets: websockets });
const builtins = new SafeMap<string, unknown>();
builtins.set('net/v4/websockets', websockets);
builtins.set('net/websockets', websockets);
builtins.set('sdk/net', sdkNet);
builtins.set('@aerokit/sdk/net', sdkNet);
/** The ids of Dirigible's response module, and what each gives (`sdk/http` has it as `response`): a run's own, or for a handler `noResponse`. */
const RESPONSE_IDS = new SafeMap<string, (response: object) => object>();
RESPONSE_IDS.set('http/v4/response', (response) => response);
RESPONSE_IDS.set('http/response', (response) => response);
const sdkHttp = (response: object): object => freeze({ response, Response: response });
RESPONSE_IDS.set('sdk/http', sdkHttp);
RESPONSE_IDS.set('@aerokit/sdk/http', sdkHttp);
const handlerHttp = new SafeMap<string, object>();
RESPONSE_IDS.forEach((wrap, id) => handlerHttp.set(id, wrap(noResponse)));

function failModule(name: string, error: string): void {
  const record = modules.get(name);
  if (record === undefined || record.factory === null) return;
  record.factory = null;
  emit(Op.ModuleFailed, 0, encodeModuleFailed(name, error));
}

/** Runs a module's factory with its own `module` and `exports`. */
function runFactory(factory: Factory, require: (name: string) => unknown): unknown {
  const module = { exports: {} as unknown };
  reflectApply(factory, module.exports, [module.exports, require, module]);
  return module.exports;
}

/** A script run's `require`: the response module is that run's; everything else as for any module. */
function requireForRun(run: number): (name: string) => unknown {
  let response: object | null = null;
  const own = new SafeMap<string, object>();
  return (name) => {
    const wrap = RESPONSE_IDS.get(name);
    if (wrap === undefined) return requireModule(name);
    let module = own.get(name);
    if (module === undefined) own.set(name, (module = wrap((response ??= newResponse(run)))));
    return module;
  };
}

function requireModule(name: string): unknown {
  const builtin = builtins.get(name) ?? handlerHttp.get(name);
  if (builtin !== undefined) return builtin;
  const record = modules.get(name);
  if (record === undefined || record.factory === null) {
    throw new ErrorCtor(
      `ISLET_ERR_MODULE_NOT_FOUND: module "${StringCtor(name)}" is not available in the sandbox (only net/v4/websockets, net/websockets, sdk/net, @aerokit/sdk/net, http/v4/response, http/response, sdk/http, @aerokit/sdk/http and the tenant's own bundled modules are)`,
    );
  }
  if (!record.loaded) {
    // A call stopped (or an isolate lost) while this is set fails the module: the worker reads it.
    const outer = progress[Progress.Loading]!;
    progress[Progress.Loading] = record.number + 1;
    try {
      record.exports = runFactory(record.factory, requireModule);
      record.loaded = true;
    } catch (error) {
      // Reported once; the module is not evaluated again for every event.
      failModule(name, errorText(error));
      return null;
    } finally {
      progress[Progress.Loading] = outer;
    }
  }
  return record.exports;
}

/** A handler module's exports, or null when it could not be loaded (already reported). */
function handlerExports(handler: string): Record<string, unknown> | null {
  const record = modules.get(handler);
  if (record === undefined || record.factory === null) return null;
  const exports = requireModule(handler);
  return typeof exports === 'object' && exports !== null ? (exports as Record<string, unknown>) : null;
}

const exportNames: Record<Method, string> = {
  onopen: 'onOpen',
  onmessage: 'onMessage',
  onerror: 'onError',
  onclose: 'onClose',
};

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as PromiseLike<unknown>).then === 'function';
}

/**
 * Calls one handler export with its context set. An exception from
 * onMessage goes to onError, as in Dirigible; one from any other export is
 * reported, and the tenant carries on. A string that onMessage returns (or
 * resolves to) for a session is sent back to it. Returns the handler's promise
 * when it returned one, so that the socket's next event waits for it.
 */
function callHandler(handler: string, method: Method, socket: string, payload: string | null): PromiseLike<unknown> | undefined {
  const exports = handlerExports(handler);
  if (exports === null) return undefined;
  const fn = exports[exportNames[method]];
  if (typeof fn !== 'function') {
    // An error with no onError to hear it is reported, never dropped, with its code (the host's errors start with theirs).
    if (method === 'onerror') emit(Op.HandlerError, 0, `${StringCtor(payload)} (${handler} has no onError)`);
    return undefined;
  }
  const context = {
    method,
    handler,
    session: socket,
    message: method === 'onmessage' ? payload : null,
    error: method === 'onerror' ? payload : null,
  };
  const failed = (error: unknown): unknown => {
    if (method === 'onmessage' && typeof exports.onError === 'function') return callHandler(handler, 'onerror', socket, errorMessage(error));
    emit(Op.HandlerError, 0, errorText(error));
    return undefined;
  };
  const reply = (value: unknown): void => {
    if (method !== 'onmessage' || value === undefined || value === null || !isSession(socket)) return;
    try {
      checkText(value, 'the value onMessage returns');
      emit(Op.Send, Number(socket), value as string);
    } catch (error) {
      emit(Op.HandlerError, 0, errorText(error));
    }
  };
  let result: unknown;
  try {
    result = withContext(context, () => reflectApply(fn, exports, method === 'onopen' || method === 'onclose' ? [socket] : [payload, socket]));
  } catch (error) {
    return failed(error) as PromiseLike<unknown> | undefined;
  }
  if (!isThenable(result)) {
    reply(result);
    return undefined;
  }
  return then(result, reply, failed);
}

const methodOf: Record<number, Method> = {
  [Event.Open]: 'onopen',
  [Event.Message]: 'onmessage',
  [Event.Error]: 'onerror',
  [Event.Close]: 'onclose',
};

/**
 * Events waiting, per socket, for its handler's promise to settle: a
 * socket's events reach its handler in order and never overlap.
 */
interface Waiting {
  /** kind, text, kind, text, … from `head` on. */
  events: (number | string)[];
  head: number;
}
const waiting = new SafeMap<string, Waiting>();

function socketEvent(kind: number, socket: string, text: string): void {
  const queue = waiting.get(socket);
  if (queue !== undefined) {
    queue.events[queue.events.length] = kind;
    queue.events[queue.events.length] = text;
    return;
  }
  const runs = runsOfSocket(socket);
  const pending = runSocketEvent(kind, socket, text);
  if (pending !== undefined) waitFor(socket, pending, runs);
}

/** `runs`: the socket's script runs, which the wait (its watchdog timer) holds. */
function waitFor(socket: string, pending: PromiseLike<unknown>, runs: Runs): void {
  waiting.set(socket, { events: newList(), head: 0 });
  // Each promise waited on gets a generation: whichever of its settling and
  // its watchdog comes first moves the queue on, the other finds it stale.
  let generation = 0;
  const watch = (promise: PromiseLike<unknown>): void => {
    const mine = ++generation;
    const settled = (): void => {
      if (mine !== generation) return;
      generation++;
      cancel();
      next();
    };
    // A promise that never settles must not stall its socket for good.
    const cancel = asRuns(runs, () => watchdog(config.settleTimeoutMs, () => {
      if (mine !== generation) return;
      generation++;
      const handler = handlerOf(socket);
      const message = `ISLET_ERR_TIMEOUT: a handler's promise did not settle within ${config.settleTimeoutMs} ms (limit settleTimeoutMs); the socket's next events go on`;
      const later = handler === null ? undefined : callHandler(handler, 'onerror', socket, message);
      if (later !== undefined) watch(later);
      else next();
    }));
    then(promise, settled, settled);
  };
  const next = (): void => {
    const queue = waiting.get(socket)!;
    while (queue.head < queue.events.length) {
      const kind = queue.events[queue.head] as number;
      const text = queue.events[queue.head + 1] as string;
      queue.head += 2;
      let later: PromiseLike<unknown> | undefined;
      try {
        later = runSocketEvent(kind, socket, text);
      } catch (error) {
        emit(Op.Error, 0, errorText(error));
      }
      if (later !== undefined) {
        watch(later);
        return;
      }
    }
    waiting.delete(socket);
  };
  watch(pending);
}

/** The endpoints sessions came in on, by "endpoint\nhandler": every session of one endpoint shares the two strings. */
const endpointOf = new SafeMap<string, [handler: string, endpoint: string]>();

function runSocketEvent(kind: number, socket: string, text: string): PromiseLike<unknown> | undefined {
  if (kind === Event.Open && text !== '' && handlerOf(socket) === null) {
    // A session the host accepted on one of this tenant's endpoints.
    const open = decodeSessionOpen(text, stringIndexOf, stringSlice);
    const key = open.endpoint + '\n' + open.handler;
    let names = endpointOf.get(key);
    if (names === undefined) endpointOf.set(key, (names = [open.handler, open.endpoint]));
    adoptSocket(socket, '', names[0], 'javascript', 'open', names[1], open.user);
  }
  const handler = handlerOf(socket);
  if (handler === null) return undefined;
  const runs = runsOfSocket(socket);
  if (kind === Event.Open) markOpen(socket);
  // Dirigible removes a socket from the registry before onClose runs.
  if (kind === Event.Close) forget(socket);
  return asRuns(runs, () => {
    try {
      return callHandler(handler, methodOf[kind]!, socket, kind === Event.Message || kind === Event.Error ? text : null);
    } finally {
      // A client holds its run until its onClose has run (what onClose makes holds it on).
      if (kind === Event.Close) release(runs);
    }
  });
}

function handleEvent(kind: number, id: number, text: string): void {
  if (kind === Event.Timer) {
    fireTimer(id);
    return;
  }
  if (kind === Event.Run) {
    try {
      const record = modules.get(text);
      if (record === undefined || record.factory === null) throw new ErrorCtor(`script ${text} was not defined`);
      // A script runs each time it is asked to; it is not cached like a module.
      asRuns(only(id), () => runFactory(record.factory!, requireForRun(id)));
    } catch (error) {
      emit(Op.Error, id, errorText(error));
    }
    return;
  }
  socketEvent(kind, StringCtor(id), text);
}

function dispatch(batch: (number | string)[]): void {
  newCall();
  callStarts();
  try {
    for (let i = 0; i + 2 < batch.length; i += 3) {
      progress[Progress.Event] = i;
      try {
        handleEvent(batch[i] as number, batch[i + 1] as number, batch[i + 2] as string);
      } catch (error) {
        emit(Op.Error, 0, errorText(error));
      }
    }
  } finally {
    progress[Progress.Event] = -1;
    eventsDone();
  }
  dispatched();
}

/** Defines (or, on reload, replaces) a bundled module; null marks one that failed to load. */
function define(name: string, factory: Factory | null, number: number): void {
  modules.set(name, { factory, number, exports: undefined, loaded: false });
}

/** Cuts a run whose time is up: what it holds is let go (no tenant code runs). */
function cancel(run: number): void {
  cancelTimersOf(run);
  cancelClientsOf(run);
}

/** Rebuilds the socket registry after the isolate was recreated: flat, ADOPT_FIELDS strings a socket, own elements of a copied array. */
function adopt(list: string[]): void {
  for (let i = 0; i + ADOPT_FIELDS <= list.length; i += ADOPT_FIELDS) {
    adoptSocket(list[i]!, list[i + 1]!, list[i + 2]!, list[i + 3]!, list[i + 4] as SocketState, list[i + 5]!, list[i + 6]!);
  }
}

installConsole(globalThis);
installTimers(globalThis);
installWasm(globalThis);

// What the worker takes hold of (and then deletes from the global object).
// Plain data properties: isolated-vm does not read through getters.
(globalThis as unknown as Record<string, unknown>).__isletRuntime = freeze({ adopt, cancel, define, dispatch, held });
