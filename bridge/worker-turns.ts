// The turns of one sandbox worker: once per event-loop turn, one call into
// each tenant that had events when the turn began, in a fair order, and a
// pause while the host is behind on this worker's output.
import type { ProgressLog } from './progress-log.js';
import type { FrameWriter } from './frames.js';
import { Event, type Tenant } from './tenant.js';

/**
 * Output the host has not read yet past which no tenant is called until it
 * has: a tenant that logs or sends without end must not pile its output up
 * in this process (it grew by hundreds of MB a second).
 */
const OUTPUT_HIGH_WATER = 2 * 1024 * 1024;

export interface TurnHost {
  /** Is this still the tenant's isolate? (One lost earlier in the turn is not called.) */
  current(tenant: Tenant): boolean;
  /** One call into the tenant with its batch: true when it used its whole budget. */
  call(tenant: Tenant): boolean;
  /** The turn is over (every call made): `pending` socket events wait for the next. */
  ended(pending: number): void;
}

export class Turns {
  /** Tenants with events for the next turn. */
  private readonly dirty = new Set<Tenant>();
  /** Tenants whose call of the last turn ran to its budget. */
  private readonly spent = new Set<Tenant>();
  private scheduled = false;
  /** A turn stopped to let the host read this worker's output; the next one goes on with it. */
  private paused = false;
  private awaitingDrain = false;

  constructor(
    private readonly writer: FrameWriter,
    private readonly progress: ProgressLog,
    private readonly host: TurnHost,
  ) {}

  /** An event for the tenant's next call. */
  queue(tenant: Tenant, kind: number, id: number, text: string): void {
    tenant.batch.push(kind, id, text);
    this.wake(tenant);
  }

  /** The tenant has events already in its batch (put there first, ahead of the rest). */
  wake(tenant: Tenant): void {
    this.dirty.add(tenant);
    this.schedule();
  }

  /** The tenant's isolate is gone for good (evicted): it is not called. */
  forget(tenant: Tenant): void {
    this.dirty.delete(tenant);
  }

  /** A turn runs the dirty tenants and ends with the host's `ended`; even one with none (the host waits for its idle). */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.turn());
  }

  /**
   * A tenant that gets more during the turn (its stopped call's events put
   * back, a timer) waits for the next turn, behind the others: a tenant whose
   * every event runs past its budget costs the others one budget a turn.
   */
  private turn(): void {
    this.scheduled = false;
    // A paused turn goes on: its calls' records stay in the progress log, and its idle is still to come.
    if (!this.paused) this.progress.startTurn();
    this.paused = false;
    // A tenant whose last call used up its budget goes after the others: what
    // arrived for them while it ran is not held up by its next call too.
    const turn = [...this.dirty].sort((a, b) => Number(this.spent.has(a)) - Number(this.spent.has(b)));
    this.dirty.clear();
    this.spent.clear();
    for (let i = 0; i < turn.length; i++) {
      const tenant = turn[i]!;
      if (!this.host.current(tenant)) continue;
      // What earlier calls of this turn produced leaves before the next call
      // starts: if that call kills this process, their output is not lost.
      this.writer.flush();
      if (this.writer.unsent > OUTPUT_HIGH_WATER) {
        this.pause(turn.slice(i));
        return;
      }
      if (this.host.call(tenant)) this.spent.add(tenant);
    }
    this.host.ended(this.socketEventsLeft());
  }

  /**
   * The host is behind on what this worker wrote: the rest of the turn waits
   * until it has read it. No idle yet, so the host holds its next batch (and,
   * past its own limit, stops reading from the senders).
   */
  private pause(waiting: Tenant[]): void {
    for (const tenant of waiting) this.dirty.add(tenant);
    this.paused = true;
    if (this.awaitingDrain) return;
    this.awaitingDrain = true;
    this.writer.whenDrained(() => {
      this.awaitingDrain = false;
      this.progress.step(); // the watchdog counts it as progress
      this.schedule();
    });
  }

  /** Socket events waiting for the next turn (a stopped call's put back); timers do not count: they never end. */
  private socketEventsLeft(): number {
    let n = 0;
    for (const tenant of this.dirty) for (let i = 0; i < tenant.batch.length; i += 3) if (tenant.batch[i] !== Event.Timer) n++;
    return n;
  }
}
