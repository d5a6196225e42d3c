import assert from 'node:assert/strict'
import { placeStages } from '../../node/scheduler/placement.ts'
import { BanList } from '../../node/scheduler/bans.ts'
import { attemptBudget } from '../../node/scheduler/budget.ts'
import { StageLocator } from '../../node/client/locator.ts'
import type { LocatorComponents } from '../../node/client/locator.ts'
import type { StageHolder } from '../../node/capacity/directory.ts'
import type { ResolvedModel } from '../../node/client/resolver.ts'
import { defaultLogger } from '@libp2p/logger'
import { float32Tensor } from '../../protocols/tensor.ts'
import { NoRouteError, chooseRoute } from '../../node/scheduler/router.ts'
import type { Candidate } from '../../node/scheduler/router.ts'

const c = (peer: string, load = 0, msPerItem = 10): Candidate => ({ peer, addrs: [], load, msPerItem })
const costs = { stageMs: [10, 10, 10], handOffBytes: [0, 0, 0] }

describe('router', () => {
  it('takes one peer per stage and prefers distinct peers', () => {
    const route = chooseRoute([[c('a'), c('d')], [c('a'), c('b')], [c('c')]], costs)
    assert.equal(route.length, 3)
    assert.equal(new Set(route.map(r => r.peer)).size, 3, route.map(r => r.peer).join())
    assert.equal(route[2].peer, 'c')
    // stage 1 can only avoid 'a' twice by taking 'b' when stage 0 takes 'a', or anything when stage 0 takes 'd'
    assert.ok(route[1].peer === 'b' || route[0].peer === 'd')
  })

  it('reuses a peer only when nothing else can serve', () => {
    const route = chooseRoute([[c('a')], [c('a')]], costs)
    assert.deepEqual(route.map(r => r.peer), ['a', 'a'])
  })

  it('avoids loaded and slow peers', () => {
    assert.equal(chooseRoute([[c('busy', 5), c('idle', 0)]], costs)[0].peer, 'idle')
    assert.equal(chooseRoute([[c('slow', 0, 80), c('fast', 0, 5)]], costs)[0].peer, 'fast')
  })

  it('routes a suspect last, but its penalty gives an attempt through it no more time (a queue does)', () => {
    const suspect: Candidate = { ...c('suspect', 0, 10), penalty: 16 }
    assert.equal(chooseRoute([[suspect, c('slower', 0, 40)]], costs)[0].peer, 'slower')
    assert.equal(chooseRoute([[suspect]], costs)[0].peer, 'suspect', 'still used when it is the only one')
    const x = [float32Tensor('x', [1, 4], new Float32Array(4))]
    assert.equal(attemptBudget([suspect, c('b')], x), attemptBudget([c('suspect', 0, 10), c('b')], x))
    assert.ok(attemptBudget([c('queued', 16, 10), c('b')], x) > attemptBudget([c('idle', 0, 10), c('b')], x), 'a real queue does stretch it')
  })

  it('a suspect reaches the router with its queue as load and its suspicion as a penalty', () => {
    const holder = (peer: string, load: number): StageHolder => ({ peer, addrs: [], load, msPerItem: 10, cell: 'default' })
    const directory: LocatorComponents['directory'] = { holders: () => [holder('accused', 1), holder('other', 0)], waitFor: async () => {}, cells: ['default'] }
    const locator = new StageLocator({ logger: defaultLogger(), directory, exchange: { findProviders: async () => [] } })
    locator.bans.accuse('accused', 'a-rogue')
    const [accused, other] = locator.live({ cid: 'm' } as unknown as ResolvedModel, 0)
    assert.equal(accused.load, 1, 'its own queue')
    assert.ok((accused.penalty ?? 0) > 0 && other.penalty === undefined)
    assert.equal(chooseRoute([[accused, other]], costs)[0].peer, 'other')
  })

  it('spreads equal candidates by random tie-break', () => {
    const seen = new Set<string>()
    for (let i = 0; i < 50; i++) seen.add(chooseRoute([[c('a'), c('b')]], costs)[0].peer)
    assert.deepEqual([...seen].sort(), ['a', 'b'])
  })

  it('throws NoRouteError naming the stage nobody serves', () => {
    assert.throws(() => chooseRoute([[c('a')], []], costs, 1), (e: unknown) => e instanceof NoRouteError && e.stage === 2)
  })

  it('falls back to greedy on large candidate sets and still picks distinct peers', () => {
    const many = Array.from({ length: 6 }, (_, s) => Array.from({ length: 5 }, (_, i) => c(`p${s}-${i}`, i)))
    const route = chooseRoute(many, { stageMs: Array(6).fill(10), handOffBytes: Array(6).fill(0) })
    assert.equal(route.length, 6)
    assert.ok(route.every(r => r.peer.endsWith('-0')))
  })
})

