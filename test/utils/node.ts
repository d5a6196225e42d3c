/**
 * A bare node for tests: a libp2p host on 127.0.0.1 and the components
 * fleetmesh's parts take (see node/components.ts).
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { nodeComponents } from '../../node/components.ts'
import type { NodeComponents } from '../../node/components.ts'
import { createHost } from '../../node/host.ts'
import type { Host, HostInit } from '../../node/host.ts'
import { FleetMetrics } from '../../node/metrics.ts'

export async function testNode (init: HostInit = {}): Promise<{ host: Host, components: NodeComponents }> {
  const privateKey = await generateKeyPair('Ed25519')
  const metrics = new FleetMetrics()
  const host = await createHost({ ...init, privateKey, metricsRegistry: metrics.registry })
  return { host, components: nodeComponents(host, privateKey, metrics) }
}
