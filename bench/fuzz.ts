/**
 * Fuzzing at depth: 10,000 cases per decoder (test/fuzz/targets.ts) by
 * default. Prints per target: cases, failures (crashes or untyped errors),
 * hangs (over 1 s) and the slowest case; then one JSON line.
 *
 *   node bench/fuzz.ts [--runs 10000] [--seed n]
 */
import { parseArgs } from 'node:util'
import { TARGETS, fuzz } from '../test/fuzz/targets.ts'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10000' }, seed: { type: 'string' } } })
const runs = Number(values.runs)
const rows = []
for (const t of TARGETS) {
  const t0 = performance.now()
  const r = await fuzz(t, runs, values.seed !== undefined ? Number(values.seed) : undefined)
  const hang = r.failure?.includes(' took ') === true
  rows.push({ target: t.name, cases: runs, failures: r.failure !== undefined && !hang ? 1 : 0, hangs: hang ? 1 : 0, slowestMs: Math.round(r.slowestMs * 10) / 10, seconds: Math.round((performance.now() - t0) / 100) / 10, ...(r.failure !== undefined ? { failure: r.failure.split('\n').slice(0, 3).join(' | ') } : {}) })
  process.stderr.write(`${t.name}: ${r.failure === undefined ? 'ok' : 'FAILED'}\n`)
}
console.log(`fuzzing: ${runs} cases per target (random bytes and mutations of valid encodings)`)
for (const r of rows) console.log(`${r.target.padEnd(22)} ${String(r.cases).padStart(6)} cases  ${r.failures} failures  ${r.hangs} hangs  slowest ${String(r.slowestMs).padStart(6)} ms${r.failure !== undefined ? `  ${r.failure}` : ''}`)
console.log(JSON.stringify({ bench: 'fuzz', runs, failures: rows.reduce((s, r) => s + r.failures, 0), hangs: rows.reduce((s, r) => s + r.hangs, 0), rows }))
