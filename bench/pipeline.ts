/**
 * The pipeline against the hardware (issue 13), three ratios from one run,
 * printed beside the figures measured before the work on it:
 *
 * - two vehicles, one stage each, against the whole model in one process
 *   (`fleetmesh swarm --nodes 2 --stages 2`): target at least 1.4x;
 * - a sequential job's overhead over its summed stage compute (`--concurrency 1`):
 *   target at most 8 ms for two hops;
 * - one connection's throughput against raw TCP on loopback (bench/transport.ts):
 *   target at least 0.5x.
 *
 *   node bench/pipeline.ts [--jobs 200] [--concurrency 4]
 *
 * The last line is JSON. The throughput benchmark of earlier issues (per job
 * and batch modes over 4 vehicles) is `npm run bench:throughput`.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const MAIN = fileURLToPath(new URL('../node/cli/main.ts', import.meta.url))
const TRANSPORT = fileURLToPath(new URL('./transport.ts', import.meta.url))
const { values } = parseArgs({ options: { jobs: { type: 'string', default: '200' }, concurrency: { type: 'string', default: '4' } } })

/** Runs a script with Node and returns the JSON of its last line. */
async function lastJson (args: string[]): Promise<any> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('exit', code => {
      const last = out.trim().split('\n').at(-1) ?? ''
      try { resolve(JSON.parse(last)) } catch { reject(new Error(`${args.join(' ')} exited ${code}: ${last}`)) }
    })
  })
}

const swarm = async (extra: string[]): Promise<any> => await lastJson([MAIN, 'swarm', '--json', '--nodes', '2', '--stages', '2', '--fleet', 'bench', ...extra])

const r3 = (x: number): number => Math.round(x * 1000) / 1000
const pipelined = await swarm(['--jobs', values.jobs, '--concurrency', values.concurrency])
process.stderr.write('pipelined: done\n')
const sequential = await swarm(['--jobs', '50', '--concurrency', '1'])
process.stderr.write('sequential: done\n')
const transport = await lastJson([TRANSPORT, '--mb', '128', '--rounds', '3'])
process.stderr.write('transport: done\n')

const tls = transport.rows.find((r: { mode: string }) => r.mode.includes('TLS'))
const noise = transport.rows.find((r: { mode: string }) => r.mode.includes('Noise'))
const rows = [
  { figure: 'mesh / whole model in one process (2 vehicles, 1 stage each)', now: r3(pipelined.jobsPerS / pipelined.localJobsPerS), target: '>= 1.4', before: '0.45-0.62', detail: `${pipelined.jobsPerS} vs ${pipelined.localJobsPerS} jobs/s, ${values.concurrency} in flight, ${pipelined.completed}/${pipelined.jobs} done, max diff ${pipelined.maxAbsDiff}` },
  { figure: 'sequential job overhead over stage compute, ms (2 hops)', now: Math.round((sequential.p50Ms - sequential.computeP50Ms) * 10) / 10, target: '<= 8', before: '24 (38 - 14.7)', detail: `p50 ${sequential.p50Ms} ms, compute ${sequential.computeP50Ms} ms` },
  { figure: 'connection / raw TCP on loopback (Noise, the default)', now: noise.ratioToRaw, target: '>= 0.5', before: '0.19-0.26', detail: `${noise.mbPerS} MB/s; TLS 1.3 ${tls.mbPerS} MB/s (${tls.ratioToRaw}x)` }
]
for (const r of rows) console.log(`${r.figure}\n  now ${r.now}   target ${r.target}   before ${r.before}   (${r.detail})`)
console.log(JSON.stringify({ bench: 'pipeline', meshVsLocal: rows[0].now, sequentialOverheadMs: rows[1].now, transportVsRawTcp: noise.ratioToRaw, tlsVsRawTcp: tls.ratioToRaw, pipelined, sequential, transport }))
