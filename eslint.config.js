// Lint for `npm run check`: eslint's and typescript-eslint's recommended
// rules over the TypeScript sources; the compiler checks types on its own.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'examples/', 'test/fixtures/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // `_`-prefixed parameters are kept for their position.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always'],
      'no-constant-condition': ['error', { checkLoops: false }],
      // ws calls its listeners with the socket as `this`; the registry is named for what it is.
      '@typescript-eslint/no-this-alias': ['error', { allowedNames: ['sockets'] }],
    },
  },
  {
    // The typings tenants code against: their globals are declared as browsers' are.
    files: ['sandbox-api/islet.d.ts'],
    rules: { 'no-var': 'off', '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // Plain Node scripts (the CLI's launcher, the test prerequisites).
    files: ['**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  {
    // A Worker for workerd, the bench's third target.
    files: ['bench/workerd-echo.js'],
    languageOptions: { globals: { Response: 'readonly', WebSocketPair: 'readonly' } },
  },
);
