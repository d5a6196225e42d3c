/**
 * A fleet member for test/netbed/punch.spec.ts, run inside a bed namespace:
 * `node punch-peer.ts <credentials.json> <bootstrap multiaddr>`. It builds
 * its node as `fleetmesh node` does (createNode with the bootstrap address
 * deciding the field settings, every interface), prints JSON lines
 * (`listening` with its addresses whenever they change, `dialed`, `conns`)
 * and reads commands on stdin: `dial <multiaddr>`, `conns <peer id>`.
 */
import { createInterface } from 'node:readline'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { loadCredentials } from '../../node/membership/credentials.ts'
import { FleetMetrics } from '../../node/metrics.ts'
import { LISTEN_ALL } from '../../node/network.ts'
import { createNode } from '../../node/node.ts'

const [file, boot] = process.argv.slice(2)
const credentials = await loadCredentials(file)
if (credentials.key === undefined) throw new Error(`${file} holds no key (issue it with --new-key)`)
const metrics = new FleetMetrics()
const node = await createNode(credentials.trust.fleet, { privateKey: credentials.key, metrics, credentials, bootstrap: [boot], listen: LISTEN_ALL.slice(0, 1) })
await node.start()
const say = (o: Record<string, unknown>): void => { process.stdout.write(JSON.stringify(o) + '\n') }
const addrs = (): void => { say({ type: 'listening', peer: node.host.peerId.toString(), addrs: node.host.getMultiaddrs().map(String) }) }
node.host.addEventListener('self:peer:update', addrs)
addrs()
process.once('SIGTERM', () => { void node.stop().finally(() => process.exit(0)) })
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, arg] = line.trim().split(' ')
  try {
    if (cmd === 'dial') {
      const c = await node.host.dial(multiaddr(arg), { signal: AbortSignal.timeout(20_000) })
      say({ type: 'dialed', remote: c.remoteAddr.toString(), limited: c.limits !== undefined })
    } else if (cmd === 'conns') {
      const conns = node.host.getConnections(peerIdFromString(arg)).map(c => ({ remote: c.remoteAddr.toString(), limited: c.limits !== undefined, direction: c.direction, status: c.status }))
      say({ type: 'conns', conns, punches: await metrics.registry.getSingleMetricAsString('fleetmesh_hole_punches_total') })
    }
  } catch (err) {
    say({ type: 'error', cmd, message: (err as Error).message })
  }
}
