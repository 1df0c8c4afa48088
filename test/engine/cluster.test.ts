import { expect } from 'chai';
import { Engine } from '../../engine/index.js';
import { freePort, type IsletHost, type RedisServer, startHost, startRedis } from '../cluster-helpers.js';
import { connect, heard, makeRoot, type TestClient } from '../helpers.js';

// One handler for two tenants ("chat" and "other"): each session is told what
// to do in its messages, and answers what it saw.
const HANDLER = `import websockets from 'net/v4/websockets';
let held = null;
export function onOpen(sessionId) {
  websockets.getSession(sessionId).send('id ' + sessionId);
}
export function onMessage(message, sessionId) {
  const [command, a, ...rest] = message.split(' ');
  try {
    switch (command) {
      case 'list':
        return 'sessions ' + JSON.stringify(websockets.getSessions().map((s) => s.host + '/' + s.id + '/' + s.state).sort());
      case 'sub':
        websockets.subscribe(a, rest[0]);
        return 'subscribed';
      case 'unsub':
        websockets.unsubscribe(a, rest[0]);
        return 'unsubscribed';
      case 'pub':
        websockets.publish(a, rest.join(' '));
        return 'published';
      case 'to': {
        const session = websockets.getSession(a);
        if (session === null) return 'no session ' + a;
        for (const text of rest) session.send(text);
        return 'sent ' + session.host;
      }
      case 'close':
        websockets.getSession(a).close(4000, 'bye');
        return 'closed';
      case 'hold':
        held = websockets.getSession(a);
        return 'sent ' + held.host;
      case 'sub-pub':
        websockets.subscribe(a, rest[0]);
        websockets.publish(rest[0], rest[1]);
        return 'published';
      case 'to-held':
        held.send(a);
        return 'sent ' + held.host;
    }
  } catch (error) {
    return 'error ' + error.message;
  }
}
`;

const ROOT_FILES = {
  'chat/room.websocket': JSON.stringify({ handler: 'chat/room.js', endpoint: 'room', description: 'a room across hosts' }),
  'chat/room.js': HANDLER,
  'other/room.websocket': JSON.stringify({ handler: 'other/room.js', endpoint: 'other-room', description: 'another tenant' }),
  'other/room.js': HANDLER,
};

/** How long a killed host may stay in the others' listings (its heartbeat key's life and one check). */
const DEAD_AFTER_MS = 2000;

interface Session {
  client: TestClient;
  id: string;
}

async function open(host: IsletHost, endpoint = 'room'): Promise<Session> {
  const client = await connect(host.url(endpoint));
  const [first] = await client.receive(1);
  return { client, id: first!.slice('id '.length) };
}

/** Sends a command and resolves with the next message that starts with `answer` (topic and direct messages may come in between). */
async function ask(session: Session, command: string, answer: RegExp = /^(sessions|subscribed|unsubscribed|published|sent|no session|closed|error) ?/): Promise<string> {
  const seen = session.client.messages.length;
  session.client.ws.send(command);
  for (let count = seen + 1; ; count++) {
    const got = await session.client.receive(count);
    if (answer.test(got[count - 1]!)) return got[count - 1]!;
  }
}

async function sessionsSeen(session: Session): Promise<string[]> {
  return JSON.parse((await ask(session, 'list')).slice('sessions '.length)) as string[];
}

