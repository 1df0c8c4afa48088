// What crosses between a sandbox worker and the trusted runtime in a tenant's
// isolate: one table of event kinds going in, one of output operations
// coming out, and the encodings of their texts. Both sides import this file
// (the runtime bundles it; the worker imports its compiled form), so the two
// cannot drift apart.
//
// Events go in as a flat array of triples [kind, id, text], copied by
// isolated-vm. Output comes out one operation at a time, as it is made, so
// nothing waits in the isolate for a memory limit to take along: a short
// one is written into memory the worker shares (`OUTPUT_HEADER` units of
// op and id and length, then the text's UTF-16 units), a long one is passed
// to a host callback as three primitives, which first has the worker take
// what the shared memory holds. No tenant code can run while either is read.

/** Event kinds of a dispatch batch. */
export const Event = {
  Open: 0,
  Message: 1,
  Error: 2,
  Close: 3,
  Timer: 4,
  Run: 5,
  /** A session of this tenant on another host of the cluster: `text` is `encodePeer`'s. No handler runs. */
  Peer: 6,
  /** That session is gone (closed, or its host out of reach). No handler runs. */
  PeerGone: 7,
} as const;

/** Output operations. */
export const Op = {
  /** Send `text` on socket `id`. */
  Send: 0,
  /** Close socket `id`; `text` is `encodeClose`'s. */
  Close: 1,
  /** A console line; `id` is `encodeLogId`'s (its level, the socket whose handler ran). */
  Log: 2,
  /** An error nothing caught: `id` is the run it failed, or 0 (it fails the tenant's pending runs). */
  Error: 3,
  /** A handler's exception that islet caught: reported, it fails nothing. */
  HandlerError: 4,
  /** A module failed while it loaded (threw, or ran past its budget): `text` is `encodeNamed(module, error)`. It is not run again. */
  ModuleFailed: 5,
  /** Part of script run `id`'s HTTP response: `text` is `encodeResponsePart`'s. */
  Response: 6,
  /** Session `id` joins topic `text`. */
  Subscribe: 7,
  /** Session `id` leaves topic `text`. */
  Unsubscribe: 8,
  /** A message to every subscriber of a topic: `text` is `encodeNamed(topic, message)`. */
  Publish: 9,
} as const;

/** Longest topic name, in bytes of UTF-8. */
export const MAX_TOPIC_BYTES = 256;

/** The runtime's slots in the Int32Array it shares with the worker. */
export const Progress = {
  /** Index in the batch of the event being handled; -1 between events. */
  Event: 0,
  /** 1 + the worker's number of the module whose code is loading; 0: none. */
  Loading: 1,
  /** UTF-16 units of output written into the shared output buffer and not yet taken. */
  Output: 2,
  /** 1 while the host is in a cluster whose Redis is out of reach (the worker writes it): calls to other hosts fail. */
  ClusterAway: 3,
  SLOTS: 4,
} as const;

/** Size of the shared output buffer; when an operation does not fit, the runtime has the worker take what is there first. */
export const OUTPUT_BUFFER_BYTES = 64 * 1024;
/** Units before each text in the shared output buffer: op, id (three 16-bit units, low first), text length. */
export const OUTPUT_HEADER = 5;
/** Ids up to this go through the shared buffer (a socket id is 48 bits; a console line's id a little more, and goes through the callback). */
export const SHARED_ID_MAX = 2 ** 48 - 1;
/** Texts up to this many units go through the shared buffer; longer ones cost less through the callback than written unit by unit. */
export const SHARED_TEXT_MAX = 256;
/** The op with which the runtime's callback asks the worker only to take the shared buffer. */
export const TAKE_SHARED = -1;
/**
 * The op with which the runtime says its dispatch loop is done: the worker
 * writes out what the call made so far. What runs after (microtasks, and
 * isolated-vm copying a stray rejection out, which may run a tenant's getters
 * past the budget until the watchdog ends the process) cannot take it along.
 */
