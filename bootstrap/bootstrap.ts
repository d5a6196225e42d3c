/**
 * The bootstrap peer: a DHT server with a stable identity that new peers dial
 * first. It relays the fleet's gossip topics and schedules nothing.
 */
import { createHost, hostAddrs, loadOrCreateKey } from '../node/host.ts'
import type { Host } from '../node/host.ts'
import { DEFAULT_FLEET, capacityTopic, jobsTopic } from '../protocols/ids.ts'

export interface BootstrapInit {
  /** Identity key file; created on first start. */
  keyFile: string
  /** @default ['/ip4/127.0.0.1/tcp/4001'] */
  listen?: string[]
  /** @default 'dev' */
  fleet?: string
  /** Other bootstrap peers to join. @default [] */
  peers?: string[]
}

export const DEFAULT_BOOTSTRAP_LISTEN = ['/ip4/127.0.0.1/tcp/4001']

export async function startBootstrap (init: BootstrapInit): Promise<{ host: Host, addrs: string[] }> {
  const fleet = init.fleet ?? DEFAULT_FLEET
  const host = await createHost({
    privateKey: await loadOrCreateKey(init.keyFile),
    listen: init.listen ?? DEFAULT_BOOTSTRAP_LISTEN,
    bootstrap: init.peers ?? [],
    fleet,
    dhtServer: true
  })
  // members of the topic meshes, so gossip flows between peers that only know us
  host.services.pubsub.subscribe(capacityTopic(fleet))
  host.services.pubsub.subscribe(jobsTopic(fleet))
  return { host, addrs: hostAddrs(host) }
}
