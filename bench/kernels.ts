/**
 * The WebAssembly SIMD kernels on a job's path (issue 13), on real tensors.
 *
 * What an fp16 hand-off costs the two hops it passes between: the
 * sending hop rounds the stage's float32 outputs to float16 (roundToFloat16:
 * the half bits to send and the rounded float32 values its receipt attests),
 * the receiving hop decodes the halves back to float32. Timed on a real
 * hand-off (pp-ocrv4-rec cut in two, run on the sample text lines), beside
 * what the same bytes cost anyway: SHA-256 of the float32 bytes (each hop
 * digests them for its receipt) and a copy. Ratios to SHA-256 are the figures
 * to compare between machines or runs.
 *
 * What greedy CTC decoding costs the last hop asked for text: the largest of
 * each time step's 6,625 probabilities (node/models/argmax.ts), against the
 * plain loop it replaced, on the whole model's outputs for the same lines.
 * The last line is JSON.
 *
 *   node bench/kernels.ts [--rounds 200]
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { parseArgs } from 'node:util'
import { decodeFloat16, encodeFloat16, roundToFloat16 } from '../protocols/float16.ts'
import { modelSource, sampleInputs } from '../node/models/catalog.ts'
import { shardModel } from '../node/models/shard.ts'
import { LocalPipeline } from '../node/runtime/local-pipeline.ts'
import { rowMaxima } from '../node/models/argmax.ts'
import { createSession, runSession } from '../node/models/ort.ts'
import type { Tensor } from '../protocols/tensor.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '200' } } })
const rounds = Number(values.rounds)

const src = modelSource('pp-ocrv4-rec')
const sharded = await shardModel(await readFile(src.path), { stages: 2, name: src.name, probeShapes: src.probeShapes, baseDir: dirname(src.path) })
const first = await LocalPipeline.load(sharded.manifest, sharded.shards, {}, 1)
const handOffs: Uint8Array[] = []
for (const x of sampleInputs(src, sharded.manifest.inputs[0].name)) handOffs.push((await first.run(x)).outputs[0].data)
await first.release()
const halves = handOffs.map(h => encodeFloat16(h))
const whole = await createSession(await readFile(src.path))
const probs: Tensor[] = []
for (const x of sampleInputs(src, sharded.manifest.inputs[0].name)) probs.push((await runSession(whole, x))[0])
await whole.release()
const [, T, C] = probs[0].dims

/** The loop ctcDecodeRow ran before: the first index of the largest value of each row. */
function plainMaxima (data: Uint8Array): Int32Array {
  const x = new Float32Array(data.buffer, data.byteOffset, T * C)
  const index = new Int32Array(T)
  for (let t = 0; t < T; t++) {
    let best = 0; let bv = -Infinity
    for (let c = 0; c < C; c++) { const v = x[t * C + c]; if (v > bv) { bv = v; best = c } }
    index[t] = best
  }
  return index
}

/** Median ms of `f` over the hand-offs, `rounds` times each, after a warm-up; the operations of a row alternate. */
function time (ops: Record<string, (i: number) => unknown>): Record<string, number> {
  const ms: Record<string, number[]> = Object.fromEntries(Object.keys(ops).map(k => [k, []]))
  for (let r = -20; r < rounds; r++) {
    for (const [name, f] of Object.entries(ops)) {
      const i = (r + 20) % Math.min(handOffs.length, probs.length)
      const t0 = performance.now()
      f(i)
      if (r >= 0) ms[name].push(performance.now() - t0)
    }
  }
  return Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, v.sort((a, b) => a - b)[v.length >> 1]]))
}

const m = time({
  sha256: i => createHash('sha256').update(handOffs[i]).digest(),
  copy: i => new Uint8Array(handOffs[i]),
  round: i => roundToFloat16(handOffs[i]),
  encode: i => encodeFloat16(handOffs[i]),
  decode: i => decodeFloat16(halves[i]),
  maxima: i => rowMaxima(probs[i].data, T, C),
  plainMaxima: i => plainMaxima(probs[i].data)
})
const bytes = handOffs[0].byteLength
const r3 = (x: number): number => Math.round(x * 1000) / 1000
console.log(`a ${bytes.toLocaleString('en')}-byte hand-off of ${src.name} (stage 0 of 2), median of ${rounds} rounds over ${handOffs.length} sample lines`)
console.log('operation                          ms   / SHA-256')
const rows = [
  ['SHA-256 of the float32 bytes', m.sha256],
  ['copy of the float32 bytes', m.copy],
  ['round to float16 (sending hop)', m.round],
  ['encode to float16 alone', m.encode],
  ['decode to float32 (receiving hop)', m.decode],
  [`CTC: maxima of ${T} x ${C} (SIMD)`, m.maxima],
  ['CTC: the same, a plain loop', m.plainMaxima]
] as const
for (const [what, ms] of rows) console.log(`${what.padEnd(34)} ${ms.toFixed(3).padStart(6)}  ${(ms / m.sha256).toFixed(2).padStart(6)}`)
console.log(JSON.stringify({ bench: 'kernels', bytes, ms: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, r3(v)])), perSha256: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, r3(v / m.sha256)])) }))
