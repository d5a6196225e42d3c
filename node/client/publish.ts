/**
 * Publishing a model to the fleet: partition it, keep the shards (this peer
 * seeds them), provide every CID in the DHT, put the signed name record
 * `/fmmodel/<name>` (versions -> manifest CID) and announce the model on the
 * jobs topic until stopped. Vehicles with room fetch the stages they choose.
 */
import { repeatingTask } from '@libp2p/utils'
import type { Tensor } from '../../protocols/tensor.ts'
import type { SubscriptionChangeData } from '@libp2p/gossipsub'
import { jobsTopic } from '../../protocols/ids.ts'
import { checkModelName, encodeJobsMessage, modelRecordKey, sealModelRecord } from '../../protocols/jobs.ts'
import { NotAMemberError, openCertificate } from '../../protocols/membership.ts'
import { hostAddrs } from '../host.ts'
import type { TaskInfo } from '../models/manifest.ts'
import type { ModelAnalysis } from '../models/partition/index.ts'
import { shardModel } from '../models/shard.ts'
import type { ShardedModel } from '../models/shard.ts'
import type { FleetClient } from './client.ts'

export interface PublishOptions {
  name: string
  version?: string
  /** A stage count, or 'auto': from the model's measured time and the vehicles heard. @default 'auto' */
  stages?: number | 'auto'
  probeShapes?: Record<string, number[]>
  /** Directory of the model file (for external data). */
  baseDir?: string
  task?: TaskInfo
  /** Lossy hand-offs (shardModel's `handOff`). @default lossless */
  handOff?: 'fp16'
  /** Real inputs to measure the fp16 hand-off error on (shardModel's `handOffInputs`). */
  handOffInputs?: Tensor[][]
  /** Re-announce period (a peer that joins the jobs topic hears it at once, and names are in the DHT). @default 300000 */
  announceEveryMs?: number
}

/** A peer joining the jobs topic re-triggers the model announcement at most this often. */
const REANNOUNCE_GAP_MS = 2000

/** Target ms per stage for `--stages auto`. */
export const AUTO_STAGE_MS = 8

/** `--stages auto`: enough stages for ~AUTO_STAGE_MS each, at most one per vehicle (and 8). */
export function autoStageCount (a: ModelAnalysis, vehicles: number): number {
  const ms = a.nodes.reduce((s, n) => s + (n.ms ?? 0), 0)
  const byCost = ms > 0 ? Math.round(ms / AUTO_STAGE_MS) : Math.round(a.totalFlops / 2e8)
  return Math.max(1, Math.min(byCost, Math.max(1, vehicles), 8, a.nodes.length))
}

export interface Published extends ShardedModel {
  /** Stops re-announcing (the shards stay seeded while the client runs). */
  stop: () => void
}

/** Refuses early when this peer's certificate cannot name models (the fleet would refuse its records anyway). */
async function checkPublisher (client: FleetClient): Promise<Uint8Array[] | undefined> {
  const chain = client.components.credentials?.chain()
  if (chain !== undefined && !(await openCertificate(chain[0])).cert.roles.includes('publisher')) {
    throw new NotAMemberError('only publishers name models: this peer\'s certificate has no publisher role (fleetmesh fleet issue --role publisher)')
  }
  return chain
}

/** Shards a model and publishes it (see publishSharded). */
export async function publishModel (client: FleetClient, model: Uint8Array, opts: PublishOptions): Promise<Published> {
  const name = checkModelName(opts.name)
  await checkPublisher(client)
  const vehicles = client.directory.eligible().length
  const sharded = await shardModel(model, {
    stages: opts.stages === undefined || opts.stages === 'auto' ? (a: ModelAnalysis) => autoStageCount(a, vehicles) : opts.stages,
    name,
    version: opts.version ?? '1',
    ...(opts.probeShapes !== undefined ? { probeShapes: opts.probeShapes } : {}),
    ...(opts.baseDir !== undefined ? { baseDir: opts.baseDir } : {}),
    ...(opts.task !== undefined ? { task: opts.task } : {}),
    ...(opts.handOff !== undefined ? { handOff: opts.handOff } : {}),
    ...(opts.handOffInputs !== undefined ? { handOffInputs: opts.handOffInputs } : {})
  })
  return await publishSharded(client, sharded, opts)
}

