/**
 * Publishing a model to the fleet: partition it, keep the shards (this peer
 * seeds them), provide every CID in the DHT, put the signed name record
 * `/fmmodel/<name>` (versions -> manifest CID) and announce the model on the
 * jobs topic until stopped. Vehicles with room fetch the stages they choose.
 */
import { hostAddrs, peerPublicKey } from '../host.ts'
import { parseCid } from '../models/cid.ts'
import { shardModel } from '../models/manifest.ts'
import type { ShardedModel, TaskInfo } from '../models/manifest.ts'
import type { ModelAnalysis } from '../models/partition.ts'
import type { FleetClient } from './client.ts'
import { DEFAULT_FLEET, jobsTopic } from '../../protocols/ids.ts'
import { checkModelName, decodeModelRecord, encodeModelAnnouncement, encodeModelRecord, modelRecordKey } from '../../protocols/jobs.ts'
import type { PrivateKey } from '@libp2p/interface'

export interface PublishOptions {
  name: string
  version?: string
  /** A stage count, or 'auto': from the model's measured time and the vehicles heard. @default 'auto' */
  stages?: number | 'auto'
  probeShapes?: Record<string, number[]>
  /** Directory of the model file (for external data). */
  baseDir?: string
  task?: TaskInfo
  fleet?: string
  /** Signs the DHT name record. */
  privateKey: PrivateKey
  /** Re-announce period. @default 3000 */
  announceEveryMs?: number
}

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

export async function publishModel (client: FleetClient, model: Uint8Array, opts: PublishOptions): Promise<Published> {
  const name = checkModelName(opts.name)
  const version = opts.version ?? '1'
  const vehicles = client.directory.all().filter(p => client.directory.isFresh(p) && p.heartbeat.eligible).length
  const sharded = await shardModel(model, {
    stages: opts.stages === undefined || opts.stages === 'auto' ? (a: ModelAnalysis) => autoStageCount(a, vehicles) : opts.stages,
    name,
    version,
    ...(opts.probeShapes !== undefined ? { probeShapes: opts.probeShapes } : {}),
    ...(opts.baseDir !== undefined ? { baseDir: opts.baseDir } : {}),
    ...(opts.task !== undefined ? { task: opts.task } : {})
  })
  const store = client.exchange.store
  await store.put(sharded.manifestBytes)
  for (const [cid, bytes] of sharded.shards) await store.put(bytes, cid)
  await Promise.all([sharded.manifestCid, ...sharded.shards.keys()].map(async cid => {
    await client.host.contentRouting.provide(parseCid(cid), { signal: AbortSignal.timeout(20_000) })
  }))
  // the name record keeps earlier versions
  const key = modelRecordKey(name)
  let versions: Record<string, string> = {}
  try { versions = (await decodeModelRecord(await client.host.contentRouting.get(key, { signal: AbortSignal.timeout(3000) }), peerPublicKey)).versions } catch { /* first version */ }
  versions[version] = sharded.manifestCid
  await client.host.contentRouting.put(key, await encodeModelRecord({ name, versions, publisher: client.peerId, publishedAt: Date.now() }, opts.privateKey), { signal: AbortSignal.timeout(20_000) })
  const fleet = opts.fleet ?? DEFAULT_FLEET
  const announce = async (): Promise<void> => {
    await client.host.services.pubsub.publish(jobsTopic(fleet), encodeModelAnnouncement({
      v: 1, kind: 'model', name, version, manifest: sharded.manifestCid, stages: sharded.manifest.stages.length, publishedAt: Date.now(), addrs: hostAddrs(client.host)
    })).catch(() => {})
  }
  await announce()
  const timer = setInterval(() => { void announce() }, opts.announceEveryMs ?? 3000)
  timer.unref()
  return { ...sharded, stop: () => { clearInterval(timer) } }
}
