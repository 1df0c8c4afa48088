// Which of this host's sessions are subscribed to which topic. Topics are a
// tenant's own: tenant B's "lobby" is not tenant A's, so they are kept per
// tenant. Each session keeps its own topics too, to leave them all when it
// closes.

/** What a topic needs of a session. */
export interface Subscriber {
  info: { tenant: string };
  /** The topics the session is subscribed to; made on first use. */
  topics: Set<string> | null;
}

/** A topic's subscribers, and its name: the one string every subscriber's own set holds (a name may be 256 bytes, kept once). */
interface Topic<S> {
  name: string;
  subscribers: Set<S>;
}

export class Topics<S extends Subscriber> {
  private readonly byTenant = new Map<string, Map<string, Topic<S>>>();

  constructor(private readonly maxTopics: number) {}

  /** False when the session already has maxTopics topics. */
  join(socket: S, topic: string): boolean {
    const own = (socket.topics ??= new Set());
    if (own.has(topic)) return true;
    if (own.size >= this.maxTopics) return false;
    let topics = this.byTenant.get(socket.info.tenant);
    if (topics === undefined) this.byTenant.set(socket.info.tenant, (topics = new Map()));
    let entry = topics.get(topic);
    if (entry === undefined) topics.set(topic, (entry = { name: topic, subscribers: new Set() }));
    own.add(entry.name);
    entry.subscribers.add(socket);
    return true;
  }

  leave(socket: S, topic: string): void {
    if (socket.topics?.delete(topic) !== true) return;
    const topics = this.byTenant.get(socket.info.tenant)!;
    const { subscribers } = topics.get(topic)!;
    subscribers.delete(socket);
    if (subscribers.size > 0) return;
    topics.delete(topic);
    if (topics.size === 0) this.byTenant.delete(socket.info.tenant);
  }

  /** A session closed: it leaves every topic. */
  leaveAll(socket: S): void {
    if (socket.topics === null) return;
    for (const topic of [...socket.topics]) this.leave(socket, topic);
  }

  subscribers(tenant: string, topic: string): ReadonlySet<S> | undefined {
    return this.byTenant.get(tenant)?.get(topic)?.subscribers;
  }
}
