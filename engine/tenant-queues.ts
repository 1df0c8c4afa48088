// Bytes waiting on all of one tenant's sockets together, for peers that read
// slower than the tenant writes (maxTenantQueuedBytes), and the throttle that
// slows such a tenant down: past half its limit the host stops reading what
// its peers send (its own events wait in TCP) until its queues are down to a
// quarter, so it is slowed rather than having its messages dropped.
import WebSocket from 'ws';

/** How often a tenant's total is counted again from its sockets. */
const RECOUNT_MS = 100;
/**
 * What one queued message costs the host beyond its payload (ws's frame,
 * Node's write request and buffer list entry): about 460 bytes were measured
 * for one-byte messages, so a limit counted in payload alone let the host
 * hold a hundred times more than it said.
 */
export const MESSAGE_COST = 512;

/** What a socket's queue looks like from here. */
export interface QueuedSocket {
  info: { tenant: string };
  ws: WebSocket | null;
  /** Messages waiting for a client that has not opened yet, and their bytes. */
  waiting: unknown[] | null;
  waitingBytes: number;
  /** Messages handed to ws while the socket already had bytes waiting, not written out yet. */
  backlog: number;
  /** The bytes of this socket counted in its tenant's total. */
  counted: number;
}

/** What a socket's queue holds, payload and per-message cost. */
export function queuedBytes(socket: QueuedSocket): number {
  const ws = socket.ws;
  if (ws !== null && ws.readyState === WebSocket.OPEN) return ws.bufferedAmount + socket.backlog * MESSAGE_COST;
  return socket.waitingBytes + (socket.waiting?.length ?? 0) * MESSAGE_COST;
}

export class TenantQueues {
  /**
   * Each tenant's total. A socket's share is brought up to date when it sends;
   * shares of sockets that drained since are too high, so a total that looks
   * over the limit is counted again from every socket of the tenant (at most
   * every RECOUNT_MS).
   */
  private readonly totals = new Map<string, { bytes: number; countedAt: number }>();
  /** Tenants whose peers are not read from, checked again every RECOUNT_MS. */
  private readonly throttled = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly limit: number,
    private readonly socketsOf: (tenant: string) => Iterable<QueuedSocket>,
  ) {}

  /** Sets `socket`'s share of its tenant's total; returns the total. */
  count(socket: QueuedSocket, bytes: number): number {
    const tenant = socket.info.tenant;
    let total = this.totals.get(tenant);
    if (total === undefined) this.totals.set(tenant, (total = { bytes: 0, countedAt: 0 }));
    total.bytes += bytes - socket.counted;
    socket.counted = bytes;
    if (total.bytes === 0) this.totals.delete(tenant);
    return total.bytes;
  }

  /** The tenant's total, counted again from its sockets unless that was done within RECOUNT_MS. */
  recount(tenant: string): number {
    const total = this.totals.get(tenant);
    if (total === undefined) return 0;
    const now = Date.now();
    if (now - total.countedAt < RECOUNT_MS) return total.bytes;
    total.countedAt = now;
    total.bytes = 0;
    for (const socket of this.socketsOf(tenant)) {
      socket.counted = queuedBytes(socket);
      total.bytes += socket.counted;
    }
    return total.bytes;
  }

  isThrottled(tenant: string): boolean {
    return this.throttled.has(tenant);
  }

  /** A tenant's total is now `total`: past half its limit, reading from its peers stops. */
  checkThrottle(tenant: string, total: number): void {
    if (total <= this.limit / 2 || this.throttled.has(tenant)) return;
    const check = (): void => {
      if (this.recount(tenant) <= this.limit / 4) {
        clearInterval(this.throttled.get(tenant));
        this.throttled.delete(tenant);
        for (const socket of this.socketsOf(tenant)) socket.ws?.resume();
        return;
      }
      // Paused again each time: the worker's own backpressure may have resumed some.
      for (const socket of this.socketsOf(tenant)) if (socket.ws !== null && !socket.ws.isPaused) socket.ws.pause();
    };
    this.throttled.set(tenant, setInterval(check, RECOUNT_MS));
    check();
  }

  stop(): void {
    for (const timer of this.throttled.values()) clearInterval(timer);
    this.throttled.clear();
  }
}
