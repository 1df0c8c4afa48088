// Several islet hosts acting as one, through Redis: no broker of our own.
// Each host keeps, in Redis, a hash of its sessions and a heartbeat key that
// expires by itself, and tells the others of every change on one channel,
// numbered so that a host that missed one reads the hash again. Every host
// so knows every tenant's sessions, and tells its workers (the isolates list
// them in getSessions). A send or close to a session on another host goes
// on that host's own channel, in order. A topic with a subscriber here is
// followed on a channel of its own, and a publish reaches the other hosts in
// one Redis publish. A host that dies drops out when its heartbeat key
// expires, with no cleanup that needs it. When Redis goes away each host
// serves its own sessions, and joins again by itself when Redis is back.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { IsletError } from '../bridge/errors.js';
import type { SocketInfo } from '../bridge/protocol.js';
import type { Emit, Report } from './events.js';
import { failure } from './events.js';
import type { ResolvedCluster } from './options.js';
import { WORKER_FRAME } from './replay.js';
import type { Presence, Sockets } from './sockets.js';
import type { SandboxWorker } from './supervisor.js';
import type { TopicWatch } from './topics.js';

const PREFIX = 'islet:';
const HOSTS = `${PREFIX}hosts`;
const PRESENCE = `${PREFIX}presence`;
const aliveKey = (host: string): string => `${PREFIX}alive:${host}`;
const sessionsKey = (host: string): string => `${PREFIX}sessions:${host}`;
const slotKey = (slot: number): string => `${PREFIX}slot:${slot}`;
const inboxOf = (host: string): string => `${PREFIX}to:${host}`;
/** A topic's channel: JSON keeps any tenant and topic name apart. */
const topicChannel = (tenant: string, topic: string): string => `${PREFIX}topic:${JSON.stringify([tenant, topic])}`;

/** Id slots: a host's socket ids are its slot times 2^32 plus ids of its own (workers.ts). */
const SLOTS = 65535;
/** Fields of a session in a host's hash, as JSON: tenant, endpoint, handler, user. */
type Entry = [tenant: string, endpoint: string, handler: string, user: string];

/** One change of a host's sessions, or its (re)join (`reset`) or leaving (`gone`). */
interface PresenceMessage {
  host: string;
  seq: number;
  add?: [number, ...Entry][];
  remove?: number[];
  reset?: true;
  gone?: true;
}

/** Another host's sessions as this host knows them. */
interface PeerHost {
  sessions: Map<number, SocketInfo>;
  /** The last change applied; -1 while its hash is being read. */
  seq: number;
  /** Changes that came while its hash was being read. */
  early: PresenceMessage[];
  /** Which read of its hash is the latest. */
  reading: number;
}

/** What goes to another host's channel: a header line (JSON: what, the tenant, the session, and what it takes), then the payload's bytes. */
export type Order =
  | ['send', string, number]
  | ['close', string, number, number | null, string | null]
  | ['subscribe' | 'unsubscribe', string, number, string];

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

function peerInfo(host: string, id: number, [tenant, endpoint, handler, user]: Entry): SocketInfo {
  return { id, kind: 'session', tenant, handler, uri: '', engine: 'javascript', state: 'open', endpoint, user, host };
}

export class Cluster implements Presence, TopicWatch {
  readonly name: string;
  /** This host's id slot (0 until claimed). */
  slot = 0;
  /** What this process writes as its heartbeat and slot: another process of the same name is told apart. */
  private readonly token = randomUUID();
  private readonly command: Redis;
  private readonly subscriber: Redis;
  private readonly peers = new Map<string, PeerHost>();
  /** Which host each session of another host is on. */
  private readonly hostOf = new Map<number, string>();
  private joined = false;
  private joining = false;
  private stopped = false;
  /** Sessions come and gone here since the last change was written. */
  private changes: PresenceMessage = { host: '', seq: 0 };
  private changesScheduled = false;
  private seq = 0;
  /** Topic channels followed, by channel name. */
  private readonly followed = new Map<string, [tenant: string, topic: string]>();
  /**
   * What the workers are to hear next, sent once a turn: each session's last
   * state (null: gone). A session that came and went within one turn must
   * reach them as gone, whatever order a message's lists are applied in.
   */
  private toWorkers = new Map<number, SocketInfo | null>();
  private toWorkersScheduled = false;
  private readonly timers: NodeJS.Timeout[] = [];
  /** What Redis's connection last failed with, for the error that says Redis cannot be reached. */
  private lastError = '';
  private messagesIn = 0;
  private messagesOut = 0;
  private readonly aliveMs: number;
  private readonly checkMs: number;

