// The sandbox worker: holds many tenant isolates, takes frames from the
// host, batches each tenant's events per event-loop turn into one isolate
// call, and sends the tenant's output back. It trusts the host and nothing
// that comes out of an isolate: every output is checked here (types, sizes,
// which tenant owns the socket) before it is forwarded. main.ts runs it.
import { errorLine, type WireError, withMore } from './errors.js';
import type { ProgressLog } from './progress-log.js';
import { FrameKind, FrameReader, type FrameWriter } from './frames.js';
import type { HostToWorker, TenantLimits, WorkerToHost } from './protocol.js';
import { encodePeer, encodeSessionOpen } from '../sandbox-api/wire.js';
import { type Batch, Event, Tenant, type TenantHost } from './tenant.js';
import { WorkerModules } from './worker-modules.js';
import { forwardOp, type OutputTo } from './worker-output.js';
import { WorkerRuns } from './worker-runs.js';
import { adoptList, WorkerSockets } from './worker-sockets.js';
import { Turns } from './worker-turns.js';
import { WorkerUsage } from './worker-usage.js';

/** How far past twice its budget a call may run before it counts as an overrun (a stopped call takes a little longer than its budget). */
const OVERRUN_GRACE_MS = 100;

export class Worker {
  private runtime = '';
  private root = '';
  private hostName = '';
  private clusterAway = false;
  private limits!: TenantLimits;
  private readonly tenants = new Map<string, Tenant>();
  /** Every socket of a tenant on this worker: what the tenant may touch. */
  private readonly sockets = new WorkerSockets(
    () => this.send({ t: 'needIds' }),
    () => this.limits,
  );
  /** Pending script runs per tenant. */
  private readonly runs = new WorkerRuns((message) => this.send(message));
  /** Handler bundles per tenant, kept to define them again in a recreated isolate. */
  private readonly modules = new WorkerModules(
    (message) => this.send(message),
    (tenant, error) => this.runs.uncaught(tenant, 0, error),
  );
  private readonly turns: Turns;
  /** Where a tenant's output goes once checked. */
  private readonly outputTo: OutputTo;
  private readonly usage = new WorkerUsage();
  /** Frames received from the host, and calls into isolates started. */
  private received = 0;
  private calls = 0;
  private readonly reader = new FrameReader((kind, id, payload) => {
    this.received++;
    try {
      this.onFrame(kind, id, payload);
    } catch (error) {
      // One frame that cannot be served (an isolate that cannot be created)
      // must not take the other tenants of this worker down with it.
      this.send({ t: 'tenantError', tenant: '(worker)', error: { code: 'ISLET_ERR_UNCAUGHT', detail: (error as Error).stack ?? String(error) } });
    }
  });

  /** What the tenants' host functions reach. */
  private readonly host: TenantHost = {
    connect: (tenant, uri, handler, engine) => {
      const socket = this.sockets.newClient(this.root, tenant.name, uri, handler, engine);
      this.send({ t: 'connect', socket });
      return socket.id;
    },
    timerDue: (tenant, id) => this.turns.queue(tenant, Event.Timer, id, ''),
    output: (tenant, op, id, text) => forwardOp(this.outputTo, tenant, op, id, text),
    dispatched: () => this.writer.flush(),
    hostName: () => this.hostName,
    clusterAway: () => this.clusterAway,
  };

  constructor(
    private readonly writer: FrameWriter,
    private readonly progress: ProgressLog,
  ) {
    this.outputTo = { sockets: this.sockets, runs: this.runs, modules: this.modules, writer, maxMessageBytes: () => this.limits.maxMessageBytes, send: (message) => this.send(message) };
    this.turns = new Turns(writer, progress, {
      current: (tenant) => this.tenants.get(tenant.name) === tenant,
      call: (tenant) => this.call(tenant),
      ended: (pending) => {
        this.sockets.turnEnded();
        // Goes out with this turn's output, now rather than a turn later.
        this.send({ t: 'idle', seq: this.received, calls: this.calls, pending });
        this.writer.flush();
      },
    });
  }

  /** A chunk of the host's byte stream. Even one that queues no event is answered with an idle: the host holds its next batch until this one is taken. */
  read(chunk: Buffer): void {
    this.reader.push(chunk);
    this.turns.schedule();
  }

  private send(message: WorkerToHost): void {
    this.writer.control(message);
  }

