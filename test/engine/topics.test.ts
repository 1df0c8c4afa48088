import { expect } from 'chai';
import { connect, heard, makeRoot, serveRoot, type TestClient, VICTIM } from '../helpers.js';

// A session says what to do: "sub TOPIC", "unsub TOPIC", "pub TOPIC TEXT", or
// "subid ID TOPIC" (subscribe another session by id).
const HANDLER = `import websockets from 'net/v4/websockets';
export function onMessage(message, sessionId) {
  const [command, a, ...rest] = message.split(' ');
  try {
    if (command === 'sub') websockets.subscribe(sessionId, a);
    else if (command === 'unsub') websockets.unsubscribe(sessionId, a);
    else if (command === 'subid') websockets.subscribe(a, rest[0]);
    else if (command === 'pub') websockets.publish(a, rest.join(' '));
    else if (command === 'id') return 'id ' + sessionId;
    else if (command === 'many') for (let i = 0; i < Number(a); i++) websockets.subscribe(sessionId, 't' + i);
    else if (command === 'bad') {
      const tries = [() => websockets.subscribe(sessionId, ''), () => websockets.subscribe(sessionId, 'x'.repeat(257)), () => websockets.subscribe('999', 't'), () => websockets.publish('t', 42), () => websockets.publish({}, 'x')];
      return tries.map((t) => { try { t(); return 'no error'; } catch (e) { return e.message; } }).join('\\n');
    }
    return 'ok ' + command;
  } catch (error) {
    return 'error ' + error.message;
  }
}
export function onError(error) {
  const sessions = websockets.getSessions();
  if (sessions.length > 0) websockets.getSession(websockets.getSessionId()).send('onError ' + error);
}
`;

const FILES = {
  'chat/room.websocket': JSON.stringify({ handler: 'chat/room.js', endpoint: 'room' }),
  'chat/room.js': HANDLER,
  'other/room.websocket': JSON.stringify({ handler: 'other/room.js', endpoint: 'other-room' }),
  'other/room.js': HANDLER,
  ...VICTIM,
};

async function ask(client: TestClient, text: string): Promise<string> {
  const seen = client.messages.length;
  client.ws.send(text);
  for (let n = seen + 1; ; n++) {
    const got = (await client.receive(n))[n - 1]!;
    if (/^(ok|error|id) /.test(got) || got.includes('\n')) return got;
  }
}

describe('topics', () => {
  it('topics: a publish reaches every subscriber on the host once, framed once for all; unsubscribed and closed sessions leave', async () => {
    const s = await serveRoot(makeRoot(FILES));
    const clients = await Promise.all(Array.from({ length: 20 }, () => connect(s.url('room'))));
    for (const c of clients) expect(await ask(c, 'sub lobby')).to.equal('ok sub');
    // Big enough for a 16-bit length in its frame header: each peer's ws parses the shared frame.
    const big = 'b'.repeat(70_000);
    expect(await ask(clients[0]!, `pub lobby ${big}`)).to.equal('ok pub');
    expect(await ask(clients[1]!, 'pub lobby hello')).to.equal('ok pub');
    for (const c of clients) {
      await heard(c, 'hello');
      expect(c.messages.filter((m) => m === big || m === 'hello')).to.deep.equal([big, 'hello']);
    }
    expect(await ask(clients[2]!, 'unsub lobby')).to.equal('ok unsub');
    clients[3]!.ws.close();
    await clients[3]!.closed;
    expect(await ask(clients[0]!, 'pub lobby again')).to.equal('ok pub');
    await heard(clients[1]!, 'again');
    expect(clients[1]!.messages.filter((m) => m === 'again')).to.have.length(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(clients[2]!.messages).to.not.include('again');
  });

  it('topics: tenants do not share topics; a tenant cannot subscribe another tenant\'s session by id', async () => {
    const s = await serveRoot(makeRoot(FILES));
    const [chat, other] = await Promise.all([connect(s.url('room')), connect(s.url('other-room'))]);
    const chatId = (await ask(chat, 'id')).slice(3);
    expect(await ask(chat, 'sub lobby')).to.equal('ok sub');
    expect(await ask(other, 'sub lobby')).to.equal('ok sub');
    expect(await ask(other, `subid ${chatId} secret`)).to.match(/^error ISLET_ERR_BAD_ARGUMENT: subscribe\(sessionId, topic\): no session/);
    expect(await ask(other, 'pub lobby from-other')).to.equal('ok pub');
    expect(await ask(chat, 'pub lobby from-chat')).to.equal('ok pub');
    await heard(other, 'from-other');
    await heard(chat, 'from-chat');
    // Each publish went out before its answer: had one crossed tenants, it would be here by now.
    expect(other.messages.filter((m) => m.startsWith('from-'))).to.deep.equal(['from-other']);
    expect(chat.messages.filter((m) => m.startsWith('from-'))).to.deep.equal(['from-chat']);
  });

  it('topics: bad arguments throw ISLET_ERR_BAD_ARGUMENT naming the call; past maxTopics onError hears ISLET_ERR_LIMIT_TOPICS; the victim echoes', async () => {
    const s = await serveRoot(makeRoot(FILES), { limits: { maxTopics: 3 } });
    const chat = await connect(s.url('room'));
    const victim = await connect(s.url('victim'));
    expect((await ask(chat, 'bad')).split('\n')).to.deep.equal([
      'ISLET_ERR_BAD_ARGUMENT: subscribe(sessionId, topic) takes a topic name, a string that is not empty',
      'ISLET_ERR_BAD_ARGUMENT: subscribe(sessionId, topic): topic name is over 256 bytes',
      'ISLET_ERR_BAD_ARGUMENT: subscribe(sessionId, topic): no session "999" of this tenant is open',
      'ISLET_ERR_NOT_TEXT: publish(topic, message) takes a string, got number',
      'ISLET_ERR_BAD_ARGUMENT: publish(topic, message) takes a topic name, a string that is not empty',
    ]);
    expect(await ask(chat, 'many 5')).to.equal('ok many');
    const [warning] = (await chat.receive(3)).slice(2);
    expect(warning).to.equal('onError ISLET_ERR_LIMIT_TOPICS: session ' + (await ask(chat, 'id')).slice(3) + ' is already subscribed to 3 topics (limit maxTopics); it did not join "t3"');
    expect(await ask(chat, 'pub t4 in-t4')).to.equal('ok pub');
    expect(await ask(chat, 'pub t2 in-t2')).to.equal('ok pub');
    await heard(chat, 'in-t2');
    expect(chat.messages).to.not.include('in-t4');
    victim.ws.send('still there');
    expect(await victim.receive(1)).to.deep.equal(['victim still there']);
  });
});
