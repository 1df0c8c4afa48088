// `npm start`: the seed page's example end to end. A local echo endpoint on
// 127.0.0.1:8080, then `islet run my-project/client.js` in this folder (the
// projects root), whose handler prints what happens on the connection.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const examples = fileURLToPath(new URL('.', import.meta.url));
const islet = fileURLToPath(new URL('../bin/islet.js', import.meta.url));
const path = '/websockets/v4/service/echo';

const echo = new WebSocketServer({ host: '127.0.0.1', port: 8080, path });
echo.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
echo.on('error', (error) => {
  console.error(`cannot serve the echo endpoint on 127.0.0.1:8080: ${error.message}`);
  process.exit(1);
});
echo.on('listening', () => {
  console.log(`echo endpoint: ws://127.0.0.1:8080${path}`);
  console.log('examples$ islet run my-project/client.js');
  const run = spawn(process.execPath, [islet, 'run', 'my-project/client.js'], { cwd: examples, stdio: 'inherit' });
  run.on('exit', (code) => echo.close(() => process.exit(code ?? 1)));
});