  /**
   * The tenant's isolate, created on first use. A new isolate (first use, or
   * after the old one was lost to its memory limit) gets the tenant's handler
   * modules and adopts its open sockets before any event reaches it.
   */
  private tenantNamed(name: string): Tenant {
    let tenant = this.tenants.get(name);
    if (tenant !== undefined) return tenant;
    // Each isolate and module takes a while: the watchdog sees these steps as progress.
    this.progress.step();
    tenant = new Tenant(name, this.runtime, this.limits, this.host);
    this.tenants.set(name, tenant);
    this.modules.defineAll(tenant, () => this.progress.step());
    const own = this.sockets.of(name);
    if (own.length > 0) tenant.adopt(adoptList(own));
    return tenant;
  }

  /** One call into the tenant with its batch; true when it used its whole budget. */
  private call(tenant: Tenant): boolean {
    // Recorded before the call: if this process dies during it, the host
    // sends the new one only the frames that came after, and knows the culprit.
    this.progress.starting(++this.calls, this.received, tenant.name);
    const began = performance.now();
    const cpuBefore = tenant.cpuNs();
    try {
      tenant.dispatch();
      this.runs.startedIn(tenant.lastBatch, tenant.lastBatch.length);
      this.settleRuns(tenant.name);
    } catch (error) {
      this.failedCall(tenant, error);
    }
    const ms = performance.now() - began;
    // An isolate lost in the call reports 0: its last call's CPU is not counted.
    this.usage.called(tenant.name, ms, tenant.cpuNs() - cpuBefore);
    return this.overran(tenant, ms);
  }

  /**
   * A call that ran far past its budget was in code the budget cannot stop (a
   * builtin that does not check for interrupts, under the watchdog's bound):
   * the host counts it like a death of the worker, toward quarantine.
   */
  private overran(tenant: Tenant, ms: number): boolean {
    if (ms < this.limits.callTimeoutMs) return false;
    if (ms > 2 * this.limits.callTimeoutMs + OVERRUN_GRACE_MS) this.send({ t: 'overran', tenant: tenant.name, ms: Math.round(ms) });
    return true;
  }

  /**
   * A call into the isolate threw: it was stopped at its budget, its isolate
   * is gone (its memory limit), or a promise was rejected with no handler
   * (isolated-vm throws the first such rejection out of the call). Whatever
   * the call output before has already left.
   */
  private failedCall(tenant: Tenant, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    const lost = tenant.isolate.isDisposed;
    if (!lost && !/timed out/i.test(message)) {
      // Its stack runs on into this process's frames, past isolated-vm's boundary: those say nothing about the tenant.
      const stack = error instanceof Error && typeof error.stack === 'string' ? error.stack : message;
      const boundary = stack.indexOf('\n    at (<isolated-vm boundary>)');
      this.runs.uncaught(tenant.name, 0, { code: 'ISLET_ERR_UNCAUGHT', detail: `unhandled rejection: ${boundary < 0 ? stack : stack.slice(0, boundary)}` });
      this.runs.startedIn(tenant.lastBatch, tenant.lastBatch.length);
      this.settleRuns(tenant.name);
      return;
    }
    const stopped = tenant.takeStopped();
    const limits = this.limits;
    let fault: WireError;
    if (lost) {
      const memory = /memory limit/i.test(message);
      if (memory) this.usage.memoryLimit(tenant.name);
      fault = memory
        ? { code: 'ISLET_ERR_MEMORY_LIMIT', detail: `tenant "${tenant.name}" ran out of its ${limits.memoryMiB} MiB heap (limit memoryMiB); its isolate was discarded and is recreated on its next event` }
        : { code: 'ISLET_ERR_UNCAUGHT', detail: `tenant "${tenant.name}" lost its isolate (${message}); it is recreated on its next event` };
      this.discard(tenant);
    } else {
      this.usage.timeout(tenant.name);
      fault = { code: 'ISLET_ERR_TIMEOUT', detail: `tenant "${tenant.name}" ran past its budget of ${limits.callTimeoutMs} ms (limit callTimeoutMs)` };
    }
    if (stopped.loading !== null) {
      const detail = lost ? withMore(fault, ', while the module loaded') : { code: fault.code, detail: 'its code ran past the call budget while the module loaded (limit callTimeoutMs)' };
      this.modules.fail(tenant.name, stopped.loading, detail);
      if (!lost) {
        try {
          tenant.defineFailed(stopped.loading);
        } catch {
          // Its events then fail on their own; the module is not defined again.
        }
      }
    }
    this.resume(tenant, stopped.at, fault, lost);
    this.settleRuns(tenant.name);
  }

