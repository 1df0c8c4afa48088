// Hazard: a tenant reaching files outside its project through what it
// imports. Every spelling esbuild understands is tried (computed paths,
// import attributes, links), while a victim tenant keeps echoing; no secret
// of another project or from outside the root may reach the attacker, and
// each attempt gets ISLET_ERR_IMPORT_REFUSED naming the import and the file.
import { expect } from 'chai';
import { linkSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, makeRoot, serveRoot, settle, VICTIM, writeFiles } from '../helpers.js';

const OUTSIDE_SECRET = 'OUTSIDE-THE-ROOT-SECRET';
const VICTIM_SECRET = 'VICTIM-PROJECT-SECRET';

/** A root with a victim project (an echo endpoint and a secret) and, beside the root, a folder with a secret. */
function hostileRoot(): { root: string; outside: string } {
  const outside = mkdtempSync(path.join(os.tmpdir(), 'islet-outside-'));
  mkdirSync(path.join(outside, 'deep'));
  writeFileSync(path.join(outside, 'secret.json'), JSON.stringify({ s: OUTSIDE_SECRET }));
  writeFileSync(path.join(outside, 'deep', 'more.json'), JSON.stringify({ s: OUTSIDE_SECRET }));
  writeFileSync(path.join(outside, 'secret.txt'), OUTSIDE_SECRET);
  writeFileSync(path.join(outside, 'secret.js'), `module.exports = ${JSON.stringify(OUTSIDE_SECRET)};`);
  const root = makeRoot({
    ...VICTIM,
    'victim/secret.json': JSON.stringify({ s: VICTIM_SECRET }),
    'victim/secret.js': `module.exports = ${JSON.stringify(VICTIM_SECRET)};`,
  });
  return { root, outside };
}

interface Escape {
  name: string;
  /** Files of project `a`, given the path from `a/` to the folder outside the root; `a/main.js` is run. */
  files: (outside: string) => Record<string, string>;
  /** Links to make: [path in the root, target (absolute, or relative to the root)]. */
  links?: (outside: string) => [string, string][];
  /** Hard links to make: [path in the root, target (absolute)]. */
  hardLinks?: (root: string, outside: string) => [string, string][];
  error: RegExp;
}

