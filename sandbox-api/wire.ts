// What crosses between a sandbox worker and the trusted runtime in a tenant's
// isolate: one table of event kinds going in, one of output operations
// coming out, and the encodings of their texts. Both sides import this file
// (the runtime bundles it; the worker imports its compiled form), so the two
// cannot drift apart.
//
// Events go in as a flat array of triples [kind, id, text], copied by
// isolated-vm. Output comes out one operation at a time, as it is made:
// three primitives (op, id, text) passed to a host callback, so no tenant
// code can run while they are copied, and nothing waits in the isolate for
// a memory limit to take along.

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

/** `WebsocketSession.close(code, reason)` as the text of a Close operation; '' for a plain close. */
export function encodeClose(code: number | undefined, reason: string): string {
  return code === undefined ? '' : code + ':' + reason;
}

export function decodeClose(text: string): { code?: number; reason?: string } {
  const colon = text.indexOf(':');
  return colon < 0 ? {} : { code: Number(text.slice(0, colon)), reason: text.slice(colon + 1) };
}