/** Asks until `check` holds of what `session` lists, or `timeoutMs` passes; returns the listing and how long it took. */
async function listUntil(session: Session, check: (listed: string[]) => boolean, timeoutMs = 10_000): Promise<{ listed: string[]; ms: number }> {
  const began = Date.now();
  for (;;) {
    const listed = await sessionsSeen(session);
    if (check(listed)) return { listed, ms: Date.now() - began };
    if (Date.now() - began > timeoutMs) throw new Error(`not seen within ${timeoutMs} ms; listed: ${JSON.stringify(listed)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const entry = (host: IsletHost, s: Session): string => `${host.name}/${s.id}/open`;

describe('cluster: three hosts through a real Redis', function () {
  this.timeout(120_000);
  let redis: RedisServer;
  let hosts: IsletHost[] = [];
  let a: IsletHost;
  let b: IsletHost;
  let c: IsletHost;
  const root = makeRoot(ROOT_FILES);

  beforeEach(async () => {
    redis = await startRedis();
    hosts = await Promise.all(['host-a', 'host-b', 'host-c'].map((name) => startHost(root, redis.url, name, ['--dead-after-ms', String(DEAD_AFTER_MS)])));
    [a, b, c] = hosts as [IsletHost, IsletHost, IsletHost];
  });

  afterEach(async () => {
    await Promise.all(hosts.map((host) => host.kill('SIGKILL')));
    await redis.kill();
  });

  it('cluster: a session on host A lists the sessions on B and C, each with its host; ids are unique across hosts', async () => {
    const [sa, sb, sc] = await Promise.all([open(a), open(b), open(c)]);
    expect(new Set([sa.id, sb.id, sc.id]).size).to.equal(3);
    const { listed } = await listUntil(sa, (l) => l.length === 3);
    expect(listed).to.deep.equal([entry(a, sa), entry(b, sb), entry(c, sc)].sort());
    // Host B sees the same, and a session that closes leaves every listing.
    await listUntil(sb, (l) => l.length === 3);
    sc.client.ws.close();
    await listUntil(sa, (l) => l.length === 2 && !l.includes(entry(c, sc)));
    await listUntil(sb, (l) => l.length === 2);
  });

  it('cluster: sessions that open and close at once on one host leave no ghosts in the other hosts\' listings', async () => {
    const [sa, sb] = await Promise.all([open(a), open(b)]);
    await listUntil(sa, (l) => l.length === 2);
    // A peer that opens and drops sessions as fast as it can: each one's add and remove reach A together.
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        const client = await connect(b.url('room'));
        client.ws.terminate();
      }),
    );
    // B's presence is written once a turn: after one more change (a session) from B, A has heard them all.
    const last = await open(b);
    const { listed } = await listUntil(sa, (l) => l.includes(entry(b, last)));
    expect(listed).to.deep.equal([entry(a, sa), entry(b, sb), entry(b, last)].sort());
  });

  it('cluster: a publish from host B reaches the subscribers on all three hosts once each; an unsubscribed or closed session gets no more', async () => {
    const sessions = await Promise.all([open(a), open(a), open(b), open(c)]);
    const [sa1, sa2, sb, sc] = sessions as [Session, Session, Session, Session];
    // Each subscribes itself, on its own host; sb also subscribes sc, which lives on C, from B.
    for (const s of [sa1, sa2, sb]) expect(await ask(s, `sub ${s.id} lobby`)).to.equal('subscribed');
    await listUntil(sb, (l) => l.length === 4);
    expect(await ask(sb, `sub ${sc.id} lobby`)).to.equal('subscribed');
    // A topic is followed on Redis once someone on that host subscribes: published until each has heard one.
    let round = 0;
    for (;;) {
      round++;
      expect(await ask(sb, `pub lobby hello-${round}`)).to.equal('published');
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (sessions.every((s) => s.client.messages.some((m) => m.startsWith('hello-')))) break;
      if (round === 25) throw new Error(`not every subscriber heard: ${JSON.stringify(sessions.map((s) => s.client.messages))}`);
    }
    // From the round every host followed the topic, each subscriber hears every message once.
    const last = `hello-${round}`;
    for (const s of sessions) await heard(s.client, last);
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const s of sessions) {
      const hellos = s.client.messages.filter((m) => m.startsWith('hello-'));
      expect(new Set(hellos).size, `a repeat in ${JSON.stringify(hellos)}`).to.equal(hellos.length);
      expect(hellos).to.include(last);
    }
    // Unsubscribed (sa2, from its host) and closed (sc) sessions are out of the topic.
    expect(await ask(sa2, `unsub ${sa2.id} lobby`)).to.equal('unsubscribed');
    sc.client.ws.close();
    await listUntil(sa1, (l) => l.length === 3);
    expect(await ask(sa1, 'pub lobby after')).to.equal('published');
    await heard(sb.client, 'after');
    await heard(sa1.client, 'after');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(sa1.client.messages.filter((m) => m === 'after')).to.have.length(1);
    expect(sa2.client.messages).to.not.include('after');
  });

  it('cluster: metrics say the hosts seen, that Redis is connected, and the messages over it each way', async () => {
    const [sa, sb] = await Promise.all([open(a), open(b)]);
    await listUntil(sa, (l) => l.length === 2);
    await listUntil(sb, (l) => l.length === 2);
    expect(await ask(sa, `to ${sb.id} over-redis`)).to.equal(`sent ${b.name}`);
    await heard(sb.client, 'over-redis');
    const [ma, mb] = await Promise.all([a.metrics(), b.metrics()]);
    expect(ma).to.match(/^islet_cluster_hosts 3$/m);
    expect(ma).to.match(/^islet_cluster_redis_connected 1$/m);
    const count = (text: string, direction: string): number => Number(new RegExp(`^islet_cluster_messages_total\\{direction="${direction}"\\} (\\d+)$`, 'm').exec(text)![1]);
    expect(count(ma, 'out')).to.be.at.least(1);
    expect(count(mb, 'in')).to.be.at.least(2); // A's session, and the send
  });

  it('cluster: a session on another host subscribed and published to in one call hears that first message', async () => {
    const [sa, sc] = await Promise.all([open(a), open(c)]);
    await listUntil(sa, (l) => l.length === 2);
    // Before, host C followed a topic only once its subscriber joined: the publish right behind the order was gone by then.
    for (let i = 0; i < 5; i++) expect(await ask(sa, `sub-pub ${sc.id} topic-${i} first-${i}`)).to.equal('published');
    for (let i = 0; i < 5; i++) await heard(sc.client, `first-${i}`);
  });

  it('cluster: a host whose writes Redis refused for a while (out of memory) writes its sessions again; the listings come right', async () => {
    const [sa, sb, gone] = await Promise.all([open(a), open(b), open(b)]);
    await listUntil(sa, (l) => l.length === 3);
    await redis.command('CONFIG', 'SET', 'maxmemory', '1');
    const [added] = await Promise.all([open(b), new Promise((resolve) => setTimeout(resolve, 100))]);
    gone.client.ws.close();
    await gone.client.closed;
    await new Promise((resolve) => setTimeout(resolve, 500));
    await redis.command('CONFIG', 'SET', 'maxmemory', '0');
    const { listed } = await listUntil(sa, (l) => l.includes(entry(b, added)) && !l.includes(entry(b, gone)));
    expect(listed).to.deep.equal([entry(a, sa), entry(b, sb), entry(b, added)].sort());
  });

  it('cluster: a Redis that stops answering (SIGSTOP) is lost within the bound; each host serves alone, then rejoins on SIGCONT', async () => {
    const [sa, sc] = await Promise.all([open(a), open(c)]);
    await listUntil(sa, (l) => l.length === 2);
    expect(await ask(sa, `hold ${sc.id}`)).to.equal(`sent ${c.name}`);
    redis.signal('SIGSTOP');
    try {
      await listUntil(sa, (l) => l.length === 1, DEAD_AFTER_MS * 5);
      expect(await ask(sa, 'to-held lost')).to.match(/^error ISLET_ERR_CLUSTER: session \d+ is on host host-c, out of reach/);
      expect(await a.metrics()).to.match(/^islet_cluster_redis_connected 0$/m);
    } finally {
      redis.signal('SIGCONT');
    }
    await listUntil(sa, (l) => l.length === 2, 20_000);
    expect(await ask(sa, 'to-held back')).to.equal(`sent ${c.name}`);
    await heard(sc.client, 'back');
  });

  it('cluster: a tenant whose sessions are all on one host publishes without Redis', async () => {
    const [otherB, chatA] = await Promise.all([open(b, 'other-room'), open(a)]);
    await listUntil(chatA, (l) => l.length === 1);
    expect(await ask(otherB, `sub ${otherB.id} lobby`)).to.equal('subscribed');
    const out = async (): Promise<number> => Number(/^islet_cluster_messages_total\{direction="out"\} (\d+)$/m.exec(await b.metrics())![1]);
    const before = await out();
    for (let i = 0; i < 5; i++) expect(await ask(otherB, `pub lobby alone-${i}`)).to.equal('published');
    await heard(otherB.client, 'alone-4');
    expect(await out()).to.equal(before);
  });

  it('cluster: a direct send from host A reaches a session on host C, in order; close from A closes it', async () => {
    const [sa, sc] = await Promise.all([open(a), open(c)]);
    await listUntil(sa, (l) => l.length === 2);
    const texts = Array.from({ length: 50 }, (_, i) => `m${i}`);
    expect(await ask(sa, `to ${sc.id} ${texts.join(' ')}`)).to.equal(`sent ${c.name}`);
    const got = await sc.client.receive(1 + texts.length);
    expect(got.slice(1)).to.deep.equal(texts);
    expect(await ask(sa, `close ${sc.id}`)).to.equal('closed');
    expect(await sc.client.closed).to.deep.equal([4000, 'bye']);
  });

  it('cluster: two tenants use the same topic name and the same session ids across hosts without crosstalk', async () => {
    const [chatA, chatC, otherB] = await Promise.all([open(a), open(c), open(b, 'other-room')]);
    await listUntil(chatA, (l) => l.length === 2);
    await listUntil(otherB, (l) => l.length === 1);
    for (const s of [chatA, chatC, otherB]) expect(await ask(s, `sub ${s.id} lobby`)).to.equal('subscribed');
    // The other tenant sees none of chat's sessions, whatever id it tries, and cannot reach or subscribe them.
    expect(await sessionsSeen(otherB)).to.deep.equal([entry(b, otherB)]);
    expect(await ask(otherB, `to ${chatC.id} intruding`)).to.equal(`no session ${chatC.id}`);
    expect(await ask(otherB, `sub ${chatC.id} lobby`)).to.match(/^error ISLET_ERR_BAD_ARGUMENT: subscribe\(sessionId, topic\): no session/);
    let round = 0;
    for (;;) {
      round++;
      await ask(chatA, `pub lobby chat-${round}`);
      await ask(otherB, `pub lobby other-${round}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (chatC.client.messages.some((m) => m.startsWith('chat-')) && otherB.client.messages.some((m) => m.startsWith('other-'))) break;
      if (round === 25) throw new Error('the publishes did not arrive');
    }
    for (const s of [chatA, chatC]) expect(s.client.messages.filter((m) => m.startsWith('other-') || m === 'intruding')).to.deep.equal([]);
    expect(otherB.client.messages.filter((m) => m.startsWith('chat-'))).to.deep.equal([]);
  });

  it('cluster: a SIGKILLed host leaves the other hosts\' listings within deadAfterMs, and the rest carry on', async () => {
    const [sa, sb, sc] = await Promise.all([open(a), open(b), open(c)]);
    await listUntil(sa, (l) => l.length === 3);
    await c.kill('SIGKILL');
    const { listed, ms } = await listUntil(sa, (l) => l.length === 2, DEAD_AFTER_MS * 5);
    expect(listed).to.deep.equal([entry(a, sa), entry(b, sb)].sort());
    // Within the bound, with one poll of the listing's granularity.
    expect(ms).to.be.below(DEAD_AFTER_MS + 1000);
    await listUntil(sb, (l) => l.length === 2);
    expect(await ask(sa, `to ${sb.id} still-here`)).to.equal(`sent ${b.name}`);
    await heard(sb.client, 'still-here');
    expect(await ask(sa, `to ${sc.id} gone`)).to.equal(`no session ${sc.id}`);
  });

  it('cluster: a host killed and started again at once under its name waits for its old heartbeat key, then joins; its old sessions are gone', async () => {
    const [sa, sc] = await Promise.all([open(a), open(c)]);
    await listUntil(sa, (l) => l.length === 2);
    await c.kill('SIGKILL');
    const again = await startHost(root, redis.url, c.name, ['--dead-after-ms', String(DEAD_AFTER_MS)]);
    hosts.push(again);
    const sc2 = await open(again);
    const { listed } = await listUntil(sa, (l) => l.includes(entry(again, sc2)) && !l.includes(entry(c, sc)));
    expect(listed).to.deep.equal([entry(a, sa), entry(again, sc2)].sort());
  });

  it('cluster: with Redis killed each host serves its own sessions and cross-host calls fail with ISLET_ERR_CLUSTER; when Redis is back they rejoin by themselves', async () => {
    const [sa1, sa2, sc] = await Promise.all([open(a), open(a), open(c)]);
    expect(await ask(sa2, `sub ${sa2.id} lobby`)).to.equal('subscribed');
    await listUntil(sa1, (l) => l.length === 3);
    expect(await a.metrics()).to.match(/^islet_cluster_redis_connected 1$/m);
    expect(await ask(sa1, `hold ${sc.id}`)).to.equal(`sent ${c.name}`);
    await redis.kill();
    // Local delivery goes on: a publish reaches this host's subscriber, then says what it could not do.
    const published = await listUntilAnswer(sa1, 'pub lobby local-only', /^error ISLET_ERR_CLUSTER/);
    expect(published).to.match(/reached the subscribers on this host only/);
    await heard(sa2.client, 'local-only');
    // The session on C is out of this host's reach; local sends still work.
    expect(await ask(sa1, `to ${sc.id} across`)).to.equal(`no session ${sc.id}`);
    expect(await ask(sa1, 'to-held across')).to.equal(`error ISLET_ERR_CLUSTER: session ${sc.id} is on host ${c.name}, out of reach while this host has lost Redis`);
    expect(await sessionsSeen(sa1)).to.deep.equal([entry(a, sa1), entry(a, sa2)].sort());
    expect(await ask(sa1, `to ${sa2.id} local`)).to.equal(`sent ${a.name}`);
    expect(await a.metrics()).to.match(/^islet_cluster_redis_connected 0$/m);
    expect(await a.metrics()).to.match(/^islet_cluster_hosts 1$/m);
    expect(a.output()).to.include(`islet: cluster: lost Redis at ${redis.url}; serving this host's sessions only until it is back`);
    await redis.restart();
    await listUntil(sa1, (l) => l.length === 3, 20_000);
    expect(await a.metrics()).to.match(/^islet_cluster_redis_connected 1$/m);
    expect(await ask(sa1, `to ${sc.id} across-again`)).to.equal(`sent ${c.name}`);
    await heard(sc.client, 'across-again');
    expect(sc.client.messages).to.not.include('across');
  });
});

