// The progress log of a sandbox worker: a file the host and the worker share.
import { readSync, writeSync } from 'node:fs';

/**
 * What a worker is doing, written where the host can read it after the
 * process died. Before each call into a tenant the worker records how many
 * frames it has received and whose code it runs now, with a plain positioned
 * write into a file the host shares: no wake-up of the host, unlike a frame
 * on the pipe, and the record outlives the process. The host reads the file
 * only when the process is gone: the frames each recorded call took are not
 * sent again, and the tenant of the last one is the one whose code was
 * running. A turn's records follow each other from the second slot; the
 * `idle` message ending the turn makes them stale (each record carries the
 * count of calls so far, and so does `idle`). The first slot counts other
 * work that takes time outside any call (creating an isolate, defining its
 * modules): the host's watchdog reads it as progress too.
 */
export const PROGRESS_FD = 4;
const SLOT = 512;
const NAME_AT = 18;

export interface ProgressRecord {
  calls: number;
  seq: number;
  tenant: string;
}

export class ProgressLog {
  private readonly record = Buffer.alloc(SLOT);
  private slot = 0;

  private steps = 0;
  private readonly stepRecord = Buffer.alloc(8);

  constructor(private readonly fd: number) {}

  /** Work outside a call made progress: the watchdog sees the count change. */
  step(): void {
    this.stepRecord.writeDoubleLE(++this.steps, 0);
    writeSync(this.fd, this.stepRecord, 0, 8, 0);
  }

  /** How many steps the worker has recorded (0 if none). */
  static steps(fd: number): number {
    const r = Buffer.alloc(8);
    return readSync(fd, r, 0, 8, 0) === 8 ? r.readDoubleLE(0) : 0;
  }

  /** A new turn: its records start again at the top. */
  startTurn(): void {
    this.slot = 0;
  }

  /** The `calls`-th call, into `tenant`, is about to start, with `seq` frames received. */
  starting(calls: number, seq: number, tenant: string): void {
    const r = this.record;
    r.writeDoubleLE(calls, 0);
    r.writeDoubleLE(seq, 8);
    // Tenant names are directory names (at most 255 bytes): they fit.
    const length = r.write(tenant, NAME_AT, 'utf8');
    r.writeUInt16LE(length, 16);
    writeSync(this.fd, r, 0, NAME_AT + length, (this.slot + 1) * SLOT);
    this.slot++;
  }

  /** The records of calls after the `calls`-th, in order: what a dead worker was doing. */
  static read(fd: number, calls: number): ProgressRecord[] {
    const records: ProgressRecord[] = [];
    const r = Buffer.alloc(SLOT);
    for (let at = SLOT; readSync(fd, r, 0, SLOT, at) >= NAME_AT; at += SLOT) {
      const record = { calls: r.readDoubleLE(0), seq: r.readDoubleLE(8), tenant: r.toString('utf8', NAME_AT, NAME_AT + r.readUInt16LE(16)) };
      // Past the records of the unfinished turn: an older turn's, or nothing.
      if (records.length === 0 ? record.calls <= calls : record.calls !== records[records.length - 1]!.calls + 1) break;
      records.push(record);
    }
    return records;
  }
}
