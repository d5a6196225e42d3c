/**
 * Locality cells (issue 12): a cell's members find each other through the DHT (each vehicle provides
 * the cell's key; every member looks it up while its cell topic has few peers), so a cell's gossip
 * flows although the bootstrap peer does not carry that cell's topic; heartbeats of one cell do not
 * reach a directory that listens to another.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultLogger } from '@libp2p/logger'
import { startBootstrap } from '../../bootstrap/bootstrap.ts'
import type { Bootstrap } from '../../bootstrap/bootstrap.ts'
import { CellRendezvous, cellKey, hostConnections } from '../../node/capacity/cells.ts'
import { FleetDirectory } from '../../node/capacity/directory.ts'
import { encodeHeartbeat } from '../../protocols/capacity.ts'
import { capacityTopic } from '../../protocols/ids.ts'
import { parseCid } from '../../node/models/cid.ts'
import { testNode } from '../utils/node.ts'
import { until } from '../utils/until.ts'

const FLEET = 'cells'
type Node = Awaited<ReturnType<typeof testNode>>

describe('locality cells', function () {
  this.timeout(60_000)
  let dir: string
  let boot: Bootstrap
  const nodes: Node[] = []
  const parts: Array<{ stop: () => void }> = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-cells-'))
    // the bootstrap peer carries the default cell only
    boot = await startBootstrap({ keyFile: join(dir, 'boot.key'), listen: ['/ip4/127.0.0.1/tcp/0'], fleet: FLEET })
  })

  after(async () => {
    for (const p of parts) p.stop()
    await Promise.all(nodes.map(async n => { await n.node.stop() }))
    await boot.stop()
    await rm(dir, { recursive: true, force: true })
  })

  const member = async (cell: string, provide: boolean): Promise<{ n: Node, dir: FleetDirectory }> => {
    const n = await testNode({ fleet: FLEET, bootstrap: boot.addrs, cells: [cell] })
    nodes.push(n)
    const directory = new FleetDirectory({ logger: defaultLogger(), pubsub: n.host.services.pubsub }, { fleet: FLEET, cells: [cell] })
    directory.start()
    const rv = new CellRendezvous({ ...n.components, ...hostConnections(n.host) }, { fleet: FLEET, cells: [cell], provide, checkMs: 1000 })
    rv.start()
    parts.push(directory, rv)
    return { n, dir: directory }
  }

  it('the cell key is the same on every peer and differs per cell and fleet', () => {
    assert.equal(cellKey(FLEET, 'u33db'), cellKey(FLEET, 'u33db'))
    assert.notEqual(cellKey(FLEET, 'u33db'), cellKey(FLEET, 'u33dc'))
    assert.notEqual(cellKey(FLEET, 'u33db'), cellKey('other', 'u33db'))
  })

  it('members of a cell find each other through the DHT and hear each other; another cell hears nothing', async () => {
    const a = await member('u33db', true)
    const b = await member('u33db', true)
    const client = await member('u33db', false)
    const elsewhere = await member('u281z', true)
    const topic = capacityTopic(FLEET, 'u33db')
    assert.equal(boot.host.services.pubsub.getTopics().includes(topic), false, 'the bootstrap peer does not carry this cell')
    await until(() => [a, b, client].every(m => m.n.host.services.pubsub.getSubscribers(topic).length >= 1), 30_000, 'cell peers found')
    // gossipsub grafts its mesh at its next heartbeat
    await new Promise(resolve => setTimeout(resolve, 1500))
    for (const m of [a, b]) await m.n.host.services.pubsub.publish(topic, encodeHeartbeat({ ts: Date.now(), seq: 1, eligible: true, load: 0, slots: 4, stages: [], addrs: [] }))
    await until(() => client.dir.get(a.n.host.peerId.toString()) !== undefined && client.dir.get(b.n.host.peerId.toString()) !== undefined, 10_000, 'both heartbeats at the client')
    assert.equal(elsewhere.dir.all().length, 0, 'a directory of another cell heard them')
    // the cell's vehicles are its key's providers in the DHT (the client is not; nor the other cell's car)
    const found = new Set<string>()
    for await (const p of client.n.host.contentRouting.findProviders(parseCid(cellKey(FLEET, 'u33db')), { signal: AbortSignal.timeout(10_000) })) found.add(p.id.toString())
    assert.ok(found.has(a.n.host.peerId.toString()) && found.has(b.n.host.peerId.toString()), `providers ${[...found].join(', ')}`)
    assert.ok(!found.has(client.n.host.peerId.toString()) && !found.has(elsewhere.n.host.peerId.toString()))
  })

  it('a lookup dials providers it is not connected to, at most dialPerLookup, and none while the topic has enough peers', async () => {
    const dialled: string[] = []
    let subscribers = 0
    let provides = 0
    const rv = new CellRendezvous({
      logger: defaultLogger(),
      peerId: { toString: () => 'me' },
      pubsub: { getSubscribers: () => Array.from({ length: subscribers }) as never },
      contentRouting: {
        provide: async () => { provides++ },
        findProviders: async function * () {
          for (const id of ['me', 'linked', 'p1', 'p2', 'p3']) yield { id: { toString: () => id }, multiaddrs: [] } as never
        }
      },
      connected: (p) => p === 'linked',
      connect: async (p) => { dialled.push(p) }
    }, { fleet: FLEET, cells: ['c'], provide: true, dialPerLookup: 2, minPeers: 3 })
    await rv.run()
    assert.deepEqual(dialled, ['p1', 'p2'])
    subscribers = 3
    await rv.run()
    assert.deepEqual(dialled, ['p1', 'p2'], 'no lookup while the cell topic has enough peers')
    assert.equal(provides, 1, 'provided once (the DHT republishes)')
  })
})
