// How the CLI prints: tenants' console lines and islet's own, as text
// (`[tenant] line`, or `[tenant handler#socket] line` from a handler call;
// warn and error on stderr), or with `--log-format json` one JSON object a
// line on stdout, made by pino: time, level, tenant, handler, session, msg.
import { pino } from 'pino';
import type { TenantLog } from './index.js';

export type LogFormat = 'text' | 'json';

export interface Printer {
  /** A tenant's console line. */
  tenant(log: TenantLog): void;
  /** One of islet's own lines (each line of `text` on its own); `problem`: warn, on stderr in text. */
  islet(text: string, problem?: boolean): void;
}

const PINO_LEVELS = { log: 'info', info: 'info', warn: 'warn', error: 'error', debug: 'debug' } as const;

export function printer(format: LogFormat): Printer {
  if (format === 'text') {
    return {
      tenant({ tenant, level, text, handler, socket }) {
        const stream = level === 'warn' || level === 'error' ? process.stderr : process.stdout;
        stream.write(handler === undefined ? `[${tenant}] ${text}\n` : `[${tenant} ${handler}#${socket}] ${text}\n`);
      },
      islet(text, problem = false) {
        (problem ? process.stderr : process.stdout).write(`${text}\n`);
      },
    };
  }
  // Written synchronously: a process that exits right after its last line must not lose it.
  const logger = pino(
    { level: 'trace', base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ fd: 1, sync: true }),
  );
  return {
    tenant({ tenant, level, text, handler, socket }) {
      logger[PINO_LEVELS[level]]({ tenant, handler, session: socket }, text);
    },
    islet(text, problem = false) {
      for (const line of text.split('\n')) if (line !== '') logger[problem ? 'warn' : 'info'](line.replace(/^islet: /, ''));
    },
  };
}
