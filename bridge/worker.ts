// A sandbox worker process: holds many tenant isolates, reads frames from the
// host on fd 3, batches each tenant's events per event-loop turn into one
// isolate call, and sends the tenant's output back. It trusts the host and
// nothing that comes out of an isolate: every output is checked here
// (types, sizes, which tenant owns the socket) before it is forwarded.
import net from 'node:net';
import { IsletError } from './errors.js';
import { checkEngine, resolveHandler, typeName } from './handler-ids.js';
import {
  FrameKind,
  FrameReader,
  FrameWriter,
  ID_BLOCK,
  PROGRESS_FD,
  ProgressLog,
  type BundledCode,
  type HostToWorker,
  type SocketInfo,
  type TenantLimits,
  type WorkerToHost,
} from './protocol.js';
import { decodeClose, LOG_LEVELS } from '../sandbox-api/wire.js';
import { type Batch, Event, Op, Tenant, type TenantHost } from './tenant.js';

const MAX_URI_LENGTH = 4096;
/** How far past twice its budget a call may run before it counts as an overrun (a stopped call takes a little longer than its budget). */
const OVERRUN_GRACE_MS = 100;

const channel = new net.Socket({ fd: 3, readable: true, writable: true });
const writer = new FrameWriter(channel);
const progress = new ProgressLog(PROGRESS_FD);

let runtime = '';
let root = '';
let limits: TenantLimits;
const tenants = new Map<string, Tenant>();
/** Every socket of a tenant on this worker, by id: what the tenant may touch. */
const sockets = new Map<number, SocketInfo>();
/** Pending script runs per tenant; a run ends when its tenant is idle. */
const runs = new Map<string, Set<number>>();
const idBlocks: number[] = [];
let nextId = 0;
let lastId = -1;
let askedForIds = false;
const dirty = new Set<Tenant>();
let flushScheduled = false;

function send(message: WorkerToHost): void {
  writer.control(message);
}

function allocateId(): number {
  if (nextId > lastId) {
    const from = idBlocks.shift();
    if (from === undefined) throw new IsletError('ISLET_ERR_LIMIT', 'no socket ids left on this worker; try again');
    nextId = from;
    lastId = from + ID_BLOCK - 1;
    askedForIds = false;
  }
  if (!askedForIds && idBlocks.length === 0 && lastId - nextId < ID_BLOCK / 2) {
    askedForIds = true;
    send({ t: 'needIds' });
  }
  return nextId++;
}

/** Open outbound clients per tenant, kept with `sockets` (checked on every connect and every settled run). */
const clients = new Map<string, number>();

function clientCount(tenant: string): number {
  return clients.get(tenant) ?? 0;
}

/** Records a socket of a tenant; `sockets` is only changed here and in `dropSocket`. */
function keepSocket(socket: SocketInfo): void {
  if (sockets.has(socket.id)) dropSocket(socket.id);
  sockets.set(socket.id, socket);
  if (socket.endpoint === '') clients.set(socket.tenant, clientCount(socket.tenant) + 1);
}

function dropSocket(id: number): void {
  const socket = sockets.get(id);
  if (socket === undefined) return;
  sockets.delete(id);
  if (socket.endpoint !== '') return;
  const left = clientCount(socket.tenant) - 1;
  if (left > 0) clients.set(socket.tenant, left);
  else clients.delete(socket.tenant);
}

