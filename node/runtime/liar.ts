/**
 * A lying vehicle, for testing the result checks (`fleetmesh node --lie`,
 * `fleetmesh swarm --liars N`): it changes the outputs of the stages it
 * runs, then attests them as its own, as a compromised vehicle would.
 *
 * - zeros: every output is all zeros;
 * - perturb: about 1% of the values are moved by 1% (plus 0.01), so the
 *   outputs look plausible;
 * - forge: the outputs are random values in the range of the real ones;
 * - mixed: one of the three, varying per job.
 */
import { createHash } from 'node:crypto'
import type { Tensor } from '../../protocols/tensor.ts'
import type { OutputFilter } from './infer-handler.ts'

export const LIE_MODES = ['zeros', 'perturb', 'forge', 'mixed'] as const
export type LieMode = typeof LIE_MODES[number]

export function isLieMode (s: unknown): s is LieMode { return LIE_MODES.includes(s as LieMode) }

/** A deterministic generator per job and stage (so a lie can be reproduced from the job id). */
function rng (seed: string): () => number {
  let s = createHash('sha256').update(seed).digest().readUInt32LE(0) || 1
  return () => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 2 ** 32 }
}

function lieAbout (t: Tensor, mode: Exclude<LieMode, 'mixed'>, random: () => number): Tensor {
  const data = new Uint8Array(t.data)
  if (mode === 'zeros') return { ...t, data: new Uint8Array(data.byteLength) }
  if (t.dtype !== 'float32') {
    for (let i = 0; i < data.length; i++) if (mode === 'forge' || random() < 0.01) data[i] = Math.floor(random() * 256)
    return { ...t, data }
  }
  const f = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4)
  let range = 0
  for (const v of f) range = Math.max(range, Math.abs(v))
  for (let i = 0; i < f.length; i++) {
    if (mode === 'forge') f[i] = (random() * 2 - 1) * (range || 1)
    else if (random() < 0.01) f[i] = f[i] * 1.01 + 0.01
  }
  return { ...t, data }
}

/** An output filter that lies in `mode` on a share `rate` of the jobs. */
export function liar (mode: LieMode, rate = 1): OutputFilter {
  return (job, stage, outputs) => {
    const random = rng(`${job}/${stage}`)
    if (random() >= rate) return outputs
    const how = mode === 'mixed' ? (['zeros', 'perturb', 'forge'] as const)[Math.floor(random() * 3)] : mode
    return outputs.map(t => lieAbout(t, how, random))
  }
}
