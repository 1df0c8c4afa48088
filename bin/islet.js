#!/usr/bin/env node
// The islet command; the code is TypeScript, built into dist/ by `npm install`.
// islet runs on Node.js 24 or newer (isolated-vm 7's native module is built
// for it, and older Nodes' V8 gets no security fixes). On an older Node this
// file, which only uses what every Node has, hands over to the checkout's own
// Node (the `node` devDependency) or refuses with a clear message, instead of
// crashing on the native module.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const REQUIRED_MAJOR = 24;
const major = Number(process.versions.node.split('.')[0]);

if (major >= REQUIRED_MAJOR) {
  await import('../dist/engine/cli.js');
} else {
  const local = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(local)) {
    process.stderr.write(
      `islet: needs Node.js ${REQUIRED_MAJOR} or newer, and this is ${process.version}; install a current Node.js (or run npm install in islet's checkout, which brings one)\n`,
    );
    process.exit(1);
  }
  const child = spawn(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  // Ctrl-C reaches the whole process group already; a signal sent to this process alone is passed on.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    if (signal === null) process.exit(code ?? 1);
    // End as the child did: by the same signal, with our own listener out of the way.
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  });
}
