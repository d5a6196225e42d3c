import assert from 'node:assert/strict'
import first from 'it-first'
import { createHost } from '../../node/host.ts'
import { TABLE_REFRESH_MS } from '../../node/network.ts'
import type { Host } from '../../node/host.ts'
import { cidOf, parseCid } from '../../node/models/cid.ts'

describe('joining', function () {
  this.timeout(60_000)
  const hosts: Host[] = []
  after(async () => { await Promise.all(hosts.map(async h => { await h.stop() })) })

  it('eight peers joining one bootstrap peer at once from one address all find a provider', async () => {
    // libp2p's default (5 new connections per second per address) turned some of them away
    const boot = await createHost({ fleet: 'join-test' })
    hosts.push(boot)
    const bootAddrs = boot.getMultiaddrs().map(a => a.toString())
    const seed = await createHost({ bootstrap: bootAddrs, fleet: 'join-test' })
    hosts.push(seed)
    const cid = cidOf(new TextEncoder().encode(`content ${Math.random()}`))
    await seed.contentRouting.provide(parseCid(cid), { signal: AbortSignal.timeout(10_000) })
    const joiners = await Promise.all(Array.from({ length: 8 }, async () => await createHost({ bootstrap: bootAddrs, fleet: 'join-test' })))
    hosts.push(...joiners)
    const found = await Promise.all(joiners.map(async j => (await first(j.contentRouting.findProviders(parseCid(cid), { signal: AbortSignal.timeout(15_000) })))?.id.toString()))
    assert.deepEqual(found, joiners.map(() => seed.peerId.toString()))
    // with the routing table refreshed every 30 minutes, not libp2p's 5: joining and lookups do not wait for it
    for (const h of hosts) assert.equal((h.services.dht as unknown as { routingTableRefresh: { refreshInterval: number } }).routingTableRefresh.refreshInterval, TABLE_REFRESH_MS)
  })
})
