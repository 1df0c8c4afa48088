import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { makeRoot, REPO } from '../helpers.js';

const TSC = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');

/** Type-checks `files` of a tenant project against sandbox-api/islet.d.ts, with nothing of Node. */
function typeCheck(files: Record<string, string>): { status: number | null; output: string } {
  const root = makeRoot({
    ...files,
    'tsconfig.json': JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, target: 'es2022', module: 'es2022', moduleResolution: 'bundler', lib: ['es2022'], types: [] },
      files: [path.join(REPO, 'sandbox-api', 'islet.d.ts'), ...Object.keys(files)],
    }),
  });
  const result = spawnSync(process.execPath, [TSC, '-p', root], { cwd: root, encoding: 'utf8' });
  return { status: result.status, output: result.stdout + result.stderr };
}

describe('sandbox-api typings', () => {
  it('typings: a TypeScript handler and script type-check against net/v4/websockets, net/websockets and sdk/net', () => {
    const result = typeCheck({
      'p/h.ts': `
        import { getMessage, getMethod, getClientByHandler, isOnMessage, type WebsocketHandler, type Method } from "net/v4/websockets";
        import { getSessions, getSession, subscribe, unsubscribe, publish, type SessionMetadata } from "net/v4/websockets";
        export const onMessage: WebsocketHandler["onMessage"] = (message, id) => {
          const current: string | null = getMessage();
          const method: Method | null = getMethod();
          if (isOnMessage()) getClientByHandler("p/h")?.send(message.toUpperCase() + id + current + method);
        };
        export function onError(error: string): void { console.error(error); }
        export function onOpen(id: string): void {
          subscribe(id, "lobby");
          const hosts: string[] = getSessions().map((s: SessionMetadata) => s.host + s.endpoint);
          const session = getSession(id);
          if (session !== null) publish("lobby", session.host + hosts.join());
          unsubscribe(id, "lobby");
        }
      `,
      'p/main.ts': `
        import * as v4 from "net/v4/websockets";
        import * as alias from "net/websockets";
        import { websockets } from "sdk/net";
        const client: v4.WebsocketClient = alias.createWebsocket("ws://127.0.0.1:1/", "p/h", "javascript");
        client.send("hello");
        const meta: v4.ClientMetadata[] = websockets.getClients();
        const timer: number = setTimeout(() => client.close(), 10);
        clearTimeout(timer);
        console.log(meta.map((m) => m.id + m.state).join());
      `,
    });
    expect(result.output).to.equal('');
    expect(result.status).to.equal(0);
  });

  it('typings: @aerokit/sdk/net with Websockets, and the response module under each of its ids, type-check', () => {
    const result = typeCheck({
      'p/chat.ts': `
        import { Websockets, websockets, type WebsocketClient } from "@aerokit/sdk/net";
        import * as sdkNet from "sdk/net";
        import { response, Response } from "@aerokit/sdk/http";
        import * as v4 from "http/v4/response";
        import * as old from "http/response";
        import { response as sdkResponse } from "sdk/http";
        const client: WebsocketClient = Websockets.createWebsocket("ws://127.0.0.1:1/", "p/h");
        const same: boolean = Websockets === websockets && sdkNet.Websockets === Websockets;
        client.send(String(same));
        response.setStatus(Response.CREATED);
        v4.setHeader("X-Kind", "chat");
        old.println(Websockets.getClients().length);
        sdkResponse.write([104, 105]);
        if (response.isValid()) response.close();
      `,
    });
    expect(result.output).to.equal('');
    expect(result.status).to.equal(0);
  });

  it('typings: misuse of the API fails to type-check', () => {
    const result = typeCheck({
      'p/bad.ts': [
        'import { createWebsocket, getClient } from "net/v4/websockets";',
        'createWebsocket(42, "p/h");',
        'getClient("1").send("x");',
        'const cwd = process.cwd();',
        'import { Websockets } from "@aerokit/sdk/net";',
        'Websockets.createWebsocket("ws://x/");',
        'import { setStatus } from "http/v4/response";',
        'setStatus("200");',
        'import { publish } from "net/v4/websockets";',
        'publish("lobby");',
      ].join('\n'),
    });
    expect(result.status).to.equal(2);
    expect(result.output).to.contain("p/bad.ts(2,17): error TS2345: Argument of type 'number' is not assignable to parameter of type 'string'.");
    expect(result.output).to.contain("p/bad.ts(3,1): error TS2531: Object is possibly 'null'.");
    expect(result.output).to.contain("p/bad.ts(4,13): error TS2591: Cannot find name 'process'.");
    expect(result.output).to.contain('p/bad.ts(6,12): error TS2554: Expected 2-3 arguments, but got 1.');
    expect(result.output).to.contain("p/bad.ts(8,11): error TS2345: Argument of type 'string' is not assignable to parameter of type 'number'.");
    expect(result.output).to.contain('p/bad.ts(10,1): error TS2554: Expected 2 arguments, but got 1.');
  });
});
