/**
 * Runs a sharded model (or its first stages) stage by stage in this process,
 * handing tensors on exactly as hops do. For checking a partition, for
 * benchmarks, and for clients that run the first stages themselves.
 */
import { createSession, runSession } from '../models/ort.ts'
import type { ort, SessionTuning } from '../models/ort.ts'
import { roundsHandOff } from '../models/manifest.ts'
import type { Manifest } from '../models/manifest.ts'
import { roundedToFloat16 } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'

export class LocalPipeline {
  private readonly manifest: Manifest
  private readonly sessions: ort.InferenceSession[]

  private constructor (manifest: Manifest, sessions: ort.InferenceSession[]) {
    this.manifest = manifest
    this.sessions = sessions
  }

  /** Loads every stage, or the first `count`. */
  static async load (manifest: Manifest, shards: Map<string, Uint8Array>, tuning: SessionTuning = {}, count = manifest.stages.length): Promise<LocalPipeline> {
    const sessions = []
    for (const s of manifest.stages.slice(0, count)) {
      const bytes = shards.get(s.cid)
      if (bytes === undefined) throw new Error(`missing shard ${s.cid} for stage ${s.index}`)
      sessions.push(await createSession(bytes, tuning))
    }
    return new LocalPipeline(manifest, sessions)
  }

  /** Runs the loaded stages; returns what the last hands on (the model outputs when all are loaded) and per-stage ms. */
  async run (inputs: Tensor[]): Promise<{ outputs: Tensor[], stageMs: number[] }> {
    let carried = inputs
    const stageMs: number[] = []
    for (const [i, s] of this.manifest.stages.slice(0, this.sessions.length).entries()) {
      const feeds = s.inputs.map(spec => {
        const t = carried.find(c => c.name === spec.name)
        if (t === undefined) throw new Error(`stage ${i} needs ${spec.name}, which no earlier stage handed on`)
        return t
      })
      const t0 = performance.now()
      const out = await runSession(this.sessions[i], feeds)
      stageMs.push(performance.now() - t0)
      const pool = new Map([...carried, ...out].map(t => [t.name, t]))
      carried = s.outputs.map(o => {
        const t = pool.get(o.name)
        if (t === undefined) throw new Error(`stage ${i} did not hand on ${o.name}`)
        return roundsHandOff(this.manifest, i) ? roundedToFloat16(t) : t
      })
    }
    return { outputs: carried, stageMs }
  }

  async release (): Promise<void> {
    for (const s of this.sessions) await s.release()
  }
}
