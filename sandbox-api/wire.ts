// What crosses between a sandbox worker and the trusted runtime in a tenant's
// isolate: one table of event kinds going in, one of output operations
// coming out, and the encodings of their texts. Both sides import this file
// (the runtime bundles it; the worker imports its compiled form), so the two
// cannot drift apart.
//
// Events go in as a flat array of triples [kind, id, text], copied by
// isolated-vm. Output comes out as one string, `op:id:length:text` after
// one another, alone in a frozen array the runtime makes: copying it reads
// that one own element, so no tenant code can run during the copy (an array
// of many elements, built as a tenant's code ran, could have holes read
// through getters it planted on Array.prototype).

/** Event kinds of a dispatch batch. */
export const Event = { Open: 0, Message: 1, Error: 2, Close: 3, Timer: 4, Run: 5 } as const;

/** Output operations. */
export const Op = {
  /** Send `text` on socket `id`. */
  Send: 0,
  /** Close socket `id`; `text` is `encodeClose`'s. */
  Close: 1,
  /** A console line; `id` is the level's index in LOG_LEVELS. */
  Log: 2,
  /** An error nothing caught: `id` is the run it failed, or 0 (it fails the tenant's pending runs). */
  Error: 3,
  /** A handler's exception that islet caught: reported, it fails nothing. */
  HandlerError: 4,
  /** A module failed while it loaded (threw, or ran past its budget): `text` is `module\nerror`. It is not run again. */
  ModuleFailed: 5,
} as const;

export const LOG_LEVELS = ['log', 'info', 'warn', 'error', 'debug'] as const;

/** One output operation, as `decodeOutput` hands it on. */
export type OutputHandler = (op: number, id: number, text: string) => void;

/** Appends one operation to an output string (inside the isolate: concatenation of primitives only). */
export function encodeOp(output: string, op: number, id: number, text: string): string {
  return output + op + ':' + id + ':' + text.length + ':' + text;
}

/** Splits an output string into its operations; throws on a malformed one (the runtime wrote it, so that is a bug). */
export function decodeOutput(output: string, each: OutputHandler): void {
  let at = 0;
  while (at < output.length) {
    const a = output.indexOf(':', at);
    const b = output.indexOf(':', a + 1);
    const c = output.indexOf(':', b + 1);
    const op = Number(output.slice(at, a));
    const id = Number(output.slice(a + 1, b));
    const length = Number(output.slice(b + 1, c));
    if (a < 0 || b < 0 || c < 0 || !Number.isSafeInteger(op) || !Number.isSafeInteger(id) || !Number.isSafeInteger(length) || c + 1 + length > output.length) {
      throw new Error(`malformed isolate output at ${at}`);
    }
    each(op, id, output.slice(c + 1, c + 1 + length));
    at = c + 1 + length;
  }
}

/** `WebsocketSession.close(code, reason)` as the text of a Close operation; '' for a plain close. */
export function encodeClose(code: number | undefined, reason: string): string {
  return code === undefined ? '' : code + ':' + reason;
}

export function decodeClose(text: string): { code?: number; reason?: string } {
  const colon = text.indexOf(':');
  return colon < 0 ? {} : { code: Number(text.slice(0, colon)), reason: text.slice(colon + 1) };
}
