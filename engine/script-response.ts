// What a script run wrote through Dirigible's response module
// (`http/v4/response`): its status, headers and body, gathered as the parts
// arrive from the worker, within `maxResponseBytes`.
import { validateHeaderName, validateHeaderValue } from 'node:http';
import { IsletError } from '../bridge/errors.js';
import type { ResponsePart } from '../sandbox-api/wire.js';

/** A script run's answer: what `engine.run` resolves to, and what `GET /services/js/…` serves. */
export interface ScriptResponse {
  /** 200 unless the script set one. */
  status: number;
  /** By lower-case name; the last value set of each. */
  headers: Record<string, string>;
  body: Buffer;
}

export interface RunOptions {
  /** Each piece of the body as the script writes it (print, println, write), in order. */
  onBody?(chunk: Buffer): void;
  /** The script closed its response: what it wrote until now is the whole answer. */
  onClose?(response: ScriptResponse): void;
}

/** Headers that frame the HTTP message: the host sets them, a script may not. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'trailer', 'te']);

export class ResponseSink {
  private status = 200;
  private readonly headers = new Map<string, string>();
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private closed = false;
  /** Set when the script wrote more than it may: the run fails with it. */
  failure: IsletError | null = null;

  constructor(
    private readonly maxBytes: number,
    private readonly options: RunOptions,
  ) {}

  take(part: ResponsePart): void {
    if (this.closed || this.failure !== null) return;
    switch (part.kind) {
      case 'print':
      case 'bytes': {
        const chunk = Buffer.from(part.text, part.kind === 'print' ? 'utf8' : 'latin1');
        if (!this.count(chunk.length)) return;
        this.chunks.push(chunk);
        this.options.onBody?.(chunk);
        break;
      }
      case 'status':
        this.status = part.status;
        break;
      case 'header': {
        const name = part.name.toLowerCase();
        if (FRAMING.has(name) || !validHeader(part.name, part.value) || !this.count(part.name.length + part.value.length)) return;
        this.headers.set(name, part.value);
        break;
      }
      case 'close':
        this.closed = true;
        this.options.onClose?.(this.result());
        break;
    }
  }

  private count(bytes: number): boolean {
    this.bytes += bytes;
    if (this.bytes <= this.maxBytes) return true;
    this.failure = new IsletError('ISLET_ERR_LIMIT_RESPONSE', `the script wrote more than ${this.maxBytes} bytes of response (limit maxResponseBytes); the rest was dropped`);
    return false;
  }

  result(): ScriptResponse {
    return { status: this.status, headers: Object.fromEntries(this.headers), body: Buffer.concat(this.chunks) };
  }
}

function validHeader(name: string, value: string): boolean {
  try {
    validateHeaderName(name);
    validateHeaderValue(name, value);
    return true;
  } catch {
    return false;
  }
}
