// Access control at the upgrade: the embedder's `authorize` decides before
// any tenant code runs. A refusal carries its status and reason; a throwing,
// rejecting or silent `authorize` costs only that upgrade (500 or 503, and a
// hostError), as does a user that is not JSON, while accepted sessions
// carry on; an accepted session's `user`
// is what tenant code sees as `getSession(id).user` and in `getSessions()`.
import { expect } from 'chai';
import type { IncomingMessage } from 'node:http';
import type { HostFailure } from '../../engine/index.js';
import { connect, makeRoot, rawRequest, serveRoot, type Served, upgradeRequest } from '../helpers.js';

const ROOT = {
  'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
  'p/h.js': `const ws = require("net/v4/websockets");
exports.onMessage = (m, id) => JSON.stringify({ mine: ws.getSession(id).user, all: ws.getSessions().map((s) => s.user) });
`,
};

/** The upgrade request for endpoint e, with `?who=` the test's own switch. */
const upgrade = (who: string): string => upgradeRequest(`/websockets/v4/service/e?who=${who}`);

function who(req: IncomingMessage): string {
  return new URL(req.url ?? '/', 'http://x').searchParams.get('who') ?? '';
}

describe('access control: authorize', () => {
  let s: Served;
  const failures: HostFailure[] = [];

  beforeEach(async () => {
    failures.length = 0;
    s = await serveRoot(makeRoot(ROOT), {
      authorizeTimeoutMs: 300,
      authorize: async (req, endpoint) => {
        switch (who(req)) {
          case 'ann':
            return { user: { sub: 'ann', endpoint: 'name' in endpoint ? endpoint.name : null, roles: ['admin'] } };
          case 'anon':
            return true;
          case 'nobody':
            return false;
          case 'banned':
            return { status: 403, reason: 'ann says no' };
          case 'throws':
            throw new Error('the auth service is down');
          case 'silent':
            return new Promise<never>(() => {});
          case 'cycle': {
            const user: Record<string, unknown> = {};
            user.self = user;
            return { user: user as never };
          }
          default:
            return { status: 7 };
        }
      },
    });
    s.engine.on('hostError', (failure) => failures.push(failure));
  });

  const url = (name: string): string => `${s.url('e')}?who=${name}`;

  it('authorize: the user it gives is the session\'s user in tenant code; a session it accepts without one has null', async () => {
    const ann = await connect(url('ann'));
    const anon = await connect(url('anon'));
    ann.ws.send('hi');
    anon.ws.send('hi');
    const annUser = { sub: 'ann', endpoint: 'e', roles: ['admin'] };
    expect(JSON.parse((await ann.receive(1))[0]!)).to.deep.equal({ mine: annUser, all: [annUser, null] });
    expect(JSON.parse((await anon.receive(1))[0]!)).to.deep.equal({ mine: null, all: [annUser, null] });
  });

  it('authorize: false is 401; a status of its own is that status with its reason; a status out of 400-599 is 500 and reported', async () => {
    expect(await rawRequest(s.port, upgrade('nobody'))).to.match(/^HTTP\/1\.1 401 Unauthorized\r\n[\s\S]*\r\n\r\nunauthorized\n$/);
    expect(await rawRequest(s.port, upgrade('banned'))).to.match(/^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*\r\n\r\nann says no\n$/);
    expect(await rawRequest(s.port, upgrade('odd'))).to.match(/^HTTP\/1\.1 500 Internal Server Error\r\n[\s\S]*authorization failed\n$/);
    expect(await rawRequest(s.port, upgrade('cycle'))).to.match(/^HTTP\/1\.1 500 [\s\S]*authorization failed\n$/);
    expect(failures.map((f) => f.where)).to.deep.equal(['authorize', 'authorize']);
    expect(failures[0]!.error.message).to.equal('authorize answered status 7; a refusal is 400-599');
    expect(failures[1]!.error.message).to.match(/^authorize answered a user that is not JSON \(Converting circular structure to JSON/);
  });

  it('authorize: one that throws costs that upgrade a 500, one that never answers a 503 after authorizeTimeoutMs; both are reported, open sessions carry on', async () => {
    const ann = await connect(url('ann'));
    expect(await rawRequest(s.port, upgrade('throws'))).to.match(/^HTTP\/1\.1 500 [\s\S]*authorization failed\n$/);
    const started = Date.now();
    expect(await rawRequest(s.port, upgrade('silent'))).to.match(/^HTTP\/1\.1 503 [\s\S]*authorization timed out\n$/);
    expect(Date.now() - started).to.be.within(250, 2500);
    expect(failures.map((f) => [f.where, f.error.message])).to.deep.equal([
      ['authorize', 'the auth service is down'],
      ['authorize', 'authorize did not answer within 300 ms (authorizeTimeoutMs)'],
    ]);
    ann.ws.send('still here');
    expect(JSON.parse((await ann.receive(1))[0]!).mine.sub).to.equal('ann');
  });
});
