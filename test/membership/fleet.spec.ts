import assert from 'node:assert/strict'
import { join } from 'node:path'
import first from 'it-first'
import { VehicleAgent } from '../../node/agent.ts'
import { loadCredentials } from '../../node/membership/credentials.ts'
import { FleetClient } from '../../node/client/client.ts'
import { parseCid } from '../../node/models/cid.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { sampleTensor } from '../../node/models/specs.ts'
import { capacityRecordKey } from '../../protocols/capacity.ts'
import { INFER_PROTOCOL, SHARD_PROTOCOL, capacityTopic, jobsTopic } from '../../protocols/ids.ts'
import { buildTestMlp } from '../utils/onnx-builder.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { testNode } from '../utils/node.ts'
import { SETTLE_MS, until } from '../utils/until.ts'

const FLEET = 'members-test'

describe('fleet membership on a real mesh', function () {
  this.timeout(90_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  const model = (): { cid: string, manifest: ShardedModel['manifest'] } => ({ cid: sharded.manifestCid, manifest: sharded.manifest })
  const x = (): ReturnType<typeof sampleTensor> => sampleTensor(sharded.manifest.inputs[0], [1, 8], 3)

  before(async () => {
    sharded = await shardModel(buildTestMlp(), { stages: 2, name: 'mlp', probeShapes: { x: [1, 8] }, measure: false })
    mesh = await startMesh(sharded, [[0], [1], [0, 1]], { fleet: FLEET })
  })
  after(async () => { await mesh?.stop() })

  it('an outsider with a fresh key gets no fleet protocol answered, no gossip and no member address, and is cut off', async () => {
    const { host: outsider, node } = await testNode({ fleet: FLEET })
    try {
      const heard: string[] = []
      outsider.services.pubsub.subscribe(capacityTopic(FLEET))
      outsider.services.pubsub.subscribe(jobsTopic(FLEET))
      outsider.services.pubsub.addEventListener('message', (e) => { heard.push(e.detail.topic) })
      const vehicle = mesh.vehicles[0]
      await outsider.dial(mesh.bootstrap.getMultiaddrs()[0])
      await outsider.dial(vehicle.host.getMultiaddrs()[0])
      const signal = (): AbortSignal => AbortSignal.timeout(8000)
      // the DHT: no providers, no capacity record, no peers
      assert.equal(await first(outsider.contentRouting.findProviders(parseCid(sharded.manifest.stages[0].cid), { signal: signal() })).catch(() => undefined), undefined)
      await assert.rejects(outsider.contentRouting.get(capacityRecordKey(vehicle.peerId), { signal: signal() }))
      // stage and shard streams are refused
      await assert.rejects(outsider.dialProtocol(vehicle.host.getMultiaddrs()[0], INFER_PROTOCOL, { signal: signal() }))
      await assert.rejects(outsider.dialProtocol(vehicle.host.getMultiaddrs()[0], SHARD_PROTOCOL, { signal: signal() }))
      await new Promise(resolve => setTimeout(resolve, 6000))
      assert.deepEqual(heard, [], 'no gossip reached it')
      const members = new Set([mesh.client.peerId, ...mesh.vehicles.map(v => v.peerId)])
      const learned = (await outsider.peerStore.all()).filter(p => members.has(p.id.toString()) && p.id.toString() !== vehicle.peerId)
      assert.deepEqual(learned.map(p => p.id.toString()), [], 'no member address other than the one it dialled')
      // its libp2p keeps redialling; every new connection is closed at once (the gater refuses it after the handshake)
      const lasting = outsider.getConnections().filter(c => Date.now() - c.timeline.open > 1000)
      assert.deepEqual(lasting.map(c => c.remotePeer.toString()), [], 'disconnected once its time to prove membership ran out')
      // and refused when it comes back: the gater closes it before any protocol runs
      const again = await outsider.dial(mesh.bootstrap.getMultiaddrs()[0], { signal: signal() }).catch(() => undefined)
      await new Promise(resolve => setTimeout(resolve, 500))
      assert.ok(again === undefined || again.status !== 'open', 'refused when it comes back')
    } finally { await node.stop() }
  })

  it('a vehicle holding only an enrollment grant gets its certificate from a bootstrap peer and serves', async () => {
    const v = await VehicleAgent.create({
      bootstrap: mesh.bootAddrs,
      dataDir: join(mesh.dir, 'enrolled'),
      fleet: FLEET,
      credentials: await mesh.fleet!.grant(),
      models: [{ model: sharded.manifestCid, stages: [1] }]
    })
    try {
      await v.start()
      const chain = v.node.enroller?.chain()
      assert.ok(chain !== undefined && chain.length === 2, 'a certificate from the bootstrap peer, with the bootstrap peer\'s issuer certificate')
      await mesh.client.directory.waitFor(() => mesh.client.directory.holders(sharded.manifestCid, 1).some(h => h.peer === v.peerId), { signal: AbortSignal.timeout(SETTLE_MS) })
      // make it the only stage-1 holder the client will pick
      const r = await mesh.client.infer(model(), [x()], { prefer: new Set([v.peerId, mesh.vehicles[0].peerId]) })
      assert.equal(r.route[1], v.peerId)
    } finally { await v.stop() }
  })

  it('a vehicle renews its certificate from a bootstrap peer before it expires, by itself', async () => {
    const dataDir = join(mesh.dir, 'renewing')
    // a certificate with 20 s left (of 80 s): less than a third of its life
    const creds = await mesh.fleet!.forKeyFile(join(dataDir, 'peer.key'), { roles: ['vehicle'], days: 20 / 86_400 })
    const v = await VehicleAgent.create({ bootstrap: mesh.bootAddrs, dataDir, fleet: FLEET, credentials: creds })
    try {
      const renewed = new Promise<number>(resolve => { v.node.enroller?.addEventListener('enrolled', (e) => { if (e.detail.renewed) resolve(e.detail.notAfter) }) })
      await v.start()
      const notAfter = await Promise.race([renewed, new Promise<number>((_resolve, reject) => setTimeout(() => { reject(new Error('not renewed within 15 s')) }, 15_000))])
      assert.ok(notAfter > Date.now() + 86_400_000, 'the new certificate runs for days')
      assert.equal(v.node.enroller?.chain()?.length, 2, 'issued by the bootstrap peer (a delegate), not the authority')
      const saved = await loadCredentials(join(dataDir, 'credentials.json'))
      assert.deepEqual(saved.chain?.map(c => Buffer.from(c).toString('hex')), v.node.enroller?.chain()?.map(c => Buffer.from(c).toString('hex')), 'kept for the next start')
    } finally { await v.stop() }
  })

  it('roles: a client certificate cannot serve stages, and a vehicle cannot name models', async () => {
    const creds = await mesh.fleet!.client(['client'])
    const { node } = await testNode({ bootstrap: mesh.bootAddrs, credentials: creds })
    try {
      // its heartbeats claiming a stage are rejected by every node's validator
      const { encodeHeartbeat } = await import('../../protocols/capacity.ts')
      await new Promise(resolve => setTimeout(resolve, 1500))
      await node.host.services.pubsub.publish(capacityTopic(FLEET), encodeHeartbeat({ ts: Date.now(), seq: 1, eligible: true, load: 0, slots: 9, stages: [{ manifest: sharded.manifestCid, stage: 0, cid: sharded.manifest.stages[0].cid, msPerItem: 0.01 }], addrs: [], membership: creds.chain! })).catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 1000))
      assert.ok(!mesh.client.directory.holders(sharded.manifestCid, 0).some(h => h.peer === node.host.peerId.toString()), 'not taken as a stage holder')
    } finally { await node.stop() }
    // a vehicle's heartbeat naming a model (the old way names spread) names nothing
    const vcreds = await mesh.fleet!.client(['vehicle'])
    const { node: v } = await testNode({ bootstrap: mesh.bootAddrs, credentials: vcreds })
    try {
      const { encodeHeartbeat } = await import('../../protocols/capacity.ts')
      await new Promise(resolve => setTimeout(resolve, 1500))
      for (let seq = 1; seq <= 3; seq++) await v.host.services.pubsub.publish(capacityTopic(FLEET), encodeHeartbeat({ ts: Date.now(), seq, eligible: true, load: 0, slots: 1, stages: [], models: { 'pp-ocrv4-rec@999': sharded.manifestCid }, addrs: [], membership: vcreds.chain! })).catch(() => {})
      await until(() => mesh.client.directory.get(v.host.peerId.toString()) !== undefined, 5000, 'the heartbeat').catch(() => {})
      assert.ok(mesh.client.directory.get(v.host.peerId.toString()) !== undefined, 'the heartbeat itself was taken')
      await assert.rejects(mesh.client.resolve('pp-ocrv4-rec@999', { signal: AbortSignal.timeout(3000) }), 'but not the name in it')
    } finally { await v.stop() }
    // a vehicle cannot name models: publish refuses, and a name record it signs anyway is refused by the DHT
    const vehicleClient = await FleetClient.connect({ bootstrap: mesh.bootAddrs, fleet: FLEET, credentials: await mesh.fleet!.client(['vehicle', 'client']) })
    try {
      const { publishModel } = await import('../../node/client/publish.ts')
      await assert.rejects(publishModel(vehicleClient, buildTestMlp(), { name: 'hijack', stages: 2, probeShapes: { x: [1, 8] } }), /only publishers/)
      const { modelRecordKey, sealModelRecord } = await import('../../protocols/jobs.ts')
      const record = await sealModelRecord({ name: 'hijack', versions: { 9: sharded.manifestCid }, publisher: vehicleClient.peerId, publishedAt: Date.now(), membership: vehicleClient.components.credentials!.chain()! }, vehicleClient.privateKey)
      await vehicleClient.host.contentRouting.put(modelRecordKey('hijack'), record, { signal: AbortSignal.timeout(5000) }).catch(() => {})
      await assert.rejects(mesh.client.resolver.nameRecord('hijack', { signal: AbortSignal.timeout(5000) }))
    } finally { await vehicleClient.close() }
  })

  it('a revoked vehicle is cut off and no longer routed to', async () => {
    const gone = mesh.vehicles[2]
    const sealed = await mesh.fleet!.authority.revocations({ seq: 1, issuedAt: Date.now(), peers: [gone.peerId], serials: [] })
    await mesh.client.node.membership!.adoptRevocations(sealed)
    await mesh.client.node.membership!.publishRevocations()
    await mesh.client.directory.waitFor(() => !mesh.client.directory.holders(sharded.manifestCid, 0).some(h => h.peer === gone.peerId), { signal: AbortSignal.timeout(10_000) }).catch(() => {})
    const deadline = Date.now() + 8000
    while (mesh.vehicles[0].host.getConnections().some(c => c.remotePeer.toString() === gone.peerId) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
    assert.ok(!mesh.vehicles[0].host.getConnections().some(c => c.remotePeer.toString() === gone.peerId), 'other vehicles heard the list and hung up')
    for (let i = 0; i < 3; i++) {
      const r = await mesh.client.infer(model(), [x()])
      assert.ok(!r.route.includes(gone.peerId), `route ${r.route.join(' > ')}`)
    }
  })
})
