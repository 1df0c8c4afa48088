import { expect } from 'chai';
import { PassThrough } from 'node:stream';
import { FrameKind, FrameReader, FrameWriter } from '../../bridge/protocol.js';

describe('host-worker protocol', () => {
  it('protocol: frames written in one batch come out whole and in order, however the byte stream is split', async () => {
    // A fixed seed: the same splits every run.
    let seed = 42;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 100; trial++) {
      const frames = Array.from({ length: 1 + Math.floor(random() * 40) }, (_, i) => Buffer.alloc(Math.floor(random() * 9000), i % 251));
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
});
