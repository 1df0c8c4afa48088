// Hazard: server code fetched as a page. Everything a handler imports, and a
// client handler once islet has loaded it, is server code: refused at
// /services/web/... like the handler itself, whatever the file's type.
// The page's own files are served; a hard link to another project's file is not.
import { expect } from 'chai';
import { linkSync } from 'node:fs';
import path from 'node:path';
import { makeRoot, serveRoot } from '../helpers.js';

describe('hazard: server code as a page', () => {
  it('pages: a handler\'s imports and a used client handler are refused; the page and its browser script are served', async () => {
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/server/h', endpoint: 'e' }),
      'p/server/h.js': 'const { key } = require("./config.json");\nconst logic = require("../lib/logic.js");\nexports.onMessage = (m) => logic(m, key);',
      'p/server/config.json': '{ "key": "SERVER-SECRET" }',
      'p/lib/logic.js': 'module.exports = (m, key) => m + key.length;',
      'p/client/ch.js': 'exports.onOpen = () => console.log("client handler SECRET");',
      'p/script.js': 'require("net/v4/websockets").createWebsocket("ws://127.0.0.1:9/", "p/client/ch");',
      'p/index.html': '<script src="app.js"></script>',
      'p/app.js': 'console.log("browser code");',
    });
    const s = await serveRoot(root, { outbound: { allowPrivate: true } });
    const get = async (file: string): Promise<[number, string]> => {
      const response = await fetch(`http://127.0.0.1:${s.port}/services/web/p/${file}`);
      return [response.status, await response.text()];
    };
    expect(await get('index.html')).to.deep.equal([200, '<script src="app.js"></script>']);
    expect(await get('app.js')).to.deep.equal([200, 'console.log("browser code");']);
    for (const file of ['server/h.js', 'server/config.json', 'lib/logic.js', 'e.websocket']) {
      expect(await get(file), file).to.deep.equal([403, 'descriptors and handler sources are not served\n']);
    }
    await s.engine.run('p/script.js');
    expect(await get('client/ch.js')).to.deep.equal([403, 'descriptors and handler sources are not served\n']);
    expect(await get('script.js')).to.deep.equal([403, 'descriptors and handler sources are not served\n']);
  });

  it('pages: a hard link in one project to another project\'s handler is not served', async () => {
    const root = makeRoot({
      'victim/e.websocket': JSON.stringify({ handler: 'victim/h', endpoint: 'e' }),
      'victim/h.js': 'exports.onMessage = () => "VICTIM-HANDLER-SOURCE";',
      'a/index.html': '<p>a</p>',
    });
    linkSync(path.join(root, 'victim/h.js'), path.join(root, 'a/vecho.html'));
    const s = await serveRoot(root);
    const get = async (file: string): Promise<[number, string]> => {
      const response = await fetch(`http://127.0.0.1:${s.port}/services/web/${file}`);
      return [response.status, await response.text()];
    };
    expect(await get('a/index.html')).to.deep.equal([200, '<p>a</p>']);
    expect(await get('a/vecho.html')).to.deep.equal([404, 'not found\n']);
  });
});
