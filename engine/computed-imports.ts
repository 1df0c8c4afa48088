// Computed import paths, found before esbuild sees a file: esbuild would
// expand `require("../x/" + name)` or a template literal into a glob and
// walk the folders it names, outside the root too (`"../../../" + x` walks
// the whole file system). Each is refused, placed at the import.
import * as acorn from 'acorn';
import { SourceMap } from 'node:module';
import * as esbuild from 'esbuild';

/**
 * The first `require(…)` or `import(…)` in a JavaScript or TypeScript file
 * whose path is computed (see `computedCall`), as an error placed at it;
 * null when there is none. The file is parsed as esbuild will see it
 * (TypeScript stripped first, positions mapped back).
 */
export async function computedImport(contents: Buffer, loader: 'js' | 'ts', file: string): Promise<esbuild.PartialMessage | null> {
  let js: esbuild.TransformResult;
  try {
    js = await esbuild.transform(contents, { loader, format: 'esm', target: 'esnext', sourcemap: 'external', logLevel: 'silent' });
  } catch {
    return null; // a syntax error: esbuild reports it when it bundles the file, and cannot expand anything then
  }
  let program: acorn.Program;
  try {
    program = parse(js.code);
  } catch (error) {
    return { text: `${file} cannot be checked for computed imports (${(error as Error).message})`, detail: 'refused' };
  }
  // An explicit stack: deeply nested tenant code must not overflow the host's.
  const stack: unknown[] = [program];
  while (stack.length > 0) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      for (const child of node) stack.push(child);
      continue;
    }
    if (typeof node !== 'object' || node === null || typeof (node as acorn.Node).type !== 'string') continue;
    const found = computedCall(node as acorn.Node);
    if (found !== null) {
      const at = new SourceMap(JSON.parse(js.map)).findEntry(found.loc!.start.line - 1, found.loc!.start.column);
      const source = js.code.slice(found.start, found.end);
      const text = `${source.length > 120 ? `${source.slice(0, 120)}…` : source} is computed; islet only bundles imports written out in full`;
      if (!('originalLine' in at)) return { text, detail: 'refused' };
      const lineText = contents.toString('utf8').split('\n')[at.originalLine] ?? '';
      return { text, detail: 'refused', location: { file, line: at.originalLine + 1, column: at.originalColumn, lineText } };
    }
    for (const value of Object.values(node)) if (typeof value === 'object' && value !== null) stack.push(value);
  }
  return null;
}

function parse(code: string): acorn.Program {
  const options = { ecmaVersion: 'latest', locations: true, allowHashBang: true, allowReturnOutsideFunction: true, allowAwaitOutsideFunction: true } as const;
  try {
    return acorn.parse(code, { ...options, sourceType: 'module' });
  } catch {
    return acorn.parse(code, { ...options, sourceType: 'script' }); // sloppy CommonJS (`with`, octal literals)
  }
}

/**
 * `node` when it is a require() or import() call that esbuild would expand
 * into a glob: its argument is a template literal with substitutions or a
 * `+` concatenation. Any other argument (a plain string, or a variable,
 * which is left to run time and fails there) is not.
 */
function computedCall(node: acorn.Node): acorn.Node | null {
  if (node.type === 'ImportExpression') return computedPath((node as acorn.ImportExpression).source) ? node : null;
  if (node.type !== 'CallExpression') return null;
  const call = node as acorn.CallExpression;
  if (call.callee.type !== 'Identifier' || call.callee.name !== 'require') return null;
  return call.arguments.some((arg) => computedPath(arg)) ? node : null;
}

/** Whether esbuild would read this argument as a glob: either branch of a condition counts, as esbuild resolves each. */
function computedPath(arg: acorn.Node): boolean {
  switch (arg.type) {
    case 'TemplateLiteral':
      return (arg as acorn.TemplateLiteral).expressions.length > 0;
    case 'BinaryExpression':
      return (arg as acorn.BinaryExpression).operator === '+';
    case 'ConditionalExpression': {
      const { consequent, alternate } = arg as acorn.ConditionalExpression;
      return computedPath(consequent) || computedPath(alternate);
    }
    case 'LogicalExpression': {
      const { left, right } = arg as acorn.LogicalExpression;
      return computedPath(left) || computedPath(right);
    }
    case 'SequenceExpression': {
      const { expressions } = arg as acorn.SequenceExpression;
      return computedPath(expressions[expressions.length - 1]!);
    }
    default:
      return false;
  }
}
