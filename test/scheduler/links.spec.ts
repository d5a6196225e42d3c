import assert from 'node:assert/strict'
import { LinkTable, nearestFirst } from '../../node/scheduler/links.ts'
import { chooseRoute, networkMs, routeMs } from '../../node/scheduler/router.ts'
import type { Candidate, RouteCosts } from '../../node/scheduler/router.ts'
import type { LinkFigure } from '../../protocols/capacity.ts'

const lan = (peer: string): LinkFigure => ({ peer, rttMs: 1, bytesPerMs: 100_000, relayed: false })
const wan = (peer: string): LinkFigure => ({ peer, rttMs: 100, bytesPerMs: 2_500, relayed: true })

/** Two depots, each serving both stages: a1 a2 in depot a, b1 b2 in depot b; each knows its links to the other stage's holders. */
function depots (): Candidate[][] {
  const v = (peer: string, links: LinkFigure[]): Candidate => ({ peer, addrs: [], load: 0, msPerItem: 10, links })
  return [
    [v('a1', [lan('a2'), wan('b2')]), v('b1', [lan('b2'), wan('a2')])],
    [v('a2', [lan('a1'), wan('b1')]), v('b2', [lan('b1'), wan('a1')])]
  ]
}

const costs: RouteCosts = {
  stageMs: [10, 10],
  handOffBytes: [900_000, 1_000_000],
  inputBytes: 184_000,
  outputBytes: 1_000_000,
  // the client reaches every vehicle the same way (through a relay)
  clientLink: (peer) => ({ peer, rttMs: 50, bytesPerMs: 2_500, relayed: true })
}

describe('routing by measured network cost', () => {
  it('keeps a pipeline inside one depot when the depot serves every stage', () => {
    for (let i = 0; i < 200; i++) {
      const route = chooseRoute(depots(), costs).map(c => c.peer)
      assert.equal(new Set(route.map(p => p[0])).size, 1, `route ${route.join(' > ')} crosses depots`)
    }
  })

  it('without link figures the depots mix (what the router did before it measured links)', () => {
    const bare = depots().map(cs => cs.map(c => ({ ...c, links: [] })))
    const crossing = Array.from({ length: 400 }, () => chooseRoute(bare, { stageMs: [10, 10], handOffBytes: [900_000, 1_000_000] }))
      .filter(r => r[0].peer[0] !== r[1].peer[0]).length
    assert.ok(crossing > 100, `${crossing} of 400 routes cross depots`)
  })

  it('prices every link: input in, hand-offs, and the result back along the chain or straight', () => {
    const [[a1], [a2, b2]] = depots()
    const inDepot = networkMs([a1, a2], costs)
    const across = networkMs([a1, b2], costs)
    // the hand-off and the result's way back cross the slow link twice
    assert.ok(across - inDepot > 2 * 100 + (900_000 + 1_000_000) / 2_500 - (900_000 + 1_000_000) / 100_000 - 10, `${across} vs ${inDepot}`)
    const direct = networkMs([a1, a2], { ...costs, returnAlongChain: false })
    assert.ok(direct < inDepot, 'a direct return skips the links back along the chain')
    assert.equal(routeMs([a1, a2], costs), 20 + inDepot)
  })

  it('a busy in-depot hop still loses to an idle one across the WAN when compute dominates', () => {
    const [[a1, b1], [a2, b2]] = depots()
    const busy = { ...a2, load: 200 }
    const route = chooseRoute([[a1, b1], [busy, b2]], costs).map(c => c.peer)
    assert.notEqual(route[1], 'a2')
  })
})

describe('link table', () => {
  it('keeps moving averages of round trips and throughput, and the relayed mark', () => {
    const t = new LinkTable({ alpha: 0.5 })
    t.observeRtt('p', 10, false, 0)
    t.observeRtt('p', 20, true, 1)
    assert.deepEqual(t.get('p', 2), { peer: 'p', rttMs: 15, bytesPerMs: 0, relayed: true })
    // 1 MB in 415 ms with a 15 ms round trip: 2500 bytes per ms of wire time
    t.observeTransfer('p', 1_000_000, 415, undefined, 3)
    assert.equal(t.get('p', 4)?.bytesPerMs, 2500)
    // small transfers say nothing about bandwidth
    t.observeTransfer('p', 1000, 1, undefined, 5)
    assert.equal(t.get('p', 6)?.bytesPerMs, 2500)
  })

  it('is bounded, forgets old figures and lists the most recent first', () => {
    const t = new LinkTable({ maxPeers: 3, maxAgeMs: 100 })
    for (const [i, p] of ['a', 'b', 'c', 'd'].entries()) t.observeRtt(p, 1, false, i)
    assert.equal(t.get('a', 5), undefined, 'the least recently measured is dropped')
    assert.deepEqual(t.recent(2, 5).map(l => l.peer), ['d', 'c'])
    assert.equal(t.get('d', 500), undefined, 'too old')
    t.observeRtt('x', Number.NaN, false, 600)
    assert.equal(t.get('x', 600), undefined, 'a bad sample is ignored')
  })
})

describe('nearest providers', () => {
  it('keeps the measured providers within 3x the best round trip, nearest first', () => {
    const rtt: Record<string, number | undefined> = { lan: 1.2, lan2: 0.8, far: 104, unknown: undefined }
    assert.deepEqual(nearestFirst(['far', 'lan', 'unknown', 'lan2'], p => rtt[p]), ['lan2', 'lan'])
  })

  it('keeps every provider, as found, when none is measured', () => {
    assert.deepEqual(nearestFirst(['b', 'a'], () => undefined), ['b', 'a'])
  })
})
