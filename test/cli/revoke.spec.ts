import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { startBootstrap } from '../../bootstrap/bootstrap.ts'
import type { Bootstrap } from '../../bootstrap/bootstrap.ts'
import { VehicleAgent } from '../../node/agent.ts'
import type { AgentEvent } from '../../node/agent.ts'
import { runCommand, UsageError } from '../../node/cli/command.ts'
import { fleetCommand, REVOCATIONS_FILE } from '../../node/cli/commands/fleet.ts'
import { loadOrCreateKey } from '../../node/host.ts'
import { loadAuthority } from '../../node/membership/credentials.ts'
import { openRevocations } from '../../protocols/membership.ts'
import { until } from '../utils/until.ts'

// `fleetmesh fleet revoke`, as README's "Fleet membership and trust" gives it: no list file to carry by hand
describe('fleetmesh fleet revoke', function () {
  this.timeout(60_000)
  let dir: string
  let boot: Bootstrap
  let vehicle: VehicleAgent
  const errors: string[] = []
  const fleet = async (...args: string[]): Promise<number> => {
    const log = console.log
    console.log = () => {}
    try { return await runCommand(fleetCommand, args) } finally { console.log = log }
  }
  const kept = async (): Promise<{ seq: number, peers: string[], serials: string[] }> => {
    const authority = await loadAuthority(join(dir, 'fleet', 'authority.key'), 'revoking')
    return await openRevocations(new Uint8Array(await readFile(join(dir, 'fleet', REVOCATIONS_FILE))), { fleet: 'revoking', authority: authority.peer })
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-revoke-'))
    assert.equal(await fleet('init', '--fleet', 'revoking', '--dir', join(dir, 'fleet')), 0)
    const authority = await loadAuthority(join(dir, 'fleet', 'authority.key'), 'revoking')
    const trust = { fleet: 'revoking', authority: authority.peer }
    const peerOf = async (keyFile: string): Promise<string> => peerIdFromPrivateKey(await loadOrCreateKey(keyFile)).toString()
    const bootKey = join(dir, 'boot.key')
    boot = await startBootstrap({ keyFile: bootKey, listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'revoking', credentials: { trust, chain: await authority.issue(await peerOf(bootKey), { roles: ['bootstrap'] }) } })
    const vehicleDir = join(dir, 'v')
    vehicle = await VehicleAgent.create({ bootstrap: boot.addrs, dataDir: vehicleDir, fleet: 'revoking', credentials: { trust, chain: await authority.issue(await peerOf(join(vehicleDir, 'peer.key')), { roles: ['vehicle'] }) } })
    vehicle.onEvent((e: AgentEvent) => { if (e.type === 'error') errors.push(e.message) })
    await vehicle.start()
  })
  after(async () => {
    await vehicle?.stop()
    await boot?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('publishes to the fleet; the revoked vehicle is dropped and says it is not let in', async () => {
    await until(() => boot.node.membership!.isMember(vehicle.peerId), 10_000, 'the vehicle a member')
    assert.equal(await fleet('revoke', '--authority', join(dir, 'fleet'), '--peer', vehicle.peerId, '--bootstrap', boot.addrs[0]), 0)
    assert.deepEqual((await kept()).peers, [vehicle.peerId])
    await until(() => !boot.node.membership!.isMember(vehicle.peerId), 10_000, 'the vehicle dropped')
    await until(() => errors.some(m => /revoked this vehicle|did not let this vehicle in/.test(m)), 20_000, 'the vehicle saying so')
  })

  it('each revoke adds to the list the authority keeps (a new list would be ignored by members that hold a newer one)', async () => {
    assert.equal(await fleet('revoke', '--authority', join(dir, 'fleet'), '--serial', 'abc', '--out', join(dir, 'copy.bin')), 0)
    const list = await kept()
    assert.deepEqual([list.seq, list.peers, list.serials], [2, [vehicle.peerId], ['abc']])
    assert.deepEqual(await readFile(join(dir, 'copy.bin')), await readFile(join(dir, 'fleet', REVOCATIONS_FILE)))
    await writeFile(join(dir, 'junk.bin'), 'not a list')
    await assert.rejects(fleet('revoke', '--authority', join(dir, 'fleet'), '--peer', 'x', '--list', join(dir, 'junk.bin')), (err: Error) => err instanceof UsageError && err.message.startsWith(`--list ${join(dir, 'junk.bin')}: `))
  })
})
