/**
 * TCP hole punching with predicted ports (node/hole-punch.ts), on loopback: two members whose only
 * connection runs through the bootstrap's relay exchange the addresses they will dial from and dial;
 * on loopback that cannot succeed, and the attempt must end cleanly. A member that names
 * anything but a plain TCP address, or punches over a direct connection, gets its stream closed and
 * no dial; an outsider cannot open the protocol at all. (Through real NATs, where it succeeds: test/netbed/punch.spec.ts.)
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, Stream } from '@libp2p/interface'
import { startBootstrap } from '../../bootstrap/bootstrap.ts'
import type { Bootstrap } from '../../bootstrap/bootstrap.ts'
import { loadOrCreateKey } from '../../node/host.ts'
import { localFleet } from '../../node/membership/credentials.ts'
import { PUNCH_PROTOCOL, memberProtocol } from '../../protocols/ids.ts'
import type { HolePunch } from '../../node/hole-punch.ts'
import { HolePunchSchema } from '../../protocols/gen/punch_pb.ts'
import { encodeMessage } from '../../protocols/codec.ts'
import { decodePunchMessage, encodePunchMessage } from '../../protocols/punch.ts'
import { testNode } from '../utils/node.ts'
import { until } from '../utils/until.ts'

const FLEET = 'punch-test'
const signal = (): AbortSignal => AbortSignal.timeout(5000)

/** Resolves with the first message the other side sends, or undefined when it closes the stream first. */
async function answerOf (stream: Stream): Promise<Uint8Array | undefined> {
  const lp = lpStream(stream)
  try { return (await lp.read({ signal: signal() })).subarray() } catch { return undefined }
}