describe('cluster: options and start', () => {
  it('cluster: a bad Redis URL, host name or deadAfterMs is ISLET_ERR_BAD_OPTION; an unreachable Redis fails start() with ISLET_ERR_CLUSTER', async () => {
    const root = makeRoot({});
    expect(() => new Engine({ root, cluster: { redis: 'http://127.0.0.1:6379' } })).to.throw('ISLET_ERR_BAD_OPTION: cluster.redis must be a Redis URL like redis://127.0.0.1:6379, got "http://127.0.0.1:6379"');
    expect(() => new Engine({ root, cluster: { redis: 'redis://127.0.0.1:6379', name: 'a b' } })).to.throw('ISLET_ERR_BAD_OPTION: cluster.name must be 1 to 200 printable characters with no space, got "a b"');
    expect(() => new Engine({ root, cluster: { redis: 'redis://127.0.0.1:6379', deadAfterMs: 10 } })).to.throw('ISLET_ERR_BAD_OPTION: cluster.deadAfterMs must be an integer from 500 to 3600000, got 10');
    const port = await freePort();
    const engine = new Engine({ root, cluster: { redis: `redis://127.0.0.1:${port}` } });
    let message = '';
    await engine.start().catch((error: Error) => (message = error.message));
    expect(message).to.equal(`ISLET_ERR_CLUSTER: cannot reach Redis at redis://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`);
    await engine.close();
  });
});

/** Sends `command` until the answer matches `answer` (the host notices a lost Redis within a moment, not at once). */
async function listUntilAnswer(session: Session, command: string, answer: RegExp, timeoutMs = 10_000): Promise<string> {
  const began = Date.now();
  for (;;) {
    const got = await ask(session, command);
    if (answer.test(got)) return got;
    if (Date.now() - began > timeoutMs) throw new Error(`"${command}" answered ${got}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
