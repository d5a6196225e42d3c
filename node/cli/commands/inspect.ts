import { dirname } from 'node:path'
import { readFile } from 'node:fs/promises'
import { decodeManifest } from '../../models/manifest.ts'
import { shardModel } from '../../models/shard.ts'
import type { Manifest } from '../../models/manifest.ts'
import { modelSource, parseProbeShapes } from '../../models/catalog.ts'
import { elementCount, itemSize } from '../../../protocols/tensor.ts'
import { HAND_OFF_OPTION, PROBE_SHAPE_OPTION, UsageError, handOffSettings, intOption } from '../command.ts'
import type { Command } from '../command.ts'
import { mb, table } from '../format.ts'
import { count } from '../../util/text.ts'

/** The split plan of a manifest as rows and cut descriptions. */
export function describePlan (m: Manifest): { stages: string[][], cuts: string[] } {
  const stages = [['stage', 'nodes', 'params', 'GFLOPs', 'est. ms', 'share', 'size']]
  for (const s of m.stages) {
    stages.push([String(s.index), String(s.nodes), String(s.params), (s.flops / 1e9).toFixed(3), (s.estMs ?? 0).toFixed(2), `${(s.share * 100).toFixed(0)}%`, mb(s.bytes)])
  }
  const cuts = m.stages.slice(0, -1).map(s => {
    const tensors = s.outputs.map(t => {
      const dims = t.probe ?? t.shape.map(d => d ?? 0)
      return `    ${t.name}  ${t.dtype}[${dims.join(',')}]  ${mb(elementCount(dims) * itemSize(t.dtype))}`
    })
    return `cut after stage ${s.index}: ${s.outputs.length} tensor${s.outputs.length === 1 ? '' : 's'}, ${mb(s.handOffBytes)}\n${tensors.join('\n')}`
  })
  return { stages, cuts }
}

/** How a manifest's stages hand on activations, and what it costs. */
export function handOffText (m: Manifest): string {
  if (m.handOff === undefined) return 'lossless (float32 as produced)'
  return `fp16 (float32 activations rounded to float16, half the bytes at each cut); max error of the outputs ${m.handOff.maxError.toPrecision(3)} (measured on 3 probe inputs against lossless hand-offs)`
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'Show how a model splits into stages: per stage its nodes, parameters, GFLOPs and ms, and the tensors crossing each cut.',
  usage: '<model.onnx | pp-ocrv4-rec | pp-ocrv4-det | manifest.json> [--stages K] [--probe-shape input=1,3,48,320] [--json]',
  options: {
    stages: { type: 'string', arg: '<K>', description: 'stages to plan (ONNX input only)', default: '3' },
    'probe-shape': PROBE_SHAPE_OPTION,
    'hand-off': HAND_OFF_OPTION,
    flops: { type: 'boolean', description: 'balance by estimated FLOPs instead of measured node times' },
    json: { type: 'boolean', description: 'print the plan (manifest) as JSON' }
  },
  async run (o, pos) {
    if (pos.length !== 1) throw new UsageError('give one model file, built-in name or manifest.json')
    let m: Manifest
    if (pos[0].endsWith('.json')) {
      m = decodeManifest(await readFile(pos[0]))
    } else {
      const probe = o['probe-shape'] !== undefined ? parseProbeShapes(o['probe-shape'] as string[]) : undefined
      const src = modelSource(pos[0], probe)
      m = (await shardModel(await readFile(src.path), { stages: intOption(o.stages, 'stages', 1, 64), name: src.name, probeShapes: src.probeShapes, baseDir: dirname(src.path), measure: o.flops !== true, ...handOffSettings(o, src) })).manifest
    }
    if (o.json === true) { console.log(JSON.stringify(m)); return 0 }
    const plan = describePlan(m)
    console.log(`${m.name}@${m.version}: ${count(m.stages.length, 'stage')}, balanced by ${m.balancedBy === 'ms' ? 'measured node times' : 'estimated FLOPs'} at ${Object.entries(m.probeShapes).map(([k, v]) => `${k}=[${v}]`).join(' ')}\n`)
    console.log(table(plan.stages))
    if (plan.cuts.length > 0) console.log('\n' + plan.cuts.join('\n'))
    console.log(`\nhand-offs: ${handOffText(m)}`)
    return 0
  }
}
