/**
 * A whole mesh on this machine: one bootstrap peer and N vehicle nodes, each
 * its own process on loopback, and this process as the client peer that
 * shards the model and seeds the shards. Scenarios (jobs.ts, day.ts,
 * chaos.ts) run on it; `fleetmesh swarm` prints what they report.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { OutputMode } from '../../protocols/infer.ts'
import type { CompressMode } from '../../protocols/compression.ts'
import { DEFAULT_STAGE_PRIORITY, IDLE_WAITS } from '../runtime/thread-priority.ts'
import type { StagePriority } from '../runtime/thread-priority.ts'
import { CELL_SIZE } from '../capacity/cells.ts'
import { FleetClient } from '../client/client.ts'
import { publishSharded } from '../client/publish.ts'
import type { Published } from '../client/publish.ts'
import { loadOrCreateKey } from '../host.ts'
import { localFleet, saveCredentials } from '../membership/credentials.ts'
import type { Credentials, LocalFleet } from '../membership/credentials.ts'
import type { ResolvedModel } from '../client/resolver.ts'
import { sampleInputs } from '../models/catalog.ts'
import type { ModelSource } from '../models/catalog.ts'
import { shardModel } from '../models/shard.ts'
import type { ShardedModel } from '../models/shard.ts'
import { placeStages } from '../scheduler/placement.ts'
import { step } from '../util/abortable.ts'
import { count, mb, shortPeer } from '../util/text.ts'
import type { SimSchedule } from '../vehicle/sources.ts'
import type { VerifyMode } from '../client/verifier.ts'
import { GroupMember, PeerProcess } from './processes.ts'
import type { VehicleHandle } from './processes.ts'
import type { GroupSpec } from './group.ts'

export type Say = (tag: string, message: string) => void

export interface SwarmInit {
  model: ModelSource
  nodes: number
  stages: number
  fleet: string
  /** Simulated days for the vehicles (--scenario day); they start when `startDay` is called. */
  schedules?: SimSchedule[]
  say: Say
  signal: AbortSignal
  /** Called once the model is sharded. */
  onSharded?: (sharded: ShardedModel) => void
  /** The client's result checks. @default 'sample' */
  verify?: VerifyMode
  /** With verify sample: the lowest share of a proven vehicle's runs checked. */
  checkRate?: number
  /** The client runs this many first stages itself. */
  localStages?: number
  /** What the last hop returns (raw, text, top-k). */
  output?: OutputMode
  /** Lossy hand-offs for the model (shardModel's `handOff`). */
  handOff?: 'fp16'
  /** The client's coalescing (ClientInit `coalesce`). @default 4 */
  coalesce?: number
  /** Where the client and the vehicles compress tensors (`--compress`). @default 'auto' */
  compress?: CompressMode
  /** The vehicles' stage threads' CPU priority (`--stage-priority`). @default 'idle' */
  stagePriority?: StagePriority
  /** The last `liars` vehicles lie about their outputs (`node --lie mixed`). @default 0 */
  liars?: number
  /**
   * Locality cells: the vehicles are split into consecutive runs, one per
   * cell (so each cell holds every stage); the bootstrap carries them all,
   * the client routes in them all. @default one cell up to CELL_SIZE vehicles,
   * else `swarm-1`, `swarm-2`, ... of at most CELL_SIZE each
   */
  cells?: string[]
}

/** The cells a swarm of `nodes` vehicles uses when none are given. */
export function defaultCells (nodes: number): string[] | undefined {
  if (nodes <= CELL_SIZE) return undefined
  return Array.from({ length: Math.ceil(nodes / CELL_SIZE) }, (_, i) => `swarm-${i + 1}`)
}

/** The cell of vehicle `i` of `nodes`: consecutive runs, one per cell. */
export function cellIndex (i: number, nodes: number, cells: number): number { return Math.floor(i * cells / nodes) }

/** What a vehicle process reported, with its label and peer id. */
export interface VehicleReport { vehicle: string, peer: string, e: any }

