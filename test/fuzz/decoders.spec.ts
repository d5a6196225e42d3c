/**
 * Property-based fuzzing of every decoder and the gateway's request parsing
 * (fast-check): no crash, no hang, only typed errors. A short run here;
 * `npm run bench:fuzz` runs 10,000 cases per target. FUZZ_RUNS sets the
 * count, FUZZ_SEED replays a failure.
 */
import assert from 'node:assert/strict'
import { TARGETS, fuzz } from './targets.ts'

const RUNS = Number(process.env.FUZZ_RUNS ?? 300)
const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : undefined

describe(`fuzzing: decoders and gateway parsing (${RUNS} cases each)`, function () {
  this.timeout(120_000)
  it('the harness itself catches an untyped error and a hang', async () => {
    const crash = await fuzz({ name: 'crash', seeds: [], run: b => { if (b.byteLength > 3) throw new TypeError('boom') } }, 100, 1)
    assert.match(crash.failure ?? '', /untyped TypeError: boom/)
    const hang = await fuzz({ name: 'hang', seeds: [], run: async () => { await new Promise(resolve => setTimeout(resolve, 30)) } }, 3, 1, 10)
    assert.match(hang.failure ?? '', /took/)
  })

  for (const t of TARGETS) {
    it(`${t.name}: returns or throws a typed error, promptly`, async () => {
      const r = await fuzz(t, RUNS, SEED)
      assert.equal(r.failure, undefined, r.failure)
    })
  }
})