describe('ban list', () => {
  it('bans with exponential backoff; success does not clear strikes, time does', () => {
    const b = new BanList({ baseMs: 1000, maxMs: 8000, decayMs: 10_000 })
    assert.equal(b.ban('p', 'fault', 0), 1000)
    assert.ok(b.isBanned('p', 999))
    assert.ok(!b.isBanned('p', 1000))
    assert.equal(b.ban('p', 'fault', 500), 500, 'failures during a ban are the same incident')
    assert.equal(b.ban('p', 'fault', 1000), 2000)
    assert.equal(b.ban('p', 'fault', 3000), 4000)
    assert.equal(b.ban('p', 'fault', 7000), 8000)
    assert.equal(b.ban('p', 'fault', 15_000), 8000)
    assert.equal(b.strikes('p', 15_000), 5)
    assert.equal(b.strikes('p', 35_000), 3, 'a strike fades per decay period')
    assert.equal(b.ban('p', 'fault', 35_000), 8000)
    const u = new BanList({ baseMs: 1000, maxMs: 60_000, maxAbsentMs: 4000 })
    for (const at of [0, 1000, 3000, 7000]) u.ban('q', 'absent', at)
    assert.equal(u.strikes('q', 7000), 4)
    assert.ok(!u.isBanned('q', 11_000), 'an absent peer is banned at most maxAbsentMs')
  })

  it('one accuser only makes a suspect; two distinct accusers within the window make a strike', () => {
    const b = new BanList({ windowMs: 60_000 })
    assert.equal(b.accuse('honest', 'liar', 0), false)
    assert.equal(b.accuse('honest', 'liar', 10), false, 'the same accuser twice is still one')
    assert.ok(b.isSuspect('honest', 20) && !b.isBanned('honest', 20))
    assert.ok(!b.isSuspect('honest', 70_000), 'suspicion fades')
    assert.equal(b.accuse('slow', 'a', 0), false)
    assert.equal(b.accuse('slow', 'b', 100_000), false, 'accusations outside the window do not add up')
    assert.equal(b.accuse('slow', 'c', 100_100), true)
    assert.ok(b.isBanned('slow', 100_200))
    assert.equal(b.accuse('x', 'x', 0), false, 'nobody accuses itself')
  })

  it('a conviction bans for an hour', () => {
    const b = new BanList()
    b.convict('p', 0)
    assert.ok(b.isBanned('p', 3_599_999) && !b.isBanned('p', 3_600_000))
  })
})

describe('placement', () => {
  for (const [n, k] of [[4, 3], [3, 3], [6, 3], [2, 3], [4, 2], [8, 4], [5, 5]]) {
    it(`${n} vehicles, ${k} stages: every stage held, no vehicle holds all`, () => {
      const plan = placeStages(n, k)
      assert.equal(plan.length, n)
      for (let s = 0; s < k; s++) assert.ok(plan.some(p => p.includes(s)), `stage ${s} held`)
      assert.ok(plan.every(p => p.length < k), JSON.stringify(plan))
    })
  }
  it('gives replicas to vehicles beyond the stage count', () => {
    assert.deepEqual(placeStages(4, 3), [[0], [1], [2], [0, 1]])
    assert.throws(() => placeStages(1, 3), RangeError)
  })
})
