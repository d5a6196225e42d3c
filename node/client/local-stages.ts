/**
 * Stages a client runs itself (`--local-stages`, `localStages` in the API
 * and the gateway): the first stages of a model, so vehicles only ever see
 * intermediate activations, never the client's inputs. Their shards come
 * from the mesh by CID (hash-verified). onnxruntime is loaded only when a
 * client asks for this, so other clients carry no native addon.
 */
import type { ComponentLogger, Logger } from '@libp2p/interface'
import type { Tensor } from '../../protocols/tensor.ts'
import type { ShardExchange } from '../models/shard-exchange.ts'
import type { LocalPipeline } from '../runtime/local-pipeline.ts'
import type { ResolvedModel } from './resolver.ts'

export interface LocalStagesComponents {
  logger: ComponentLogger
  exchange: Pick<ShardExchange, 'get'>
}

/** `--local-stages` as given: "0", "0,1" or "0-1": the first stages, from 0, with none left out. Returns how many. */
export function parseLocalStages (spec: string): number {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(spec)
  const list = m !== null ? Array.from({ length: Number(m[2] ?? m[1]) - Number(m[1]) + 1 }, (_, i) => Number(m[1]) + i) : spec.split(',').map(s => Number(s.trim()))
  if (list.length === 0 || list.some((s, i) => !Number.isInteger(s) || s !== i)) throw new RangeError(`local stages ${JSON.stringify(spec)}: give the first stages, from 0 (e.g. 0, or 0-1)`)
  return list.length
}

export class LocalStages {
  private readonly c: LocalStagesComponents
  private readonly log: Logger
  private readonly loaded = new Map<string, Promise<LocalPipeline>>()

  constructor (components: LocalStagesComponents) {
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:local-stages')
  }

  /** Runs the first `count` stages of `m` here; returns what they hand on and how long each took. */
  async run (m: ResolvedModel, count: number, inputs: Tensor[]): Promise<{ outputs: Tensor[], stageMs: number[] }> {
    if (!Number.isInteger(count) || count < 1 || count >= m.manifest.stages.length) throw new RangeError(`local stages: 1..${m.manifest.stages.length - 1} of ${m.manifest.name}'s ${m.manifest.stages.length} (the last stage runs on the mesh)`)
    const key = `${m.cid}/${count}`
    let p = this.loaded.get(key)
    if (p === undefined) {
      p = this.load(m, count)
      this.loaded.set(key, p)
      p.catch(() => { this.loaded.delete(key) })
    }
    return await (await p).run(inputs)
  }

  private async load (m: ResolvedModel, count: number): Promise<LocalPipeline> {
    const shards = new Map<string, Uint8Array>()
    for (const s of m.manifest.stages.slice(0, count)) shards.set(s.cid, await this.c.exchange.get(s.cid))
    // the native addon only now, for a client that runs stages
    const { LocalPipeline } = await import('../runtime/local-pipeline.ts')
    this.log('running stages 0..%d of %s here', count - 1, m.manifest.name)
    return await LocalPipeline.load(m.manifest, shards, {}, count)
  }

  async close (): Promise<void> {
    const all = [...this.loaded.values()]
    this.loaded.clear()
    for (const p of all) await (await p.catch(() => undefined))?.release()
  }
}
