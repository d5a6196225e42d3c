/**
 * What result checks cost and catch: `fleetmesh swarm --liars 1` (one of six
 * vehicles lies about its outputs: zeros, small perturbations or forged
 * tensors, varying per job) at several check settings. For each: results
 * delivered wrong, liars caught, extra stage runs over plain ones
 * (verifyOverhead), and throughput as a ratio to the whole model run in the
 * same process (the machine is shared and noisy, so ratios compare, not rates).
 *
 *   node bench/verify.ts [--jobs 300]
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const MAIN = fileURLToPath(new URL('../node/cli/main.ts', import.meta.url))
const { values } = parseArgs({ options: { jobs: { type: 'string', default: '300' } } })

async function swarm (extra: string[]): Promise<any> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'swarm', '--json', '--liars', '1', '--jobs', values.jobs, '--fleet', 'bench-verify', ...extra], { stdio: ['ignore', 'pipe', 'ignore'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('exit', code => {
      const last = out.trim().split('\n').at(-1) ?? ''
      try { resolve(JSON.parse(last)) } catch { reject(new Error(`swarm ${extra.join(' ')} exited ${code}: ${last}`)) }
    })
  })
}

const runs = [
  { checks: 'off', args: ['--verify', 'off'] },
  { checks: 'sample, floor 0.02', args: ['--verify', 'sample', '--check-rate', '0.02'] },
  { checks: 'sample, floor 0.1', args: ['--verify', 'sample', '--check-rate', '0.1'] },
  { checks: 'sample, floor 0.3', args: ['--verify', 'sample', '--check-rate', '0.3'] },
  { checks: 'strict', args: ['--verify', 'strict'] }
]
const rows: Array<Record<string, unknown>> = []
for (const r of runs) {
  const s = await swarm(r.args)
  rows.push({ checks: r.checks, jobs: s.jobs, wrongDelivered: s.wrongDelivered, wrongPct: Math.round(s.wrongDelivered / s.jobs * 1000) / 10, caught: s.caught, checked: s.checked, verifyOverhead: s.verifyOverhead, meshVsLocal: Math.round(s.jobsPerS / s.localJobsPerS * 1000) / 1000, p50Ms: s.p50Ms })
  process.stderr.write(`${r.checks}: done\n`)
}
const head = ['checks', 'jobs', 'wrongDelivered', 'wrongPct', 'caught', 'checked', 'verifyOverhead', 'meshVsLocal', 'p50Ms']
const table = [head, ...rows.map(r => head.map(h => String(r[h])))]
const widths = head.map((_, i) => Math.max(...table.map(r => r[i].length)))
console.log(`result checks with 1 lying vehicle of 6 (3 stages, ${values.jobs} jobs each); verifyOverhead = extra stage runs / plain stage runs`)
for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  '))
console.log(JSON.stringify({ bench: 'verify', jobs: Number(values.jobs), rows }))
