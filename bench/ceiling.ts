/**
 * The hardware's ceiling for issue 13's mesh / local ratio, measured here
 * rather than assumed:
 *
 * - cores: the whole model in two processes at once against one alone
 *   (what two cores give two sessions; 2.0 where the cores are real ones,
 *   less where they are hyperthreads of one, or other work takes its share);
 * - stages: the whole model's time against its slowest stage's, each run
 *   alone (a 2-stage pipeline can beat one process by no more than that).
 *
 * Beside them, the whole model's time per item when it runs 2, 3 or 4 items
 * along the batch dimension, in turn with single items: the mesh's client
 * sends jobs that wait as such groups (node/client/coalesce.ts), while the
 * ratio's whole model runs one item at a time; this says how much of a
 * ratio batching alone could give.
 *
 *   node bench/ceiling.ts [--runs 100] [--stages 2]      both figures
 *   node bench/ceiling.ts --one [--runs 100]             one process's items/s (a JSON line)
 *
 * The lower of the two bounds what `npm run bench` can show for two
 * vehicles with one stage each, before any networking. Prints a table,
 * then one JSON line.
 */
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { DEFAULT_MODEL, modelSource, sampleInputs } from '../node/models/catalog.ts'
import { createSession, runSession } from '../node/models/ort.ts'
import { shardModel } from '../node/models/shard.ts'
import { concatBatch } from '../node/client/microbatch.ts'
import { LocalPipeline } from '../node/runtime/local-pipeline.ts'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '100' }, stages: { type: 'string', default: '2' }, one: { type: 'boolean', default: false } } })
const runs = Number(values.runs)
const src = modelSource(DEFAULT_MODEL)
const model = await readFile(src.path)
const inputs = sampleInputs(src, Object.keys(src.probeShapes)[0])
const r2 = (x: number): number => Math.round(x * 100) / 100

/** The whole model over the sample inputs in this process: items/s after 10 warm-up runs. */
async function wholeSpeed (): Promise<number> {
  const s = await createSession(model)
  try {
    for (let i = 0; i < 10; i++) await runSession(s, inputs[i % inputs.length])
    const t0 = performance.now()
    for (let i = 0; i < runs; i++) await runSession(s, inputs[i % inputs.length])
    return runs / ((performance.now() - t0) / 1000)
  } finally { await s.release() }
}

if (values.one) {
  console.log(JSON.stringify({ itemsPerS: await wholeSpeed() }))
  process.exit(0)
}

/** Items/s of `n` processes running the whole model at once. */
async function processes (n: number): Promise<number[]> {
  const one = (): Promise<number> => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--one', '--runs', String(runs)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('exit', code => { try { resolve(JSON.parse(out.trim().split('\n').at(-1)!).itemsPerS) } catch { reject(new Error(`a whole-model process exited ${code}: ${out}`)) } })
  })
  return await Promise.all(Array.from({ length: n }, one))
}

const alone = (await processes(1))[0]
const pair = await processes(2)
const cores = (pair[0] + pair[1]) / alone

// each stage alone against the whole model, run in turn on the same inputs in this process
const sharded = await shardModel(model, { stages: Number(values.stages), name: src.name, probeShapes: src.probeShapes, baseDir: dirname(src.path) })
const pipeline = await LocalPipeline.load(sharded.manifest, sharded.shards)
const whole = await createSession(model)
const stageMs = sharded.manifest.stages.map(() => 0)
let wholeMs = 0
const BATCHES = [2, 3, 4]
const batchedMs = BATCHES.map(() => 0)
const batched = (i: number, b: number): ReturnType<typeof concatBatch> => concatBatch(Array.from({ length: b }, (_, k) => inputs[(i + k) % inputs.length]))
for (let i = 0; i < 10; i++) { await pipeline.run(inputs[i % inputs.length]); await runSession(whole, inputs[i % inputs.length]) }
for (let i = 0; i < runs; i++) {
  const x = inputs[i % inputs.length]
  const { stageMs: ms } = await pipeline.run(x)
  ms.forEach((m, s) => { stageMs[s] += m / runs })
  const t0 = performance.now()
  await runSession(whole, x)
  wholeMs += (performance.now() - t0) / runs
  for (const [j, b] of BATCHES.entries()) {
    const xs = batched(i, b)
    const t1 = performance.now()
    await runSession(whole, xs)
    batchedMs[j] += (performance.now() - t1) / b / runs
  }
}
await pipeline.release()
await whole.release()
const stages = wholeMs / Math.max(...stageMs)

console.log(`whole model alone ${r2(alone)} items/s; two processes at once ${pair.map(r2).join(' + ')} items/s`)
console.log(`cores:  two processes / one                         ${r2(cores)}`)
console.log(`stages: whole model ${r2(wholeMs)} ms / slowest stage of ${stageMs.map(r2).join(' + ')} ms   ${r2(stages)}`)
console.log(`batched: the whole model per item, ${BATCHES.join(' / ')} items at a time ${batchedMs.map(r2).join(' / ')} ms against ${r2(wholeMs)} alone`)
console.log(`ceiling for ${stageMs.length} vehicles with one stage each: ${r2(Math.min(cores, stages))}x the whole model in one process`)
console.log(JSON.stringify({ bench: 'ceiling', alone: r2(alone), pair: pair.map(r2), cores: r2(cores), wholeMs: r2(wholeMs), stageMs: stageMs.map(r2), stages: r2(stages), batchedMs: Object.fromEntries(BATCHES.map((b, j) => [b, r2(batchedMs[j])])), ceiling: r2(Math.min(cores, stages)) }))