  constructor(
    private readonly options: ResolvedCluster,
    private readonly host: ClusterHost,
  ) {
    this.name = options.name;
    this.changes.host = this.name;
    // Dead once its key is gone and the next check has seen it: within deadAfterMs.
    this.checkMs = Math.max(50, Math.floor(options.deadAfterMs / 10));
    this.aliveMs = options.deadAfterMs - this.checkMs;
    const connection = {
      lazyConnect: true,
      // Commands fail at once while Redis is away (the host carries on alone) rather than waiting in a queue.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      autoResubscribe: false,
      retryStrategy: (attempt: number): number => Math.min(100 * attempt, 1000),
    };
    this.command = new Redis(options.redis, connection);
    this.subscriber = new Redis(options.redis, connection);
    for (const redis of [this.command, this.subscriber]) {
      // 'close' acts on it; ioredis connects again by itself.
      redis.on('error', (error: Error) => (this.lastError = error.message));
      redis.on('close', () => this.lost());
      redis.on('ready', () => void this.rejoin());
    }
    this.subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) => this.heard(channel.toString(), message));
  }

  /** Joins the cluster: connects, claims an id slot, writes this host's entry. Throws ISLET_ERR_CLUSTER when Redis cannot be reached. */
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
    this.timers.push(setInterval(() => void this.heartbeat(), Math.max(50, Math.floor(this.aliveMs / 3))).unref());
    this.timers.push(setInterval(() => void this.check(), this.checkMs).unref());
  }

  /** Leaves the cluster: the others drop this host's sessions at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    if (this.joined) {
      this.joined = false;
      await this.command
        .multi()
        .del(aliveKey(this.name), sessionsKey(this.name), slotKey(this.slot))
        .srem(HOSTS, this.name)
        .publish(PRESENCE, JSON.stringify({ host: this.name, seq: ++this.seq, gone: true }))
        .exec()
        .catch(() => {});
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
    return [...this.peers.values()].flatMap((peer) => [...peer.sessions.values()]);
  }

  /**
   * This host's name, held by its heartbeat key. A host that was killed and
   * started again under its name finds its old key still there: it waits for
   * it to expire (at most aliveMs), then fails.
   */
  private async claimName(): Promise<void> {
    const deadline = Date.now() + this.aliveMs + this.checkMs;
    while ((await this.command.set(aliveKey(this.name), this.token, 'PX', this.aliveMs, 'NX')) !== 'OK') {
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
   * Writes this host's whole entry (name, slot, sessions) and reads every
   * other host's: at the start, and each time Redis is back. The channels are
   * followed first, so no change of another host falls between its read and
   * the changes after it.
   */
  private async rejoin(): Promise<void> {
    if (this.slot === 0 || this.stopped || this.joined || this.joining || this.command.status !== 'ready' || this.subscriber.status !== 'ready') return;
    this.joining = true;
    try {
      await this.subscriber.subscribe(PRESENCE, inboxOf(this.name), ...this.followed.keys());
      const named = (await this.command.set(aliveKey(this.name), this.token, 'PX', this.aliveMs, 'NX')) === 'OK' || (await this.command.get(aliveKey(this.name))) === this.token;
      const slotOwner = await this.command.get(slotKey(this.slot));
      if (!named || (slotOwner !== null && slotOwner !== this.token)) {
        // Another host has this name, or took this host's id slot while Redis was away: joining would mix up their sessions.
        this.stopped = true;
        const why = !named ? `another live host is named "${this.name}"` : `id slot ${this.slot} of host "${this.name}" was taken while Redis was away`;
        this.host.emit('cluster', { joined: false, detail: `${why}; this host serves its own sessions only until it is started again` });
        return;
      }
      this.changes = { host: this.name, seq: 0 };
      this.seq++;
      const write = this.command.multi().del(sessionsKey(this.name)).hset(sessionsKey(this.name), 'seq', String(this.seq));
      for (const info of this.host.sockets.sessions()) write.hset(sessionsKey(this.name), String(info.id), JSON.stringify(entryOf(info)));
      await write
        .pexpire(sessionsKey(this.name), this.aliveMs)
        .set(slotKey(this.slot), this.token, 'PX', this.aliveMs)
        .sadd(HOSTS, this.name)
        .publish(PRESENCE, JSON.stringify({ host: this.name, seq: this.seq, reset: true }))
        .exec();
      this.joined = true;
      this.tellWorkersAway(false);
      this.host.emit('cluster', { joined: true, detail: `host "${this.name}" joined through Redis at ${this.options.redis}` });
      for (const other of await this.command.smembers(HOSTS)) if (other !== this.name) this.read(other);
      this.writeChanges();
    } catch {
      // Redis went away again: 'ready' brings the next try.
    } finally {
      this.joining = false;
    }
  }

  /** Redis is out of reach: this host serves its own sessions; those of the other hosts are forgotten until it joins again. */
  private lost(): void {
    if (!this.joined) return;
    this.joined = false;
    for (const host of [...this.peers.keys()]) this.drop(host);
    this.tellWorkersAway(true);
    if (!this.stopped) this.host.emit('cluster', { joined: false, detail: `lost Redis at ${this.options.redis}; serving this host's sessions only until it is back` });
  }

  private tellWorkersAway(away: boolean): void {
    for (const worker of this.host.workers()) worker.send({ t: 'cluster', away }, WORKER_FRAME);
  }

  private async heartbeat(): Promise<void> {
    if (!this.joined) return;
    try {
      const [[, alive], [, sessions]] = (await this.command
        .multi()
        .pexpire(aliveKey(this.name), this.aliveMs)
        .pexpire(sessionsKey(this.name), this.aliveMs)
        .pexpire(slotKey(this.slot), this.aliveMs)
        .sadd(HOSTS, this.name)
        .exec()) as [unknown, number][];
      // This host's entry expired (it was held up past aliveMs): written again, and the others read it again.
      if (alive === 0 || sessions === 0) {
        this.joined = false;
        await this.rejoin();
      }
    } catch {
      // 'close' tells.
    }
  }

  /** Drops the hosts whose heartbeat key is gone, and reads the ones not known yet. */
  private async check(): Promise<void> {
    if (!this.joined) return;
    try {
      // The listed hosts and the known ones: a host that joined since the list was read is known, not listed, and alive.
      const hosts = [...new Set([...(await this.command.smembers(HOSTS)), ...this.peers.keys()])].filter((h) => h !== this.name);
      const alive = hosts.length === 0 ? [] : await this.command.mget(hosts.map(aliveKey));
      const dead = hosts.filter((_, i) => alive[i] === null);
      for (const host of dead) this.drop(host);
      if (dead.length > 0) await this.command.srem(HOSTS, ...dead);
      for (const [i, host] of hosts.entries()) if (alive[i] !== null && !this.peers.has(host)) this.read(host);
    } catch {
      // 'close' tells.
    }
  }

  /** (Re)reads another host's hash: its sessions as of its `seq`, then the changes that came meanwhile. */
  private read(host: string): void {
    let peer = this.peers.get(host);
    if (peer === undefined) this.peers.set(host, (peer = { sessions: new Map(), seq: -1, early: [], reading: 0 }));
    peer.seq = -1;
    const reading = ++peer.reading;
    this.command.hgetall(sessionsKey(host)).then(
      (hash) => {
        const current = this.peers.get(host);
        if (current !== peer || current.reading !== reading || !this.joined) return;
        if (hash.seq === undefined) {
          this.drop(host);
          return;
        }
        const now = new Map<number, SocketInfo>();
        for (const [field, value] of Object.entries(hash)) {
          if (field === 'seq') continue;
          const entry = parseEntry(value);
          if (entry !== null) now.set(Number(field), peerInfo(host, Number(field), entry));
        }
        for (const id of peer.sessions.keys()) if (!now.has(id)) this.removed(id);
        for (const [id, info] of now) if (!peer.sessions.has(id)) this.added(info);
        peer.sessions = now;
        peer.seq = Number(hash.seq);
        const early = peer.early.filter((m) => m.seq > peer.seq).sort((a, b) => a.seq - b.seq);
        peer.early = [];
        for (const message of early) this.apply(peer, message);
      },
      () => {},
    );
  }

  private drop(host: string): void {
    const peer = this.peers.get(host);
    if (peer === undefined) return;
    this.peers.delete(host);
    for (const id of peer.sessions.keys()) this.removed(id);
  }

  private added(info: SocketInfo): void {
    this.hostOf.set(info.id, info.host);
    this.toWorkers.set(info.id, info);
    this.scheduleWorkers();
  }

  private removed(id: number): void {
    this.hostOf.delete(id);
    this.toWorkers.set(id, null);
    this.scheduleWorkers();
  }

  private scheduleWorkers(): void {
    if (this.toWorkersScheduled) return;
    this.toWorkersScheduled = true;
    setImmediate(() => {
      this.toWorkersScheduled = false;
      const add: SocketInfo[] = [];
      const remove: number[] = [];
      for (const [id, info] of this.toWorkers) {
        if (info === null) remove.push(id);
        else add.push(info);
      }
      this.toWorkers.clear();
      if (add.length + remove.length === 0) return;
      for (const worker of this.host.workers()) worker.send({ t: 'peers', add, remove }, WORKER_FRAME);
    });
  }

  /** A message on a channel this host follows. */
  private heard(channel: string, message: Buffer): void {
    this.messagesIn++;
    try {
      if (channel === PRESENCE) this.presence(JSON.parse(message.toString()) as PresenceMessage);
      else if (channel === inboxOf(this.name)) this.order(message);
      else {
        const topic = this.followed.get(channel);
        const newline = message.indexOf(10);
        if (topic === undefined || newline < 0 || message.toString('utf8', 0, newline) === this.name) return;
        this.host.sockets.publish(topic[0], topic[1], message.subarray(newline + 1));
      }
    } catch (error) {
      this.host.report(`cluster message on ${channel}`, error);
    }
  }

  private presence(message: PresenceMessage): void {
    if (message.host === this.name || !this.joined) return;
    if (message.gone === true) {
      this.drop(message.host);
      return;
    }
    const peer = this.peers.get(message.host);
    if (peer === undefined || message.reset === true) {
      this.read(message.host);
      return;
    }
    if (peer.seq < 0) peer.early.push(message);
    else this.apply(peer, message);
  }

  /** The next change of a host; one out of order means some were missed: its hash is read again. */
  private apply(peer: PeerHost, message: PresenceMessage): void {
    if (message.seq <= peer.seq) return;
    if (message.seq !== peer.seq + 1) {
      this.read(message.host);
      return;
    }
    peer.seq = message.seq;
    for (const id of message.remove ?? []) {
      if (peer.sessions.delete(id)) this.removed(id);
    }
    for (const [id, ...entry] of message.add ?? []) {
      if (!Number.isSafeInteger(id) || !isEntry(entry)) continue;
      const info = peerInfo(message.host, id, entry);
      peer.sessions.set(id, info);
      this.added(info);
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

  /** The tenant of session `id` on another host; null when it is not one. */
  tenantOf(id: number): string | null {
    const host = this.hostOf.get(id);
    return host === undefined ? null : (this.peers.get(host)?.sessions.get(id)?.tenant ?? null);
  }

  /** The host of `tenant`'s session `id` on another host; null when it is not one. */
  private peerOf(tenant: string, id: number): string | null {
    const host = this.hostOf.get(id);
    if (host === undefined) return null;
    return this.peers.get(host)?.sessions.get(id)?.tenant === tenant ? host : null;
  }

  /** Sends, closes or (un)subscribes `tenant`'s session `id` on another host; false when it is not one. */
  orderFor(tenant: string, order: Order, payload: Buffer | string = ''): boolean {
    const host = this.peerOf(tenant, order[2]);
    if (host === null) return false;
    if (!this.joined) {
      this.host.emit('tenantError', failure(tenant, new IsletError('ISLET_ERR_CLUSTER', `session ${order[2]} is on host ${host}, out of reach while this host has lost Redis`)));
      return true;
    }
    this.messagesOut++;
    this.command.publish(inboxOf(host), Buffer.concat([Buffer.from(JSON.stringify(order) + '\n'), typeof payload === 'string' ? Buffer.from(payload) : payload])).catch(() => {
      this.host.emit('tenantError', failure(tenant, new IsletError('ISLET_ERR_CLUSTER', `an order for session ${order[2]} on host ${host} was lost with Redis`)));
    });
    return true;
  }

  /** A topic's message, to the other hosts. */
  publish(tenant: string, topic: string, text: string): void {
    if (!this.joined) return;
    this.messagesOut++;
    this.command.publish(topicChannel(tenant, topic), `${this.name}\n${text}`).catch(() => {});
  }

  // Presence: this host's sessions, written in one transaction a turn.
  // Not kept while Redis is away: the next join writes the whole entry.
  opened(info: SocketInfo): void {
    if (!this.joined && !this.joining) return;
    (this.changes.add ??= []).push([info.id, ...entryOf(info)]);
    this.scheduleChanges();
  }

  closed(info: SocketInfo): void {
    if (!this.joined && !this.joining) return;
    (this.changes.remove ??= []).push(info.id);
    this.scheduleChanges();
  }

  private scheduleChanges(): void {
    if (this.changesScheduled) return;
    this.changesScheduled = true;
    setImmediate(() => {
      this.changesScheduled = false;
      this.writeChanges();
    });
  }

  /** Writes what changed; while Redis is away nothing is written, and the whole entry is at the next join. */
  private writeChanges(): void {
    const changes = this.changes;
    if (!this.joined || (changes.add === undefined && changes.remove === undefined)) return;
    this.changes = { host: this.name, seq: 0 };
    changes.seq = ++this.seq;
    const key = sessionsKey(this.name);
    const write = this.command.multi();
    for (const [id, ...entry] of changes.add ?? []) write.hset(key, String(id), JSON.stringify(entry));
    if (changes.remove !== undefined && changes.remove.length > 0) write.hdel(key, ...changes.remove.map(String));
    write
      .hset(key, 'seq', String(changes.seq))
      .publish(PRESENCE, JSON.stringify(changes))
      .exec()
      .catch(() => {
        // Lost with Redis: the join that follows writes the whole entry again.
      });
  }

  // TopicWatch: a topic is followed on Redis while someone here is subscribed to it.
  first(tenant: string, topic: string): void {
    const channel = topicChannel(tenant, topic);
    this.followed.set(channel, [tenant, topic]);
    if (this.joined) this.subscriber.subscribe(channel).catch(() => {});
  }

  last(tenant: string, topic: string): void {
    const channel = topicChannel(tenant, topic);
    this.followed.delete(channel);
    if (this.joined) this.subscriber.unsubscribe(channel).catch(() => {});
  }
}

function entryOf(info: SocketInfo): Entry {
  return [info.tenant, info.endpoint, info.handler, info.user];
}

function isEntry(entry: unknown): entry is Entry {
  return Array.isArray(entry) && entry.length === 4 && entry.every((field) => typeof field === 'string');
}

function parseEntry(value: string): Entry | null {
  try {
    const entry = JSON.parse(value) as unknown;
    return isEntry(entry) ? entry : null;
  } catch {
    return null;
  }
}
