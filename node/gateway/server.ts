/**
 * HTTP gateway speaking the Open Inference Protocol (KServe v2) REST API, so
 * Triton, KServe and Seldon clients can use the mesh. Any node can open one;
 * every inference runs through the mesh, pipelined across vehicles.
 *
 * Endpoints: GET /v2/health/live, GET /v2/health/ready, GET /v2,
 * GET /v2/models/{name}[/versions/{v}], GET /v2/models/{name}[/versions/{v}]/ready,
 * POST /v2/models/{name}[/versions/{v}]/infer (JSON tensors and the binary
 * tensor data extension), POST /v2/repository/index, GET /metrics.
 * Errors are `{"error": "..."}` with 400 (malformed request, tensor that does
 * not fit), 404 (unknown model or version), 413 (body over the limit) or 503
 * (no vehicle can serve a stage right now).
 */
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { InferenceError, ModelNotFoundError } from '../client/client.ts'
import type { FleetClient, ResolvedModel } from '../client/client.ts'
import { checkStageInputs } from '../runtime/stage-server.ts'
import type { TensorSpec } from '../models/partition.ts'
import { Metrics } from './metrics.ts'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { MAX_INFER_FRAME_BYTES } from '../../protocols/limits.ts'
import { oipDatatype, oipToDtype, tensorFromOip, tensorToOip } from '../../protocols/oip.ts'
import { elementCount, itemSize } from '../../protocols/tensor-codec.ts'
import type { Tensor } from '../../protocols/tensor-codec.ts'

export interface GatewayInit {
  client: FleetClient
  /** host:port; loopback unless told otherwise. @default '127.0.0.1:8080' */
  listen?: string
  /** Largest request body. @default 64 MiB */
  maxBodyBytes?: number
  /** Server version reported by GET /v2. */
  version?: string
}

class HttpError extends Error {
  readonly status: number
  constructor (status: number, message: string) { super(message); this.status = status }
}

const SERVER_NAME = 'fleetmesh'
const EXTENSIONS = ['binary_tensor_data', 'model_repository']

function specJson (s: TensorSpec): { name: string, datatype: string, shape: number[] } {
  return { name: s.name, datatype: oipDatatype(s.dtype), shape: s.shape.map(d => d ?? -1) }
}

export function parseListen (listen: string): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen)
  if (m === null) throw new TypeError(`--http ${listen}: use host:port, e.g. 127.0.0.1:8080`)
  return { host: m[1] ?? m[2], port: Number(m[3]) }
}

export class Gateway {
  readonly metrics = new Metrics()
  private readonly client: FleetClient
  private readonly init: GatewayInit
  private server?: Server
  url = ''

  constructor (init: GatewayInit) {
    this.client = init.client
    this.init = init
    const c = this.client
    c.onJob = (outcome, r) => {
      this.metrics.inc('fleetmesh_jobs_total', 'Jobs run through the mesh from this peer, by outcome.', { outcome })
      for (const h of r?.hops ?? []) this.metrics.observe('fleetmesh_stage_latency_ms', 'Run time of one stage at one vehicle, ms.', { stage: String(h.stage) }, h.ms)
      if (r !== undefined) this.metrics.observe('fleetmesh_job_latency_ms', 'Whole job as the client saw it, ms.', {}, r.ms)
    }
    this.metrics.gauge('fleetmesh_connected_peers', 'Peers this node is connected to.', () => c.host.getPeers().length)
    this.metrics.gauge('fleetmesh_eligible_vehicles', 'Vehicles whose latest heartbeat is fresh and eligible.', () => c.directory.all().filter(p => c.directory.isFresh(p) && p.heartbeat.eligible).length)
  }

