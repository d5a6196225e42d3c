/**
 * A bare node for tests: a libp2p host on 127.0.0.1 and the components
 * fleetmesh's parts take (see node/components.ts); a fleet member when given
 * credentials, else a node of an open fleet.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { NodeComponents } from '../../node/components.ts'
import type { Host } from '../../node/host.ts'
import type { HolePunchInit } from '../../node/hole-punch.ts'
import type { Credentials } from '../../node/membership/credentials.ts'
import { FleetMetrics } from '../../node/metrics.ts'
import { createNode } from '../../node/node.ts'
import type { FleetNode } from '../../node/node.ts'

export interface TestNodeInit {
  fleet?: string
  bootstrap?: string[]
  credentials?: Credentials
  privateKey?: PrivateKey
  /** Hold a relay reservation on a bootstrap peer (as a car behind NAT does). */
  relayReservations?: boolean
  /** Hole punching settings (loopback tests punch from loopback addresses: `{ addresses: 'any' }`). */
  holePunch?: HolePunchInit
  /** Locality cells whose capacity topics the node validates. @default [DEFAULT_CELL] */
  cells?: string[]
  /** Announce only relayed addresses (a car behind NAT, on loopback). @default false */
  onlyRelayed?: boolean
}

export async function testNode (init: TestNodeInit = {}): Promise<{ host: Host, components: NodeComponents, node: FleetNode }> {
  const node = await createNode(init.fleet ?? init.credentials?.trust.fleet ?? 'test', {
    privateKey: init.privateKey ?? init.credentials?.key ?? await generateKeyPair('Ed25519'),
    metrics: new FleetMetrics(),
    bootstrap: init.bootstrap ?? [],
    ...(init.credentials !== undefined ? { credentials: init.credentials } : {}),
    ...(init.relayReservations !== undefined ? { relayReservations: init.relayReservations } : {}),
    ...(init.holePunch !== undefined ? { holePunch: init.holePunch } : {}),
    ...(init.cells !== undefined ? { cells: init.cells } : {}),
    ...(init.onlyRelayed === true ? { announceFilter: (addrs: Multiaddr[]) => addrs.filter(a => a.toString().includes('/p2p-circuit')) } : {})
  })
  await node.start()
  return { host: node.host, components: node.components, node }
}
