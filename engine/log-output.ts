// How the CLI prints: tenants' console lines and islet's own, as text
// (`[tenant] line`, or `[tenant handler#socket] line` from a handler call;
// warn and error on stderr), or with `--log-format json` one JSON object a
// line on stdout, made by pino: time, level, tenant, handler, session, msg.
import { once } from 'node:events';
import { pino } from 'pino';
import type { TenantLog } from './index.js';
import { within } from './within.js';

export type LogFormat = 'text' | 'json';

export interface Printer {
  /** A tenant's console line. */
  tenant(log: TenantLog): void;
  /** One of islet's own lines (each line of `text` on its own); `problem`: warn, on stderr in text. */
  islet(text: string, problem?: boolean): void;
  /** A tenant's failure (its text is the tenant's: every line is tagged with it). */
  failure(tenant: string, text: string): void;
  /** What `islet run`'s script wrote through its response module: as it is, untagged (text), or a record with `response: true` (json). */
  response(chunk: Buffer): void;
  /** Resolves once what was printed is written out (at most `ms`). */
  flushed(ms: number): Promise<void>;
}

const PINO_LEVELS = { log: 'info', info: 'info', warn: 'warn', error: 'error', debug: 'debug' } as const;

/** Log bytes a slow reader may leave waiting before lines are dropped, and counted. */
const MAX_UNWRITTEN = 8 * 1024 * 1024;

/**
 * Writes to a standard stream. `server`: Node writes pipes synchronously on
 * Linux, so a reader slower than the tenants' output would hold the whole
 * host; a server's stream is made asynchronous instead, and past
 * MAX_UNWRITTEN lines are dropped and then counted in a line of their own.
 */
function output(stream: NodeJS.WriteStream, server: boolean): (text: string) => void {
  // A terminal keeps up, and is shared with the shell: it is left as it is (a file is written synchronously anyway).
  if (!server || stream.isTTY) return (text) => void stream.write(text);
  (stream as unknown as { _handle?: { setBlocking?: (blocking: boolean) => void } })._handle?.setBlocking?.(false);
  let dropped = 0;
  return (text) => {
    if (stream.writableLength > MAX_UNWRITTEN) {
      dropped++;
      return;
    }
    if (dropped > 0) {
      stream.write(`islet: ${dropped} log lines dropped: the reader of this output is slower than what the tenants print\n`);
      dropped = 0;
    }
    stream.write(text);
  };
}

async function drained(stream: NodeJS.WriteStream, ms: number): Promise<void> {
  // A stream that fails instead of draining has nothing more to write either.
  if (stream.writableLength > 0) await within(once(stream, 'drain').catch(() => undefined), ms, undefined);
}

/** Line breaks a terminal or a log reader may take as one: each starts a line. */
const LINE_BREAK = /\r\n|[\n\r\u0085\u2028\u2029]/g;

/** A tenant's text with every line tagged: it must not print lines that pass for another tenant's or islet's. */
export function tagged(tag: string, text: string): string {
  return tag + text.replace(LINE_BREAK, '\n' + tag) + '\n';
}

/** `server`: the long-running `islet serve`, whose output must not hold the host (see `output`). */
export function printer(format: LogFormat, server = false): Printer {
  const stdout = output(process.stdout, server);
  const stderr = output(process.stderr, server);
  const flushed = async (ms: number): Promise<void> => {
    await Promise.all([drained(process.stdout, ms), drained(process.stderr, ms)]);
  };
  if (format === 'text') {
    return {
      tenant({ tenant, level, text, handler, socket }) {
        const tag = handler === undefined ? `[${tenant}] ` : `[${tenant} ${handler}#${socket}] `;
        (level === 'warn' || level === 'error' ? stderr : stdout)(tagged(tag, text));
      },
      islet(text, problem = false) {
        (problem ? stderr : stdout)(`${text}\n`);
      },
      failure(tenant, text) {
        stderr(tagged(`[${tenant}] `, text));
      },
      response(chunk) {
        process.stdout.write(chunk);
      },
      flushed,
    };
  }
  const logger = pino(
    { level: 'trace', base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    { write: stdout },
  );
  return {
    tenant({ tenant, level, text, handler, socket }) {
      logger[PINO_LEVELS[level]]({ tenant, handler, session: socket }, text);
    },
    islet(text, problem = false) {
      for (const line of text.split('\n')) if (line !== '') logger[problem ? 'warn' : 'info'](line.replace(/^islet: /, ''));
    },
    failure(tenant, text) {
      logger.warn({ tenant }, text);
    },
    response(chunk) {
      logger.info({ response: true }, chunk.toString('utf8'));
    },
    flushed,
  };
}
