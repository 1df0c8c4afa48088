// Hazard: input that used to throw inside the host's listeners, where an
// exception ends the process: request targets that are not URLs, close
// reasons ws refuses to encode, files that cannot be read while served, huge
// error texts to map, an embedder's listener that throws, and floods of
// empty messages (an empty frame on the worker pipe once sent its reader into
// a loop for ever). Each costs at most its own request or socket; a victim
// tenant keeps echoing throughout.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { truncateSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { connect, makeRoot, rawRequest, serveRoot, type Served, type TestClient, upgradeRequest, VICTIM } from '../helpers.js';


const ROOT = {
  ...VICTIM,
  'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
  'a/h.js': `
    const ws = require("net/v4/websockets");
    exports.onMessage = (m, id) => {
      // Each of these is 42 lone surrogates: 84 bytes by a naive count, 126 as ws encodes them.
      if (m === "bad close") ws.getSession(id).close(3000, "\\uD800".repeat(42));
      return "a " + m;
    };
    // Reported to the host as a tenant error, whose frames the host maps.
    exports.onClose = () => { throw new Error("islet-bundle:0123456789ab/".repeat(200000)); };
    exports.onError = (e) => console.log("onError: " + e);
  `,
  'a/page.html': '<p>page</p>',
};

describe('hazard: input that throws in the host', () => {
  let s: Served;
  let victim: TestClient;
  let sent = 0;

  beforeEach(async () => {
    s = await serveRoot(makeRoot(ROOT));
    victim = await connect(s.url('victim'));
    sent = 0;
  });

  /** The victim's next message is answered, in order, within 2 s. */
  async function victimAnswers(): Promise<void> {
    const n = ++sent;
    victim.ws.send(String(n));
    expect((await victim.receive(n, 2000)).at(-1)).to.equal(`victim ${n}`);
  }

  it('host input: a request or upgrade whose target is not a valid URL gets 400, and the host serves on', async () => {
    await victimAnswers();
    expect(await rawRequest(s.port, 'GET //x:99999 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')).to.match(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*bad request target\n/);
    expect(await rawRequest(s.port, upgradeRequest('//x:99999/websockets/v4/service/victim'))).to.match(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(await rawRequest(s.port, 'GET http://[::1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')).to.match(/^HTTP\/1\.1 400 /);
    await victimAnswers();
  });

  it('host input: tens of thousands of empty messages from a peer, mixed with others, are all answered; the victim too', async function () {
    this.timeout(30_000);
    const attacker = await connect(s.url('a'));
    // In rounds of 4,000, each answered before the next: their replies stay under the peer's queue limit however slowly this process reads.
    let expected = 0;
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 2000; i++) attacker.ws.send('p'.repeat(100));
      for (let i = 0; i < 2000; i++) attacker.ws.send('');
      expected += 4000;
      const got = await attacker.receive(expected, 10_000);
      // Compared here, not printed whole on a failure.
      const wrong = got.slice(expected - 4000).findIndex((m, i) => m !== (i < 2000 ? `a ${'p'.repeat(100)}` : 'a '));
      expect(wrong, `round ${round}`).to.equal(-1);
    }
    await victimAnswers();
    expect(s.errors).to.deep.equal([]);
  });

  it('host input: a close reason over 123 bytes as ws encodes it (lone surrogates) is refused to the tenant; the session stays open', async () => {
    const attacker = await connect(s.url('a'));
    attacker.ws.send('bad close');
    await s.waitForLine((line) => line.startsWith('onError: '));
    expect(s.lines()).to.deep.equal(['onError: ISLET_ERR_BAD_ARGUMENT: close refused: close reason is 126 bytes of UTF-8 (at most 123)']);
    await victimAnswers();
    attacker.ws.send('still open');
    expect(await attacker.receive(2)).to.deep.equal(['a bad close', 'a still open']);
  });

  it('host input: a page that is a FIFO, or shrinks while it is sent, costs only that response', async () => {
    const root = s.engine.root;
    execFileSync('mkfifo', [path.join(root, 'a/pipe.html')]);
    const fifo = await fetch(`http://127.0.0.1:${s.port}/services/web/a/pipe.html`);
    expect(fifo.status).to.equal(404);
    // A big page, truncated while a slow reader takes it.
    const big = path.join(root, 'a/big.txt');
    writeFileSync(big, Buffer.alloc(32 * 1024 * 1024, 'x'));
    const response = await new Promise<http.IncomingMessage>((resolve) => {
      http.get(`http://127.0.0.1:${s.port}/services/web/a/big.txt`, resolve).on('error', () => {});
    });
    expect(response.statusCode).to.equal(200);
    response.on('error', () => {}); // 'aborted': the response ends short, as it must
    response.pause();
    await new Promise((resolve) => setTimeout(resolve, 100));
    truncateSync(big, 0);
    response.resume();
    let received = 0;
    response.on('data', (chunk: Buffer) => (received += chunk.length));
    await new Promise((resolve) => response.on('close', resolve));
    expect(received).to.be.below(32 * 1024 * 1024);
    await victimAnswers();
    const page = await fetch(`http://127.0.0.1:${s.port}/services/web/a/page.html`);
    expect(await page.text()).to.equal('<p>page</p>');
  });

  it('host input: an error text of megabytes is cut and mapped in linear time; the victim is not held up', async () => {
    const attacker = await connect(s.url('a'));
    attacker.ws.close();
    await s.waitForLine(() => false, 1).catch(() => {});
    while (s.errors.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    const [reported] = s.errors;
    expect(reported!.tenant).to.equal('a');
    expect(reported!.error.length).to.be.below(70_000);
    expect(reported!.error).to.match(/ … \[cut at 65536 characters\]$/);
    await victimAnswers();
  });

  it('host input: an embedder listener that throws is reported as hostError and the engine carries on', async () => {
    const failures: string[] = [];
    s.engine.on('hostError', ({ where, error }) => failures.push(`${where}: ${error.message}`));
    s.engine.on('log', () => {
      throw new Error('embedder bug');
    });
    const attacker = await connect(s.url('a'));
    attacker.ws.send('bad close');
    await s.waitForLine((l) => l.startsWith('onError: '));
    expect(failures).to.deep.equal(['a listener of "log": embedder bug']);
    await victimAnswers();
  });
});