const host: TenantHost = {
  connect(tenant, uri, handler, engine) {
    const engineName = checkEngine(engine);
    if (typeof uri !== 'string') throw new IsletError('ISLET_ERR_BAD_URI', `uri must be a string, got ${typeName(uri)}`);
    if (uri.length > MAX_URI_LENGTH) throw new IsletError('ISLET_ERR_BAD_URI', `uri is longer than ${MAX_URI_LENGTH} characters`);
    let parsed: URL;
    try {
      parsed = new URL(uri);
    } catch {
      throw new IsletError('ISLET_ERR_BAD_URI', `uri "${uri}" is not a valid URL`);
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
      throw new IsletError('ISLET_ERR_BAD_URI', `uri "${uri}" must use ws: or wss:, not ${parsed.protocol}`);
    }
    const resolved = resolveHandler(root, handler, tenant.name);
    if (clientCount(tenant.name) >= limits.maxClients) {
      throw new IsletError('ISLET_ERR_LIMIT', `tenant "${tenant.name}" already has ${limits.maxClients} clients (limit maxClients)`);
    }
    const socket: SocketInfo = {
      id: allocateId(),
      tenant: tenant.name,
      handler: resolved.id,
      uri,
      engine: engineName,
      state: 'connecting',
      endpoint: '',
    };
    keepSocket(socket);
    send({ t: 'connect', socket });
    return socket.id;
  },
  timerDue(tenant, id) {
    queue(tenant, Event.Timer, id, '');
  },
  output: forwardOp,
};

/** Handler bundles per tenant (null: failed), kept to define them again in a recreated isolate. */
const modules = new Map<string, Map<string, BundledCode | null>>();

/**
 * The tenant's isolate, created on first use. A new isolate (first use, or
 * after the old one was lost to its memory limit) gets the tenant's handler
 * modules and adopts its open sockets before any event reaches it.
 */
function tenantNamed(name: string): Tenant {
  let tenant = tenants.get(name);
  if (tenant !== undefined) return tenant;
  // Each isolate and module takes a while: the watchdog sees these steps as progress.
  progress.step();
  tenant = new Tenant(name, runtime, limits, host);
  tenants.set(name, tenant);
  for (const [moduleName, module] of modules.get(name) ?? []) {
    progress.step();
    defineModule(tenant, moduleName, module);
  }
  const own = [...sockets.values()].filter((socket) => socket.tenant === name);
  if (own.length > 0) tenant.adopt(adoptList(own));
  return tenant;
}

function adoptList(list: SocketInfo[]): string[] {
  return list.flatMap((socket) => [String(socket.id), socket.uri, socket.handler, socket.engine, socket.state, socket.endpoint]);
}

function defineModule(tenant: Tenant, name: string, module: BundledCode | null): void {
  if (module === null) {
    tenant.defineFailed(name);
    return;
  }
  try {
    tenant.define(module);
  } catch (error) {
    tenant.defineFailed(name);
    uncaught(tenant.name, 0, `ISLET_ERR_HANDLER_FAILED: ${name}: ${(error as Error).message}`);
  }
}

function storeModule(tenantName: string, name: string, module: BundledCode | null): void {
  let own = modules.get(tenantName);
  if (own === undefined) modules.set(tenantName, (own = new Map()));
  own.set(name, module);
  const tenant = tenants.get(tenantName);
  if (tenant !== undefined) defineModule(tenant, name, module);
}

function queue(tenant: Tenant, kind: number, id: number, text: string): void {
  tenant.batch.push(kind, id, text);
  markDirty(tenant);
}

function markDirty(tenant: Tenant): void {
  dirty.add(tenant);
  scheduleTurn();
}

