/**
 * A fleet in the field, on the net bed: the bootstrap peer (also the relay)
 * and a client on the public segment, two vehicles in each of two depots
 * behind NAT routers (one cone, one symmetric), WAN links shaped by vde2.
 * Everything runs with the commands of README's "Running a mesh by hand";
 * only the addresses differ. Used by test/netbed/field.spec.ts (short) and
 * bench/field.ts (long).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NetBed } from './bed.ts'
import type { LinkShape } from './bed.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CLI = join(ROOT, 'node/cli/main.ts')
const NODE = process.execPath

export interface FieldInit {
  jobs: number
  /** DEBUG for the client process (libp2p's debug module), e.g. 'fleetmesh:*'. */
  debugClient?: string
  /** DEBUG for the vehicles. */
  debugVehicles?: string
  wan: LinkShape
  /** NAT of the second depot. @default 'symmetric' */
  nat2?: 'cone' | 'symmetric'
  /** Run the jobs again pinned to each depot, for the best route's p50. @default false */
  compareBest?: boolean
  /** The client's output mode (`--output`), e.g. 'text'. @default 'raw' */
  output?: string
  /** The model's hand-offs (`shard --hand-off`). @default 'lossless' */
  handOff?: 'lossless' | 'fp16'
  /** Where the client and the vehicles compress tensors (`--compress`). @default 'auto' */
  compress?: 'auto' | 'always' | 'off'
  log?: (line: string) => void
}

export interface JobLine { type: 'job', i: number, ms?: number, route?: string[], links?: string[], error?: string, wrong?: boolean }

export interface FieldResult {
  jobs: JobLine[]
  summary: { jobs: number, completed: number, failed: number, wrong: number, p50Ms: number, p95Ms: number, pinnedP50Ms?: Record<string, number>, bestP50Ms?: number, p50VsBest?: number }
  /** Vehicle (bed host name) of each peer id. */
  hostOf: Record<string, string>
  /** Share of completed jobs whose route stays inside one depot. */
  inDepotShare: number
  /**
   * Vehicle pairs in different depots, and how many of them hold a direct TCP connection at the end of
   * the run (punched through both NATs); the others talk through the relay, or not at all.
   */
  crossDepotLinks: { pairs: number, direct: number }
  startupMs: number
}

/** Fleet credentials and a 2-stage model, made with the CLI as a person would. */
function prepare (dir: string, handOff: 'lossless' | 'fp16'): { cid: string } {
  const cli = (args: string[]): string => execFileSync(NODE, [CLI, ...args], { encoding: 'utf8', cwd: dir })
  cli(['fleet', 'init', '--fleet', 'field', '--dir', 'authority'])
  cli(['fleet', 'issue', '--authority', 'authority', '--role', 'bootstrap', '--may-issue', 'vehicle', '--key', 'boot.key', '--out', 'boot.json'])
  cli(['fleet', 'grant', '--authority', 'authority', '--out', 'vehicles.json'])
  cli(['fleet', 'issue', '--authority', 'authority', '--role', 'client,publisher', '--new-key', '--out', 'me.json'])
  const shard = JSON.parse(cli(['shard', 'pp-ocrv4-rec', '--stages', '2', '--out', 'rec2', '--hand-off', handOff, '--json']).trim().split('\n').at(-1)!) as { manifest: string }
  return { cid: shard.manifest }
}

