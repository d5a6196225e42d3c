/**
 * What an fp16 hand-off costs the two hops it passes between (issue 13): the
 * sending hop rounds the stage's float32 outputs to float16 (roundToFloat16:
 * the half bits to send and the rounded float32 values its receipt attests),
 * the receiving hop decodes the halves back to float32. Timed on a real
 * hand-off (pp-ocrv4-rec cut in two, run on the sample text lines), beside
 * what the same bytes cost anyway: SHA-256 of the float32 bytes (each hop
 * digests them for its receipt) and a copy. Ratios to SHA-256 are the figures
 * to compare between machines or runs; the last line is JSON.
 *
 *   node bench/float16.ts [--rounds 200]
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { parseArgs } from 'node:util'
import { decodeFloat16, encodeFloat16, roundToFloat16 } from '../protocols/float16.ts'
import { modelSource, sampleInputs } from '../node/models/catalog.ts'
import { shardModel } from '../node/models/shard.ts'
import { LocalPipeline } from '../node/runtime/local-pipeline.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '200' } } })
const rounds = Number(values.rounds)

const src = modelSource('pp-ocrv4-rec')
const sharded = await shardModel(await readFile(src.path), { stages: 2, name: src.name, probeShapes: src.probeShapes, baseDir: dirname(src.path) })
const first = await LocalPipeline.load(sharded.manifest, sharded.shards, {}, 1)
const handOffs: Uint8Array[] = []
for (const x of sampleInputs(src, sharded.manifest.inputs[0].name)) handOffs.push((await first.run(x)).outputs[0].data)
await first.release()
const halves = handOffs.map(h => encodeFloat16(h))

/** Median ms of `f` over the hand-offs, `rounds` times each, after a warm-up; the operations of a row alternate. */
function time (ops: Record<string, (i: number) => unknown>): Record<string, number> {
  const ms: Record<string, number[]> = Object.fromEntries(Object.keys(ops).map(k => [k, []]))
  for (let r = -20; r < rounds; r++) {
    for (const [name, f] of Object.entries(ops)) {
      const i = (r + 20) % handOffs.length
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
  decode: i => decodeFloat16(halves[i])
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
  ['decode to float32 (receiving hop)', m.decode]
] as const
for (const [what, ms] of rows) console.log(`${what.padEnd(34)} ${ms.toFixed(3).padStart(6)}  ${(ms / m.sha256).toFixed(2).padStart(6)}`)
console.log(JSON.stringify({ bench: 'float16', bytes, ms: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, r3(v)])), perSha256: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, r3(v / m.sha256)])) }))
