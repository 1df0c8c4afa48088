// Dirigible's `http/v4/response` (also `http/response`, and `response` of
// `sdk/http`): how a script writes the answer to whoever ran it. Each script
// run gets its own, bound to the run through the `require` its bundle is
// given, so that code the script runs later (a timer, an awaited promise)
// still writes to that run's answer. Handler modules get one that refuses:
// there is no HTTP response in a WebSocket event.
import { charCodeAt, emit, ErrorCtor, freeze, Op, RangeErrorCtor, StringCtor, TypeErrorCtor, uncurry } from './host.js';
import { encodeResponsePart } from './wire.js';

/** The status constants Dirigible's response module has (those of Java's HttpServletResponse). */
const STATUS = {
  CONTINUE: 100,
  SWITCHING_PROTOCOLS: 101,
  OK: 200,
  CREATED: 201,
  ACCEPTED: 202,
  NON_AUTHORITATIVE_INFORMATION: 203,
  NO_CONTENT: 204,
  RESET_CONTENT: 205,
  PARTIAL_CONTENT: 206,
  MULTIPLE_CHOICES: 300,
  MOVED_PERMANENTLY: 301,
  MOVED_TEMPORARILY: 302,
  FOUND: 302,
  SEE_OTHER: 303,
  NOT_MODIFIED: 304,
  USE_PROXY: 305,
  TEMPORARY_REDIRECT: 307,
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  PAYMENT_REQUIRED: 402,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  NOT_ACCEPTABLE: 406,
  PROXY_AUTHENTICATION_REQUIRED: 407,
  REQUEST_TIMEOUT: 408,
  CONFLICT: 409,
  GONE: 410,
  LENGTH_REQUIRED: 411,
  PRECONDITION_FAILED: 412,
  REQUEST_ENTITY_TOO_LARGE: 413,
  REQUEST_URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  REQUESTED_RANGE_NOT_SATISFIABLE: 416,
  EXPECTATION_FAILED: 417,
  INTERNAL_SERVER_ERROR: 500,
  NOT_IMPLEMENTED: 501,
  BAD_GATEWAY: 502,
  SERVICE_UNAVAILABLE: 503,
  GATEWAY_TIMEOUT: 504,
  HTTP_VERSION_NOT_SUPPORTED: 505,
} as const;

/** A header name as HTTP has it (a token), and a value with no line break or other control character but tab. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/;
const regexTest = uncurry(RegExp.prototype.test);
function matches(pattern: RegExp, text: string): boolean {
  return regexTest(pattern, text);
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : StringCtor(value);
}

/** A run's response: what it writes leaves the isolate at once, as the run's output. */
export function newResponse(run: number): object {
  let closed = false;
  const stillOpen = (): void => {
    if (closed) throw new ErrorCtor('ISLET_ERR_RESPONSE_CLOSED: the response is closed; nothing more can be written to it');
  };
  const part = (kind: string, payload: string): void => {
    stillOpen();
    // A response cut short must not pass for a whole one: the script hears of it (its run fails with the limit: host.ts, emit).
    if (!emit(Op.Response, run, encodeResponsePart(kind, payload))) {
      throw new ErrorCtor('ISLET_ERR_LIMIT_OUTPUT: this call\'s output is over maxOutputBytes: the response lost this part');
    }
  };
  const response = {
    ...STATUS,
    print(value: unknown): void {
      part('p', text(value));
    },
    println(value: unknown): void {
      part('p', (value === undefined ? '' : text(value)) + '\n');
    },
    /** Bytes: a string (each character one byte, 0-255), or an array or typed array of numbers 0-255. */
    write(data: unknown): void {
      part('b', bytesOf(data));
    },
    flush(): void {
      // What is written leaves the isolate at once: nothing waits to be flushed.
      stillOpen();
    },
    close(): void {
      if (closed) return;
      part('c', '');
      closed = true;
    },
    isValid(): boolean {
      return !closed;
    },
    setStatus(status: unknown): void {
      // 1xx are not a final answer: 100 would leave the client waiting, 101 would announce a protocol switch.
      if (typeof status !== 'number' || status % 1 !== 0 || status < 200 || status > 599) {
        throw new RangeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: setStatus takes an HTTP status from 200 to 599, got ${text(status)}`);
      }
      part('s', StringCtor(status));
    },
    setHeader(name: unknown, value: unknown): void {
      const header = text(name);
      const content = text(value);
      if (!matches(TOKEN, header)) throw new TypeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: setHeader: "${header}" is not a header name`);
      if (matches(CONTROL, content)) throw new TypeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: setHeader: the value of ${header} holds a line break or control character`);
      part('h', header.length + ':' + header + content);
    },
    setContentType(type: unknown): void {
      response.setHeader('Content-Type', type);
    },
  };
  return freeze(response);
}

function bytesOf(data: unknown): string {
  if (typeof data === 'string') {
    for (let i = 0; i < data.length; i++) if (charCodeAt(data, i) > 255) throw new RangeErrorCtor('ISLET_ERR_BAD_ARGUMENT: write takes bytes: a string of characters 0-255, or numbers 0-255');
    return data;
  }
  if (typeof data !== 'object' || data === null) throw new TypeErrorCtor(`ISLET_ERR_BAD_ARGUMENT: write takes bytes, got ${data === null ? 'null' : typeof data}`);
  const list = data as ArrayLike<unknown>;
  const length = list.length;
  if (typeof length !== 'number' || length % 1 !== 0 || length < 0) throw new TypeErrorCtor('ISLET_ERR_BAD_ARGUMENT: write takes bytes: an array or typed array of numbers 0-255');
  let bytes = '';
  for (let i = 0; i < length; i++) {
    const byte = list[i];
    if (typeof byte !== 'number' || byte % 1 !== 0 || byte < -128 || byte > 255) throw new RangeErrorCtor('ISLET_ERR_BAD_ARGUMENT: write takes bytes: numbers 0-255 (or Java\'s -128-127)');
    bytes += fromCharCode(byte & 0xff);
  }
  return bytes;
}

const fromCharCode = String.fromCharCode;

/** What a handler module gets: there is no HTTP response in a WebSocket event. */
export const noResponse: object = (() => {
  const refuse = (): never => {
    throw new ErrorCtor('ISLET_ERR_NO_RESPONSE: http/v4/response is a script\'s answer to the HTTP request that ran it; a handler module has no response (send to the socket instead)');
  };
  const methods: Record<string, unknown> = { ...STATUS, isValid: () => false };
  for (const name of ['print', 'println', 'write', 'flush', 'close', 'setStatus', 'setHeader', 'setContentType']) methods[name] = refuse;
  return freeze(methods);
})();
