// Several islet hosts acting as one, through Redis: no broker of our own.
// Each host keeps, in Redis, a hash of its sessions and a heartbeat key that
// expires by itself, and tells the others of every change on one channel,
// numbered so that a host that missed one reads the hash again
// (cluster-peers.ts keeps what it heard of the others, and tells the
// workers: the isolates list those sessions in getSessions). A send or close
// to a session on another host goes on that host's own channel, in order. A
// tenant's publishes go on the tenant's channel, which every host with a
// session of the tenant follows before the others hear of that session. A
// host that dies drops out when its heartbeat key expires, with no cleanup
// that needs it. When Redis goes away (or stops answering) each host serves
// its own sessions, and joins again by itself when Redis is back.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { IsletError } from '../bridge/errors.js';
import type { SocketInfo } from '../bridge/protocol.js';
import {
  aliveKey,
  type Entry,
  entryOf,
  HEARTBEAT,
  HOSTS,
  inboxOf,
  LEAVE,
  type Order,
  PRESENCE,
  type PresenceMessage,
  sessionsKey,
  slotKey,
  SLOTS,
  topicsOf,
} from './cluster-keys.js';
import { PeerHosts } from './cluster-peers.js';
import { type Emit, failure, type Report } from './events.js';
import type { ResolvedCluster } from './options.js';
import { WORKER_FRAME } from './replay.js';
import type { Presence, Sockets } from './sockets.js';
import type { SandboxWorker } from './supervisor.js';

export type { Order } from './cluster-keys.js';

export interface ClusterHost {
  sockets: Sockets;
  /** Every sandbox worker: each hears of the sessions on other hosts, and of Redis's state. */
  workers(): readonly SandboxWorker[];
  emit: Emit;
  report: Report;
}

export interface ClusterStats {
  hosts: number;
  connected: boolean;
  messagesIn: number;
  messagesOut: number;
}

/** A MULTI's results: the first command that failed throws. */
function succeeded(results: [Error | null, unknown][] | null): void {
  if (results === null) throw new Error('the transaction was discarded');
  for (const [error] of results) if (error !== null) throw error;
}

export class Cluster implements Presence {
  readonly name: string;
  /** This host's id slot (0 until claimed). */
  slot = 0;
  /** What this process writes as its heartbeat and slot: another process of the same name is told apart. */
  private readonly token = randomUUID();
  private readonly command: Redis;
  private readonly subscriber: Redis;
  private readonly peers: PeerHosts;
  private joined = false;
  private joining = false;
  private stopped = false;
  /** This host's entry in Redis is not known to be right (a write failed): the next heartbeat writes it whole. */
  private dirty = false;
  /** Sessions come and gone here since the last change was written: each one's last state (null: gone). */
  private changes = new Map<number, Entry | null>();
  private changesScheduled = false;
  /** Writes of this host's entry, one after another: their numbers must reach Redis in order. */
  private writing: Promise<void> = Promise.resolve();
  private seq = 0;
  /** This host's sessions per tenant: a tenant's topics channel is followed while it has any. */
  private readonly localByTenant = new Map<string, number>();
  /** The tenants' topics channels followed, by channel. */
  private readonly followed = new Map<string, string>();
  private readonly timers: NodeJS.Timeout[] = [];
  /** When a heartbeat last got through; a Redis that stops answering is lost after aliveMs. */
  private lastBeat = 0;
  /** What Redis's connection last failed with, for the error that says Redis cannot be reached. */
  private lastError = '';
  private messagesIn = 0;
  private messagesOut = 0;
  private readonly aliveMs: number;
  private readonly checkMs: number;
  private readonly beatMs: number;

