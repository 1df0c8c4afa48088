// `npm start`: the seed page end to end. Serves this folder with `islet serve`
// on 127.0.0.1:8080 (the page's my-endpoint, an echo endpoint, and a chat
// room with its page), then runs the page's client script with `islet run`
// against my-endpoint. Both ends use the page's handler, so the lines of the
// client (islet run) and of the server session (islet serve) interleave.
// Ctrl-C stops the server.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const examples = fileURLToPath(new URL('.', import.meta.url));
const islet = fileURLToPath(new URL('../bin/islet.js', import.meta.url));

const server = spawn(process.execPath, [islet, 'serve', examples, '--port', '8080'], { stdio: ['ignore', 'pipe', 'inherit'] });
let clientStarted = false;
server.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  if (clientStarted || !String(chunk).includes('listening on')) return;
  clientStarted = true;
  console.log('\nexamples$ islet run my-project/client.js');
  const client = spawn(process.execPath, [islet, 'run', 'my-project/client.js'], { cwd: examples, stdio: 'inherit' });
  client.on('exit', (code) => {
    console.log(`(the client script exited with ${code})\n`);
    console.log('Chat page: http://127.0.0.1:8080/services/web/chat/index.html  (open it in two tabs; Ctrl-C stops)');
  });
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.kill(signal));
server.on('exit', (code) => process.exit(code ?? 0));