  /**
   * After a call that did not finish: the event it was running is told (a
   * socket's handler through onError, a script through its failure); the
   * events after it in that batch did not run, and run next, in the same
   * isolate or, when that was lost, in the tenant's new one. A lost isolate
   * takes the tenant's pending runs with it: their scripts' state is gone.
   */
  private resume(tenant: Tenant, at: number, fault: WireError, lost: boolean): void {
    const batch = tenant.lastBatch;
    // The scripts before the stopped event ran; those after it wait for their turn again.
    this.runs.startedIn(batch, at);
    const ran = at >= 0 && at + 2 < batch.length;
    const kind = ran ? (batch[at] as number) : -1;
    const id = ran ? (batch[at + 1] as number) : 0;
    const stoppedIn = (what: string): WireError => (lost ? fault : withMore(fault, `; ${what} was stopped`));
    const next: Batch = [];
    if (!ran) this.runs.uncaught(tenant.name, 0, stoppedIn('it'));
    else if (kind === Event.Run) {
      this.runs.uncaught(tenant.name, id, stoppedIn('the script'));
      if (lost) this.runs.fail(tenant.name, fault);
    } else if (kind === Event.Timer) this.runs.uncaught(tenant.name, 0, stoppedIn('a timer callback'));
    // onError hears of it, unless onError is what failed: then only the host does.
    else if (kind !== Event.Error && this.sockets.owns(tenant.name, id)) {
      next.push(Event.Error, id, errorLine(withMore(fault, '; its handler was stopped')));
      if (lost) this.runs.uncaught(tenant.name, 0, fault);
    } else this.runs.uncaught(tenant.name, 0, withMore(fault, '; its handler was stopped'));
    if (ran) next.push(...batch.slice(at + 3));
    // Events queued for the lost isolate go to its successor.
    if (lost) next.push(...tenant.batch);
    if (next.length === 0) return;
    // Ahead of everything else: the handler hears of it before its socket's next event.
    let target = tenant;
    if (lost) {
      try {
        target = this.tenantNamed(tenant.name);
      } catch (error) {
        this.runs.uncaught(tenant.name, 0, { code: 'ISLET_ERR_UNCAUGHT', detail: `tenant "${tenant.name}" could not get a new isolate: ${(error as Error).message}` });
        return;
      }
    }
    target.batch = next.concat(target.batch);
    this.turns.wake(target);
  }

  /** The tenant's isolate is gone for good: the next event of the tenant makes a new one. */
  private discard(tenant: Tenant): Tenant {
    this.tenants.delete(tenant.name);
    this.turns.forget(tenant);
    tenant.dispose();
    return tenant;
  }

  /** A run is done when it holds nothing: none of the timers and clients its code made (and theirs made) is left. */
  private settleRuns(name: string): void {
    if (!this.runs.has(name)) return;
    const tenant = this.tenants.get(name);
    this.runs.finish(name, (run) => {
      try {
        return tenant === undefined || tenant.held(run) === 0;
      } catch {
        return true; // an isolate that cannot answer holds nothing any more
      }
    });
  }

  private onFrame(kind: number, id: number, payload: Buffer): void {
    if (kind === FrameKind.Control) {
      this.onControl(JSON.parse(payload.toString('utf8')) as HostToWorker);
      return;
    }
    if (kind === FrameKind.TextIn) {
      const socket = this.sockets.get(id);
      if (socket === undefined) return;
      this.turns.queue(this.tenantNamed(socket.tenant), Event.Message, id, payload.toString('utf8'));
    }
  }

