/**
 * A vehicle reports a stage still loading after a while, and at a low CPU
 * priority says why (node/capacity/hosting.ts `slowLoad`): at SCHED_IDLE, on
 * a computer other programs keep busy, a stage thread waits for a core by
 * design, and before this the operator saw nothing. A real manifest and
 * shards (a small model sharded here); the runtime's load is held open.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { StageHosting } from '../../node/capacity/hosting.ts'
import type { HostingComponents } from '../../node/capacity/hosting.ts'
import { cidOf } from '../../node/models/cid.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import type { StagePriority } from '../../node/runtime/thread-priority.ts'
import { buildTestMlp } from '../utils/onnx-builder.ts'

describe('a vehicle says when a stage is slow to load', function () {
  this.timeout(30_000)
  let sharded: ShardedModel
  before(async () => { sharded = await shardModel(buildTestMlp(), { stages: 2, name: 'mlp', probeShapes: { x: [2, 8] } }) })

  /** Hosts stage 0 with a runtime whose load takes `loadMs`; the messages the hosting reported. */
  const host = async (priority: StagePriority | undefined, loadMs: number): Promise<string[]> => {
    const exchange = {
      get: async (cid: string) => cid === sharded.manifestCid ? sharded.manifestBytes : sharded.shards.get(cid),
      provide: async () => {},
      store: { get: async (cid: string) => sharded.shards.get(cid), put: async () => sharded.manifestCid }
    }
    const runtime = { load: async () => { await new Promise(resolve => setTimeout(resolve, loadMs)); return undefined }, served: () => [], isAccepting: true, stagePriority: () => priority }
    const hosting = new StageHosting({
      peerId: peerIdFromPrivateKey(await generateKeyPair('Ed25519')),
      logger: defaultLogger(),
      runtime,
      exchange,
      directory: { supply: () => ({ providers: 0, meanMsPerItem: 0 }), all: () => [], waitFor: async () => {} }
    } as unknown as HostingComponents, { slowLoadMs: 200 })
    const said: string[] = []
    const serving: number[] = []
    const marked: boolean[] = []
    hosting.addEventListener('error', e => { said.push(e.detail.message); marked.push(e.detail.slow === true) })
    hosting.addEventListener('serving', e => { serving.push(e.detail.stage) })
    try {
      await hosting.host({ model: sharded.manifestCid, stages: [0] })
      assert.deepEqual(serving, [0], 'the stage was served once loaded')
      assert.ok(marked.every(m => m), 'reports marked as slow loads (a swarm says them at once)')
      return said
    } finally { await hosting.stop() }
  }

  it('at SCHED_IDLE: names the stage, the time and why, once, and serves it when it has loaded', async () => {
    const said = await host('idle', 600)
    assert.equal(said.length, 1, said.join('\n'))
    assert.match(said[0], /^stage 0 of mlp still loading after 0\.2 s: its stage threads run at SCHED_IDLE, which gets a core only when nothing else on this computer wants one \(--stage-priority normal shares the cores\)$/)
  })

  it('at nice 19 says so; at normal priority only that it is slow', async () => {
    assert.match((await host('low', 500))[0], /still loading after 0\.2 s: its stage threads run at nice 19, behind every other program/)
    assert.deepEqual(await host('normal', 500), ['stage 0 of mlp still loading after 0.2 s'])
  })

  it('a stage that loads in time is not reported, then or later (the report\'s timer goes with the load)', async () => {
    const said = await host('idle', 20)
    await new Promise(resolve => setTimeout(resolve, 300))
    assert.deepEqual(said, [])
  })
})

// `fleetmesh node --model` with a typo in the CID, or a path to no file
describe('a vehicle says what is wrong with a model it is given', () => {
  it('a --model that is neither a manifest CID nor a file it can read says so (not a bare ENOENT)', async () => {
    const hosting = new StageHosting({ peerId: peerIdFromPrivateKey(await generateKeyPair('Ed25519')), logger: defaultLogger() } as unknown as HostingComponents, {})
    const typo = `${cidOf(new TextEncoder().encode('a manifest')).slice(0, -1)}0`
    await assert.rejects(hosting.host({ model: typo, stages: [0] }), new RegExp(`^Error: model ${typo}: neither a manifest CID \\(Non-base32 character\\) nor a manifest file it can read \\(ENOENT\\)$`))
    await assert.rejects(hosting.host({ model: 'nothere/manifest.json' }), /^Error: model nothere\/manifest\.json: neither a manifest CID nor a manifest file it can read \(ENOENT\)$/)
    await hosting.stop()
  })
})