  constructor(
    private readonly options: ResolvedCluster,
    private readonly host: ClusterHost,
  ) {
    this.name = options.name;
    // Dead once its key is gone and the next check has seen it: within deadAfterMs.
    this.checkMs = Math.max(50, Math.floor(options.deadAfterMs / 10));
    this.aliveMs = options.deadAfterMs - this.checkMs;
    this.beatMs = Math.max(50, Math.floor(this.aliveMs / 3));
    const connection = {
      lazyConnect: true,
      // Commands fail at once while Redis is away (the host carries on alone) rather than waiting in a queue,
      // are not sent again after a reconnect (a resent publish would arrive twice), and give up on a Redis that does not answer.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.beatMs,
      autoResubscribe: false,
      retryStrategy: (attempt: number): number => Math.min(100 * attempt, 1000),
    };
    this.command = new Redis(options.redis, connection);
    this.subscriber = new Redis(options.redis, connection);
    for (const redis of [this.command, this.subscriber]) {
      // 'close' acts on it; ioredis connects again by itself.
      redis.on('error', (error: Error) => (this.lastError = error.message));
      redis.on('close', () => this.lost(`lost Redis at ${options.redis}`));
      redis.on('ready', () => void this.rejoin());
    }
    // Its subscriptions went with the connection.
    this.subscriber.on('close', () => this.followed.clear());
    this.subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) => this.heard(channel.toString(), message));
    this.peers = new PeerHosts({
      readHash: (host) => this.command.hgetall(sessionsKey(host)),
      joined: () => this.joined,
      changed: (add, remove) => {
        for (const worker of this.host.workers()) worker.send({ t: 'peers', add, remove }, WORKER_FRAME);
      },
    });
  }

  /** Joins the cluster: connects, claims its name and an id slot, writes this host's entry. Throws ISLET_ERR_CLUSTER when it cannot. */
  async start(): Promise<void> {
    try {
      await Promise.all([this.command.connect(), this.subscriber.connect()]);
    } catch (error) {
      await this.quit();
      throw new IsletError('ISLET_ERR_CLUSTER', `cannot reach Redis at ${this.options.redis}: ${this.lastError || (error as Error).message}`);
    }
    try {
      await this.claimName();
      this.slot = await this.claimSlot();
      await this.rejoin();
      if (!this.joined) throw new IsletError('ISLET_ERR_CLUSTER', `could not join the cluster through Redis at ${this.options.redis}: ${this.lastError || 'it went away'}`);
    } catch (error) {
      await this.quit();
      throw error instanceof IsletError ? error : new IsletError('ISLET_ERR_CLUSTER', `joining through Redis at ${this.options.redis} failed: ${(error as Error).message}`);
    }
    this.timers.push(setInterval(() => void this.heartbeat(), this.beatMs).unref());
    this.timers.push(setInterval(() => void this.check(), this.checkMs).unref());
  }

  /** Leaves the cluster: the others drop this host's sessions at once (if its keys are still its own). */
  async stop(): Promise<void> {
    const wasJoined = this.joined;
    this.stopped = true;
    this.joined = false;
    for (const timer of this.timers) clearInterval(timer);
    if (wasJoined) {
      const gone: PresenceMessage = { host: this.name, seq: ++this.seq, gone: true };
      await this.command.eval(LEAVE, 4, aliveKey(this.name), sessionsKey(this.name), slotKey(this.slot), HOSTS, this.token, this.name, JSON.stringify(gone)).catch(() => {});
    }
    await this.quit();
  }

  private async quit(): Promise<void> {
    this.stopped = true;
    await Promise.all([this.command, this.subscriber].map((redis) => redis.quit().catch(() => redis.disconnect())));
  }

  get away(): boolean {
    return !this.joined;
  }

  stats(): ClusterStats {
    return { hosts: this.joined ? this.peers.size + 1 : 1, connected: this.joined, messagesIn: this.messagesIn, messagesOut: this.messagesOut };
  }

  /** Every session on the other hosts, for a worker that starts again. */
  peerSessions(): SocketInfo[] {
    return this.peers.sessions();
  }

  /** The tenant of session `id` on another host; null when it is not one. */
  tenantOf(id: number): string | null {
    return this.peers.session(id)?.tenant ?? null;
  }

  /** Claims `key` for this process (SET NX), or finds it is already its own. */
  private async claim(key: string): Promise<boolean> {
    if ((await this.command.set(key, this.token, 'PX', this.aliveMs, 'NX')) === 'OK') return true;
    return (await this.command.get(key)) === this.token;
  }

  /**
   * This host's name, held by its heartbeat key. A host that was killed and
   * started again under its name finds its old key still there: it waits for
   * it to expire (at most aliveMs), then fails.
   */
  private async claimName(): Promise<void> {
    const deadline = Date.now() + this.aliveMs + this.checkMs;
    while (!(await this.claim(aliveKey(this.name)))) {
      if (Date.now() > deadline) throw new IsletError('ISLET_ERR_CLUSTER', `another live host of the cluster is named "${this.name}"; give this one another --host-name`);
      await new Promise((resolve) => setTimeout(resolve, this.checkMs));
    }
  }

  /** A free id slot, held with the heartbeat. */
  private async claimSlot(): Promise<number> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const slot = 1 + Math.floor(Math.random() * SLOTS);
      if ((await this.command.set(slotKey(slot), this.token, 'PX', this.aliveMs, 'NX')) === 'OK') return slot;
    }
    throw new IsletError('ISLET_ERR_CLUSTER', 'no free id slot in the cluster');
  }

  /**
   * Joins (again): claims name and slot, writes this host's whole entry and
   * reads every other host's. At the start, each time Redis is back, and on
   * the heartbeat while a join has not succeeded. The presence channel is
   * followed first, so no change of another host falls between its read and
   * the changes after it.
   */
  private async rejoin(): Promise<void> {
    if (this.slot === 0 || this.stopped || this.joined || this.joining || this.command.status !== 'ready' || this.subscriber.status !== 'ready') return;
    this.joining = true;
    try {
      await this.subscriber.subscribe(PRESENCE, inboxOf(this.name));
      const named = await this.claim(aliveKey(this.name));
      if (!named || !(await this.claim(slotKey(this.slot)))) {
        // Another process has this name, or took this host's id slot while Redis was away: joining would mix up their sessions.
        const why = !named ? `another live host is named "${this.name}"` : `id slot ${this.slot} of host "${this.name}" was taken while Redis was away`;
        this.leave(why);
        return;
      }
      await this.writeInOrder(() => this.writeEntry());
      this.joined = true;
      this.lastBeat = Date.now();
      this.tellWorkersAway(false);
      this.host.emit('cluster', { joined: true, detail: `host "${this.name}" joined through Redis at ${this.options.redis}` });
      for (const other of await this.command.smembers(HOSTS)) if (other !== this.name) this.peers.read(other);
      // What changed while it joined.
      void this.writeInOrder(() => this.writeChanges());
    } catch (error) {
      // Redis went away again, or refused a write: the next 'ready' or heartbeat tries again.
      this.lastError = (error as Error).message;
    } finally {
      this.joining = false;
    }
  }

  /** This host cannot be in the cluster any more (its name or slot is another process's): it serves its own sessions only. */
  private leave(why: string): void {
    this.lastError = why;
    this.stopped = true;
    if (this.joined) {
      this.joined = false;
      this.peers.dropAll();
      this.tellWorkersAway(true);
    }
    this.host.emit('cluster', { joined: false, detail: `${why}; this host serves its own sessions only until it is started again` });
  }

  /** This host is out of the cluster (Redis lost, or its entry gone): it serves its own sessions; those of the other hosts are forgotten until it joins again. */
  private lost(detail: string): void {
    if (!this.joined) return;
    this.joined = false;
    this.peers.dropAll();
    this.tellWorkersAway(true);
    if (!this.stopped) this.host.emit('cluster', { joined: false, detail: `${detail}; serving this host's sessions only until it is back` });
  }

  private tellWorkersAway(away: boolean): void {
    for (const worker of this.host.workers()) worker.send({ t: 'cluster', away }, WORKER_FRAME);
  }

  private async heartbeat(): Promise<void> {
    if (this.stopped) return;
    if (!this.joined) {
      await this.rejoin();
      return;
    }
    try {
      const result = await this.command.eval(HEARTBEAT, 4, aliveKey(this.name), sessionsKey(this.name), slotKey(this.slot), HOSTS, this.token, this.aliveMs, this.name);
      this.lastBeat = Date.now();
      if (result === -1) this.leave(`another process took the name "${this.name}" while this host was held up past ${this.aliveMs} ms`);
      else if (result === 0) {
        // Held up past aliveMs: the others dropped this host. It joins again, as after a loss of Redis.
        this.lost(`this host's entry expired (it was held up past ${this.aliveMs} ms)`);
        await this.rejoin();
      } else if (this.dirty) await this.writeInOrder(() => this.writeEntry());
    } catch {
      if (Date.now() - this.lastBeat <= this.aliveMs) return;
      // Redis does not answer (stopped, cut off): out of the cluster, and connected afresh.
      this.lost(`Redis at ${this.options.redis} has not answered for ${Date.now() - this.lastBeat} ms`);
      this.command.disconnect(true);
      this.subscriber.disconnect(true);
    }
  }

  /** Drops the hosts whose heartbeat key is gone, and reads the ones not known yet. */
  private async check(): Promise<void> {
    if (!this.joined) return;
    try {
      // The listed hosts and the known ones: a host that joined since the list was read is known, not listed, and alive.
      const hosts = [...new Set([...(await this.command.smembers(HOSTS)), ...this.peers.names()])].filter((h) => h !== this.name);
      const alive = hosts.length === 0 ? [] : await this.command.mget(hosts.map(aliveKey));
      const dead = hosts.filter((_, i) => alive[i] === null);
      for (const host of dead) this.peers.drop(host);
      if (dead.length > 0) await this.command.srem(HOSTS, ...dead);
      for (const [i, host] of hosts.entries()) if (alive[i] !== null && !this.peers.has(host)) this.peers.read(host);
    } catch {
      // The heartbeat tells.
    }
  }

  /** A message on a channel this host follows. */
  private heard(channel: string, message: Buffer): void {
    this.messagesIn++;
    try {
      if (channel === PRESENCE) {
        const change = JSON.parse(message.toString()) as PresenceMessage;
        if (this.joined && change.host !== this.name) this.peers.heard(change);
      } else if (channel === inboxOf(this.name)) this.order(message);
      else {
        const tenant = this.followed.get(channel);
        const newline = message.indexOf(10);
        if (tenant === undefined || newline < 0) return;
        const [origin, topic] = JSON.parse(message.toString('utf8', 0, newline)) as [unknown, unknown];
        if (origin !== this.name && typeof topic === 'string') this.host.sockets.publish(tenant, topic, message.subarray(newline + 1));
      }
    } catch (error) {
      this.host.report(`cluster message on ${channel}`, error);
    }
  }

  /** An order from another host for one of this host's sessions; one for a session of another tenant is dropped. */
  private order(message: Buffer): void {
    const newline = message.indexOf(10);
    const [kind, tenant, id, a, b] = JSON.parse(message.toString('utf8', 0, newline)) as [string, string, number, unknown, unknown];
    const socket = this.host.sockets.local(id);
    if (socket === undefined || socket.info.tenant !== tenant || socket.info.kind !== 'session') return;
    const sockets = this.host.sockets;
    if (kind === 'send') sockets.send(id, message.subarray(newline + 1));
    else if (kind === 'close') sockets.closeFor(id, typeof a === 'number' ? a : undefined, typeof b === 'string' ? b : undefined);
    else if ((kind === 'subscribe' || kind === 'unsubscribe') && typeof a === 'string') sockets.subscribe(id, tenant, a, kind === 'subscribe');
  }

  /** Sends, closes or (un)subscribes `tenant`'s session on another host; false when it is not one. */
  orderFor(tenant: string, order: Order, payload: Buffer | string = ''): boolean {
    const session = this.peers.session(order[2]);
    if (session === undefined || session.tenant !== tenant) return false;
    const lostIt = (): void => {
      this.host.emit('tenantError', failure(tenant, new IsletError('ISLET_ERR_CLUSTER', `session ${order[2]} is on host ${session.host}, out of reach while this host has lost Redis`)));
    };
    if (!this.joined) {
      lostIt();
      return true;
    }
    this.messagesOut++;
    this.command.publish(inboxOf(session.host), Buffer.concat([Buffer.from(JSON.stringify(order) + '\n'), typeof payload === 'string' ? Buffer.from(payload) : payload])).catch(lostIt);
    return true;
  }

  /**
   * A topic's message, to the other hosts: on the tenant's channel, which
   * every host with a session of the tenant follows. When no other host has
   * one (as far as this host has heard), Redis is not asked.
   */
  publish(tenant: string, topic: string, payload: Buffer): void {
    if (!this.joined || !this.peers.hasTenant(tenant)) return;
    this.messagesOut++;
    this.command.publish(topicsOf(tenant), Buffer.concat([Buffer.from(`${JSON.stringify([this.name, topic])}\n`), payload])).catch(() => {});
  }

  // Presence: this host's sessions, written once a turn.
  opened(info: SocketInfo): void {
    this.localByTenant.set(info.tenant, (this.localByTenant.get(info.tenant) ?? 0) + 1);
    this.changed(info.id, entryOf(info));
  }

  closed(info: SocketInfo): void {
    const left = (this.localByTenant.get(info.tenant) ?? 1) - 1;
    if (left > 0) this.localByTenant.set(info.tenant, left);
    else this.localByTenant.delete(info.tenant);
    this.changed(info.id, null);
  }

  private changed(id: number, entry: Entry | null): void {
    // Not kept while Redis is away: the next join writes the whole entry.
    if (!this.joined && !this.joining) return;
    this.changes.set(id, entry);
    if (this.changesScheduled) return;
    this.changesScheduled = true;
    setImmediate(() => {
      this.changesScheduled = false;
      void this.writeInOrder(() => this.writeChanges());
    });
  }

  /** Runs writes of this host's entry one after another; one that fails leaves the entry to be written whole. */
  private writeInOrder(write: () => Promise<void>): Promise<void> {
    const next = this.writing.then(write).catch(() => {
      this.dirty = true;
    });
    this.writing = next;
    return next;
  }

  /** The tenants with sessions here have their topics channel followed; the others not. */
  private async follow(): Promise<void> {
    const wanted = new Map([...this.localByTenant.keys()].map((tenant) => [topicsOf(tenant), tenant]));
    const add = [...wanted.keys()].filter((channel) => !this.followed.has(channel));
    if (add.length > 0) {
      await this.subscriber.subscribe(...add);
      for (const channel of add) this.followed.set(channel, wanted.get(channel)!);
    }
    const remove = [...this.followed.keys()].filter((channel) => !wanted.has(channel));
    if (remove.length > 0) {
      for (const channel of remove) this.followed.delete(channel);
      await this.subscriber.unsubscribe(...remove);
    }
  }

  /** What changed since the last write, as one numbered change. The tenants of new sessions are followed first: whoever hears of a session may publish to it. */
  private async writeChanges(): Promise<void> {
    if (!this.joined || this.changes.size === 0) return;
    if (this.dirty) {
      await this.writeEntry();
      return;
    }
    const changes = this.changes;
    this.changes = new Map();
    const message: PresenceMessage = { host: this.name, seq: 0 };
    const key = sessionsKey(this.name);
    const write = this.command.multi();
    for (const [id, entry] of changes) {
      if (entry === null) (message.remove ??= []).push(id);
      else (message.add ??= []).push([id, ...entry]);
    }
    for (const [id, ...entry] of message.add ?? []) write.hset(key, String(id), JSON.stringify(entry));
    if (message.remove !== undefined) write.hdel(key, ...message.remove.map(String));
    await this.follow();
    message.seq = ++this.seq;
    succeeded(await write.hset(key, 'seq', String(message.seq)).publish(PRESENCE, JSON.stringify(message)).exec());
  }

  /** This host's whole entry, and a reset that makes the others read it. */
  private async writeEntry(): Promise<void> {
    this.changes.clear();
    const key = sessionsKey(this.name);
    const write = this.command.multi().del(key);
    for (const info of this.host.sockets.sessions()) write.hset(key, String(info.id), JSON.stringify(entryOf(info)));
    await this.follow();
    this.seq++;
    const reset: PresenceMessage = { host: this.name, seq: this.seq, reset: true };
    succeeded(
      await write
        .hset(key, 'seq', String(this.seq))
        .pexpire(key, this.aliveMs)
        .sadd(HOSTS, this.name)
        .publish(PRESENCE, JSON.stringify(reset))
        .exec(),
    );
    this.dirty = false;
  }
}
