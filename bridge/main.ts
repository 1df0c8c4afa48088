// A sandbox worker process: the one file with side effects. It opens the
// frame channel to the host (fd 3) and the progress log (fd 4), and hands
// every chunk it reads to the Worker.
import net from 'node:net';
import { PROGRESS_FD, ProgressLog } from './progress-log.js';
import { FrameWriter } from './frames.js';
import { Worker } from './worker.js';

const channel = new net.Socket({ fd: 3, readable: true, writable: true });
const worker = new Worker(new FrameWriter(channel), new ProgressLog(PROGRESS_FD));
channel.on('data', (chunk: Buffer) => worker.read(chunk));
// The host is gone: nothing left to serve.
channel.on('close', () => process.exit(0));
channel.on('error', () => process.exit(0));