describe('hole punching with predicted ports', function () {
  this.timeout(60_000)
  let dir: string
  let boot: Bootstrap
  const stops: Array<() => Promise<void>> = []
  type Node = Awaited<ReturnType<typeof testNode>>
  let car: Node, client: Node, rogue: Node, outsider: Node
  let members: Awaited<ReturnType<typeof localFleet>>

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-punch-'))
    members = await localFleet(FLEET, loadOrCreateKey)
    const bootKey = join(dir, 'boot.key')
    boot = await startBootstrap({ keyFile: bootKey, listen: ['/ip4/127.0.0.1/tcp/0'], fleet: FLEET, credentials: await members.forKeyFile(bootKey, { roles: ['bootstrap'] }) })
    stops.push(async () => { await boot.stop() })
    // the car announces only its relayed address: a peer reaches it through the relay or by punching
    car = await testNode({ bootstrap: boot.addrs, credentials: await members.client(['vehicle']), relayReservations: true, onlyRelayed: true, holePunch: { addresses: 'any' } })
    stops.push(async () => { await car.node.stop() })
    // nor do the others: behind NAT too, nobody can dial them
    client = await testNode({ bootstrap: boot.addrs, credentials: await members.client(), onlyRelayed: true, holePunch: { addresses: 'any', delayMs: 200 } })
    stops.push(async () => { await client.node.stop() })
    // a member that punches only by hand
    rogue = await testNode({ bootstrap: boot.addrs, credentials: await members.client(), onlyRelayed: true, holePunch: { addresses: 'any', delayMs: 3_600_000 } })
    stops.push(async () => { await rogue.node.stop() })
    outsider = await testNode({ fleet: FLEET, bootstrap: boot.addrs })
    stops.push(async () => { await outsider.node.stop() })
  })

  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {})
    await rm(dir, { recursive: true, force: true })
  })

  const circuitOfCar = async (): Promise<string> => (await until(() => car.host.getMultiaddrs().find(a => a.toString().includes('/p2p-circuit/')), 20_000, 'relayed address')).toString()
  const relayedTo = async (from: Node): Promise<Connection> => {
    // the relay's dial was now and then reset here: the outsider, refused by the relay, was redialled
    // dozens of times a second and used up the connections a second the relay takes from 127.0.0.1
    // (node/redial-backoff.ts now backs off; test/network/redial-backoff.spec.ts)
    const conn = await from.host.dial(multiaddr(await circuitOfCar()), { signal: signal() })
    assert.notEqual(conn.limits, undefined, 'the first connection is relayed')
    // the car proves membership over it before a gated protocol answers
    await until(() => from.node.membership?.certificate(car.host.peerId.toString()), 10_000, 'proof from the car')
    return conn
  }

  /** A punch stream, paced: the car lets one peer open them 2 a second (bursts of 5), and refuses the rest. */
  const paced = async (conn: Connection): Promise<Stream> => {
    await new Promise(resolve => setTimeout(resolve, 600))
    return await conn.newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true, signal: signal() })
  }

  it('two members on a relayed connection exchange ports and dial; where no NAT holds a SYN the punch fails cleanly', async () => {
    // on loopback a SYN meets a reset at once, so the crossing dials cannot meet (they do through NATs:
    // test/netbed/punch.spec.ts); what must hold is that the attempt ends, is counted, and leaves the
    // relayed connection working
    const relayed = await relayedTo(client)
    const failed = await until(async () => /outcome="failed"} 1/.test(await client.components.metrics.registry.getSingleMetricAsString('fleetmesh_hole_punches_total')), 20_000, 'a counted failure')
    assert.ok(failed)
    assert.equal(relayed.status, 'open', 'the relayed connection stays')
    assert.equal(client.host.getConnections(car.host.peerId).filter(c => c.limits === undefined).length, 0)
    // fleet streams still run over the relay
    const s = await client.components.dialer.dialProtocol(car.host.peerId, memberProtocol(FLEET), { signal: signal() })
    assert.notEqual(client.host.getConnections(car.host.peerId).find(c => c.streams.includes(s))?.limits, undefined)
    s.abort(new Error('done'))
    // and the pair is not punched again before the retry time, from either side: the car does not answer
    const punch = (client.host.services as unknown as { punch: HolePunch }).punch
    assert.equal(await punch.punch(relayed), 'refused')
    const again = await relayed.newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true, signal: signal() })
    await lpStream(again).write(encodePunchMessage({ type: 'connect', addrs: [multiaddr('/ip4/127.0.0.1/tcp/9')] }))
    assert.equal(await answerOf(again), undefined, 'the car answered a punch from a peer whose punch just failed')
  })

  it('a punch is not answered while the one before from the same peer is still dialled back, whichever peer id is lower', async () => {
    // two members that punch only by hand, one reachable through the relay; each answers the other's punch
    // (SYNC: it dials 127.0.0.1:9 for the whole window), then gets a second CONNECT at once. One of the two
    // answering sides has the higher peer id, which the rule for crossing punches once let answer again
    const manual = { onlyRelayed: true, holePunch: { addresses: 'any' as const, delayMs: 3_600_000 } }
    const a = await testNode({ bootstrap: boot.addrs, credentials: await members.client(), relayReservations: true, ...manual })
    stops.push(async () => { await a.node.stop() })
    const b = await testNode({ bootstrap: boot.addrs, credentials: await members.client(), ...manual })
    stops.push(async () => { await b.node.stop() })
    const circuit = await until(() => a.host.getMultiaddrs().find(x => x.toString().includes('/p2p-circuit/')), 20_000, 'relayed address')
    const fromB = await b.host.dial(circuit, { signal: signal() })
    assert.notEqual(fromB.limits, undefined, 'relayed')
    await until(() => b.node.membership?.certificate(a.host.peerId.toString()), 10_000, 'proof from a')
    await until(() => a.node.membership?.certificate(b.host.peerId.toString()), 10_000, 'proof from b')
    const fromA = await until(() => a.host.getConnections(b.host.peerId).find(c => c.limits !== undefined), 10_000, 'the relayed connection at a')
    const connect = async (conn: Connection): Promise<{ stream: Stream, answer: Uint8Array | undefined }> => {
      const stream = await conn.newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true, signal: signal() })
      await lpStream(stream).write(encodePunchMessage({ type: 'connect', addrs: [multiaddr('/ip4/127.0.0.1/tcp/9')] }))
      return { stream, answer: await answerOf(stream) }
    }
    for (const [conn, answerer] of [[fromB, 'a'], [fromA, 'b']] as const) {
      const first = await connect(conn)
      assert.ok(first.answer !== undefined, `${answerer} answers a first punch`)
      assert.equal(decodePunchMessage(first.answer).type, 'connect')
      await lpStream(first.stream).write(encodePunchMessage({ type: 'sync' }))
      const second = await connect(conn)
      assert.equal(second.answer, undefined, `${answerer} answered a second punch while it dialled back the first`)
      first.stream.abort(new Error('done'))
    }
  })

  it('a member that names something other than a plain TCP address gets no answer and no dial', async () => {
    const relayed = await relayedTo(rogue)
    const before = car.host.getConnections(rogue.host.peerId).length
    for (const addr of ['/dns4/example.com/tcp/22', '/ip4/127.0.0.1/tcp/22/p2p-circuit', '/ip4/127.0.0.1/udp/53']) {
      const stream = await paced(relayed)
      await lpStream(stream).write(encodeMessage(HolePunchSchema, { kind: { case: 'connect', value: { addrs: [multiaddr(addr).bytes] } } }))
      assert.equal(await answerOf(stream), undefined, `an answer to ${addr}`)
    }
    // an oversized message and a SYNC out of turn are refused the same way
    const big = await paced(relayed)
    await lpStream(big).write(encodePunchMessage({ type: 'connect', addrs: Array.from({ length: 40 }, (_, i) => multiaddr(`/ip4/10.0.0.${i}/tcp/1000`)) }))
    assert.equal(await answerOf(big), undefined)
    const sync = await paced(relayed)
    await lpStream(sync).write(encodePunchMessage({ type: 'sync' }))
    assert.equal(await answerOf(sync), undefined)
    // nothing was dialed; the rogue's bad punches count as failed ones, so even its honest CONNECT is
    // declined for a while, while the car still answers another member
    assert.equal(car.host.getConnections(rogue.host.peerId).length, before)
    const late = await paced(relayed)
    await lpStream(late).write(encodePunchMessage({ type: 'connect', addrs: [multiaddr('/ip4/127.0.0.1/tcp/9')] }))
    assert.equal(await answerOf(late), undefined, 'the rogue was answered')
    const fresh = await testNode({ bootstrap: boot.addrs, credentials: await members.client(), onlyRelayed: true, holePunch: { addresses: 'any', delayMs: 3_600_000 } })
    stops.push(async () => { await fresh.node.stop() })
    const ok = await (await relayedTo(fresh)).newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true, signal: signal() })
    await lpStream(ok).write(encodePunchMessage({ type: 'connect', addrs: [multiaddr('/ip4/127.0.0.1/tcp/9')] }))
    const answer = await answerOf(ok)
    assert.ok(answer !== undefined, 'an honest CONNECT from another member is answered')
    assert.equal(decodePunchMessage(answer).type, 'connect')
    ok.abort(new Error('done'))
    // the silence above was the punch rules, not the car's stream rate
    assert.doesNotMatch(await car.components.metrics.registry.getSingleMetricAsString('fleetmesh_streams_refused_total'), /punch/)
  })

  it('a punch over a direct connection is refused, and an outsider cannot open the protocol', async () => {
    // the car's listen address, which it does not announce
    const listen = (car.host as unknown as { components: { transportManager: { getAddrs: () => Array<{ toString: () => string }> } } }).components.transportManager.getAddrs()
    const tcp = listen.map(String).find(a => a.includes('/tcp/') && !a.includes('/p2p-circuit'))
    assert.ok(tcp !== undefined)
    const direct = await client.host.dial(multiaddr(`${tcp}/p2p/${car.host.peerId.toString()}`), { signal: signal(), force: true })
    assert.equal(direct.limits, undefined)
    const stream = await direct.newStream(PUNCH_PROTOCOL, { signal: signal() })
    // the car may close the stream before the message is out
    await lpStream(stream).write(encodePunchMessage({ type: 'connect', addrs: [multiaddr('/ip4/127.0.0.1/tcp/9')] })).catch(() => {})
    assert.equal(await answerOf(stream), undefined)
    const hop = await outsider.host.dialProtocol(multiaddr(boot.addrs[0]), PUNCH_PROTOCOL, { signal: signal() }).catch(() => undefined)
    if (hop !== undefined) {
      await lpStream(hop).write(encodePunchMessage({ type: 'connect', addrs: [multiaddr('/ip4/127.0.0.1/tcp/9')] })).catch(() => {})
      assert.equal(await answerOf(hop), undefined, 'an outsider got an answer')
    }
  })
})
