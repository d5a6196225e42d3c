/**
 * Throughput benchmark: the mesh vs the whole model in one onnxruntime
 * process, side by side in each run (the machine is shared and noisy, so the
 * ratio is the figure; absolute rates move with load).
 *
 *   node bench/throughput.ts [--jobs 300] [--nodes 4] [--stages 3]
 *
 * Each row is one `fleetmesh swarm` run: per-job mode at several
 * concurrencies, then batch mode (announce, offers, leases, windowed
 * pipelines). Prints a table, then one JSON line.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const MAIN = fileURLToPath(new URL('../node/cli/main.ts', import.meta.url))
const { values } = parseArgs({ options: { jobs: { type: 'string', default: '300' }, nodes: { type: 'string', default: '4' }, stages: { type: 'string', default: '3' } } })

async function swarm (extra: string[]): Promise<any> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'swarm', '--json', '--jobs', values.jobs, '--nodes', values.nodes, '--stages', values.stages, '--fleet', 'bench', ...extra], { stdio: ['ignore', 'pipe', 'ignore'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('exit', code => {
      const last = out.trim().split('\n').at(-1) ?? ''
      try { resolve(JSON.parse(last)) } catch { reject(new Error(`swarm ${extra.join(' ')} exited ${code}: ${last}`)) }
    })
  })
}

const runs: Array<{ mode: string, args: string[] }> = [
  { mode: 'per job, 1 in flight', args: ['--concurrency', '1'] },
  { mode: 'per job, 2 in flight', args: ['--concurrency', '2'] },
  { mode: 'per job, 4 in flight', args: ['--concurrency', '4'] },
  { mode: 'batch (leases)', args: ['--batch', '--micro-batch', '1'] },
  { mode: 'batch, micro-batches', args: ['--batch', '--micro-batch', 'auto'] }
]
const rows: Array<Record<string, unknown>> = []
for (const r of runs) {
  const s = await swarm(r.args)
  rows.push({ mode: r.mode, meshPerS: s.jobsPerS, localPerS: s.localJobsPerS, ratio: Math.round(s.jobsPerS / s.localJobsPerS * 1000) / 1000, p50Ms: s.p50Ms, computeP50Ms: s.computeP50Ms, completed: `${s.completed}/${s.jobs}` })
  process.stderr.write(`${r.mode}: done\n`)
}
const head = ['mode', 'meshPerS', 'localPerS', 'ratio', 'p50Ms', 'computeP50Ms', 'completed']
const table = [head, ...rows.map(r => head.map(h => String(r[h])))]
const widths = head.map((_, i) => Math.max(...table.map(r => r[i].length)))
console.log(`mesh (${values.nodes} vehicle processes, ${values.stages} stages, ${values.jobs} items) vs whole model in one process; ratio = mesh / local, measured in the same run`)
for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  '))
console.log(JSON.stringify({ bench: 'throughput', nodes: Number(values.nodes), stages: Number(values.stages), jobs: Number(values.jobs), rows }))
