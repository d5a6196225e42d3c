import { writeFile } from 'node:fs/promises'
import { CELL_SIZE } from '../../capacity/cells.ts'
import { intOption } from '../command.ts'
import type { Command } from '../command.ts'
import { table } from '../format.ts'
import { runSim } from '../../sim/run.ts'
import { daySvg } from '../../sim/svg.ts'

export const simCommand: Command = {
  name: 'sim',
  summary: 'Simulate a large fleet\'s day: eligibility by the real policy, routing by the real router, control traffic per car.',
  usage: '[--vehicles 10000] [--hours 24] [--cell-size 32] [--stages 3] [--jobs-per-hour <n>] [--svg sim-day.svg] [--json]',
  options: {
    vehicles: { type: 'string', arg: '<n>', description: 'cars in the fleet', default: '10000' },
    hours: { type: 'string', arg: '<h>', description: 'simulated hours from midnight', default: '24' },
    'cell-size': { type: 'string', arg: '<n>', description: 'cars per locality cell', default: String(CELL_SIZE) },
    stages: { type: 'string', arg: '<n>', description: 'stages of the model the fleet serves', default: '3' },
    'jobs-per-hour': { type: 'string', arg: '<n>', description: 'jobs per hour across the fleet (default: one per car)' },
    'sample-jobs': { type: 'string', arg: '<n>', description: 'jobs routed one by one per hour (the rest are counted alike)', default: '2000' },
    seed: { type: 'string', arg: '<n>', description: 'random seed of the commuter days and the job load', default: '1' },
    svg: { type: 'string', arg: '<file>', description: 'draw the day here', default: 'sim-day.svg' },
    json: { type: 'boolean', description: 'print one JSON object (with controlBytesPerVehiclePerS and wallS)' }
  },
  details: 'Cars live random commuter days (as `node --vehicle sim:random`); message sizes come from the real encoders, cadences from the real defaults; see README, "A million cars", for what is modelled and what is measured.',
  async run (o) {
    const vehicles = intOption(o.vehicles, 'vehicles', 1, 20_000_000)
    const result = await runSim({
      vehicles,
      hours: intOption(o.hours, 'hours', 1, 24 * 14),
      cellSize: intOption(o['cell-size'], 'cell-size', 1, 100_000),
      stages: intOption(o.stages, 'stages', 1, 32),
      jobsPerHour: o['jobs-per-hour'] !== undefined ? intOption(o['jobs-per-hour'], 'jobs-per-hour', 0, 1e12) : vehicles,
      sampleJobs: intOption(o['sample-jobs'], 'sample-jobs', 1, 1_000_000),
      seed: intOption(o.seed, 'seed', 0, 2 ** 31),
      onProgress: (n) => { if (o.json !== true) process.stderr.write(`  ${n.toLocaleString('en')} cars simulated\n`) }
    })
    await writeFile(String(o.svg), daySvg(result))
    if (o.json === true) {
      console.log(JSON.stringify({ ...result, svg: String(o.svg) }))
      return 0
    }
    console.log(table([['hour', 'eligible', 'sessions', 'jobs done', 'failed', 'p50 ms', 'p95 ms', 'ctl in B/s', 'ctl out B/s'], ...result.hourly.map(h => [String(h.hour), String(h.eligible), String(h.usableSessions), String(h.completed), String(h.failed), String(h.p50Ms), String(h.p95Ms), String(h.controlInPerVehiclePerS), String(h.controlOutPerVehiclePerS)])]))
    console.log(`\n${result.vehicles.toLocaleString('en')} cars in ${result.cells.toLocaleString('en')} cells: control traffic ${result.controlInOut.in} B/s in + ${result.controlInOut.out} B/s out = ${result.controlBytesPerVehiclePerS} B/s per car; ${result.jobsCompleted.toLocaleString('en')} jobs done, ${result.jobsFailed.toLocaleString('en')} failed; ${result.wallS} s; the day drawn in ${String(o.svg)}`)
    return 0
  }
}
