import { dirname } from 'node:path'
import { readFile } from 'node:fs/promises'
import { shardModel, writeSharded } from '../../models/shard.ts'
import { modelSource, parseProbeShapes } from '../../models/catalog.ts'
import { HAND_OFF_OPTION, PROBE_SHAPE_OPTION, UsageError, handOffSettings, intOption, requireOption } from '../command.ts'
import type { Command } from '../command.ts'
import { capHint, inputText, manifestTable, specText } from '../format.ts'
import { count } from '../../util/text.ts'

export const shardCommand: Command = {
  name: 'shard',
  summary: 'Split an ONNX model into pipeline stages: stage models plus a content-addressed manifest.',
  usage: '<model.onnx | pp-ocrv4-rec | pp-ocrv4-det> --stages <K> --out <dir> [--name <name>] [--probe-shape input=1,3,48,320]',
  options: {
    stages: { type: 'string', arg: '<K>', description: 'number of stages', default: '3' },
    out: { type: 'string', arg: '<dir>', description: 'output directory (manifest.json, stage-<i>.onnx)' },
    name: { type: 'string', arg: '<name>', description: 'model name in the manifest (default: file name)' },
    version: { type: 'string', arg: '<v>', description: 'model version in the manifest', default: '1' },
    'probe-shape': PROBE_SHAPE_OPTION,
    'hand-off': HAND_OFF_OPTION,
    flops: { type: 'boolean', description: 'balance by estimated FLOPs instead of measured node times: the same cuts (and manifest CID) every time' },
    json: { type: 'boolean', description: 'print the manifest CID and stage CIDs as JSON' }
  },
  details: 'Cuts are balanced by node times measured at the probe shape (onnxruntime\'s profiler), so on a busy machine they can land elsewhere; --flops balances by estimated FLOPs instead. Near each balanced point the cut with the fewest bytes crossing it wins.\nStages keep symbolic dimensions, so they accept other batch sizes and image sizes than the probe.',
  async run (o, pos) {
    if (pos.length !== 1) throw new UsageError('give exactly one model: a path to an .onnx file or a built-in name')
    const out = requireOption(o.out, 'out')
    const probe = o['probe-shape'] !== undefined ? parseProbeShapes(o['probe-shape'] as string[]) : undefined
    const src = modelSource(pos[0], probe)
    const t0 = performance.now()
    const sharded = await shardModel(await readFile(src.path), {
      stages: intOption(o.stages, 'stages', 1, 64),
      name: typeof o.name === 'string' ? o.name : src.name,
      version: String(o.version),
      probeShapes: src.probeShapes,
      baseDir: dirname(src.path),
      measure: o.flops !== true,
      ...(src.task !== undefined ? { task: src.task } : {}),
      ...handOffSettings(o, src)
    })
    const files = await writeSharded(sharded, out)
    if (o.json === true) {
      console.log(JSON.stringify({ manifest: sharded.manifestCid, dir: out, files, stages: sharded.manifest.stages.map(s => ({ index: s.index, cid: s.cid, bytes: s.bytes, share: s.share })) }))
      return 0
    }
    const m = sharded.manifest
    console.log(`${m.name}: ${count(m.stages.length, 'stage')} in ${(performance.now() - t0).toFixed(0)} ms, manifest ${sharded.manifestCid}`)
    console.log(`inputs:  ${m.inputs.map(inputText).join('; ')}${capHint(m) !== '' ? `\n         ${capHint(m)}` : ''}\noutputs: ${m.outputs.map(specText).join(', ')}\n`)
    console.log(manifestTable(m))
    for (const s of m.stages.slice(0, -1)) console.log(`cut after stage ${s.index}: ${s.outputs.map(x => x.name).join(', ')}`)
    console.log(`\nwrote ${files.length} files to ${out}`)
    return 0
  }
}
