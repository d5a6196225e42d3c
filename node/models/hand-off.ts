/**
 * What lossy hand-offs cost a model: its stages run here twice on the probe
 * inputs, once handing on float32 as produced and once rounding every
 * hand-off to float16 as vehicles do, and the largest difference between the
 * two sets of outputs is the error a manifest states (`handOff.maxError`).
 * Random probe inputs understate it (a real text line's softmax is sharper):
 * callers pass real inputs where they have them (the built-in models' samples).
 */
import { LocalPipeline } from '../runtime/local-pipeline.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { Manifest } from './manifest.ts'
import { sampleTensor } from './specs.ts'

/** Probe inputs (seeds) the error is measured on. */
const PROBES = 3

/** The largest |lossless - fp16| over the float32 outputs of `PROBES` probe inputs and the `real` inputs given. */
export async function measureHandOffError (manifest: Manifest, shards: Map<string, Uint8Array>, real: Tensor[][] = []): Promise<number> {
  const lossless = await LocalPipeline.load({ ...manifest, handOff: undefined }, shards)
  const rounded = await LocalPipeline.load({ ...manifest, handOff: { encoding: 'fp16', maxError: 0 } }, shards)
  try {
    let worst = 0
    const probes = Array.from({ length: PROBES }, (_, p) => manifest.inputs.map((spec, i) => sampleTensor(spec, manifest.probeShapes[spec.name], (p + 1) * 100 + i)))
    for (const inputs of [...probes, ...real]) {
      const [a, b] = [(await lossless.run(inputs)).outputs, (await rounded.run(inputs)).outputs]
      a.forEach((t, i) => { if (t.dtype === 'float32') worst = Math.max(worst, maxAbsDiff(t, b[i])) })
    }
    // three significant digits, rounded up: the stated bound is never below what was measured
    if (worst === 0) return 0
    const scale = 10 ** (Math.floor(Math.log10(worst)) - 2)
    return Math.ceil(worst / scale) * scale
  } finally {
    await lossless.release()
    await rounded.release()
  }
}
