/**
 * The fleet's relays carry members only (issue 11): a member holds a reservation on a bootstrap peer
 * and is reached through it, on a limited connection that fleet protocols run over; an outsider can
 * neither reserve a slot nor reach a member through the relay.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { startBootstrap } from '../../bootstrap/bootstrap.ts'
import type { Bootstrap } from '../../bootstrap/bootstrap.ts'
import { loadOrCreateKey } from '../../node/host.ts'
import { localFleet } from '../../node/membership/credentials.ts'
import { RELAY_HOP_PROTOCOL, memberProtocol } from '../../protocols/ids.ts'
import { testNode } from '../utils/node.ts'
import { until } from '../utils/until.ts'

const FLEET = 'relay-test'
const signal = (): AbortSignal => AbortSignal.timeout(5000)

describe('relays carry fleet members only', function () {
  this.timeout(60_000)
  let dir: string
  let boot: Bootstrap
  const stops: Array<() => Promise<void>> = []
  type Node = Awaited<ReturnType<typeof testNode>>
  let car: Node, client: Node, outsider: Node

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-relay-'))
    const members = await localFleet(FLEET, loadOrCreateKey)
    const bootKey = join(dir, 'boot.key')
    boot = await startBootstrap({ keyFile: bootKey, listen: ['/ip4/127.0.0.1/tcp/0'], fleet: FLEET, credentials: await members.forKeyFile(bootKey, { roles: ['bootstrap'] }) })
    stops.push(async () => { await boot.stop() })
    car = await testNode({ bootstrap: boot.addrs, credentials: await members.client(['vehicle']), relayReservations: true })
    stops.push(async () => { await car.node.stop() })
    client = await testNode({ bootstrap: boot.addrs, credentials: await members.client() })
    stops.push(async () => { await client.node.stop() })
    outsider = await testNode({ fleet: FLEET, bootstrap: boot.addrs, relayReservations: true })
    stops.push(async () => { await outsider.node.stop() })
  })

  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {})
    await rm(dir, { recursive: true, force: true })
  })

  it('a member holds a reservation and is reached through the relay, on a limited connection fleet protocols use', async () => {
    const circuit = await until(() => car.host.getMultiaddrs().find(a => a.toString().includes('/p2p-circuit/')), 20_000, 'relayed address')
    assert.ok(circuit.toString().startsWith(boot.addrs[0]), `${circuit.toString()} goes through the bootstrap peer`)
    // only the relayed address: the client must go through the relay
    const conn = await client.host.dial(multiaddr(circuit.toString()), { signal: signal() })
    assert.ok(conn.remoteAddr.toString().includes('/p2p-circuit'), conn.remoteAddr.toString())
    assert.notEqual(conn.limits, undefined, 'the relay limits what it carries')
    // a fleet protocol (the membership proof) runs over it, and the car proves itself to the client through the relay
    const stream = await conn.newStream(memberProtocol(FLEET), { signal: signal(), runOnLimitedConnection: true })
    await stream.close()
    await until(() => client.node.membership?.certificate(car.host.peerId.toString()), 10_000, 'proof from the car through the relay')
  })

  it('an outsider can neither reserve a slot nor reach a member through the relay', async () => {
    // it asks for a reservation as a member does (and a member gets one within a second): none comes
    // (watched before a member's proof timeout would cut the outsider off anyway)
    let reserved = false
    for (let t = 0; t < 30; t++) {
      reserved ||= outsider.host.getMultiaddrs().some(a => a.toString().includes('/p2p-circuit'))
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    assert.equal(reserved, false, 'the outsider got a relay reservation')
    // a hop stream opened by hand is cut before any answer
    const hop = await outsider.host.dialProtocol(multiaddr(boot.addrs[0]), RELAY_HOP_PROTOCOL, { signal: signal() }).catch(() => undefined)
    if (hop !== undefined) {
      const answer = await new Promise<unknown>(resolve => {
        hop.addEventListener('message', (e) => { resolve(e.data) }, { once: true })
        hop.addEventListener('close', () => { resolve(undefined) }, { once: true })
        setTimeout(() => { resolve(undefined) }, 6000)
      })
      assert.equal(answer, undefined, 'no answer on the hop protocol')
    }
    const circuit = `${boot.addrs[0]}/p2p-circuit/p2p/${car.host.peerId.toString()}`
    // a new connection through the relay, whatever else the outsider holds (a member cuts those within its proof timeout)
    await assert.rejects(outsider.host.dial(multiaddr(circuit), { signal: signal(), force: true }))
    assert.equal(outsider.host.getConnections(car.host.peerId).filter(c => c.remoteAddr.toString().includes('/p2p-circuit')).length, 0)
  })
})