const ESCAPES: Escape[] = [
  {
    name: 'a computed require of another project\'s JSON',
    files: () => ({ 'a/main.js': 'const n = "secret";\nconsole.log(JSON.stringify(require("../victim/" + n + ".json")));\n' }),
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:2:28: require\("\.\.\/victim\/" \+ n \+ "\.json"\) is computed; islet only bundles imports written out in full$/,
  },
  {
    name: 'a computed require that would walk the whole file system',
    files: () => ({ 'a/main.js': 'const n = globalThis.n;\nrequire("../../../../../../../../" + n + ".json");\n' }),
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:2:1: require\("(\.\.\/){8}" \+ n \+ "\.json"\) is computed; islet only bundles imports written out in full$/,
  },
  {
    name: 'a computed template-literal import() of files outside the root',
    files: (outside) => ({ 'a/main.js': `const n = "secret";\nimport(\`${outside}/\${n}.js\`).then((m) => console.log(m.default));\n` }),
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:2:1: import\(`[./\w-]+\/\$\{n\}\.js`\) is computed; islet only bundles imports written out in full$/,
  },
  {
    name: 'a computed path in a branch of a condition, a fallback or a sequence',
    files: () => ({ 'a/main.js': 'const n = "secret", c = globalThis.c;\nrequire(c ? "../victim/" + n + ".json" : "./x");\n' }),
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:2:1: require\("\.\.\/victim\/" \+ n \+ "\.json"\) is computed/,
  },
  {
    name: 'a computed path behind || in import()',
    files: () => ({ 'a/main.js': 'const n = "secret";\nimport(globalThis.c || `../victim/${n}.json`);\n' }),
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:2:1: import\(globalThis\.c \|\| `\.\.\/victim\/\$\{n\}\.json`\) is computed/,
  },
  {
    name: 'an import with { type: "text" } of a file outside the root',
    files: (outside) => ({
      'a/main.js': `import(${JSON.stringify(`${outside}/secret.txt`)}, { with: { type: "text" } }).then((m) => console.log(m.default));\n`,
    }),
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:1:8: "[./\w-]+\/secret\.txt" resolves outside project "a"; a project may only import its own files$/,
  },
  {
    name: 'an import with { type: "text" } of another project\'s code',
    files: () => ({ 'a/main.js': 'import src from "../victim/echo.js" with { type: "text" };\nconsole.log(src);\n' }),
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:1:17: "\.\.\/victim\/echo\.js" resolves outside project "a"; a project may only import its own files$/,
  },
  {
    name: 'a link inside the project to another project\'s file',
    files: () => ({ 'a/main.js': 'console.log(require("./stolen.js"));\n' }),
    links: () => [['a/stolen.js', '../victim/secret.js']],
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:1:21: "\.\/stolen\.js" resolves outside project "a"; a project may only import its own files$/,
  },
  {
    name: 'a link inside the project to a folder outside the root',
    files: () => ({ 'a/main.js': 'console.log(require("./outside/secret.json").s);\n' }),
    links: (outside) => [['a/outside', outside]],
    error: /^ISLET_ERR_IMPORT_REFUSED: import in a\/main\.js:1:21: "\.\/outside\/secret\.json" resolves outside project "a"; a project may only import its own files$/,
  },
  {
    name: 'an entry point that is a link to another project\'s script',
    files: () => ({}),
    links: () => [['a/main.js', '../victim/secret.js']],
    error: /^ISLET_ERR_IMPORT_REFUSED: a\/main\.js is not a file of project "a" \(a link to another project's file or out of the root, or a hard link\)$/,
  },
  {
    name: 'a hard link inside the project to a file outside the root, imported as text',
    files: () => ({ 'a/main.js': 'import t from "./pw.txt" with { type: "text" };\nconsole.log(t);\n' }),
    hardLinks: (_root, outside) => [['a/pw.txt', path.join(outside, 'secret.txt')]],
    error: /^ISLET_ERR_IMPORT_REFUSED: .*a\/pw\.txt is not a file of project "a" \(a link to another project's file or out of the root, or a hard link\)$/,
  },
  {
    name: 'a hard link inside the project to another project\'s code',
    files: () => ({ 'a/main.js': 'console.log(require("./hard.js"));\n' }),
    hardLinks: (root) => [['a/hard.js', path.join(root, 'victim', 'secret.js')]],
    error: /^ISLET_ERR_IMPORT_REFUSED: .*a\/hard\.js is not a file of project "a" \(a link to another project's file or out of the root, or a hard link\)$/,
  },
  {
    name: 'an entry point that is a hard link to another project\'s script',
    files: () => ({}),
    hardLinks: (root) => [['a/main.js', path.join(root, 'victim', 'secret.js')]],
    error: /^ISLET_ERR_IMPORT_REFUSED: a\/main\.js is not a file of project "a" \(a link to another project's file or out of the root, or a hard link\)$/,
  },
];

describe('hazard: imports that reach outside the project', () => {
  for (const escape of ESCAPES) {
    it(`imports: ${escape.name} is refused, and the victim keeps echoing`, async () => {
      const { root, outside } = hostileRoot();
      writeFiles(root, escape.files(path.relative(path.join(root, 'a'), outside)));
      for (const [link, target] of escape.links?.(outside) ?? []) {
        mkdirSync(path.dirname(path.join(root, link)), { recursive: true });
        symlinkSync(target, path.join(root, link));
      }
      for (const [link, target] of escape.hardLinks?.(root, outside) ?? []) {
        mkdirSync(path.dirname(path.join(root, link)), { recursive: true });
        linkSync(target, path.join(root, link));
      }
      const s = await serveRoot(root);
      const victim = await connect(s.url('victim'));
      victim.ws.send('1');
      const outcome = await settle(s.engine.run('a/main.js'));
      victim.ws.send('2');
      expect(await victim.receive(2)).to.deep.equal(['victim 1', 'victim 2']);
      expect(outcome).to.match(escape.error);
      const seen = JSON.stringify([outcome, s.lines(), s.errors]);
      expect(seen).not.to.contain(OUTSIDE_SECRET);
      expect(seen).not.to.contain(VICTIM_SECRET);
      victim.ws.close();
    });
  }

  it('imports: a project\'s own files still bundle, its own text with { type: "text" } too; a computed import of its own files is refused', async () => {
    const root = makeRoot({
      'a/main.ts': 'import note from "./note.txt" with { type: "text" };\nimport data from "./data.json";\nimport { n } from "./lib";\nimport idx from "./dir";\nconsole.log(note.trim(), data.v, n, idx);\n',
      'a/note.txt': 'own text\n',
      'a/data.json': '{ "v": 1 }',
      'a/lib.ts': 'export const n: number = 2;\n',
      'a/dir/index.js': 'module.exports = 3;\n',
      'a/computed.js': 'const n = "data";\nrequire("./" + n + ".json");\n',
      'a/image.png': 'not really',
      'a/img.js': 'require("./image.png");\n',
    });
    const s = await serveRoot(root);
    await s.engine.run('a/main.ts');
    expect(s.lines()).to.deep.equal(['own text 1 2 3']);
    expect(await settle(s.engine.run('a/computed.js'))).to.equal(
      'ISLET_ERR_IMPORT_REFUSED: import in a/computed.js:2:1: require("./" + n + ".json") is computed; islet only bundles imports written out in full',
    );
    expect(await settle(s.engine.run('a/img.js'))).to.equal(
      'ISLET_ERR_BUNDLE: a/img.js:1:9: a/image.png: islet cannot import .png files; it imports .ts .mts .cts .js .mjs .cjs .json files, and others with { type: "text" }',
    );
  });
});
