/**
 * The bootstrap peer: a DHT server with a stable identity that new peers dial
 * first. It relays the fleet's gossip topics and schedules nothing. With a
 * delegated issuer certificate (`may_issue`), it also issues certificates to
 * vehicles that enroll with a grant, and renews members' certificates; it
 * never holds the authority key.
 */
import { start } from '@libp2p/interface'
import { FleetMetrics } from '../node/metrics.ts'
import { hostAddrs, loadOrCreateKey } from '../node/host.ts'
import type { Host } from '../node/host.ts'
import { Issuer } from '../node/membership/credentials.ts'
import type { Credentials } from '../node/membership/credentials.ts'
import { IssuerService } from '../node/membership/enrollment.ts'
import { createNode } from '../node/node.ts'
import type { FleetNode } from '../node/node.ts'
import { DEFAULT_FLEET, capacityTopic, jobsTopic } from '../protocols/ids.ts'
import { openCertificate } from '../protocols/membership.ts'

export interface BootstrapInit {
  /** Identity key file; created on first start. */
  keyFile: string
  /** @default ['/ip4/127.0.0.1/tcp/4001'] */
  listen?: string[]
  /** @default 'dev' */
  fleet?: string
  /** Other bootstrap peers to join. @default [] */
  peers?: string[]
  /** Its certificate (role bootstrap, perhaps may-issue vehicle); undefined only for an open fleet. */
  credentials?: Credentials
}

export const DEFAULT_BOOTSTRAP_LISTEN = ['/ip4/127.0.0.1/tcp/4001']

export interface Bootstrap { host: Host, node: FleetNode, addrs: string[], issuer?: IssuerService, stop: () => Promise<void> }

export async function startBootstrap (init: BootstrapInit): Promise<Bootstrap> {
  const fleet = init.fleet ?? DEFAULT_FLEET
  const privateKey = await loadOrCreateKey(init.keyFile)
  const node = await createNode(fleet, {
    privateKey,
    metrics: new FleetMetrics(),
    listen: init.listen ?? DEFAULT_BOOTSTRAP_LISTEN,
    bootstrap: init.peers ?? [],
    dhtServer: true,
    ...(init.credentials !== undefined ? { credentials: init.credentials } : {})
  })
  let issuer: IssuerService | undefined
  const chain = init.credentials?.chain
  if (chain !== undefined && node.membership !== undefined) {
    const { cert } = await openCertificate(chain[0])
    if (cert.mayIssue.length > 0) issuer = new IssuerService({ ...node.components, membership: node.membership }, { issuer: new Issuer(privateKey, fleet, chain), mayIssue: cert.mayIssue })
  }
  await node.start()
  if (issuer !== undefined) await start(issuer)
  // members of the topic meshes, so gossip flows between peers that only know us
  node.host.services.pubsub.subscribe(capacityTopic(fleet))
  node.host.services.pubsub.subscribe(jobsTopic(fleet))
  return {
    host: node.host,
    node,
    addrs: hostAddrs(node.host),
    ...(issuer !== undefined ? { issuer } : {}),
    async stop () {
      await issuer?.stop()
      await node.stop()
    }
  }
}
