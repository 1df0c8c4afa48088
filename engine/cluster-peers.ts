// The sessions of the other hosts of the cluster, as this host knows them:
// each host's hash read from Redis, then its numbered changes applied in
// order. A change that comes while its hash is being read waits for the
// read; one out of order means some were missed, and the hash is read again.
// The workers hear of what changed once a turn, each session's last state
// only: a session that came and went within one turn reaches them as gone.
import type { SocketInfo } from '../bridge/protocol.js';
import { isEntry, parseEntry, peerInfo, type PresenceMessage } from './cluster-keys.js';

interface PeerHost {
  sessions: Map<number, SocketInfo>;
  /** The last change applied; -1 while its hash is being read. */
  seq: number;
  /** Changes that came while its hash was being read. */
  early: PresenceMessage[];
  /** Which read of its hash is the latest. */
  reading: number;
}

export interface PeersSource {
  /** A host's hash, from Redis. */
  readHash(host: string): Promise<Record<string, string>>;
  /** Whether this host is joined: a read that comes back after Redis was lost is dropped. */
  joined(): boolean;
  /** What the workers are to hear: sessions added (or their new state) and gone. */
  changed(add: SocketInfo[], remove: number[]): void;
}

export class PeerHosts {
  private readonly hosts = new Map<string, PeerHost>();
  /** Which host each session of another host is on. */
  private readonly hostOf = new Map<number, string>();
  /** Sessions of each tenant on the other hosts: a tenant with none has no one there to publish to. */
  private readonly perTenant = new Map<string, number>();
  /** Each changed session's last state this turn (null: gone). */
  private readonly pending = new Map<number, SocketInfo | null>();
  private scheduled = false;

  constructor(private readonly source: PeersSource) {}

  get size(): number {
    return this.hosts.size;
  }

  names(): string[] {
    return [...this.hosts.keys()];
  }

  has(host: string): boolean {
    return this.hosts.has(host);
  }

  /** Every session on the other hosts, for a worker that starts again. */
  sessions(): SocketInfo[] {
    return [...this.hosts.values()].flatMap((peer) => [...peer.sessions.values()]);
  }

  /** Whether another host has a session of `tenant`. */
  hasTenant(tenant: string): boolean {
    return this.perTenant.has(tenant);
  }

  /** The session `id` of another host; undefined when it is not one. */
  session(id: number): SocketInfo | undefined {
    const host = this.hostOf.get(id);
    return host === undefined ? undefined : this.hosts.get(host)?.sessions.get(id);
  }

  /** A change (or a join or a leaving) another host announced. */
  heard(message: PresenceMessage): void {
    if (message.gone === true) {
      this.drop(message.host);
      return;
    }
    const peer = this.hosts.get(message.host);
    if (peer === undefined || message.reset === true) this.read(message.host);
    else if (peer.seq < 0) peer.early.push(message);
    else this.apply(peer, message);
  }

  /** (Re)reads another host's hash: its sessions as of its `seq`, then the changes that came meanwhile. */
  read(host: string): void {
    let peer = this.hosts.get(host);
    if (peer === undefined) this.hosts.set(host, (peer = { sessions: new Map(), seq: -1, early: [], reading: 0 }));
    peer.seq = -1;
    const reading = ++peer.reading;
    this.source.readHash(host).then(
      (hash) => {
        if (this.hosts.get(host) !== peer || peer.reading !== reading || !this.source.joined()) return;
        if (hash.seq === undefined) {
          this.drop(host);
          return;
        }
        const now = new Map<number, SocketInfo>();
        for (const [field, value] of Object.entries(hash)) {
          const entry = field === 'seq' ? null : parseEntry(value);
          if (entry !== null) now.set(Number(field), peerInfo(host, Number(field), entry));
        }
        for (const [id, info] of peer.sessions) if (!now.has(id)) this.removed(info);
        for (const [id, info] of now) if (!peer.sessions.has(id)) this.added(info);
        peer.sessions = now;
        peer.seq = Number(hash.seq);
        const early = peer.early.filter((m) => m.seq > peer.seq).sort((a, b) => a.seq - b.seq);
        peer.early = [];
        for (const message of early) this.apply(peer, message);
      },
      () => {
        // Redis went away: the next join reads every host again.
      },
    );
  }

  /** A host gone (dead, left, or out of reach with Redis): its sessions leave every listing. */
  drop(host: string): void {
    const peer = this.hosts.get(host);
    if (peer === undefined) return;
    this.hosts.delete(host);
    for (const info of peer.sessions.values()) this.removed(info);
  }

  dropAll(): void {
    for (const host of this.names()) this.drop(host);
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
      const info = peer.sessions.get(id);
      if (info === undefined) continue;
      peer.sessions.delete(id);
      this.removed(info);
    }
    for (const [id, ...entry] of message.add ?? []) {
      if (!Number.isSafeInteger(id) || !isEntry(entry) || peer.sessions.has(id)) continue;
      const info = peerInfo(message.host, id, entry);
      peer.sessions.set(id, info);
      this.added(info);
    }
  }

  private added(info: SocketInfo): void {
    this.hostOf.set(info.id, info.host);
    this.perTenant.set(info.tenant, (this.perTenant.get(info.tenant) ?? 0) + 1);
    this.note(info.id, info);
  }

  private removed(info: SocketInfo): void {
    this.hostOf.delete(info.id);
    const left = this.perTenant.get(info.tenant)! - 1;
    if (left > 0) this.perTenant.set(info.tenant, left);
    else this.perTenant.delete(info.tenant);
    this.note(info.id, null);
  }

  private note(id: number, info: SocketInfo | null): void {
    this.pending.set(id, info);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const add: SocketInfo[] = [];
      const remove: number[] = [];
      for (const [changed, state] of this.pending) {
        if (state === null) remove.push(changed);
        else add.push(state);
      }
      this.pending.clear();
      if (add.length + remove.length > 0) this.source.changed(add, remove);
    });
  }
}
