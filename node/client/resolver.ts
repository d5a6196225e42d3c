/**
 * Name resolution: a model by manifest CID, manifest file, or name (`name`
 * or `name@version`): names publishers announced, then the publishers'
 * signed name records in the DHT (never names from heartbeats). Manifests
 * are fetched by CID and kept.
 */
import { readFile } from 'node:fs/promises'
import type { AbortOptions, ComponentLogger, ContentRouting, Logger } from '@libp2p/interface'
import { openCapacityRecord, capacityRecordKey } from '../../protocols/capacity.ts'
import type { CapacityRecord } from '../../protocols/capacity.ts'
import { modelRecordKey, openModelRecord } from '../../protocols/jobs.ts'
import { cidProblem, isCid } from '../models/cid.ts'
import { decodeManifest } from '../models/manifest.ts'
import type { Manifest } from '../models/manifest.ts'
import type { ShardExchange } from '../models/shard-exchange.ts'
import { latestVersion } from '../models/versions.ts'
import type { ModelNames } from './names.ts'

export interface ResolvedModel { cid: string, manifest: Manifest }

export class ModelNotFoundError extends Error {
  readonly name = 'ModelNotFoundError'
  readonly code = 'ERR_MODEL_NOT_FOUND'
}

export interface ResolverComponents {
  logger: ComponentLogger
  contentRouting: ContentRouting
  names: Pick<ModelNames, 'lookup' | 'waitFor' | 'add' | 'list'>
  exchange: Pick<ShardExchange, 'get' | 'store'>
  /** Manifests vehicles serve that no publisher named (CIDs): a name not found is looked for among them, to say so. */
  unpublished?: () => string[]
}

/** How long a name not found waits for the manifests of unpublished models, to name them in the error. */
const UNPUBLISHED_WAIT_MS = 2000

/** How long a name lookup listens for announcements before asking the DHT. */
const HEARD_WAIT_MS = 2000

export class ModelResolver {
  private readonly c: ResolverComponents
  private readonly log: Logger
  private readonly manifests = new Map<string, Manifest>()

  constructor (components: ResolverComponents) {
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:resolver')
  }

  /** A model by manifest CID, manifest file path, or name; `opts.signal` bounds the wait. */
  async resolve (model: string, opts: AbortOptions = {}): Promise<ResolvedModel> {
    const signal = opts.signal ?? AbortSignal.timeout(10_000)
    if (isCid(model)) {
      const cached = this.manifests.get(model)
      if (cached !== undefined) return { cid: model, manifest: cached }
      const manifest = decodeManifest(await this.c.exchange.get(model, { signal }))
      this.manifests.set(model, manifest)
      return { cid: model, manifest }
    }
    if (model.endsWith('.json')) {
      let bytes: Uint8Array
      try { bytes = await readFile(model) } catch (err) { throw new ModelNotFoundError(`manifest file ${model}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err }) }
      const manifest = decodeManifest(bytes)
      const cid = await this.c.exchange.store.put(bytes)
      this.manifests.set(cid, manifest)
      return { cid, manifest }
    }
    // publishers announce names; their signed DHT records name what was published earlier
    const heard = await this.c.names.waitFor(model, { signal: AbortSignal.any([signal, AbortSignal.timeout(HEARD_WAIT_MS)]) }).catch(() => undefined)
    if (heard !== undefined) return await this.resolve(heard, { signal })
    const [name, version] = model.split('@')
    const versions = await this.namedInDht(name, { signal })
    const cid = versions?.[version ?? latestVersion(Object.keys(versions ?? {})) ?? '']
    if (cid !== undefined) return await this.resolve(cid, { signal })
    const known = this.c.names.list().map(n => `${n.name}@${n.version}`)
    const served = await this.unpublishedNamed(name, version, signal)
    const notCid = /^(baf|Qm)/.test(model) ? ` (nor a CID: ${cidProblem(model)})` : ''
    throw new ModelNotFoundError(`model "${model}" is not named by any publisher heard from, nor in the DHT${notCid}${known.length > 0 ? ` (known: ${known.join(', ')})` : ''}` +
      (served.length > 0 ? `; vehicles serve an unpublished manifest of that name: ${served.join(', ')} (submit it by that CID, or name it with \`fleetmesh publish\`)` : ''))
  }

  /** The unpublished manifests vehicles serve whose own name (and version, when given) is this one. */
  private async unpublishedNamed (name: string, version: string | undefined, signal: AbortSignal): Promise<string[]> {
    const within = AbortSignal.any([signal, AbortSignal.timeout(UNPUBLISHED_WAIT_MS)])
    const found = await Promise.all((this.c.unpublished?.() ?? []).map(async cid => {
      try {
        const { manifest } = await this.resolve(cid, { signal: within })
        return manifest.name === name && (version === undefined || manifest.version === version) ? cid : undefined
      } catch { return undefined }
    }))
    return found.filter(cid => cid !== undefined)
  }

  /**
   * The versions (version -> manifest CID) a publisher's signed name record in
   * the DHT gives `name`, each then known as a name; undefined when there is none.
   */
  async namedInDht (name: string, opts: AbortOptions = {}): Promise<Record<string, string> | undefined> {
    try {
      const rec = await this.nameRecord(name, opts)
      for (const [v, cid] of Object.entries(rec.versions)) this.c.names.add(name, v, cid, rec.publisher)
      return rec.versions
    } catch (err) {
      this.log('no DHT record for model %s: %e', name, err)
      return undefined
    }
  }

  /** The signed name record of a model (versions -> manifest CID). */
  async nameRecord (name: string, opts: AbortOptions = {}): Promise<{ versions: Record<string, string>, publisher: string }> {
    return await openModelRecord(await this.c.contentRouting.get(modelRecordKey(name), opts))
  }

  /** A peer's signed capacity record from the DHT (verified), or undefined. */
  async capacityRecord (peer: string, opts: AbortOptions = {}): Promise<CapacityRecord | undefined> {
    try {
      return await openCapacityRecord(await this.c.contentRouting.get(capacityRecordKey(peer), { signal: opts.signal ?? AbortSignal.timeout(3000) }))
    } catch (err) {
      this.log('no capacity record for %s: %e', peer, err)
      return undefined
    }
  }
}
