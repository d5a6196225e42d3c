/**
 * Nearest-cell discovery (issue 12): a client near a geohash cell listens to it and its eight
 * neighbours, hears which cell each vehicle is in, and routes inside the nearest cell that holds
 * every stage (else the nearest cells together); a neighbour cell with no cars in it is looked up
 * less and less often.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { defaultLogger } from '@libp2p/logger'
import { CellRendezvous } from '../../node/capacity/cells.ts'
import { FleetDirectory } from '../../node/capacity/directory.ts'
import { encodeGeohash, isGeohash, nearbyCells } from '../../node/capacity/geohash.ts'
import { clientChecks, UsageError } from '../../node/cli/command.ts'
import { inNearestCell } from '../../node/scheduler/router.ts'
import type { Candidate } from '../../node/scheduler/router.ts'
import { encodeHeartbeat } from '../../protocols/capacity.ts'
import { capacityTopic } from '../../protocols/ids.ts'

/** A geohash cell's height and width in degrees. */
function cellSize (precision: number): { h: number, w: number } {
  const bits = 5 * precision
  return { h: 180 / 2 ** Math.floor(bits / 2), w: 360 / 2 ** Math.ceil(bits / 2) }
}

describe('nearest cells', () => {
  it('geohash: a known point, and every point within one cell of a cell lies in it or its neighbours', () => {
    assert.equal(encodeGeohash(52.52, 13.405, 5), 'u33dc') // Berlin
    assert.equal(encodeGeohash(-33.8688, 151.2093, 4), 'r3gx') // Sydney
    let seed = 11
    const rand = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 }
    for (let i = 0; i < 300; i++) {
      const precision = 3 + (i % 5)
      const lat = -80 + 160 * rand(); const lon = -180 + 360 * rand()
      const cell = encodeGeohash(lat, lon, precision)
      const near = nearbyCells(cell)
      assert.equal(near[0], cell)
      assert.equal(near.length, 9, `${cell}: ${near.join(',')}`)
      assert.ok(near.every(c => isGeohash(c) && c.length === precision))
      const { h, w } = cellSize(precision)
      for (let j = 0; j < 5; j++) {
        const y = lat + (2 * rand() - 1) * h * 0.999; const x = lon + (2 * rand() - 1) * w * 0.999
        const other = encodeGeohash(y, ((x + 540) % 360) - 180, precision)
        assert.ok(near.includes(other), `${other} (${y}, ${x}) is next to ${cell} (${lat}, ${lon}) but not among ${near.join(',')}`)
      }
    }
  })

  it('geohash: neighbours across the antimeridian, none past a pole, none for other cell names', () => {
    const east = encodeGeohash(10, 179.99, 4)
    assert.ok(nearbyCells(east).includes(encodeGeohash(10, -179.99, 4)), 'across 180 degrees')
    const top = encodeGeohash(89.99, 0, 3)
    assert.equal(nearbyCells(top).length, 6, 'a cell at the pole has no cells north of it')
    assert.deepEqual(nearbyCells('default'), ['default'])
    assert.deepEqual(nearbyCells('depot-7'), ['depot-7'])
    assert.equal(isGeohash('u33da'), false, 'a is not a geohash letter')
  })

  const h = (peer: string, cell?: string): Candidate => ({ peer, addrs: [], load: 0, msPerItem: 1, ...(cell !== undefined ? { cell } : {}) })
  const cells = ['u33db', 'u33e0', 'u33dc']

  it('routes inside the nearest cell that holds every stage', () => {
    // the own cell holds both stages: only its vehicles
    let got = inNearestCell([[h('a', 'u33db'), h('b', 'u33e0')], [h('c', 'u33db'), h('d', 'u33e0')]], cells)
    assert.deepEqual(got.map(s => s.map(c => c.peer)), [['a'], ['c']])
    // the own cell lacks stage 1: the first neighbour that holds both, not a mix
    got = inNearestCell([[h('a', 'u33db'), h('b', 'u33e0'), h('e', 'u33dc')], [h('d', 'u33dc'), h('f', 'u33e0')]], cells)
    assert.deepEqual(got.map(s => s.map(c => c.peer)), [['b'], ['f']])
  })

  it('falls back to the nearest cells together, then to vehicles of no listed cell; unchanged when nothing covers', () => {
    let got = inNearestCell([[h('a', 'u33db')], [h('d', 'u33e0'), h('x', 'u33dc')]], cells)
    assert.deepEqual(got.map(s => s.map(c => c.peer)), [['a'], ['d']], 'the own cell and the nearest neighbour')
    got = inNearestCell([[h('a', 'u33db')], [h('z')]], cells)
    assert.deepEqual(got.map(s => s.map(c => c.peer)), [['a'], ['z']], 'a holder found only in the DHT comes last')
    const none = [[h('a', 'u33db')], []]
    assert.equal(inNearestCell(none, cells), none)
    const one = [[h('a', 'x')], [h('b', 'y')]]
    assert.equal(inNearestCell(one, ['x']), one, 'one cell: nothing to choose')
  })

  it('the directory says which cell a vehicle was heard in', async () => {
    const pubsub = Object.assign(new EventTarget(), { subscribe () {} })
    const d = new FleetDirectory({ logger: defaultLogger(), pubsub: pubsub as never }, { fleet: 'near', cells })
    d.start()
    try {
      const stages = [{ manifest: 'm', stage: 0, cid: 'c', msPerItem: 1 }]
      const send = async (cell: string): Promise<string> => {
        const from = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
        pubsub.dispatchEvent(new CustomEvent('message', { detail: { topic: capacityTopic('near', cell), type: 'signed', from, data: encodeHeartbeat({ ts: Date.now(), seq: 1, eligible: true, load: 0, slots: 1, stages, addrs: [] }) } }))
        return from.toString()
      }
      const a = await send('u33db'); const b = await send('u33dc'); const c = await send('u281z')
      assert.equal(d.get(a)?.cell, 'u33db')
      assert.deepEqual(d.holders('m', 0).map(x => [x.peer, x.cell]), [[a, 'u33db'], [b, 'u33dc']])
      assert.equal(d.get(c), undefined, 'a cell not listened to')
    } finally { d.stop() }
  })

  it('a cell whose lookups find nobody is looked up again after twice as long each time', async () => {
    let lookups = 0
    let found: string[] = []
    const rv = new CellRendezvous({
      logger: defaultLogger(),
      peerId: { toString: () => 'me' },
      pubsub: { getSubscribers: () => [] },
      contentRouting: {
        provide: async () => {},
        findProviders: async function * () { lookups++; for (const id of ['me', ...found]) yield { id: { toString: () => id }, multiaddrs: [] } as never }
      },
      connected: () => false,
      connect: async () => {}
    }, { fleet: 'near', cells: ['u33e0'], provide: false, checkMs: 100, maxBackoffMs: 10_000 })
    await rv.run()
    await rv.run()
    assert.equal(lookups, 1, 'an empty cell is not looked up again at once')
    await new Promise(resolve => setTimeout(resolve, 250))
    await rv.run()
    assert.equal(lookups, 2, 'after 200 ms it is')
    await new Promise(resolve => setTimeout(resolve, 250))
    await rv.run()
    assert.equal(lookups, 2, 'then after 400 ms, not 200')
    await new Promise(resolve => setTimeout(resolve, 250))
    found = ['car']
    await rv.run()
    await rv.run()
    assert.equal(lookups, 4, 'a cell where cars were found is looked up at the usual pace')
  })

  it('--near names the cell and its neighbours; not a geohash, or with --cells, is a usage error', () => {
    assert.deepEqual(clientChecks({ near: 'u33db' }).cells, nearbyCells('u33db'))
    assert.throws(() => clientChecks({ near: 'berlin' }), (e: Error) => e instanceof UsageError && /not a geohash/.test(e.message))
    assert.throws(() => clientChecks({ near: 'u33db', cells: 'u33db' }), UsageError)
  })
})
