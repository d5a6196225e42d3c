import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startBootstrap } from '../../bootstrap/bootstrap.ts'
import { VehicleAgent } from '../../node/agent.ts'
import type { Bootstrap } from '../../bootstrap/bootstrap.ts'
import { runCommand } from '../../node/cli/command.ts'
import { statusCommand } from '../../node/cli/commands/status.ts'
import { FleetClient } from '../../node/client/client.ts'
import { FleetJoinError, openFleetMismatch } from '../../node/client/join-check.ts'
import { loadOrCreateKey } from '../../node/host.ts'
import { localFleet, saveCredentials } from '../../node/membership/credentials.ts'
import type { LocalFleet } from '../../node/membership/credentials.ts'
import { EnrollmentError } from '../../node/membership/enrollment.ts'
import { fleetOfProtocols } from '../../protocols/ids.ts'

// `FleetClient.joined()`, which every CLI command that joins as a client asks first (node/cli/command.ts)
describe('joining a fleet: a wrong bootstrap address or another fleet\'s credentials are said at once (clients and vehicles)', function () {
  this.timeout(60_000)
  let dir: string
  let members: LocalFleet
  let boot: Bootstrap
  let openBoot: Bootstrap
  const clients: FleetClient[] = []
  const client = async (init: Omit<Parameters<typeof FleetClient.connect>[0], 'bootstrap'> & { bootstrap?: string[] }): Promise<FleetClient> => {
    const c = await FleetClient.connect({ bootstrap: boot.addrs, ...init })
    clients.push(c)
    return c
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-join-'))
    members = await localFleet('demo', loadOrCreateKey)
    const key = join(dir, 'boot.key')
    boot = await startBootstrap({ keyFile: key, listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'demo', credentials: await members.forKeyFile(key, { roles: ['bootstrap'] }) })
    openBoot = await startBootstrap({ keyFile: join(dir, 'open.key'), listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'dev' })
  })
  after(async () => {
    await Promise.all(clients.map(async c => { await c.close() }))
    await boot?.stop()
    await openBoot?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  const refusal = (pattern: RegExp) => (err: Error): boolean => {
    assert.ok(err instanceof FleetJoinError, String(err))
    assert.match(err.message, pattern)
    return true
  }

  it('a member is let in by the bootstrap peer', async () => {
    const c = await client({ credentials: await members.client(['client']) })
    assert.equal(await c.joined({ signal: AbortSignal.timeout(10_000) }), boot.host.peerId.toString())
  })

  it('credentials of another fleet: the bootstrap peer is in fleet demo', async () => {
    const other = await localFleet('other', loadOrCreateKey)
    const c = await client({ credentials: await other.client(['client']) })
    await assert.rejects(c.joined({ signal: AbortSignal.timeout(10_000) }), refusal(/it is in fleet demo, not other; this peer's credentials are for fleet other/))
    // a bootstrap peer of an open fleet with the same name
    const dev = await localFleet('dev', loadOrCreateKey)
    const d = await client({ credentials: await dev.client(['client']), bootstrap: openBoot.addrs })
    await assert.rejects(d.joined({ signal: AbortSignal.timeout(10_000) }), refusal(/it is in an open fleet named dev, without membership/))
  })

  it('a certificate of another authority of the same fleet name: the bootstrap peer does not take it', async () => {
    const forged = await localFleet('demo', loadOrCreateKey)
    const t0 = Date.now()
    const c = await client({ credentials: await forged.client(['client']) })
    await assert.rejects(c.joined({ signal: AbortSignal.timeout(10_000) }), refusal(/does not take this peer's certificate/))
    assert.ok(Date.now() - t0 < 8000, 'said before the wait ran out')
  })

  it('an open fleet\'s client: a members-only fleet, or another open fleet', async () => {
    const open = await client({ fleet: 'dev' })
    await assert.rejects(open.joined({ signal: AbortSignal.timeout(10_000) }), refusal(/it is in fleet demo, which takes members only/))
    assert.equal(await (await client({ fleet: 'dev', bootstrap: openBoot.addrs })).joined({ signal: AbortSignal.timeout(10_000) }), openBoot.host.peerId.toString())
    await assert.rejects((await client({ fleet: 'lab', bootstrap: openBoot.addrs })).joined({ signal: AbortSignal.timeout(10_000) }), refusal(/it is in the open fleet dev, not lab/))
  })

  it('nothing listening at the address: the command fails naming it, not with an empty answer', async () => {
    // a port that was free a moment ago
    const port = await new Promise<number>(resolve => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => { resolve(p) }) }) })
    const addr = `/ip4/127.0.0.1/tcp/${port}/p2p/${boot.host.peerId.toString()}`
    const file = join(dir, 'me.json')
    await saveCredentials(file, await members.client(['client']))
    await assert.rejects(runCommand(statusCommand, ['--bootstrap', addr, '--credentials', file]), refusal(new RegExp(`no bootstrap peer proved membership of fleet demo in time \\(${addr}\\): is it running`)))
  })

  it('a vehicle with another fleet\'s enrollment grant: its start fails saying the bootstrap peer does not enroll that fleet\'s members', async () => {
    const other = await localFleet('other', loadOrCreateKey)
    const v = await VehicleAgent.create({ bootstrap: boot.addrs, dataDir: join(dir, 'v-other'), fleet: 'other', credentials: await other.grant(), enrollTimeoutMs: 4000 })
    await assert.rejects(v.start(), (err: Error) => {
      assert.ok(err instanceof EnrollmentError, String(err))
      assert.match(err.message, /^no certificate after 4 s \(no certificate yet: .*: it does not enroll members of fleet other/)
      return true
    })
    assert.equal(v.host.status, 'stopped', 'its node is closed')
  })

  it('a vehicle told to stop while it enrolls leaves at once', async () => {
    const other = await localFleet('other', loadOrCreateKey)
    const v = await VehicleAgent.create({ bootstrap: boot.addrs, dataDir: join(dir, 'v-stopped'), fleet: 'other', credentials: await other.grant() })
    const t0 = Date.now()
    await assert.rejects(v.start({ signal: AbortSignal.timeout(1000) }), (err: Error) => err.name === 'TimeoutError')
    assert.ok(Date.now() - t0 < 5000, `left after ${Date.now() - t0} ms`)
    assert.equal(v.host.status, 'stopped')
  })

  it('reads which fleet a peer is in from its protocols', () => {
    assert.deepEqual(fleetOfProtocols(['/ipfs/id/1.0.0', '/fleetmesh/a/kad/1.0.0', '/fleetmesh/a/member/1.0.0']), { fleet: 'a', membersOnly: true })
    assert.deepEqual(fleetOfProtocols(['/fleetmesh/b/kad/1.0.0']), { fleet: 'b', membersOnly: false })
    assert.equal(fleetOfProtocols(['/ipfs/id/1.0.0', '/meshsub/1.1.0']), undefined)
    assert.equal(openFleetMismatch('b', ['/fleetmesh/b/kad/1.0.0']), undefined)
    assert.equal(openFleetMismatch('b', ['/ipfs/kad/1.0.0']), 'it is not a fleetmesh peer')
  })
})