/** A turn runs the dirty tenants and ends with `idle`, which also tells the host its frames were taken. */
function scheduleTurn(): void {
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

/** Frames received from the host, and calls into isolates started. */
let received = 0;
let calls = 0;

/**
 * Once per turn: one call into each tenant that had events when the turn
 * began. A tenant that gets more during the turn (its stopped call's events
 * put back, a timer) waits for the next turn, behind the others: a tenant
 * whose every event runs past its budget costs the others one budget a turn.
 */
function flush(): void {
  flushScheduled = false;
  progress.startTurn();
  // A tenant whose last call used up its budget goes after the others: what
  // arrived for them while it ran is not held up by its next call too.
  const turn = [...dirty].sort((a, b) => Number(spent.has(a)) - Number(spent.has(b)));
  dirty.clear();
  spent.clear();
  for (const tenant of turn) {
    if (tenants.get(tenant.name) !== tenant) continue;
    // What earlier calls of this turn produced leaves before the next call
    // starts: if that call kills this process, their output is not lost.
    writer.flush();
    // Recorded before the call: if this process dies during it, the host
    // sends the new one only the frames that came after, and knows the culprit.
    progress.starting(++calls, received, tenant.name);
    const began = performance.now();
    try {
      tenant.dispatch();
      settleRuns(tenant.name);
    } catch (error) {
      failedCall(tenant, error);
    }
    overran(tenant, performance.now() - began);
  }
  // Goes out with this turn's output, now rather than a turn later.
  send({ t: 'idle', seq: received, calls });
  writer.flush();
}

/** Tenants whose call of the last turn ran to its budget. */
const spent = new Set<Tenant>();

/**
 * A call that ran far past its budget was in code the budget cannot stop (a
 * builtin that does not check for interrupts, under the watchdog's bound):
 * the host counts it like a death of the worker, toward quarantine.
 */
function overran(tenant: Tenant, ms: number): void {
  if (ms < limits.callTimeoutMs) return;
  spent.add(tenant);
  if (ms > 2 * limits.callTimeoutMs + OVERRUN_GRACE_MS) send({ t: 'overran', tenant: tenant.name, ms: Math.round(ms) });
}

/**
 * A call into the isolate threw: it was stopped at its budget, its isolate
 * is gone (its memory limit), or a promise was rejected with no handler
 * (isolated-vm throws the first such rejection out of the call). Whatever
 * the call output before has already left.
 */
function failedCall(tenant: Tenant, error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  const lost = tenant.isolate.isDisposed;
  if (!lost && !/timed out/i.test(message)) {
    // Its stack runs on into this process's frames, past isolated-vm's boundary: those say nothing about the tenant.
    const stack = error instanceof Error && typeof error.stack === 'string' ? error.stack : message;
    const boundary = stack.indexOf('\n    at (<isolated-vm boundary>)');
    uncaught(tenant.name, 0, `ISLET_ERR_UNCAUGHT: unhandled rejection: ${boundary < 0 ? stack : stack.slice(0, boundary)}`);
    settleRuns(tenant.name);
    return;
  }
  const stopped = tenant.takeStopped();
  let fault: string;
  if (lost) {
    fault = /memory limit/i.test(message)
      ? `ISLET_ERR_MEMORY_LIMIT: tenant "${tenant.name}" ran out of its ${limits.memoryMiB} MiB heap (limit memoryMiB); its isolate was discarded and is recreated on its next event`
      : `tenant "${tenant.name}" lost its isolate (${message}); it is recreated on its next event`;
    tenants.delete(tenant.name);
    tenant.dispose();
  } else {
    fault = `ISLET_ERR_TIMEOUT: tenant "${tenant.name}" ran past its budget of ${limits.callTimeoutMs} ms (limit callTimeoutMs)`;
  }
  if (stopped.loading !== null) {
    const detail = lost ? `${fault}, while the module loaded` : 'ISLET_ERR_TIMEOUT: its code ran past the call budget while the module loaded (limit callTimeoutMs)';
    failModule(tenant.name, stopped.loading, detail);
    if (!lost) {
      try {
        tenant.defineFailed(stopped.loading);
      } catch {
        // Its events then fail on their own; the module is not defined again.
      }
    }
  }
  resume(tenant, stopped.at, fault, lost);
  settleRuns(tenant.name);
}

/**
 * After a call that did not finish: the event it was running is told (a
 * socket's handler through onError, a script through its failure); the
 * events after it in that batch did not run, and run next, in the same
 * isolate or, when that was lost, in the tenant's new one. A lost isolate
 * takes the tenant's pending runs with it: their scripts' state is gone.
 */
function resume(tenant: Tenant, at: number, fault: string, lost: boolean): void {
  const batch = tenant.lastBatch;
  const ran = at >= 0 && at + 2 < batch.length;
  const kind = ran ? (batch[at] as number) : -1;
  const id = ran ? (batch[at + 1] as number) : 0;
  const next: Batch = [];
  if (!ran) uncaught(tenant.name, 0, lost ? fault : `${fault}; it was stopped`);
  else if (kind === Event.Run) {
    uncaught(tenant.name, id, lost ? fault : `${fault}; the script was stopped`);
    if (lost) failRuns(tenant.name, fault);
  } else if (kind === Event.Timer) uncaught(tenant.name, 0, lost ? fault : `${fault}; a timer callback was stopped`);
  // onError hears of it, unless onError is what failed: then only the host does.
  else if (kind !== Event.Error && sockets.get(id)?.tenant === tenant.name) {
    next.push(Event.Error, id, `${fault}; its handler was stopped`);
    if (lost) uncaught(tenant.name, 0, fault);
  } else uncaught(tenant.name, 0, `${fault}; its handler was stopped`);
  if (ran) next.push(...batch.slice(at + 3));
  // Events queued for the lost isolate go to its successor.
  if (lost) next.push(...tenant.batch);
  if (next.length === 0) return;
  // Ahead of everything else: the handler hears of it before its socket's next event.
  let target = tenant;
  if (lost) {
    try {
      target = tenantNamed(tenant.name);
    } catch (error) {
      uncaught(tenant.name, 0, `tenant "${tenant.name}" could not get a new isolate: ${(error as Error).message}`);
      return;
    }
  }
  target.batch = next.concat(target.batch);
  markDirty(target);
}

function forwardOp(tenant: Tenant, op: number, id: number, text: string): void {
  switch (op) {
    case Op.Send: {
      if (sockets.get(id)?.tenant !== tenant.name) break;
      if (writer.text(FrameKind.TextOut, id, text, limits.maxMessageBytes) < 0) {
        const bytes = Buffer.byteLength(text);
        uncaught(tenant.name, 0, `ISLET_ERR_MESSAGE_TOO_LARGE: message of ${bytes} bytes not sent (limit maxMessageBytes ${limits.maxMessageBytes})`);
      }
      break;
    }
    case Op.Close: {
      const socket = sockets.get(id);
      if (socket?.tenant !== tenant.name) break;
      socket.state = 'closing';
      send({ t: 'close', id, tenant: tenant.name, ...decodeClose(text) });
      break;
    }
    case Op.Log:
      send({ t: 'log', tenant: tenant.name, level: LOG_LEVELS[id] ?? 'log', text });
      break;
    case Op.ModuleFailed: {
      // The runtime has marked it failed in this isolate; the worker does for the next ones.
      const newline = text.indexOf('\n');
      failModule(tenant.name, text.slice(0, newline), text.slice(newline + 1));
      break;
    }
    case Op.Error:
      uncaught(tenant.name, id, text);
      break;
    case Op.HandlerError:
      send({ t: 'tenantError', tenant: tenant.name, error: text });
      break;
  }
}

/**
 * A module failed while it loaded: reported once, and not run again in a
 * recreated isolate (the current one, if any, knows already or is told by
 * the caller: this runs inside a call into it too).
 */
function failModule(tenantName: string, name: string, error: string): void {
  const own = modules.get(tenantName);
  const module = own?.get(name);
  if (own === undefined || module === undefined || module === null) return;
  own.set(name, null);
  send({ t: 'moduleFailed', tenant: tenantName, module: name, file: module.file, error });
}

/** Fails every pending run of a tenant. */
function failRuns(tenant: string, error: string): void {
  const pending = runs.get(tenant);
  if (pending === undefined) return;
  for (const id of pending) send({ t: 'runDone', run: id, error });
  pending.clear();
}

/** An error nothing caught fails the run it came from, else every pending run, else is reported. */
function uncaught(tenant: string, run: number, error: string): void {
  const pending = runs.get(tenant);
  if (run !== 0 && pending?.delete(run)) {
    send({ t: 'runDone', run, error });
    return;
  }
  if (pending !== undefined && pending.size > 0) {
    failRuns(tenant, error);
    return;
  }
  send({ t: 'tenantError', tenant, error });
}

/** A run is done when its tenant has no timers and no clients left. */
function settleRuns(name: string): void {
  const pending = runs.get(name);
  if (pending === undefined || pending.size === 0) return;
  const tenant = tenants.get(name);
  if (tenant !== undefined && (tenant.pendingTimers > 0 || clientCount(name) > 0)) return;
  for (const run of pending) send({ t: 'runDone', run });
  pending.clear();
}

function onControl(message: HostToWorker): void {
  switch (message.t) {
    case 'init':
      runtime = message.runtime;
      root = message.root;
      limits = message.limits;
      idBlocks.push(message.ids);
      send({ t: 'ready' });
      break;
    case 'ids':
      idBlocks.push(message.from);
      break;
    case 'module':
      storeModule(message.tenant, message.module.name, message.module);
      break;
    case 'moduleFailed':
      storeModule(message.tenant, message.handler, null);
      break;
    case 'run': {
      let tenant: Tenant;
      try {
        tenant = tenantNamed(message.tenant);
        let pending = runs.get(message.tenant);
        if (pending === undefined) runs.set(message.tenant, (pending = new Set()));
        pending.add(message.run);
        tenant.define(message.script);
      } catch (error) {
        uncaught(message.tenant, message.run, (error as Error).stack ?? String(error));
        break;
      }
      queue(tenant, Event.Run, message.run, message.script.name);
      break;
    }
    case 'adopt': {
      for (const socket of message.sockets) keepSocket(socket);
      // A tenant not created yet adopts its sockets when it is.
      for (const [name, tenant] of tenants) {
        const own = message.sockets.filter((socket) => socket.tenant === name);
        if (own.length > 0) tenant.adopt(adoptList(own));
      }
      break;
    }
    case 'stats':
      send({ t: 'stats', ask: message.ask, isolates: tenants.size, sockets: sockets.size });
      break;
    case 'ping':
      break; // the idle that ends this turn is the answer
    case 'evict': {
      // Quarantined: its isolate goes, timers and all; a later event (once the quarantine is lifted) starts a fresh one.
      const tenant = tenants.get(message.tenant);
      if (tenant === undefined) break;
      tenants.delete(message.tenant);
      dirty.delete(tenant);
      tenant.dispose();
      uncaught(message.tenant, 0, 'ISLET_ERR_QUARANTINED: the tenant was quarantined; its isolate was discarded');
      break;
    }
    case 'accept': {
      const socket = message.socket;
      keepSocket(socket);
      queue(tenantNamed(socket.tenant), Event.Open, socket.id, `${socket.handler}\n${socket.endpoint}`);
      break;
    }
    case 'event': {
      const socket = sockets.get(message.id);
      if (socket === undefined) break;
      const tenant = tenantNamed(socket.tenant);
      if (message.event === 'open') {
        socket.state = 'open';
        queue(tenant, Event.Open, message.id, '');
      } else if (message.event === 'error') {
        queue(tenant, Event.Error, message.id, message.text ?? '');
      } else {
        // Once closed the socket is no longer the tenant's: output to it is dropped.
        dropSocket(message.id);
        queue(tenant, Event.Close, message.id, '');
      }
      break;
    }
  }
}

function onFrame(kind: number, id: number, payload: Buffer): void {
  if (kind === FrameKind.Control) {
    onControl(JSON.parse(payload.toString('utf8')) as HostToWorker);
    return;
  }
  if (kind === FrameKind.TextIn) {
    const socket = sockets.get(id);
    if (socket === undefined) return;
    queue(tenantNamed(socket.tenant), Event.Message, id, payload.toString('utf8'));
  }
}

const reader = new FrameReader((kind, id, payload) => {
  received++;
  try {
    onFrame(kind, id, payload);
  } catch (error) {
    // One frame that cannot be served (an isolate that cannot be created)
    // must not take the other tenants of this worker down with it.
    send({ t: 'tenantError', tenant: '(worker)', error: (error as Error).stack ?? String(error) });
  }
});

channel.on('data', (chunk: Buffer) => {
  reader.push(chunk);
  // Even frames that queue no event are answered with an idle: the host
  // holds its next batch until this one is taken.
  scheduleTurn();
});
// The host is gone: nothing left to serve.
channel.on('close', () => process.exit(0));
channel.on('error', () => process.exit(0));
