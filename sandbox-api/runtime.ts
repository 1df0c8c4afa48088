// The trusted driver inside each tenant isolate. The worker calls its
// functions: `define` (a bundled module's factory, modules.ts), `dispatch` (a
// batch of events as a flat copied array of triples), `adopt` (the sockets of
// a recreated isolate), and `held` and `cancel` (what a script run still
// holds, run-holds.ts). Output leaves through `emit` (host.ts) as it is made.
// Each event is handled and caught on its own, so one failing handler never
// costs the rest of the batch.
import { installConsole } from './console.js';
import {
  config,
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
import { ADOPT_FIELDS, decodeSessionOpen, Event, Op, Progress } from './wire.js';
import { cancelTimersOf, fireTimer, installTimers, watchdog } from './timers.js';
import { installWasm } from './wasm.js';
import { define, handlerExports, runScript } from './modules.js';
import { asRuns, callStarts, eventsDone, held, only, release, type Runs } from './run-holds.js';
import {
  type Method,
  type SocketState,
  adoptSocket,
  checkText,
  forget,
  forgetPeer,
  handlerOf,
  isSession,
  markOpen,
  cancelClientsOf,
  runsOfSocket,
  withContext,
} from './websockets.js';

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
    adoptSocket(socket, '', names[0], 'javascript', 'open', names[1], open.user, '');
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

/** A session of this tenant's on another host: known here for getSessions and getSession, and its events are that host's. */
function peerEvent(kind: number, id: string, text: string): void {
  if (kind === Event.PeerGone) {
    forgetPeer(id);
    return;
  }
  const host = stringSlice(text, 0, stringIndexOf(text, '\n'));
  const open = decodeSessionOpen(stringSlice(text, host.length + 1), stringIndexOf, stringSlice);
  adoptSocket(id, '', open.handler, 'javascript', 'open', open.endpoint, open.user, host);
}

function handleEvent(kind: number, id: number, text: string): void {
  if (kind === Event.Peer || kind === Event.PeerGone) {
    peerEvent(kind, StringCtor(id), text);
    return;
  }
  if (kind === Event.Timer) {
    fireTimer(id);
    return;
  }
  if (kind === Event.Run) {
    try {
      asRuns(only(id), () => runScript(text, id));
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


/** Cuts a run whose time is up: what it holds is let go (no tenant code runs). */
function cancel(run: number): void {
  cancelTimersOf(run);
  cancelClientsOf(run);
}

/** Rebuilds the socket registry after the isolate was recreated: flat, ADOPT_FIELDS strings a socket, own elements of a copied array. */
function adopt(list: string[]): void {
  for (let i = 0; i + ADOPT_FIELDS <= list.length; i += ADOPT_FIELDS) {
    adoptSocket(list[i]!, list[i + 1]!, list[i + 2]!, list[i + 3]!, list[i + 4] as SocketState, list[i + 5]!, list[i + 6]!, list[i + 7]!);
  }
}

installConsole(globalThis);
installTimers(globalThis);
installWasm(globalThis);

// What the worker takes hold of (and then deletes from the global object).
// Plain data properties: isolated-vm does not read through getters.
(globalThis as unknown as Record<string, unknown>).__isletRuntime = freeze({ adopt, cancel, define, dispatch, held });
