/**
 * Builds a mesh inside the test process: a bootstrap peer, a seeding client
 * and vehicles, all real libp2p nodes on 127.0.0.1.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startBootstrap } from '../../bootstrap/bootstrap.ts'
import { VehicleAgent } from '../../node/agent.ts'
import type { AgentEvent } from '../../node/agent.ts'
import { FleetClient } from '../../node/client/client.ts'
import { publishSharded, seedSharded } from '../../node/client/publish.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import type { Host } from '../../node/host.ts'
import type { StateSource } from '../../node/vehicle/sources.ts'
import type { LieMode } from '../../node/runtime/liar.ts'
import type { VerifyMode } from '../../node/client/verifier.ts'
import { loadOrCreateKey } from '../../node/host.ts'
import { localFleet } from '../../node/membership/credentials.ts'
import type { LocalFleet } from '../../node/membership/credentials.ts'
import type { CompressMode } from '../../protocols/compression.ts'
import type { StagePriority } from '../../node/runtime/thread-priority.ts'
import { SETTLE_MS } from './until.ts'

export interface TestMesh {
  dir: string
  /** The fleet's authority and trust (undefined for an open fleet). */
  fleet?: LocalFleet
  bootstrap: Host
  bootAddrs: string[]
  client: FleetClient
  vehicles: VehicleAgent[]
  events: Array<AgentEvent & { vehicle: number }>
  stop: () => Promise<void>
}

export interface MeshOptions {
  fleet?: string
  /** Vehicle state source per vehicle (default: always on). */
  source?: (i: number) => StateSource | undefined
  /** Stages each vehicle may host across published models. */
  room?: number
  /** Vehicles without a model given (e.g. to take published ones). @default placement.length */
  vehicles?: number
  /** An open fleet: no membership. @default false (a fleet with an authority, made for the test) */
  open?: boolean
  /** The client's result checks. @default 'sample' */
  verify?: VerifyMode
  /** Vehicles that lie about their outputs (testing the result checks). */
  lie?: (i: number) => LieMode | undefined
  /** Where the client and the vehicles compress tensors. @default 'auto' (never on loopback) */
  compress?: CompressMode
  /**
   * The vehicles' stage threads. @default 'normal', not a vehicle's `idle`: the suite runs two files at
   * once, and a stage thread at SCHED_IDLE waits behind the other file's work, so its run times (which
   * the router weighs) and the attempts' budgets speak of that file more than of the mesh under test (a
   * CI run, 2026-12-04; beside a busy loop 4 tests of this mesh failed). The default's own tests:
   * models/stage-priority.spec.ts, and cli/swarm.spec.ts's vehicle processes.
   */
  stagePriority?: StagePriority
  /** The client names the model (`publishSharded`); false: it only seeds the manifest and shards, as `node --model manifest.json` does. @default true */
  publish?: boolean
}

export async function startMesh (sharded: ShardedModel | undefined, placement: number[][], opts: MeshOptions = {}): Promise<TestMesh> {
  const fleet = opts.fleet ?? 'test'
  const dir = await mkdtemp(join(tmpdir(), 'fm-mesh-'))
  const members = opts.open === true ? undefined : await localFleet(fleet, loadOrCreateKey)
  const bootKey = join(dir, 'boot.key')
  const boot = await startBootstrap({ keyFile: bootKey, listen: ['/ip4/127.0.0.1/tcp/0'], fleet, ...(members !== undefined ? { credentials: await members.forKeyFile(bootKey, { roles: ['bootstrap'], mayIssue: ['vehicle'] }) } : {}) })
  const client = await FleetClient.connect({ bootstrap: boot.addrs, fleet, ...(members !== undefined ? { credentials: await members.client() } : {}), ...(opts.verify !== undefined ? { verify: opts.verify } : {}), ...(opts.compress !== undefined ? { compress: opts.compress } : {}) })
  // the client publishes the model (a name record, announcements) and seeds its shards, or only seeds them
  const published = sharded !== undefined && opts.publish !== false ? await publishSharded(client, sharded) : undefined
  if (sharded !== undefined && opts.publish === false) await seedSharded(client, sharded)
  const events: TestMesh['events'] = []
  const count = opts.vehicles ?? placement.length
  const vehicles = await Promise.all(Array.from({ length: count }, async (_, i) => {
    const dataDir = join(dir, `v${i}`)
    const v = await VehicleAgent.create({
      ...(members !== undefined ? { credentials: await members.forKeyFile(join(dataDir, 'peer.key'), { roles: ['vehicle'] }) } : {}),
      bootstrap: boot.addrs,
      dataDir,
      fleet,
      models: sharded !== undefined && placement[i] !== undefined ? [{ model: sharded.manifestCid, stages: placement[i] }] : [],
      ...(opts.room !== undefined ? { room: opts.room } : {}),
      ...(opts.source?.(i) !== undefined ? { vehicle: opts.source(i) } : {}),
      ...(opts.lie?.(i) !== undefined ? { lie: opts.lie(i) } : {}),
      ...(opts.compress !== undefined ? { compress: opts.compress } : {}),
      stagePriority: opts.stagePriority ?? 'normal'
    })
    v.onEvent(e => { events.push({ ...e, vehicle: i }) })
    await v.start()
    return v
  }))
  const signal = AbortSignal.timeout(SETTLE_MS)
  if (sharded !== undefined) await client.directory.waitFor(() => sharded.manifest.stages.every(s => client.directory.holders(sharded.manifestCid, s.index).length > 0), { signal, what: 'every stage served' })
  else await client.directory.waitFor(() => client.directory.all().length >= count, { signal, what: 'every vehicle heard' })
  return {
    dir,
    ...(members !== undefined ? { fleet: members } : {}),
    bootstrap: boot.host,
    bootAddrs: boot.addrs,
    client,
    vehicles,
    events,
    async stop () {
      published?.stop()
      await client.close()
      await Promise.all(vehicles.map(async v => { if (v.host.status === 'started') await v.stop() }))
      await boot.stop()
      await rm(dir, { recursive: true, force: true })
    }
  }
}
