// Lint: neostandard (the `standard` style js-libp2p's projects follow) with
// TypeScript, plus typed rules that catch promise mistakes.
import neostandard from 'neostandard'
import tseslint from 'typescript-eslint'

export default [
  ...neostandard({ ts: true, ignores: ['protocols/gen/**', 'node_modules/**', '.scratch/**', 'dist/**'] }),
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname }
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/await-thenable': 'error',
      // `void promise` marks a promise left to run on purpose (no-floating-promises wants that)
      'no-void': ['error', { allowAsStatement: true }],
      // a const and a type of one name (`InferErrorCode`) is a TypeScript idiom; tsc catches real clashes
      'no-redeclare': 'off',
      '@typescript-eslint/no-redeclare': 'off',
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'separate-type-imports' }],
      // @libp2p/utils 7.4.1's onDrain() resolves at once after a stream's first drain (docs/performance.md):
      // wait for the 'drain' event instead, as protocols/framing.ts (byteStream) and node/util/drain.ts do
      'no-restricted-syntax': ['error', { selector: "CallExpression > MemberExpression.callee[property.name='onDrain']", message: "onDrain() stops waiting after a stream's first drain (@libp2p/utils 7.4.1): wait for the stream's 'drain' event" }],
      // onnx-buf's generated names (TensorProto_DataType, ...) are not ours to rename
      camelcase: ['error', { properties: 'never', ignoreImports: true, allow: ['^[A-Z][A-Za-z]*_[A-Za-z_]+$'] }]
    }
  }
]