/** How long publishing waits for the DHT to take a provider or name record. */
const DHT_PUT_MS = 20_000

/** Runs a DHT put within DHT_PUT_MS; a timeout says what timed out and what usually causes it. */
async function inTime (what: string, put: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const signal = AbortSignal.timeout(DHT_PUT_MS)
  try { await put(signal) } catch (err) {
    if (!signal.aborted) throw err
    throw new Error(`${what} timed out after ${DHT_PUT_MS / 1000} s: no peer of the fleet took it (are the bootstrap peers and vehicles up, and do these credentials belong to this fleet?)`, { cause: err })
  }
}

/** Keeps a sharded model's manifest and shards and provides them in the DHT (this peer seeds them), naming nothing. */
export async function seedSharded (client: FleetClient, sharded: ShardedModel): Promise<void> {
  const store = client.exchange.store
  await store.put(sharded.manifestBytes)
  for (const [cid, bytes] of sharded.shards) await store.put(bytes, cid)
  await Promise.all([sharded.manifestCid, ...sharded.shards.keys()].map(async cid => {
    await inTime(`providing ${cid} in the DHT`, async signal => { await client.exchange.provide(cid, { signal }) })
  }))
}

/**
 * Publishes a sharded model under its manifest's name and version: keeps the
 * shards and provides them (this peer seeds), puts the signed name record
 * (earlier versions by this publisher kept) and announces the model every few
 * seconds until stopped.
 */
export async function publishSharded (client: FleetClient, sharded: ShardedModel, opts: { announceEveryMs?: number } = {}): Promise<Published> {
  const chain = await checkPublisher(client)
  const { name, version } = sharded.manifest
  checkModelName(name)
  await seedSharded(client, sharded)
  // the name record keeps this publisher's earlier versions (never another publisher's)
  let versions: Record<string, string> = {}
  try {
    const earlier = await client.resolver.nameRecord(name, { signal: AbortSignal.timeout(3000) })
    if (earlier.publisher === client.peerId) versions = earlier.versions
  } catch { /* first version */ }
  versions[version] = sharded.manifestCid
  const membership = chain !== undefined ? { membership: chain } : {}
  const record = await sealModelRecord({ name, versions, publisher: client.peerId, publishedAt: Date.now(), ...membership }, client.privateKey)
  await inTime(`putting the name record of ${name} in the DHT`, async signal => { await client.host.contentRouting.put(modelRecordKey(name), record, { signal }) })
  client.names.add(name, version, sharded.manifestCid, client.peerId)
  let last = 0
  const announcement = async (): Promise<void> => {
    last = Date.now()
    await client.components.pubsub.publish(jobsTopic(client.fleet), encodeJobsMessage({
      kind: 'model',
      ...membership,
      model: { name, version, manifest: sharded.manifestCid, stages: sharded.manifest.stages.length, publishedAt: Date.now(), addrs: hostAddrs(client.host) }
    })).catch(() => {})
  }
  // announced once, again for each peer that joins the topic (joins in a burst share one), and slowly after that:
  // a fleet-wide topic costs every car each message, so it carries no periodic chatter
  const topic = jobsTopic(client.fleet)
  const onJoin = (evt: CustomEvent<SubscriptionChangeData>): void => {
    if (evt.detail.subscriptions.some(s => s.topic === topic && s.subscribe) && Date.now() - last > REANNOUNCE_GAP_MS) task.run()
  }
  const task = repeatingTask(announcement, opts.announceEveryMs ?? 300_000, { runImmediately: true, debounce: REANNOUNCE_GAP_MS / 10 })
  task.start()
  client.components.pubsub.addEventListener('subscription-change', onJoin)
  return { ...sharded, stop: () => { task.stop(); client.components.pubsub.removeEventListener('subscription-change', onJoin) } }
}