/** Vehicles started at once. */
const START_WAVE = 8
/** Up to this many vehicles, each has a process of its own; past it they share, GROUP_SIZE to a process. */
export const PROCESS_LIMIT = 64
const GROUP_SIZE = 10
const GROUP_ENTRY = fileURLToPath(new URL(`./group${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url))

export class LocalSwarm {
  readonly init: SwarmInit
  readonly work: string
  readonly placement: number[][]
  readonly children: PeerProcess[] = []
  readonly vehicles: VehicleHandle[] = []
  /** Vehicle label -> peer id. */
  readonly peerOf = new Map<string, string>()
  /** Eligibility events of every vehicle, in order. */
  readonly reports: VehicleReport[] = []
  /** What the vehicles' stage threads run at, as they reported it when they started serving. */
  readonly stageThreads = new Set<string>()
  sharded!: ShardedModel
  /** The swarm's own fleet: its authority signs every peer's certificate. */
  members!: LocalFleet
  private published?: Published
  modelBytes!: Uint8Array
  client!: FleetClient
  bootAddr = ''
  startupMs = 0
  private readonly t0 = performance.now()
  /** The cells the vehicles park in (undefined: the default cell). */
  readonly cells: string[] | undefined

  private constructor (init: SwarmInit, work: string) {
    this.init = init
    this.work = work
    this.placement = placeStages(init.nodes, init.stages)
    this.cells = init.cells ?? defaultCells(init.nodes)
  }

  /** Starts everything; on failure (or abort) the caller still calls `stop`, which the returned swarm allows. */
  static async create (init: SwarmInit): Promise<LocalSwarm> {
    // a placement that cannot be made fails before anything is made (it left an empty directory behind)
    placeStages(init.nodes, init.stages)
    return new LocalSwarm(init, await mkdtemp(join(tmpdir(), 'fleetmesh-swarm-')))
  }

  get model (): ResolvedModel { return { cid: this.sharded.manifestCid, manifest: this.sharded.manifest } }

  async start (): Promise<void> {
    const { model: src, stages, fleet, say, signal } = this.init
    say('model', `${src.name}: ${src.description}`)
    this.modelBytes = await readFile(src.path)
    this.sharded = await step(shardModel(this.modelBytes, { stages, name: src.name, probeShapes: src.probeShapes, baseDir: dirname(src.path), ...(src.task !== undefined ? { task: src.task } : {}), ...(this.init.handOff !== undefined ? { handOff: this.init.handOff, handOffInputs: sampleInputs(src, Object.keys(src.probeShapes)[0] ?? 'x') } : {}) }), signal)
    say('shard', `${count(stages, 'stage')}, manifest …${this.sharded.manifestCid.slice(-12)}; cuts balance ${this.sharded.manifest.balancedBy === 'ms' ? 'measured node times' : 'estimated FLOPs'}, fewest bytes crossing`)
    this.init.onSharded?.(this.sharded)

    // a fleet of its own: an authority in this process, a certificate for every peer it starts
    const members = this.members = await localFleet(fleet, loadOrCreateKey)
    const bootKey = join(this.work, 'bootstrap.key')
    const bootCred = await this.credentialsFile('bootstrap', await members.forKeyFile(bootKey, { roles: ['bootstrap'], mayIssue: ['vehicle'] }))
    const cells = this.cells
    const boot = this.spawn('bootstrap', ['bootstrap', '--listen', '/ip4/127.0.0.1/tcp/0', '--key', bootKey, '--credentials', bootCred, ...(cells !== undefined ? ['--cells', cells.join(',')] : [])])
    const bootInfo = await step(boot.waitFor<{ peer: string, addrs: string[] }>(e => e?.type === 'listening', 30_000, 'its addresses'), signal)
    this.bootAddr = bootInfo.addrs[0]
    say('boot', `bootstrap ${shortPeer(bootInfo.peer)} on ${this.bootAddr.replace(/\/p2p\/.*/, '')} (pid ${boot.pid})`)

    // this process: the client peer, which also seeds the shards
    const client = this.client = await FleetClient.connect({ bootstrap: [this.bootAddr], fleet, credentials: await members.client(), ...(this.init.verify !== undefined ? { verify: this.init.verify } : {}), ...(this.init.checkRate !== undefined ? { checkRate: this.init.checkRate } : {}), ...(this.init.localStages !== undefined ? { localStages: this.init.localStages } : {}), ...(this.init.output !== undefined ? { output: this.init.output } : {}), ...(this.init.coalesce !== undefined ? { coalesce: this.init.coalesce } : {}), ...(this.init.compress !== undefined ? { compress: this.init.compress } : {}), ...(cells !== undefined ? { cells } : {}) })
    this.published = await step(publishSharded(client, this.sharded), signal)
    say('seed', `client ${shortPeer(client.peerId)} publishes ${this.sharded.manifest.name}@${this.sharded.manifest.version} and seeds the manifest and ${count(this.sharded.shards.size, 'shard')} (${mb([...this.sharded.shards.values()].reduce((s, b) => s + b.byteLength, 0))})`)

    // in waves: on a small machine, a few dozen processes starting and fetching shards from one seed at once
    // time out; each wave fetches from the seed and the waves before it
    // past PROCESS_LIMIT vehicles, they share processes (GROUP_SIZE each), a group per wave
    const grouped = this.placement.length > PROCESS_LIMIT
    const waveSize = grouped ? GROUP_SIZE : START_WAVE
    for (let first = 0; first < this.placement.length; first += waveSize) {
      const wave = this.placement.slice(first, first + waveSize).map((st, k) => ({ st, i: first + k }))
      if (grouped) {
        await this.startGroup(wave, members)
      } else {
        await Promise.all(wave.map(async ({ st, i }) => {
          await this.credentialsFile(`v${i + 1}`, await members.forKeyFile(join(this.work, `v${i + 1}`, 'peer.key'), { roles: ['vehicle'] }))
          const extra: string[] = []
          if (this.init.schedules !== undefined) {
            const file = join(this.work, `v${i + 1}-day.json`)
            await writeFile(file, JSON.stringify(this.init.schedules[i], null, 2))
            extra.push('--vehicle', `sim:${file}`)
          }
          if (i >= this.placement.length - (this.init.liars ?? 0)) extra.push('--lie', 'mixed')
          this.vehicles[i] = this.startVehicle(i, ['--stages', st.join(','), ...extra], st)
        }))
      }
      // stage threads at SCHED_IDLE load nothing while other processes keep every core busy
      const starved = (this.init.stagePriority ?? DEFAULT_STAGE_PRIORITY) === 'idle' ? IDLE_WAITS : undefined
      await step(Promise.all(wave.map(async ({ i }) => {
        for (const s of this.placement[i]) await this.vehicles[i].waitFor(e => e?.type === 'serving' && e.stage === s, grouped ? 480_000 : 90_000, `serving stage ${s}`, starved)
      })), signal)
    }
    // every placed replica heard from, so the first jobs can use all of them
    const m = this.model
    const holders = (stage: number): number => this.placement.filter(p => p.includes(stage)).length
    const heard = (): number => m.manifest.stages.reduce((n, s) => n + Math.min(holders(s.index), client.directory.holders(m.cid, s.index).length), 0)
    const placed = this.placement.reduce((n, p) => n + p.length, 0)
    try {
      await client.directory.waitFor(() => heard() === placed, { signal: AbortSignal.any([signal, AbortSignal.timeout(30_000)]), what: 'heartbeats from every vehicle' })
    } catch (err) {
      // a serving change the client missed comes with the vehicle's next full heartbeat; jobs use the holders heard
      signal.throwIfAborted()
      if (!m.manifest.stages.every(s => client.directory.holders(m.cid, s.index).length > 0)) throw err
      say('ready', `the client heard ${heard()} of ${placed} stage copies within 30 s of the last one served; the rest come with their next full heartbeat`)
    }
    this.startupMs = performance.now() - this.t0
    say('ready', `every stage served: ${m.manifest.stages.map(s => `stage ${s.index} x${client.directory.holders(m.cid, s.index).length}`).join(', ')}`)
  }

  private spawn (label: string, args: string[]): PeerProcess {
    const p = new PeerProcess(label, args, join(this.work, `${label}-${this.children.length}.log`))
    this.children.push(p)
    return p
  }

  private async credentialsFile (label: string, c: Credentials): Promise<string> {
    const file = join(this.work, `${label}.credentials.json`)
    await saveCredentials(file, c)
    return file
  }

  /** The cell vehicle `i` parks in, or undefined for the default. */
  private cellOf (i: number): string | undefined { return this.cells?.[cellIndex(i, this.placement.length, this.cells.length)] }

  /** Starts the vehicles of `wave` in one process (node/swarm/group.ts). */
  private async startGroup (wave: Array<{ st: number[], i: number }>, members: LocalFleet): Promise<void> {
    const spec: GroupSpec = { bootstrap: this.bootAddr, model: this.sharded.manifestCid, vehicles: [] }
    for (const { st, i } of wave) {
      const label = `v${i + 1}`
      const cell = this.cellOf(i)
      spec.vehicles.push({ label, data: join(this.work, label), credentials: await this.credentialsFile(label, await members.forKeyFile(join(this.work, label, 'peer.key'), { roles: ['vehicle'] })), stages: st, ...(cell !== undefined ? { cell } : {}) })
    }
    const file = join(this.work, `g${wave[0].i + 1}.json`)
    await writeFile(file, JSON.stringify(spec))
    const group = new PeerProcess(`g${wave[0].i + 1}`, [file], join(this.work, `g${wave[0].i + 1}.log`), GROUP_ENTRY)
    this.children.push(group)
    for (const { st, i } of wave) {
      const v = new GroupMember(group, `v${i + 1}`, wave.length)
      this.vehicles[i] = v
      this.watch(v, st)
    }
  }

  /** Starts (or restarts) vehicle `i` with extra `node` arguments. */
  startVehicle (i: number, extra: string[], stages: number[]): PeerProcess {
    const label = `v${i + 1}`
    const cell = this.cellOf(i)
    const v = this.spawn(label, ['node', '--bootstrap', this.bootAddr, '--listen', '/ip4/127.0.0.1/tcp/0', '--data', join(this.work, label), '--credentials', join(this.work, `${label}.credentials.json`), '--model', this.sharded.manifestCid, '--json', ...(cell !== undefined ? ['--cell', cell] : []), ...(this.init.compress !== undefined ? ['--compress', this.init.compress] : []), ...(this.init.stagePriority !== undefined ? ['--stage-priority', this.init.stagePriority] : []), ...extra])
    this.vehicles[i] = v
    this.watch(v, stages)
    return v
  }

  /** Starts the simulated day of every vehicle `leadMs` from now (vehicles of --scenario day wait for it). */
  startDay (leadMs: number): number {
    const wallStart = Date.now() + leadMs
    for (const v of this.vehicles) v.send({ type: 'sim-start', wallStart })
    return wallStart
  }

  private watch (v: VehicleHandle, st: number[]): void {
    const say = this.init.say
    const day = this.init.schedules !== undefined
    v.onEvent(e => {
      if (e?.type === 'listening') this.peerOf.set(v.label, e.peer)
      if (['eligible', 'ineligible', 'departed'].includes(e?.type)) this.reports.push({ vehicle: v.label, peer: this.peerOf.get(v.label) ?? '', e })
      if (day && e?.type === 'ineligible') say('leave', `${v.label} not eligible: ${e.reasons.join('; ')}; no new work, withdrawal published`)
      if (day && e?.type === 'departed') say('drain', `${v.label} drained in ${Math.round(e.ms)} ms: ${e.finished} finished, ${e.handedOff} handed back`)
      if (day && e?.type === 'eligible' && this.reports.some(x => x.vehicle === v.label && x.e.type === 'ineligible')) say('back', `${v.label} eligible again`)
      if (e?.type === 'listening') say('join', `${v.label} ${shortPeer(e.peer)} joined (pid ${v.pid}), will hold stage${st.length > 1 ? 's' : ''} ${st.join(', ')}${v.args.includes('--lie') ? '; it LIES about its outputs' : ''}`)
      if (e?.type === 'shard') say('fetch', `${v.label} got stage ${e.stage} (${mb(e.bytes)}) ${e.source === 'peer' ? 'peer to peer by CID, sha256 verified' : 'from its store'}, ${Math.round(e.ms)} ms`)
      if (e?.type === 'serving') {
        if (typeof e.priority === 'string') this.stageThreads.add(e.priority)
        say('serve', `${v.label} serving stage ${e.stage}${typeof e.priority === 'string' ? ` (its thread: ${e.priority})` : ''}`)
      }
      // a stage slow to load (most likely its thread starved at SCHED_IDLE): said at once, not only at the timeout
      if (e?.type === 'error' && e.slow === true) say('slow', `${v.label}: ${e.message}`)
      if (e?.type === 'chose') say('chose', `${v.label} chose stage ${e.stage} (${e.providers} other holder${e.providers === 1 ? '' : 's'})`)
    })
  }

  /** A vehicle's label (v1, v2, ...) from its peer id, else the short peer id. */
  labelOf (peer: string): string { return [...this.peerOf].find(([, p]) => p === peer)?.[0] ?? shortPeer(peer) }

  /** The last lines of every process's log. */
  async logTails (lines = 8): Promise<string[]> {
    const out: string[] = []
    for (const ch of this.children) {
      const tail = await ch.logTail(lines)
      if (tail !== '') out.push(`--- ${ch.label} (${ch.logFile}) ---\n${tail}`)
    }
    return out
  }

  /** Closes the client, stops every process started, removes the work directory unless `keepLogs`. */
  async stop (keepLogs = false): Promise<{ stopped: number, left: number }> {
    const running = this.children.filter(ch => ch.running).length
    this.published?.stop()
    await this.client?.close().catch(() => {})
    await Promise.all(this.children.map(async ch => { await ch.stop() }))
    if (!keepLogs) await rm(this.work, { recursive: true, force: true })
    return { stopped: running, left: this.children.filter(ch => ch.running).length }
  }
}