  private onControl(message: HostToWorker): void {
    switch (message.t) {
      case 'init':
        this.runtime = message.runtime;
        this.root = message.root;
        this.hostName = message.host;
        this.limits = message.limits;
        this.sockets.addIdBlock(message.ids);
        this.send({ t: 'ready' });
        break;
      case 'ids':
        this.sockets.addIdBlock(message.from);
        break;
      case 'module':
        this.modules.store(message.tenant, message.module.name, message.module, this.tenants.get(message.tenant));
        break;
      case 'moduleFailed':
        this.modules.store(message.tenant, message.handler, null, this.tenants.get(message.tenant));
        break;
      case 'run': {
        let tenant: Tenant;
        try {
          tenant = this.tenantNamed(message.tenant);
          this.runs.add(message.tenant, message.run);
          tenant.define(message.script);
        } catch (error) {
          // Compiling failed (a syntax V8 refuses, its memory limit): the message says why; its stack is this process's.
          this.runs.uncaught(message.tenant, message.run, { code: 'ISLET_ERR_UNCAUGHT', detail: error instanceof Error ? error.message : String(error) });
          const broken = this.tenants.get(message.tenant);
          // Its next event or run gets a new isolate, rather than "Isolate is disposed" for good.
          if (broken?.isolate.isDisposed === true) {
            this.resume(this.discard(broken), -1, { code: 'ISLET_ERR_UNCAUGHT', detail: `tenant "${message.tenant}" lost its isolate while a script compiled; it is recreated on its next event` }, true);
          }
          break;
        }
        this.turns.queue(tenant, Event.Run, message.run, message.script.name);
        break;
      }
      case 'adopt': {
        for (const socket of message.sockets) this.sockets.keep(socket);
        // A tenant not created yet adopts its sockets when it is.
        for (const [name, tenant] of this.tenants) {
          const own = message.sockets.filter((socket) => socket.tenant === name);
          if (own.length > 0) tenant.adopt(adoptList(own));
        }
        break;
      }
      case 'stats':
        this.send({ t: 'stats', ask: message.ask, isolates: this.tenants.size, sockets: this.sockets.size, tenants: this.usage.list((name) => this.tenants.get(name)) });
        break;
      case 'ping':
        break; // the idle that ends this turn is the answer
      case 'evict': {
        // Quarantined: its isolate goes, timers and all; a later event (once the quarantine is lifted) starts a fresh one.
        const tenant = this.tenants.get(message.tenant);
        if (tenant === undefined) break;
        this.discard(tenant);
        this.runs.uncaught(message.tenant, 0, { code: 'ISLET_ERR_QUARANTINED', detail: 'the tenant was quarantined; its isolate was discarded' });
        break;
      }
      case 'cancel': {
        if (!this.runs.owns(message.tenant, message.run)) break;
        try {
          this.tenants.get(message.tenant)?.cancel(message.run);
        } catch {
          // An isolate that cannot be reached holds nothing of the run's any more.
        }
        this.runs.uncaught(message.tenant, message.run, { code: 'ISLET_ERR_TIMEOUT', detail: 'the run was cut at scriptTimeoutMs' });
        break;
      }
      case 'accept': {
        const socket = message.socket;
        this.sockets.keep(socket);
        this.turns.queue(this.tenantNamed(socket.tenant), Event.Open, socket.id, encodeSessionOpen(socket.endpoint, socket.user, socket.handler));
        break;
      }
      case 'peers': {
        for (const id of message.remove) {
          const socket = this.sockets.get(id);
          if (socket === undefined || socket.host === '') continue;
          this.sockets.drop(id);
          const tenant = this.tenants.get(socket.tenant);
          if (tenant !== undefined) this.turns.queue(tenant, Event.PeerGone, id, '');
        }
        for (const socket of message.add) {
          if (socket.host === '' || this.sockets.get(socket.id)?.host === '') continue;
          this.sockets.keep(socket);
          // A tenant with no isolate yet adopts it when one is made.
          const tenant = this.tenants.get(socket.tenant);
          if (tenant !== undefined) this.turns.queue(tenant, Event.Peer, socket.id, encodePeer(socket.host, socket.endpoint, socket.user, socket.handler));
        }
        break;
      }
      case 'cluster':
        this.clusterAway = message.away;
        for (const tenant of this.tenants.values()) tenant.clusterAway(message.away);
        break;
      case 'event': {
        const socket = this.sockets.get(message.id);
        if (socket === undefined) break;
        const tenant = this.tenantNamed(socket.tenant);
        if (message.event === 'open') {
          socket.state = 'open';
          this.turns.queue(tenant, Event.Open, message.id, '');
        } else if (message.event === 'error') {
          this.turns.queue(tenant, Event.Error, message.id, errorLine(message.error));
        } else {
          // Once closed the socket is no longer the tenant's: output to it is dropped.
          this.sockets.drop(message.id);
          this.turns.queue(tenant, Event.Close, message.id, '');
        }
        break;
      }
    }
  }
}
