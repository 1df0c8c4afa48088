// Independent peers of the endpoint server: a real browser and a client that
// is not Node's, each against the seed page's descriptor and handler.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { launchChromium, makeRoot, REPO, seedProject, serveRoot } from '../helpers.js';

/** The seed page's server descriptor, unchanged. */
const SEED_DESCRIPTOR = `{
  "handler": "my-project/ws-handler",
  "endpoint":"my-endpoint",
  "description":"My Websocket"
}
`;

function seedServerRoot(extra: Record<string, string> = {}): string {
  const project = seedProject('ws://127.0.0.1:1/');
  return makeRoot({ 'my-project/ws-handler.js': project['my-project/ws-handler.js']!, 'my-project/my-endpoint.websocket': SEED_DESCRIPTOR, ...extra });
}

describe('endpoint peers', () => {
  it('browser: headless Chromium opens the seed endpoint, sends hello, and the handler logs it', async function () {
    this.timeout(60_000);
    const s = await serveRoot(seedServerRoot({ 'my-project/index.html': '<!doctype html><title>islet</title>' }));
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(`http://localhost:${s.port}/services/web/my-project/index.html`);
      const closeCode = await page.evaluate(
        (port) =>
          new Promise<number>((resolve) => {
            const ws = new WebSocket(`ws://localhost:${port}/websockets/v4/service/my-endpoint`);
            ws.onopen = () => {
              ws.send('hello');
              setTimeout(() => ws.close(1000), 200);
            };
            ws.onclose = (event) => resolve(event.code);
          }),
        s.port,
      );
      expect(closeCode).to.equal(1000);
      await s.waitForLine((l) => l === 'Connection closed.');
      expect(s.lines()).to.deep.equal(['Connection openned.', 'Message received: hello', 'Connection closed.']);
    } finally {
      await browser.close();
    }
  });

  it('python: Debian\'s python3-websockets client talks to the seed endpoint', async () => {
    const s = await serveRoot(
      seedServerRoot({
        'my-project/reply.websocket': JSON.stringify({ handler: 'my-project/reply', endpoint: 'reply' }),
        'my-project/reply.js': 'exports.onMessage = (m) => "python said " + m;',
      }),
    );
    const script = `
import asyncio, sys
from websockets.client import connect
async def main():
    async with connect(sys.argv[1] + "my-endpoint") as ws:
        await ws.send("hello")
    async with connect(sys.argv[1] + "reply") as ws:
        await ws.send("héllo")
        print(await ws.recv())
asyncio.run(main())
`;
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn('/usr/bin/python3', ['-c', script, `ws://127.0.0.1:${s.port}/websockets/v4/service/`]);
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`python exited ${code}: ${err}`))));
    });
    expect(output).to.equal('python said héllo\n');
    await s.waitForLine((l) => l === 'Connection closed.');
    expect(s.lines()).to.deep.equal(['Connection openned.', 'Message received: hello', 'Connection closed.']);
  });

  it('examples: the seed descriptor in examples/ is the page\'s, unchanged', () => {
    expect(readFileSync(path.join(REPO, 'examples/my-project/my-endpoint.websocket'), 'utf8')).to.equal(SEED_DESCRIPTOR);
  });
});
