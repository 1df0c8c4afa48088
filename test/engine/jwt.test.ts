// JSON Web Tokens at the upgrade, as `islet serve --jwt-*` checks them
// (engine/jwt.ts, with jose): tokens signed here, real upgrades. A token
// that is missing, malformed, badly signed, expired, without exp, not yet
// valid or for another audience gets 401 naming why; a good one, in the header or the
// query, makes its claims the session's user; a "public" endpoint needs none.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { jwtAuthorizer } from '../../engine/index.js';
import { CLI, connect, makeRoot, rawRequest, serveRoot, type Served, upgradeRequest } from '../helpers.js';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const KEY = new TextEncoder().encode(SECRET);

const ROOT = {
  'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
  'p/open.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'open', public: true }),
  'p/h.js': 'const ws = require("net/v4/websockets");\nexports.onMessage = (m, id) => JSON.stringify(ws.getSession(id).user);\n',
};

function token(claims: Record<string, unknown>, { expires = '1h', notBefore, audience = 'islet-tests', key = KEY }: { expires?: string | number; notBefore?: string; audience?: string; key?: Uint8Array } = {}): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setIssuer('tests').setAudience(audience).setExpirationTime(expires);
  if (notBefore !== undefined) jwt.setNotBefore(notBefore);
  return jwt.sign(key);
}

describe('access control: JSON Web Tokens', () => {
  let s: Served;

  beforeEach(async () => {
    const root = makeRoot({ ...ROOT, 'secret.txt': `${SECRET}\n` });
    s = await serveRoot(root, { authorize: jwtAuthorizer({ secretFile: path.join(root, 'secret.txt'), issuer: 'tests', audience: 'islet-tests' }) });
  });

  const refusal = async (pathAndQuery: string, headers = ''): Promise<string> => {
    const answer = await rawRequest(s.port, upgradeRequest(pathAndQuery, headers));
    return `${answer.slice(0, answer.indexOf('\r\n'))} | ${answer.slice(answer.indexOf('\r\n\r\n') + 4).trim()}`;
  };

  it('jwt: no token, a malformed one, a bad signature, an expired one, one not valid yet and one for another audience get 401 naming why', async () => {
    const e = '/websockets/v4/service/e';
    expect(await refusal(e)).to.equal('HTTP/1.1 401 Unauthorized | no token: send "Authorization: Bearer <token>", or ?access_token=<token> from a browser');
    expect(await refusal(`${e}?access_token=not.a.token`)).to.equal('HTTP/1.1 401 Unauthorized | malformed token');
    const forged = await token({ sub: 'ann' }, { key: new TextEncoder().encode('another-secret-another-secret-another') });
    expect(await refusal(e, `Authorization: Bearer ${forged}\r\n`)).to.equal('HTTP/1.1 401 Unauthorized | token signature does not verify');
    const expired = await token({ sub: 'ann' }, { expires: Math.floor(Date.now() / 1000) - 60 });
    expect(await refusal(e, `Authorization: Bearer ${expired}\r\n`)).to.equal('HTTP/1.1 401 Unauthorized | token expired');
    const early = await token({ sub: 'ann' }, { notBefore: '1h' });
    expect(await refusal(e, `Authorization: Bearer ${early}\r\n`)).to.equal('HTTP/1.1 401 Unauthorized | token not valid yet (nbf)');
    const forever = await new SignJWT({ sub: 'ann' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('tests').setAudience('islet-tests').sign(KEY);
    expect(await refusal(e, `Authorization: Bearer ${forever}\r\n`)).to.equal('HTTP/1.1 401 Unauthorized | token has no valid exp');
    const elsewhere = await token({ sub: 'ann' }, { audience: 'another-service' });
    expect(await refusal(`${e}?access_token=${elsewhere}`)).to.equal('HTTP/1.1 401 Unauthorized | token audience does not match');
  });

  it('jwt: a good token in the header or in ?access_token makes its claims the session\'s user; a public endpoint needs none', async () => {
    const ann = await connect(s.url('e'), { headers: { authorization: `Bearer ${await token({ sub: 'ann', role: 'admin' })}` } });
    ann.ws.send('who');
    expect(JSON.parse((await ann.receive(1))[0]!)).to.include({ sub: 'ann', role: 'admin', iss: 'tests', aud: 'islet-tests' });
    const bob = await connect(`${s.url('e')}?access_token=${await token({ sub: 'bob' })}`);
    bob.ws.send('who');
    expect(JSON.parse((await bob.receive(1))[0]!).sub).to.equal('bob');
    const anyone = await connect(s.url('open'));
    anyone.ws.send('who');
    expect(await anyone.receive(1)).to.deep.equal(['null']);
  });

  it('jwt: an ES256 public key verifies tokens signed with its private key; islet serve takes it as --jwt-public-key-file and says so at startup', async function () {
    this.timeout(20_000);
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const root = makeRoot(ROOT);
    writeFileSync(path.join(root, 'key.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    const child = spawn(process.execPath, [CLI, 'serve', root, '--port', '0', '--jwt-public-key-file', path.join(root, 'key.pem')], { cwd: root });
    const exited = once(child, 'close');
    let stdout = '';
    try {
      const port = await new Promise<number>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          const found = /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(stdout);
          if (found) resolve(Number(found[1]));
        }),
      );
      expect(stdout).to.contain('islet: sessions need a JSON Web Token (endpoints whose descriptor says "public": true excepted)');
      const signed = await new SignJWT({ sub: 'carol' }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('1h').sign(privateKey);
      const carol = await connect(`ws://127.0.0.1:${port}/websockets/v4/service/e`, { headers: { authorization: `Bearer ${signed}` } });
      carol.ws.send('who');
      expect(JSON.parse((await carol.receive(1))[0]!).sub).to.equal('carol');
      const hs = await token({ sub: 'mallory' });
      const refused = await connect(`ws://127.0.0.1:${port}/websockets/v4/service/e?access_token=${hs}`).then(() => 'open', (e: Error) => e.message);
      expect(refused).to.equal('HTTP 401');
      child.kill('SIGTERM');
      await exited;
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('jwt: islet serve with no JWT option says every endpoint is open; a key file it cannot use stops it with the file named', async function () {
    this.timeout(20_000);
    const root = makeRoot({ ...ROOT, 'short.txt': 'too short' });
    const child = spawn(process.execPath, [CLI, 'serve', root, '--port', '0'], { cwd: root });
    const exited = once(child, 'close');
    let stdout = '';
    try {
      await new Promise<void>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes('listening on')) resolve();
        }),
      );
      expect(stdout).to.contain('islet: no --jwt-secret-file or --jwt-public-key-file: every endpoint is open to anyone who can reach this port');
      child.kill('SIGTERM');
      await exited;
    } finally {
      child.kill('SIGKILL');
    }
    const bad = spawn(process.execPath, [CLI, 'serve', root, '--port', '0', '--jwt-secret-file', path.join(root, 'short.txt')], { cwd: root });
    let stderr = '';
    bad.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(bad, 'close')) as [number];
    expect(code).to.equal(1);
    expect(stderr).to.equal(`islet: ISLET_ERR_BAD_OPTION: the JWT secret in ${path.join(root, 'short.txt')} is 9 bytes; HS256 needs at least 32\n`);
  });
});
