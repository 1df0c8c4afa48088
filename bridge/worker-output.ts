// What comes out of a tenant's isolate, one operation at a time: each is
// checked here (the socket is the tenant's, the message within its size)
// before it is forwarded to the host. Nothing out of an isolate is trusted.
import { fromIsolate } from './errors.js';
import { FrameKind, type FrameWriter } from './frames.js';
import type { WorkerToHost } from './protocol.js';
import { decodeClose, decodeLogId, decodeNamed, decodeResponsePart, LOG_LEVELS } from '../sandbox-api/wire.js';
import { Op, type Tenant } from './tenant.js';
import type { WorkerModules } from './worker-modules.js';
import type { WorkerRuns } from './worker-runs.js';
import type { WorkerSockets } from './worker-sockets.js';

export interface OutputTo {
  sockets: WorkerSockets;
  runs: WorkerRuns;
  modules: WorkerModules;
  writer: FrameWriter;
  maxMessageBytes(): number;
  send(message: WorkerToHost): void;
}

/** One output operation of a tenant, checked, forwarded to the host. */
export function forwardOp(to: OutputTo, tenant: Tenant, op: number, id: number, text: string): void {
  switch (op) {
    case Op.Send: {
      if (!to.sockets.owns(tenant.name, id)) break;
      const max = to.maxMessageBytes();
      if (to.writer.text(FrameKind.TextOut, id, text, max) < 0) {
        to.runs.uncaught(tenant.name, 0, { code: 'ISLET_ERR_MESSAGE_TOO_LARGE', detail: `message of ${Buffer.byteLength(text)} bytes not sent (limit maxMessageBytes ${max})` });
      }
      break;
    }
    case Op.Close: {
      const socket = to.sockets.get(id);
      if (socket?.tenant !== tenant.name) break;
      socket.state = 'closing';
      to.send({ t: 'close', id, tenant: tenant.name, ...decodeClose(text) });
      break;
    }
    case Op.Subscribe:
    case Op.Unsubscribe: {
      const socket = to.sockets.get(id);
      if (socket?.tenant !== tenant.name || socket.kind !== 'session') break;
      to.send({ t: op === Op.Subscribe ? 'subscribe' : 'unsubscribe', id, tenant: tenant.name, topic: text });
      break;
    }
    case Op.Publish: {
      const { name, text: message } = decodeNamed(text);
      const max = to.maxMessageBytes();
      if (Buffer.byteLength(message) > max) {
        to.runs.uncaught(tenant.name, 0, { code: 'ISLET_ERR_MESSAGE_TOO_LARGE', detail: `message of ${Buffer.byteLength(message)} bytes not published (limit maxMessageBytes ${max})` });
        break;
      }
      to.send({ t: 'publish', tenant: tenant.name, topic: name, text: message });
      break;
    }
    case Op.Log: {
      const { level, socket } = decodeLogId(id);
      const handler = to.sockets.handlerOf(tenant.name, socket);
      const at = handler === null ? {} : { handler, socket };
      to.send({ t: 'log', tenant: tenant.name, level: LOG_LEVELS[level] ?? 'log', text, ...at });
      break;
    }
    case Op.ModuleFailed: {
      // The runtime has marked it failed in this isolate; the worker does for the next ones.
      const failed = decodeNamed(text);
      to.modules.fail(tenant.name, failed.name, fromIsolate(failed.text));
      break;
    }
    case Op.Error:
      to.runs.uncaught(tenant.name, id, fromIsolate(text));
      break;
    case Op.Response: {
      // Only to a run of this tenant's still going: a later write (a timer after the run ended) has no one to read it.
      const part = decodeResponsePart(text);
      if (part !== null && to.runs.owns(tenant.name, id)) to.send({ t: 'response', run: id, part });
      break;
    }
    case Op.HandlerError:
      to.send({ t: 'tenantError', tenant: tenant.name, error: fromIsolate(text) });
      break;
  }
}
