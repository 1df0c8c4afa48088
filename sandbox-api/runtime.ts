// The trusted driver inside each tenant isolate. The worker calls three
// functions: `define` (a bundled module's factory), `dispatch` (a batch of
// events as a flat copied array of triples) and `drain` (output produced by
// microtasks after a call returned). Each event is handled and caught on its
// own, so one failing handler never costs the rest of the batch.
import { installConsole } from './console.js';
import {
  config,
  ErrorCtor,
  MapCtor,
  Op,
  StringCtor,
  emit,
  errorMessage,
  errorText,
  freeze,
  setBusy,
  takeOutbox,
  then,
} from './host.js';
import { fireTimer, installTimers, watchdog } from './timers.js';
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
  withContext,
} from './websockets.js';

/** Event kinds of a dispatch batch; the worker sends triples `[kind, id, text]`. */
const Event = { Open: 0, Message: 1, Error: 2, Close: 3, Timer: 4, Run: 5 } as const;

type Factory = (this: unknown, exports: object, require: (name: string) => unknown, module: { exports: unknown }) => void;
interface ModuleRecord {
  factory: Factory | null;
  exports: unknown;
  loaded: boolean;
}

const modules = new MapCtor<string, ModuleRecord>();
const sdkNet = freeze({ websockets });
const builtins = new MapCtor<string, unknown>([
  ['net/v4/websockets', websockets],
  ['net/websockets', websockets],
  ['sdk/net', sdkNet],
]);

function requireModule(name: string): unknown {
  const builtin = builtins.get(name);
  if (builtin !== undefined) return builtin;
  const record = modules.get(name);
  if (record === undefined || record.factory === null) {
    throw new ErrorCtor(
      `ISLET_ERR_MODULE_NOT_FOUND: module "${StringCtor(name)}" is not available in the sandbox (only net/v4/websockets, net/websockets, sdk/net and the tenant's own bundled modules are)`,
    );
  }
  if (!record.loaded) {
    const module = { exports: {} as unknown };
    record.factory.call(module.exports, module.exports as object, requireModule, module);
    record.exports = module.exports;
    record.loaded = true;
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
  if (typeof fn !== 'function') return undefined;
  const context = {
    method,
    handler,
    session: socket,
    message: method === 'onmessage' ? payload : null,
    error: method === 'onerror' ? payload : null,
  };
  const failed = (error: unknown): unknown => {
    if (method === 'onmessage') return callHandler(handler, 'onerror', socket, errorMessage(error));
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
    result = withContext(context, () =>
      method === 'onopen' || method === 'onclose' ? fn.call(exports, socket) : fn.call(exports, payload, socket),
    );
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
const waiting = new MapCtor<string, (number | string)[]>();

function socketEvent(kind: number, socket: string, text: string): void {
  const queue = waiting.get(socket);
  if (queue !== undefined) {
    queue[queue.length] = kind;
    queue[queue.length] = text;
    return;
  }
  const pending = runSocketEvent(kind, socket, text);
  if (pending !== undefined) waitFor(socket, pending);
}

function waitFor(socket: string, pending: PromiseLike<unknown>): void {
  waiting.set(socket, []);
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
    const cancel = watchdog(config.settleTimeoutMs, () => {
      if (mine !== generation) return;
      generation++;
      const handler = handlerOf(socket);
      const message = `ISLET_ERR_TIMEOUT: a handler's promise did not settle within ${config.settleTimeoutMs} ms (limit settleTimeoutMs); the socket's next events go on`;
      const later = handler === null ? undefined : callHandler(handler, 'onerror', socket, message);
      if (later !== undefined) watch(later);
      else next();
    });
    then(promise, settled, settled);
  };
  const next = (): void => {
    const queue = waiting.get(socket)!;
    while (queue.length > 0) {
      const kind = queue.shift() as number;
      const text = queue.shift() as string;
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

/** "handler\nendpoint" of the endpoints sessions came in on: every session of one endpoint shares the two strings. */
const endpointOf = new MapCtor<string, [handler: string, endpoint: string]>();

function runSocketEvent(kind: number, socket: string, text: string): PromiseLike<unknown> | undefined {
  if (kind === Event.Open && text !== '' && handlerOf(socket) === null) {
    // A session the host accepted on one of this tenant's endpoints.
    let names = endpointOf.get(text);
    if (names === undefined) {
      const split = text.indexOf('\n');
      endpointOf.set(text, (names = [text.slice(0, split), text.slice(split + 1)]));
    }
    adoptSocket(socket, '', names[0], 'javascript', 'open', names[1]);
  }
  const handler = handlerOf(socket);
  if (handler === null) return undefined;
  if (kind === Event.Open) markOpen(socket);
  // Dirigible removes a socket from the registry before onClose runs.
  if (kind === Event.Close) forget(socket);
  return callHandler(handler, methodOf[kind]!, socket, kind === Event.Message || kind === Event.Error ? text : null);
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
      const module = { exports: {} as unknown };
      record.factory.call(module.exports, module.exports as object, requireModule, module);
    } catch (error) {
      emit(Op.Error, id, errorText(error));
    }
    return;
  }
  socketEvent(kind, StringCtor(id), text);
}

/** Index in the batch of the event being handled; -1 between events. Read after a call is cut short. */
let position = -1;

function dispatch(batch: (number | string)[]): (number | string)[] {
  setBusy(true);
  try {
    for (let i = 0; i + 2 < batch.length; i += 3) {
      position = i;
      try {
        handleEvent(batch[i] as number, batch[i + 1] as number, batch[i + 2] as string);
      } catch (error) {
        emit(Op.Error, 0, errorText(error));
      }
    }
  } finally {
    setBusy(false);
    position = -1;
  }
  return takeOutbox();
}

/** After a call was stopped: the index of the event it was running (-1: none, e.g. microtasks after the loop). */
function interrupted(): number {
  const at = position;
  position = -1;
  return at;
}

function drain(): (number | string)[] {
  // Also ends a dispatch that a timeout cut short before its finally ran.
  setBusy(false);
  return takeOutbox();
}

/** Defines (or, on reload, replaces) a bundled module; null marks one that failed to load. */
function define(name: string, factory: Factory | null): void {
  modules.set(name, { factory, exports: undefined, loaded: false });
}

/** Rebuilds the socket registry after the isolate was recreated: flat `[id, uri, handler, engine, state, endpoint]`. */
function adopt(list: string[]): void {
  for (let i = 0; i + 5 < list.length; i += 6) {
    adoptSocket(list[i]!, list[i + 1]!, list[i + 2]!, list[i + 3]!, list[i + 4] as SocketState, list[i + 5]!);
  }
}

installConsole(globalThis);
installTimers(globalThis);

// What the worker takes hold of (and then deletes from the global object).
// Plain data properties: isolated-vm does not read through getters.
(globalThis as unknown as Record<string, unknown>).__isletRuntime = freeze({ adopt, define, dispatch, drain, interrupted });
