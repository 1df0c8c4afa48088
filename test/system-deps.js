// What the tests need beyond npm: Debian's chromium (the browser tests),
// python3-websockets (an independent, non-Node client) and redis-server (the
// cluster tests, which start their own on a free loopback port). `npm test` runs this
// first. Missing packages are installed when that is possible (root with
// apt-get, as `playwright install --with-deps` would); otherwise it fails at
// once with one line naming the packages and the command that installs them,
// so that no test is skipped or fails for a reason it does not name.
import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

const NEEDS = [
  { pkg: 'chromium', present: () => executable('/usr/bin/chromium') },
  { pkg: 'redis-server', present: () => executable('/usr/bin/redis-server') },
  {
    pkg: 'python3-websockets',
    present: () => spawnSync('/usr/bin/python3', ['-c', 'import websockets'], { stdio: 'ignore' }).status === 0,
  },
];

function executable(file) {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

const missing = () => NEEDS.filter((need) => !need.present()).map((need) => need.pkg);

let packages = missing();
if (packages.length > 0) {
  const command = `apt-get update && apt-get install -y --no-install-recommends ${packages.join(' ')}`;
  const canInstall = process.getuid?.() === 0 && executable('/usr/bin/apt-get');
  if (!canInstall) {
    process.stderr.write(`islet tests need Debian's ${packages.join(' and ')}: install them with \`sudo ${command}\`, then run npm test again\n`);
    process.exit(1);
  }
  process.stderr.write(`islet tests: installing ${packages.join(', ')} (${command})\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    execFileSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { stdio: ['ignore', 'ignore', 'inherit'], env });
  } catch (error) {
    process.stderr.write(`islet tests: \`${command}\` failed (${error.message.split('\n')[0]})\n`);
    process.exit(1);
  }
  packages = missing();
  if (packages.length > 0) {
    process.stderr.write(`islet tests: ${packages.join(' and ')} still missing after \`${command}\`\n`);
    process.exit(1);
  }
}
