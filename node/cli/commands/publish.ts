import { dirname } from 'node:path'
import { readFile } from 'node:fs/promises'

import { fileURLToPath } from 'node:url'
import { publishModel } from '../../client/publish.ts'
import { modelSource, parseProbeShapes } from '../../models/catalog.ts'
import { sampleTensor } from '../../models/specs.ts'
import { BOOTSTRAP_OPTION, ACCESS_OPTIONS, HAND_OFF_OPTION, PROBE_SHAPE_OPTION, UsageError, handOffSettings, intOption, shortPeer, untilSignal, withFleetClient } from '../command.ts'
import type { Command } from '../command.ts'
import { capHint, inputText, table } from '../format.ts'
import { count } from '../../util/text.ts'
import { describePlan } from './inspect.ts'

const SAMPLE = fileURLToPath(new URL('../../../samples/text-lines/01.png', import.meta.url))

export const publishCommand: Command = {
  name: 'publish',
  summary: 'Publish a model to the fleet: shard it, seed the shards, name it in the DHT, announce it; vehicles with room choose stages and serve them.',
  usage: '<model.onnx | pp-ocrv4-rec | pp-ocrv4-det> --bootstrap <multiaddr> [--name N] [--version V] [--stages K|auto] [--keep] [--check] [--json]',
  options: {
    bootstrap: BOOTSTRAP_OPTION,
    name: { type: 'string', arg: '<name>', description: 'model name (default: the file name or built-in name)' },
    version: { type: 'string', arg: '<v>', description: 'version; versions are served side by side', default: '1' },
    stages: { type: 'string', arg: '<K|auto>', description: 'stage count, or auto: from the measured model time (~8 ms a stage) and the vehicles heard', default: 'auto' },
    'probe-shape': PROBE_SHAPE_OPTION,
    'hand-off': HAND_OFF_OPTION,
    ...ACCESS_OPTIONS,
    wait: { type: 'string', arg: '<ms>', description: 'how long to wait for every stage to be served', default: '60000' },
    keep: { type: 'boolean', description: 'keep seeding and announcing until Ctrl-C' },
    check: { type: 'boolean', description: 'when served, run one job and report the time from publish to its result' },
    json: { type: 'boolean', description: 'print one JSON object' }
  },
  details: 'Vehicles take published models when started with --room N (stages they may host). The publisher seeds the shards until every stage is served (or with --keep, until Ctrl-C).',
  async run (o, pos) {
    if (pos.length !== 1) throw new UsageError('give one model: a path to an .onnx file or a built-in name')
    const stages = o.stages === 'auto' ? 'auto' as const : intOption(o.stages, 'stages', 1, 64)
    const probe = o['probe-shape'] !== undefined ? parseProbeShapes(o['probe-shape'] as string[]) : undefined
    const src = modelSource(pos[0], probe)
    const waitMs = intOption(o.wait, 'wait', 1000, 3_600_000)
    const say = (m: string): void => { if (o.json !== true) console.log(m) }
    const t0 = performance.now()
    return await withFleetClient(o, async client => {
      // hear the vehicles first, so --stages auto can count them
      await client.directory.waitFor(() => client.directory.all().length > 0, { signal: AbortSignal.timeout(5000), what: 'vehicles' }).catch(() => {})
      const p = await publishModel(client, await readFile(src.path), {
        name: typeof o.name === 'string' ? o.name : src.name,
        version: String(o.version),
        stages,
        probeShapes: src.probeShapes,
        baseDir: dirname(src.path),
        ...(src.task !== undefined ? { task: src.task } : {}),
        ...handOffSettings(o, src)
      })
      const m = p.manifest
      say(`published ${m.name}@${m.version}: ${count(m.stages.length, 'stage')}, manifest ${p.manifestCid}`)
      say(`inputs: ${m.inputs.map(inputText).join('; ')}${capHint(m) !== '' ? ` ${capHint(m)}` : ''}`)
      say(table(describePlan(m).stages))
      say('waiting for vehicles to choose and serve every stage...')
      const counts = (): number[] => m.stages.map(s => client.directory.holders(p.manifestCid, s.index).length)
      let last = ''
      await client.directory.waitFor(() => {
        const now = counts().join(' / ')
        if (now !== last) { last = now; say(`  vehicles per stage: ${now}`) }
        return counts().every(n => n > 0)
      }, { signal: AbortSignal.timeout(waitMs), what: 'every stage to be served' })
      const servedMs = performance.now() - t0
      let firstJobMs: number | undefined
      if (o.check === true) {
        const input = src.fromImage !== undefined ? { ...src.fromImage(SAMPLE), name: m.inputs[0].name } : sampleTensor(m.inputs[0], m.probeShapes[m.inputs[0].name], 1)
        const r = await client.infer({ cid: p.manifestCid, manifest: m }, [input])
        firstJobMs = performance.now() - t0
        say(`first job done on ${r.route.map(shortPeer).join(' > ')}: ${Math.round(firstJobMs)} ms after publishing started`)
      }
      if (o.json === true) console.log(JSON.stringify({ name: m.name, version: m.version, manifest: p.manifestCid, stages: m.stages.length, vehiclesPerStage: counts(), servedMs: Math.round(servedMs), ...(firstJobMs !== undefined ? { firstJobMs: Math.round(firstJobMs) } : {}) }))
      else say(`every stage served ${Math.round(servedMs)} ms after publishing started`)
      if (o.keep === true) {
        say('seeding and announcing; Ctrl-C to stop')
        await untilSignal()
      }
      p.stop()
      return 0
    })
  }
}