export const DISPATCHED = -2;

/** A console line's id: its level's index and, when a handler of a socket was running, that socket's id. */
export function encodeLogId(level: number, socket: number): number {
  return socket * 8 + level;
}

export function decodeLogId(id: number): { level: number; socket: number } {
  return { level: id % 8, socket: Math.floor(id / 8) };
}

export const LOG_LEVELS = ['log', 'info', 'warn', 'error', 'debug'] as const;

/**
 * The text of a session's Open event: its endpoint, its user (JSON, '' for
 * none) and its handler. Neither an endpoint name nor JSON holds a newline;
 * a handler id (a file path) may, so it goes last.
 */
export function encodeSessionOpen(endpoint: string, user: string, handler: string): string {
  return endpoint + '\n' + user + '\n' + handler;
}

/** Splits `encodeSessionOpen`'s text; `indexOf` and `slice` are passed in (the runtime uses captured ones). */
export function decodeSessionOpen(
  text: string,
  indexOf: (text: string, search: string, from?: number) => number,
  slice: (text: string, start: number, end?: number) => string,
): { endpoint: string; user: string; handler: string } {
  const a = indexOf(text, '\n');
  const b = indexOf(text, '\n', a + 1);
  return { endpoint: slice(text, 0, a), user: slice(text, a + 1, b), handler: slice(text, b + 1) };
}

/**
 * The text of a Peer event: the session's host, then `encodeSessionOpen`'s
 * text. A host name holds no newline (options.ts checks it).
 */
export function encodePeer(host: string, endpoint: string, user: string, handler: string): string {
  return host + '\n' + encodeSessionOpen(endpoint, user, handler);
}

/** How many strings each socket takes in the list a recreated isolate adopts: id, uri, handler, engine, state, endpoint, user, host. */
export const ADOPT_FIELDS = 8;

/** `WebsocketSession.close(code, reason)` as the text of a Close operation; '' for a plain close. */
export function encodeClose(code: number | undefined, reason: string): string {
  return code === undefined ? '' : code + ':' + reason;
}

export function decodeClose(text: string): { code?: number; reason?: string } {
  const colon = text.indexOf(':');
  return colon < 0 ? {} : { code: Number(text.slice(0, colon)), reason: text.slice(colon + 1) };
}

/**
 * A name and a text in one string (a ModuleFailed's module and error, a
 * Publish's topic and message): the name's length first, as a name (a file
 * path, a topic) may hold any character. Runs in the isolate: no builtin is called.
 */
export function encodeNamed(name: string, text: string): string {
  return name.length + ':' + name + text;
}

export function decodeNamed(text: string): { name: string; text: string } {
  const colon = text.indexOf(':');
  const end = colon + 1 + Number(text.slice(0, colon));
  return { name: text.slice(colon + 1, end), text: text.slice(end) };
}

/** A Response operation's text: its kind (`p` printed text, `b` bytes one character each, `s` status, `h` header, `c` close), then what it carries (a header: its name's length, `:`, name and value). Runs in the isolate: no builtin is called. */
export function encodeResponsePart(kind: string, payload: string): string {
  return kind + payload;
}

export type ResponsePart =
  | { kind: 'print' | 'bytes'; text: string }
  | { kind: 'status'; status: number }
  | { kind: 'header'; name: string; value: string }
  | { kind: 'close' };

export function decodeResponsePart(text: string): ResponsePart | null {
  const payload = text.slice(1);
  switch (text[0]) {
    case 'p':
      return { kind: 'print', text: payload };
    case 'b':
      return { kind: 'bytes', text: payload };
    case 's':
      return { kind: 'status', status: Number(payload) };
    case 'h': {
      const colon = payload.indexOf(':');
      const end = colon + 1 + Number(payload.slice(0, colon));
      return { kind: 'header', name: payload.slice(colon + 1, end), value: payload.slice(end) };
    }
    case 'c':
      return { kind: 'close' };
    default:
      return null;
  }
}
