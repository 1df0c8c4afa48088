// The peers of the fan-out rows, each in a process of its own; prints its port once listening.
//   fanout-peers.js ws          a plain `ws` server: a message from /pub goes to every other client, one send each
//   fanout-peers.js socketio R  socket.io 4 with @socket.io/redis-adapter on Redis R: a "pub" event is emitted
//                               to room "room", which every other socket joins, on every process of the adapter
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import WebSocket, { WebSocketServer } from 'ws';

const [kind, redis] = process.argv.slice(2);
const server = http.createServer();

if (kind === 'ws') {
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  const subscribers = new Set<WebSocket>();
  wss.on('connection', (ws, req) => {
    if (req.url === '/pub') {
      ws.on('message', (data) => {
        for (const subscriber of subscribers) if (subscriber.readyState === WebSocket.OPEN) subscriber.send(data, { binary: false });
      });
      return;
    }
    subscribers.add(ws);
    ws.on('close', () => subscribers.delete(ws));
  });
} else if (kind === 'socketio' && redis !== undefined) {
  const pub = new Redis(redis);
  const sub = pub.duplicate();
  const io = new Server(server, { transports: ['websocket'], perMessageDeflate: false, serveClient: false });
  io.adapter(createAdapter(pub, sub));
  io.on('connection', (socket) => {
    if (socket.handshake.query.role === 'pub') socket.on('pub', (text: string) => void io.to('room').emit('m', text));
    else void socket.join('room');
  });
} else {
  process.stderr.write('usage: fanout-peers.js ws | socketio redis://HOST:PORT\n');
  process.exit(2);
}

server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
