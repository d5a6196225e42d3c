/**
 * Several vehicles in one process, for swarms larger than a machine can
 * give a process each (`fleetmesh swarm --nodes 100` on 2 cores and 24 GiB):
 * `node group.ts <spec.json>` starts one VehicleAgent per entry of the spec,
 * each with its own identity, credentials, libp2p node and cell, and
 * reports every agent's events over IPC tagged with the vehicle's label, as
 * a one-vehicle `fleetmesh node` process does. SIGTERM (or the parent
 * leaving) stops them all.
 */
import { readFile } from 'node:fs/promises'
import { stop as stopAll } from '@libp2p/interface'
import { VehicleAgent } from '../agent.ts'
import { loadCredentials } from '../membership/credentials.ts'

export interface GroupVehicle {
  label: string
  data: string
  credentials: string
  stages: number[]
  cell?: string
}

export interface GroupSpec {
  bootstrap: string
  model: string
  vehicles: GroupVehicle[]
}

async function main (file: string): Promise<void> {
  const spec = JSON.parse(await readFile(file, 'utf8')) as GroupSpec
  const agents: VehicleAgent[] = []
  let stopping = false
  const leave = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    await stopAll(...agents).catch(() => {})
    process.exit(0)
  }
  process.once('SIGTERM', () => { void leave() })
  process.once('SIGINT', () => { void leave() })
  process.once('disconnect', () => { void leave() })
  // all at once, as separate processes would (one slow fetch does not hold the others back)
  await Promise.all(spec.vehicles.map(async v => {
    const credentials = await loadCredentials(v.credentials)
    const agent = await VehicleAgent.create({
      credentials,
      bootstrap: [spec.bootstrap],
      dataDir: v.data,
      fleet: credentials.trust.fleet,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      models: [{ model: spec.model, stages: v.stages }],
      ...(v.cell !== undefined ? { cell: v.cell } : {})
    })
    agent.onEvent(e => {
      process.send?.({ ...e, vehicle: v.label })
      console.log(JSON.stringify({ ...e, vehicle: v.label }))
    })
    agents.push(agent)
    await agent.start()
  }))
}

if (process.argv[2] === undefined) {
  console.error('usage: node group.ts <spec.json>')
  process.exit(2)
}
main(process.argv[2]).catch(err => {
  console.error(`vehicle group: ${(err as Error).message}`)
  process.exit(1)
})
