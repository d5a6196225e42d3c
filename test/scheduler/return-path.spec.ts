import assert from 'node:assert/strict'
import { DIRECT_RETURN_MIN_BYTES, returnsDirect } from '../../node/client/return-path.ts'
import type { ReturnFacts } from '../../node/client/return-path.ts'

describe('which way a result comes back (node/client/return-path.ts)', () => {
  const facts = (f: Partial<ReturnFacts>): ReturnFacts => ({ resultBytes: 1_060_000, reduced: false, taps: false, others: 0, allOnThisMachine: () => true, ...f })

  it('a large result comes straight from the last hop, with taps, busy and on one machine alike', () => {
    assert.equal(returnsDirect(facts({})), true)
    assert.equal(returnsDirect(facts({ taps: true, others: 3 })), true)
    assert.equal(returnsDirect(facts({ resultBytes: DIRECT_RETURN_MIN_BYTES })), true)
  })

  it('a small or reduced result comes straight when the job is alone, or its hops are elsewhere', () => {
    assert.equal(returnsDirect(facts({ resultBytes: 300 })), true)
    assert.equal(returnsDirect(facts({ reduced: true, others: 3, allOnThisMachine: () => false })), true)
  })

  it('a small or reduced result comes along the chain with taps, and while other jobs are in flight on this machine', () => {
    assert.equal(returnsDirect(facts({ resultBytes: DIRECT_RETURN_MIN_BYTES - 1, taps: true })), false)
    assert.equal(returnsDirect(facts({ reduced: true, others: 1 })), false)
    assert.equal(returnsDirect(facts({ resultBytes: 300, others: 3 })), false)
  })

  it('asks where the hops are only when that decides', () => {
    let asked = 0
    const where = (): boolean => { asked++; return true }
    returnsDirect(facts({ allOnThisMachine: where }))
    returnsDirect(facts({ reduced: true, allOnThisMachine: where }))
    assert.equal(asked, 0)
    returnsDirect(facts({ reduced: true, others: 2, allOnThisMachine: where }))
    assert.equal(asked, 1)
  })
})
