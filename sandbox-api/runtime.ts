// The trusted driver inside each tenant isolate. The worker calls three
// functions: `define` (a bundled module's factory), `dispatch` (a batch of
// events as a flat copied array of triples) and `drain` (output produced by
// microtasks after a call returned). Each event is handled and caught on its
// own, so one failing handler never costs the rest of the batch.
import { installConsole } from './console.js';
import {
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
import { fireTimer, installTimers } from './timers.js';
import {
  type Method,
  adoptClient,
  forget,
  handlerOf,
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

/**
 * Calls one handler export with its context set. Returns what it returned.
 * An exception from onMessage goes to onError, as in Dirigible; one from any
 * other export is reported, and the tenant carries on.
 */
function callHandler(handler: string, method: Method, session: string, payload: string | null): void {
  const exports = handlerExports(handler);
  if (exports === null) return;
  const fn = exports[exportNames[method]];
  if (typeof fn !== 'function') return;
  const context = {
    method,
    handler,
    session,
    message: method === 'onmessage' ? payload : null,
    error: method === 'onerror' ? payload : null,
  };
  const failed = (error: unknown): void => {
    if (method === 'onmessage') callHandler(handler, 'onerror', session, errorMessage(error));
    else emit(Op.HandlerError, 0, errorText(error));
  };
  let result: unknown;
  try {
    result = withContext(context, () =>
      method === 'onopen' || method === 'onclose' ? fn.call(exports, session) : fn.call(exports, payload, session),
    );
  } catch (error) {
    failed(error);
    return;
  }
  if (typeof result === 'object' && result !== null && typeof (result as PromiseLike<unknown>).then === 'function') {
    then(result as PromiseLike<unknown>, failed);
  }
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
  const session = StringCtor(id);
  const handler = handlerOf(session);
  if (handler === null) return;
  switch (kind) {
    case Event.Open:
      markOpen(session);
      callHandler(handler, 'onopen', session, null);
      break;
    case Event.Message:
      callHandler(handler, 'onmessage', session, text);
      break;
    case Event.Error:
      callHandler(handler, 'onerror', session, text);
      break;
    case Event.Close:
      forget(session);
      callHandler(handler, 'onclose', session, null);
      break;
  }
}

function dispatch(batch: (number | string)[]): (number | string)[] {
  setBusy(true);
  try {
    for (let i = 0; i + 2 < batch.length; i += 3) {
      try {
        handleEvent(batch[i] as number, batch[i + 1] as number, batch[i + 2] as string);
      } catch (error) {
        emit(Op.Error, 0, errorText(error));
      }
    }
  } finally {
    setBusy(false);
  }
  return takeOutbox();
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

/** Rebuilds the client registry after the isolate was recreated: flat `[id, uri, handler, engine, state]`. */
function adopt(list: string[]): void {
  for (let i = 0; i + 4 < list.length; i += 5) {
    adoptClient(list[i]!, list[i + 1]!, list[i + 2]!, list[i + 3]!, list[i + 4] as 'connecting' | 'open' | 'closing');
  }
}

installConsole(globalThis);
installTimers(globalThis);

// What the worker takes hold of (and then deletes from the global object).
// Plain data properties: isolated-vm does not read through getters.
(globalThis as unknown as Record<string, unknown>).__isletRuntime = freeze({ adopt, define, dispatch, drain });