  async start (): Promise<string> {
    const { host, port } = parseListen(this.init.listen ?? '127.0.0.1:8080')
    this.server = createServer((req, res) => { void this.handle(req, res) })
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject)
      this.server!.listen(port, host, () => { resolve() })
    })
    const a = this.server.address() as AddressInfo
    this.url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
    return this.url
  }

  async stop (): Promise<void> {
    await new Promise<void>(resolve => { this.server?.close(() => { resolve() }) ?? resolve() })
    this.server?.closeAllConnections()
  }

  /** Models the fleet serves: name -> versions -> manifest CID. */
  private async repository (): Promise<Map<string, Map<string, ResolvedModel>>> {
    const out = new Map<string, Map<string, ResolvedModel>>()
    const cids = new Set(this.client.directory.models().values())
    for (const cid of cids) {
      try {
        const m = await this.client.resolve(cid, 5000)
        const versions = out.get(m.manifest.name) ?? new Map<string, ResolvedModel>()
        versions.set(m.manifest.version, m)
        out.set(m.manifest.name, versions)
      } catch { /* not fetchable right now */ }
    }
    return out
  }

  private async model (name: string, version?: string): Promise<ResolvedModel> {
    const versions = (await this.repository()).get(name)
    if (versions === undefined) throw new HttpError(404, `unknown model "${name}"`)
    if (version === undefined) {
      // latest: the highest version (numeric when they are numbers)
      const sorted = [...versions.keys()].sort((a, b) => Number(a) - Number(b) || a.localeCompare(b))
      return versions.get(sorted[sorted.length - 1])!
    }
    const m = versions.get(version)
    if (m === undefined) throw new HttpError(404, `model "${name}" has no version "${version}" (it has ${[...versions.keys()].join(', ')})`)
    return m
  }

  private ready (m: ResolvedModel): boolean {
    return m.manifest.stages.every(s => this.client.directory.servers(m.cid, s.index).length > 0)
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown, extra: Record<string, string> = {}): void => {
      const bytes = Buffer.from(JSON.stringify(body))
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': bytes.byteLength, ...extra })
      res.end(bytes)
    }
    try {
      const url = new URL(req.url ?? '/', 'http://gateway')
      const path = url.pathname.replace(/\/+$/, '')
      const method = req.method ?? 'GET'
      if (method === 'GET' && path === '/metrics') {
        const text = this.metrics.render()
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' })
        res.end(text)
        return
      }
      if (method === 'GET' && path === '/v2/health/live') { send(200, { live: true }); return }
      if (method === 'GET' && path === '/v2/health/ready') {
        const repo = await this.repository()
        const ready = repo.size > 0 && [...repo.values()].some(vs => [...vs.values()].some(m => this.ready(m)))
        send(ready ? 200 : 503, { ready })
        return
      }
      if (method === 'GET' && path === '/v2') { send(200, { name: SERVER_NAME, version: this.init.version ?? '0.1.0', extensions: EXTENSIONS }); return }
      if (method === 'POST' && path === '/v2/repository/index') {
        await this.readBody(req)
        const repo = await this.repository()
        const index = []
        for (const [name, versions] of repo) {
          for (const [version, m] of versions) {
            const ok = this.ready(m)
            index.push({ name, version, state: ok ? 'READY' : 'UNAVAILABLE', reason: ok ? '' : 'a stage has no eligible vehicle' })
          }
        }
        send(200, index)
        return
      }
      const mm = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/ready|\/infer)?$/.exec(path)
      if (mm === null) throw new HttpError(404, `no route for ${method} ${path}`)
      const name = decodeURIComponent(mm[1])
      const version = mm[2] !== undefined ? decodeURIComponent(mm[2]) : undefined
      const action = mm[3]
      if (method === 'GET' && action === undefined) {
        const m = await this.model(name, version)
        const versions = [...((await this.repository()).get(name)?.keys() ?? [])]
        send(200, { name, versions, platform: 'onnxruntime_onnx', inputs: m.manifest.inputs.map(specJson), outputs: m.manifest.outputs.map(specJson) })
        return
      }
      if (method === 'GET' && action === '/ready') {
        const m = await this.model(name, version)
        const ok = this.ready(m)
        send(ok ? 200 : 400, { name, ready: ok })
        return
      }
      if (method === 'POST' && action === '/infer') {
        await this.infer(req, res, await this.model(name, version))
        return
      }
      throw new HttpError(405, `${method} not allowed on ${path}`)
    } catch (err) {
      const e = err as Error
      const status = err instanceof HttpError
        ? err.status
        : err instanceof MalformedFrameError ? 400
          : err instanceof ModelNotFoundError ? 404
            : err instanceof InferenceError ? (err.code === 'BAD_INPUT' ? 400 : 503)
              : 500
      if (!res.headersSent) send(status, { error: e.message.replace(/^malformed frame: /, 'invalid request: ') })
      else res.destroy()
    }
  }

  private async readBody (req: IncomingMessage): Promise<Buffer> {
    const limit = this.init.maxBodyBytes ?? MAX_INFER_FRAME_BYTES
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > limit) {
      req.resume()
      throw new HttpError(413, `request body of ${declared} bytes is over the limit of ${limit}`)
    }
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of req) {
      size += (chunk as Buffer).byteLength
      if (size > limit) throw new HttpError(413, `request body is over the limit of ${limit} bytes`)
      chunks.push(chunk as Buffer)
    }
    this.metrics.inc('fleetmesh_gateway_bytes_total', 'Bytes through the HTTP gateway, by direction.', { direction: 'in' }, size)
    return Buffer.concat(chunks)
  }

  private async infer (req: IncomingMessage, res: ServerResponse, m: ResolvedModel): Promise<void> {
    const body = await this.readBody(req)
    const headerLen = req.headers['inference-header-content-length']
    const jsonLen = headerLen !== undefined ? Number(headerLen) : body.byteLength
    if (!Number.isInteger(jsonLen) || jsonLen < 0 || jsonLen > body.byteLength) throw new HttpError(400, `Inference-Header-Content-Length ${String(headerLen)} does not fit a body of ${body.byteLength} bytes`)
    let doc: any
    try { doc = JSON.parse(body.subarray(0, jsonLen).toString('utf8')) } catch (err) {
      throw new HttpError(400, `request is not JSON: ${(err as Error).message}`)
    }
    if (doc === null || typeof doc !== 'object' || !Array.isArray(doc.inputs)) throw new HttpError(400, 'request needs an "inputs" array')
    let offset = jsonLen
    const inputs: Tensor[] = doc.inputs.map((t: any, i: number) => {
      const size = t?.parameters?.binary_data_size
      if (size === undefined) return tensorFromOip(t, `inputs[${i}]`)
      const dtype = oipToDtype(t?.datatype, `inputs[${i}].datatype`)
      if (!Number.isInteger(size) || size < 0 || offset + size > body.byteLength) throw new HttpError(400, `inputs[${i}].parameters.binary_data_size ${String(size)} runs past the body`)
      if (!Array.isArray(t.shape) || t.shape.some((d: unknown) => !Number.isInteger(d) || (d as number) < 0)) throw new HttpError(400, `inputs[${i}].shape must be non-negative integers`)
      if (elementCount(t.shape) * itemSize(dtype) !== size) throw new HttpError(400, `inputs[${i}]: ${size} bytes do not fit shape [${t.shape}] of ${t.datatype}`)
      const data = new Uint8Array(size)
      data.set(body.subarray(offset, offset + size))
      offset += size
      return { name: String(t.name), dtype, dims: t.shape, data }
    })
    checkStageInputs(m.manifest.inputs, inputs)
    // an HTTP caller wants a 503 soon rather than a long wait for capacity
    const r = await this.client.infer(m, inputs, { maxAttempts: 3, timeoutMs: 30_000 })
    const wanted: Array<{ name: string, parameters?: { binary_data?: boolean } }> | undefined = Array.isArray(doc.outputs) ? doc.outputs : undefined
    const binaryAll = doc.parameters?.binary_data_output === true
    const outputs = wanted === undefined ? r.outputs : wanted.map(w => {
      const t = r.outputs.find(o => o.name === w.name)
      if (t === undefined) throw new HttpError(400, `unknown output "${w.name}" (the model has ${r.outputs.map(o => o.name).join(', ')})`)
      return t
    })
    const binaryChunks: Uint8Array[] = []
    const outJson = outputs.map(t => {
      const binary = binaryAll || wanted?.find(w => w.name === t.name)?.parameters?.binary_data === true
      if (!binary) return tensorToOip(t)
      binaryChunks.push(t.data)
      return { name: t.name, datatype: oipDatatype(t.dtype), shape: t.dims, parameters: { binary_data_size: t.data.byteLength } }
    })
    const json = Buffer.from(JSON.stringify({ model_name: m.manifest.name, model_version: m.manifest.version, ...(doc.id !== undefined ? { id: doc.id } : {}), outputs: outJson, parameters: { route: r.route, ms: Math.round(r.ms * 10) / 10 } }))
    const headers: Record<string, string | number> = { 'content-type': binaryChunks.length > 0 ? 'application/octet-stream' : 'application/json' }
    if (binaryChunks.length > 0) headers['inference-header-content-length'] = json.byteLength
    const payload = Buffer.concat([json, ...binaryChunks])
    headers['content-length'] = payload.byteLength
    this.metrics.inc('fleetmesh_gateway_bytes_total', 'Bytes through the HTTP gateway, by direction.', { direction: 'out' }, payload.byteLength)
    res.writeHead(200, headers)
    res.end(payload)
  }
}
