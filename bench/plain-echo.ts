// The baseline: a plain `ws` echo server, what a hand-rolled host would run.
// Prints its port once listening.
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 1024 * 1024 });
server.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
server.on('listening', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
