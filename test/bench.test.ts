import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO } from './helpers.js';

describe('bench', () => {
  it('bench: the benchmark runs in smoke mode and writes its table and chart', function () {
    this.timeout(120_000);
    const out = mkdtempSync(path.join(os.tmpdir(), 'islet-bench-smoke-'));
    const result = spawnSync(process.execPath, [path.join(REPO, 'dist/bench/run.js'), '--smoke', '--out', out], { encoding: 'utf8' });
    expect(result.status, result.stderr).to.equal(0);
    const results = readFileSync(path.join(out, 'RESULTS.md'), 'utf8');
    for (const figure of ['echo throughput, 64 B', 'echo throughput, 4 KiB', 'server CPU per message, 64 B', 'p99 latency, 4 KiB', 'peak RSS, 4 KiB',
      'p50 latency, 1 connection × 1 in flight', 'tenant cold start p50 (bundle cached)', 'tenant cold start p50 (empty bundle cache)', 'idle tenant', 'idle session', 'recovery', 'islet run']) {
      expect(results, figure).to.contain(`| ${figure}`);
    }
    // islet, plain ws and workerd side by side, with islet's ratio to each.
    expect(results).to.match(/\| echo throughput, 64 B \| [\d,]+ msg\/s \| [\d,]+ msg\/s \| [\d,]+ msg\/s \| [\d.]+× \| [\d.]+× \| ≥ 0\.85× \| (yes|\*\*no\*\*) \| (yes|\*\*no\*\*) \|/);
    expect(results).to.match(/\| idle session \(RSS over [\d,]+ sessions\) \| [\d.]+ KiB \| [\d.]+ KiB \| [\d.]+ KiB \|/);
    // The fan-out rows: islet against plain ws on one host, against socket.io with its Redis adapter across three.
    expect(results).to.match(/\| server CPU per delivery, 1 host \(peer: plain ws, a loop over its clients\) \| [\d.,]+ µs \| [\d.,]+ µs \| ([\d.]+×|n\/a) \| ≤ 1× \| (yes|\*\*no\*\*|) \|/);
    for (const figure of ['last delivery p50, 3 hosts', 'last delivery p99, 3 hosts', 'server CPU per delivery, 3 hosts']) {
      expect(results).to.match(new RegExp(`\\| ${figure} \\(peer: socket\\.io 4 \\+ @socket\\.io/redis-adapter\\) \\| [\\d.,]+ µs \\| [\\d.,]+ µs \\| ([\\d.]+×|n/a) \\| < 1× \\| (yes|\\*\\*no\\*\\*|) \\|`));
    }
    expect(readFileSync(path.join(out, 'chart.svg'), 'utf8')).to.match(/^<svg [^>]+>[\s\S]*Echo throughput[\s\S]*>workerd<[\s\S]*<\/svg>\n$/);
  });
});