export async function runField (init: FieldInit): Promise<FieldResult> {
  const log = init.log ?? (() => {})
  const dir = mkdtempSync(join(tmpdir(), 'fm-field-'))
  const bed = NetBed.create({ public: ['boot', 'client'], depots: [{ vehicles: 2, nat: 'cone' }, { vehicles: 2, nat: init.nat2 ?? 'symmetric' }], wan: init.wan })
  try {
    const { cid } = prepare(dir, init.handOff ?? 'lossless')
    const t0 = performance.now()
    const lines = new Map<string, Array<Record<string, any>>>()
    const start = (host: string, args: string[], script = CLI, env: NodeJS.ProcessEnv = process.env): void => {
      const child = bed.spawn(host, NODE, [script, ...args], { cwd: dir, env })
      const got: Array<Record<string, any>> = []
      lines.set(host, got)
      let buf = ''
      child.stdout?.on('data', (d: Buffer) => {
        buf += d.toString()
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i); buf = buf.slice(i + 1)
          try { got.push(JSON.parse(line)) } catch { log(`${host}: ${line}`) }
        }
      })
      child.stderr?.on('data', (d: Buffer) => { log(`${host}! ${d.toString().trimEnd()}`) })
    }
    const waitFor = async (host: string, what: (l: Record<string, any>) => boolean, ms: number, label: string): Promise<Record<string, any>> => {
      const until = Date.now() + ms
      for (;;) {
        const hit = lines.get(host)?.find(what)
        if (hit !== undefined) return hit
        if (Date.now() > until) throw new Error(`${host}: no ${label} within ${ms} ms`)
        await new Promise(resolve => setTimeout(resolve, 250))
      }
    }

    // the README's commands, with the bootstrap listening on every interface (its default)
    start('boot', ['bootstrap', '--key', 'boot.key', '--credentials', 'boot.json', '--json'])
    const boot = await waitFor('boot', l => l.type === 'listening', 30_000, 'addresses')
    const BOOT = (boot.addrs as string[]).find(a => a.includes(`/ip4/${bed.host('boot').ip}/`))
    if (BOOT === undefined) throw new Error(`the bootstrap peer announces none of its public addresses: ${String(boot.addrs)}`)
    log(`boot ${BOOT}`)
    const vehicles = [...bed.depot(1), ...bed.depot(2)]
    // one vehicle imports the shard files; the others fetch them by CID from the mesh
    vehicles.forEach((v, i) => {
      start(v.name, ['node', '--bootstrap', BOOT, '--credentials', 'vehicles.json', '--data', `data-${v.name}`, '--model', i === 0 ? 'rec2/manifest.json' : cid, '--stages', String(i % 2), '--compress', init.compress ?? 'auto', '--json'], CLI, init.debugVehicles !== undefined ? { ...process.env, DEBUG: init.debugVehicles } : process.env)
    })
    const hostOf: Record<string, string> = {}
    for (const v of vehicles) {
      const l = await waitFor(v.name, l => l.type === 'listening', 60_000, 'listening')
      hostOf[l.peer] = v.name
      await waitFor(v.name, l => l.type === 'serving', 180_000, 'serving')
      log(`${v.name} serving`)
    }
    const startupMs = performance.now() - t0

    const groups = { d1: Object.keys(hostOf).filter(p => hostOf[p].startsWith('d1')), d2: Object.keys(hostOf).filter(p => hostOf[p].startsWith('d2')) }
    start('client', ['--bootstrap', BOOT, '--credentials', 'me.json', '--model', cid, '--jobs', String(init.jobs), '--output', init.output ?? 'raw', '--compress', init.compress ?? 'auto', ...(init.compareBest === true ? ['--groups', JSON.stringify(groups)] : [])], join(ROOT, 'test/netbed/field-client.ts'), init.debugClient !== undefined ? { ...process.env, DEBUG: init.debugClient } : process.env)
    const summary = await waitFor('client', l => l.type === 'summary', 120_000 + init.jobs * (init.compareBest === true ? 90_000 : 30_000), 'summary') as FieldResult['summary']
    const jobs = (lines.get('client') ?? []).filter(l => l.type === 'job') as JobLine[]
    const done = jobs.filter(j => j.route !== undefined)
    const depotOf = (peer: string): string => hostOf[peer]?.slice(0, 2) ?? '?'
    const inDepot = done.filter(j => new Set(j.route!.map(depotOf)).size === 1).length

    // cross-depot links, read from the kernel: a depot-1 vehicle's TCP connections to depot 2's router are direct
    // (one per pair: a punched connection is the only kind that crosses both NATs)
    const r2 = bed.host('r2').ip
    const direct = bed.depot(1).reduce((n, v) => n + bed.exec(v.name, 'ss', ['-Htn', 'state', 'established']).split('\n').filter(l => l.includes(` ${r2}:`)).length, 0)
    const crossDepotLinks = { pairs: bed.depot(1).length * bed.depot(2).length, direct }
    return { jobs, summary, hostOf, inDepotShare: done.length === 0 ? 0 : inDepot / done.length, crossDepotLinks, startupMs }
  } finally {
    await bed.destroy()
    rmSync(dir, { recursive: true, force: true })
  }
}
