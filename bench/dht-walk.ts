/**
 * DHT walk cost: how many peers one lookup (getClosestPeers, what a put,
 * a provide, a self-query and a table refresh each start with) queries,
 * and how many peers its answers carry, in fleets of growing size, for
 * kad-dht's fan-out settings side by side. Real fleetmesh hosts on
 * loopback in this process; each joins through three earlier ones, then
 * every host looks itself up once (as a car does at start). `fleetmesh sim`
 * takes its DHT cost per walk from these figures.
 *
 *   node bench/dht-walk.ts [--nodes 25,50,100] [--walks 30] [--walk 10x10,3x1]
 */
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import { createHost } from '../node/host.ts'
import type { Host } from '../node/host.ts'
import { VEHICLE_MAX_CONNECTIONS } from '../node/network.ts'

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '25,50,100' }, walks: { type: 'string', default: '30' }, walk: { type: 'string', default: '10x10,3x1' } } })

interface WalkCost { queries: number, answers: number, peersPerAnswer: number, answerAddrBytes: number }

async function fleet (n: number, walk: { alpha: number, disjointPaths: number }): Promise<Host[]> {
  const hosts: Host[] = []
  for (let i = 0; i < n; i++) {
    const h = await createHost({ fleet: 'bench-dht', maxConnections: VEHICLE_MAX_CONNECTIONS, dhtWalk: walk })
    hosts.push(h)
    for (let j = 0; j < Math.min(3, i); j++) {
      const other = hosts[Math.floor(Math.random() * i)]
      await h.dial(other.getMultiaddrs()[0]).catch(() => {})
    }
  }
  for (const h of hosts) {
    try {
      let closest = 0
      for await (const e of h.services.dht.getClosestPeers(h.peerId.toMultihash().bytes, { signal: AbortSignal.timeout(60_000) })) if (e.name === 'FINAL_PEER') closest++
      if (closest === 0) process.stderr.write('a host found no peers close to itself\n')
    } catch (err) {
      process.stderr.write(`self-lookup of one host: ${(err as Error).message}\n`)
    }
  }
  return hosts
}

/** One walk towards a random key, or undefined if it did not finish in time (the machine too busy). */
async function walkOnce (h: Host): Promise<WalkCost | undefined> {
  const c: WalkCost = { queries: 0, answers: 0, peersPerAnswer: 0, answerAddrBytes: 0 }
  try {
    await count(h, c)
    return c
  } catch (err) {
    process.stderr.write(`walk: ${(err as Error).message}\n`)
    return undefined
  }
}

async function count (h: Host, c: WalkCost): Promise<void> {
  for await (const e of h.services.dht.getClosestPeers(randomBytes(32), { signal: AbortSignal.timeout(60_000) })) {
    if (e.name === 'SEND_QUERY') c.queries++
    if (e.name === 'PEER_RESPONSE') {
      c.answers++
      c.peersPerAnswer += e.closer.length
      for (const p of e.closer) c.answerAddrBytes += 38 + p.multiaddrs.reduce((s, a) => s + a.bytes.byteLength + 2, 0)
    }
  }
}

const walks = Number(values.walks)
for (const spec of values.walk.split(',')) {
  const [alpha, disjointPaths] = spec.split('x').map(Number)
  for (const n of values.nodes.split(',').map(Number)) {
    const hosts = await fleet(n, { alpha, disjointPaths })
    try {
      const costs: WalkCost[] = []
      for (let i = 0; i < walks; i++) {
        const c = await walkOnce(hosts[Math.floor(Math.random() * n)])
        if (c !== undefined) costs.push(c)
      }
      const mean = (f: (c: WalkCost) => number): number => costs.reduce((s, c) => s + f(c), 0) / costs.length
      const answers = mean(c => c.answers)
      console.log(JSON.stringify({
        nodes: n,
        alpha,
        disjointPaths,
        walks: costs.length,
        queriesPerWalk: +mean(c => c.queries).toFixed(1),
        answersPerWalk: +answers.toFixed(1),
        peersPerAnswer: +(mean(c => c.peersPerAnswer) / answers).toFixed(1),
        bytesPerAnsweredPeer: +(mean(c => c.answerAddrBytes) / mean(c => c.peersPerAnswer)).toFixed(0)
      }))
    } finally {
      await Promise.all(hosts.map(async h => { await h.stop() }))
    }
  }
}
