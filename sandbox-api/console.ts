// `console` for tenant code: each call becomes one line of text that the host
// prints with the tenant's name, and the handler and socket when a handler
// was running (warn and error on stderr).
import { ErrorCtor, Op, StringCtor, emit, errorText, freeze, jsonStringify, stringSlice } from './host.js';
import { encodeLogId, LOG_LEVELS } from './wire.js';
import { currentSocket } from './websockets.js';

/** Longest line one console call may produce; the rest is cut. */
const MAX_LINE = 64 * 1024;

function format(value: unknown): string {
  try {
    if (typeof value === 'string') return value;
    if (typeof value === 'function') return `[Function ${StringCtor(value.name) || '(anonymous)'}]`;
    if (value instanceof ErrorCtor) return errorText(value);
    if (typeof value === 'object' && value !== null) return jsonStringify(value) ?? StringCtor(value);
    return StringCtor(value);
  } catch {
    return '[unprintable]';
  }
}

export function installConsole(global: typeof globalThis): void {
  const console: Record<string, (...args: unknown[]) => void> = {};
  LOG_LEVELS.forEach((level, index) => {
    console[level] = (...args: unknown[]): void => {
      let line = '';
      for (let i = 0; i < args.length; i++) line += (i === 0 ? '' : ' ') + format(args[i]);
      if (line.length > MAX_LINE) line = stringSlice(line, 0, MAX_LINE) + ` … [cut at ${MAX_LINE} characters]`;
      emit(Op.Log, encodeLogId(index, currentSocket()), line);
    };
  });
  console.trace = console.debug!;
  (global as { console: unknown }).console = freeze(console);
}
