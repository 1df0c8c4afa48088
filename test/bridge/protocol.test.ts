import { expect } from 'chai';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { ProgressLog } from '../../bridge/progress-log.js';
import { FrameKind, FrameReader, FrameWriter } from '../../bridge/frames.js';
import { decodeWorkerMessage } from '../../bridge/protocol.js';

describe('host-worker protocol', () => {
  it('protocol: frames written in one batch come out whole and in order, however the byte stream is split', async () => {
    // A fixed seed: the same splits every run.
    let seed = 42;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 100; trial++) {
      // A quarter of them empty: an empty frame is all header.
      const frames = Array.from({ length: 1 + Math.floor(random() * 40) }, (_, i) => Buffer.alloc(random() < 0.25 ? 0 : Math.floor(random() * 9000), i % 251));
      const written: Buffer[] = [];
      const sink = new PassThrough();
      sink.on('data', (d: Buffer) => written.push(d));
      const writer = new FrameWriter(sink);
      frames.forEach((frame, i) => writer.text(FrameKind.TextIn, i, frame));
      writer.control({ t: 'ids', from: trial });
      writer.flush();
      await new Promise((resolve) => setImmediate(resolve));
      const stream = Buffer.concat(written);
      const got: [number, number, Buffer][] = [];
      const reader = new FrameReader((kind, id, payload) => got.push([kind, id, Buffer.from(payload)]));
      for (let at = 0; at < stream.length; ) {
        const n = 1 + Math.floor(random() * (random() < 0.5 ? 16 : 20_000));
        reader.push(stream.subarray(at, at + n));
        at += n;
      }
      expect(got.length, `trial ${trial}`).to.equal(frames.length + 1);
      frames.forEach((frame, i) => expect(got[i]).to.deep.equal([FrameKind.TextIn, i, frame]));
      expect(JSON.parse(got[frames.length]![2].toString())).to.deep.equal({ t: 'ids', from: trial });
    }
  });

  it('protocol: an empty frame whose header arrives in two reads is handed on, and the frames after it', () => {
    const got: [number, string][] = [];
    const reader = new FrameReader((_kind, id, payload) => got.push([id, payload.toString()]));
    // [kind][id: 6 bytes][length: 4 bytes]
    const empty = Buffer.from([FrameKind.TextIn, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const next = Buffer.concat([Buffer.from([FrameKind.TextIn, 8, 0, 0, 0, 0, 0, 2, 0, 0, 0]), Buffer.from('hi')]);
    reader.push(empty.subarray(0, 4));
    reader.push(Buffer.concat([empty.subarray(4), next.subarray(0, 3)]));
    reader.push(next.subarray(3));
    expect(got).to.deep.equal([
      [7, ''],
      [8, 'hi'],
    ]);
  });

  it('protocol: a frame over its byte limit is not written; a string is measured in UTF-8 bytes', async () => {
    const written: Buffer[] = [];
    const sink = new PassThrough();
    sink.on('data', (d: Buffer) => written.push(Buffer.from(d)));
    const writer = new FrameWriter(sink);
    expect(writer.text(FrameKind.TextOut, 1, 'ééé', 5)).to.equal(-1); // 6 bytes
    expect(writer.text(FrameKind.TextOut, 2, 'x'.repeat(7), 6)).to.equal(-1);
    expect(writer.text(FrameKind.TextOut, 3, 'ééé', 6)).to.equal(6);
    expect(writer.text(FrameKind.TextOut, 4, '😀')).to.equal(4);
    writer.flush();
    await new Promise((resolve) => setImmediate(resolve));
    const got: [number, string][] = [];
    new FrameReader((_kind, id, payload) => got.push([id, payload.toString('utf8')])).push(Buffer.concat(written));
    expect(got).to.deep.equal([
      [3, 'ééé'],
      [4, '😀'],
    ]);
  });

  it('protocol: batches written to a real socket whose reader stalls arrive intact (a written buffer is reused only once sent)', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const peer = await accepted;
    peer.pause();
    try {
      const writer = new FrameWriter(client);
      const frames: Buffer[] = [];
      let held = 0;
      // Turns of 512 KiB (buffers small enough to be kept for reuse), far
      // more in all than the kernel takes while nobody reads.
      for (let turn = 0; turn < 24; turn++) {
        for (let i = 0; i < 32; i++) {
          frames.push(Buffer.alloc(16 * 1024, frames.length % 251));
          writer.text(FrameKind.TextIn, frames.length - 1, frames.at(-1)!);
        }
        writer.flush();
        await new Promise((resolve) => setImmediate(resolve));
        held = Math.max(held, client.writableLength);
      }
      expect(held, 'the stream held batches the kernel had not taken').to.be.greaterThan(0);
      const got: Buffer[] = [];
      const reader = new FrameReader((_kind, id, payload) => {
        got[id] = Buffer.from(payload);
      });
      await new Promise<void>((resolve) => {
        peer.on('data', (d: Buffer) => {
          reader.push(d);
          if (got[frames.length - 1] !== undefined) resolve();
        });
        peer.resume();
      });
      frames.forEach((frame, i) => expect(got[i]?.equals(frame), `frame ${i}`).to.equal(true));
    } finally {
      client.destroy();
      peer.destroy();
      server.close();
    }
  });

  it('protocol: the progress log gives back the calls of the turn a worker died in, and nothing older', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'islet-progress-'));
    const fd = openSync(path.join(dir, 'log'), 'w+');
    try {
      const log = new ProgressLog(fd);
      log.startTurn();
      log.starting(1, 5, 'a');
      log.starting(2, 5, 'b');
      log.starting(3, 7, 'ünï');
      // Died in this turn (the host's last idle said 0 calls).
      expect(ProgressLog.read(fd, 0)).to.deep.equal([
        { calls: 1, seq: 5, tenant: 'a' },
        { calls: 2, seq: 5, tenant: 'b' },
        { calls: 3, seq: 7, tenant: 'ünï' },
      ]);
      // The turn ended (idle: 3 calls); the next one has made one call so far.
      log.startTurn();
      log.starting(4, 9, 'c');
      expect(ProgressLog.read(fd, 3)).to.deep.equal([{ calls: 4, seq: 9, tenant: 'c' }]);
      // That turn ended too: nothing was running.
      expect(ProgressLog.read(fd, 4)).to.deep.equal([]);
      // Steps outside calls are counted apart, and leave the records alone.
      expect(ProgressLog.steps(fd)).to.equal(0);
      log.step();
      log.step();
      expect(ProgressLog.steps(fd)).to.equal(2);
      expect(ProgressLog.read(fd, 3)).to.deep.equal([{ calls: 4, seq: 9, tenant: 'c' }]);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('protocol: a worker message is checked field by field; the only socket a worker may make is a client', () => {
    const client = { id: 7, kind: 'client', tenant: 'p', handler: 'p/h', uri: 'ws://127.0.0.1:1/', engine: 'javascript', state: 'connecting', endpoint: '', user: '', host: '' };
    const decode = (message: unknown) => decodeWorkerMessage(Buffer.from(JSON.stringify(message)));
    expect(decode({ t: 'connect', socket: client })).to.deep.equal({ t: 'connect', socket: client });
    expect(() => decode({ t: 'connect', socket: { ...client, kind: 'session', endpoint: 'e' } })).to.throw('worker message "connect": bad field "socket"');
    expect(() => decode({ t: 'connect', socket: { ...client, id: -1 } })).to.throw('bad field "socket"');
    // A client is this host's: a worker cannot place one on another host of the cluster.
    expect(() => decode({ t: 'connect', socket: { ...client, host: 'elsewhere' } })).to.throw('bad field "socket"');
    expect(() => decode({ t: 'publish', tenant: 'p', topic: 'lobby' })).to.throw('worker message "publish": bad field "text"');
    expect(() => decode({ t: 'log', tenant: 'p', level: 'shout', text: 'x' })).to.throw('worker message "log": bad field "level"');
    expect(() => decode({ t: 'toString' })).to.throw('unknown worker message type "toString"');
    expect(() => decode([1])).to.throw('unknown worker message type undefined');
  });
});
