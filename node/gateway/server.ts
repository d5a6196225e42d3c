/**
 * HTTP gateway speaking the Open Inference Protocol (KServe v2) REST API, so
 * Triton, KServe and Seldon clients can use the mesh. Any node can open one;
 * every inference runs through the mesh, pipelined across vehicles, and is
 * cancelled when its HTTP client goes away.
 *
 * Endpoints: GET /v2/health/live, GET /v2/health/ready, GET /v2,
 * GET /v2/models/{name}[/versions/{v}], GET /v2/models/{name}[/versions/{v}]/ready,
 * POST /v2/models/{name}[/versions/{v}]/infer (JSON tensors and the binary
 * tensor data extension; gzip or deflate bodies), GET
 * /v2/models/{name}[/versions/{v}]/config (Triton's model configuration),
 * POST /v2/repository/index (`{"ready": true}` lists only ready models),
 * POST /v2/repository/models/{name}/load and /unload (serve or stop serving
 * a model the fleet publishes, on this gateway), GET /metrics (the node's
 * metrics: fleetmesh's and libp2p's), GET /dashboard (the live fleet
 * dashboard, dashboard.ts; `?token=` may carry its bearer token). Errors are `{"error": "..."}` with 400
 * (malformed request, tensor that does not fit, model unloaded here),
 * 401/403 (no or no valid bearer token), 404 (unknown model or version), 413
 * (body over the limit, compressed or not), 415 (a Content-Encoding other
 * than gzip, deflate or identity), 429 (the token's requests in flight are at
 * its limit) or 503 (no vehicle can serve a stage right now).
 *
 * In a fleet with members, every endpoint but the health checks needs a
 * bearer token issued under the fleet authority (tokens.ts); its limits
 * (requests in flight, body size) apply per token. TLS when given a
 * certificate and key.
 */
import { createServer } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { MAX_INFER_FRAME_BYTES } from '../../protocols/limits.ts'
import { oipDatatype } from '../../protocols/oip.ts'
import type { FleetClient } from '../client/client.ts'
import { InferenceError } from '../client/pipeline.ts'
import { ModelNotFoundError } from '../client/resolver.ts'
import type { ResolvedModel } from '../client/resolver.ts'
import { checkStageInputs } from '../models/specs.ts'
import type { TensorSpec } from '../models/specs.ts'
import { inferResponse, parseInferBody } from './infer.ts'
import { HttpError, Repository } from './repository.ts'
import { TokenVerifier } from './tokens.ts'
import { decodeBody, modelConfig } from './triton.ts'
import { DashboardFeed } from './dashboard.ts'
import { DASHBOARD_HTML } from './dashboard-page.ts'
import type { TokenLimits } from './tokens.ts'

export interface GatewayInit {
  client: FleetClient
  /** host:port; loopback unless told otherwise. @default '127.0.0.1:8080' */
  listen?: string
  /** Largest request body. @default 64 MiB */
  maxBodyBytes?: number
  /** Server version reported by GET /v2. */
  version?: string
  /**
   * Bearer tokens: required (checked against the client's fleet) unless
   * false. @default required in a fleet with members, off in an open fleet
   */
  tokens?: TokenVerifier | false
  /** Serve HTTPS with this certificate and key (PEM). */
  tls?: { cert: string | Buffer, key: string | Buffer }
}

const SERVER_NAME = 'fleetmesh'
const EXTENSIONS = ['binary_tensor_data', 'model_repository']

function specJson (s: TensorSpec): { name: string, datatype: string, shape: number[] } {
  return { name: s.name, datatype: oipDatatype(s.dtype), shape: s.shape.map(d => d ?? -1) }
}

function parseJson (body: Buffer, what: string): any {
  try { return JSON.parse(body.toString('utf8')) } catch (err) { throw new HttpError(400, `${what} is not JSON: ${(err as Error).message}`) }
}

export function parseListen (listen: string): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen)
  if (m === null) throw new TypeError(`--http ${listen}: use host:port, e.g. 127.0.0.1:8080`)
  return { host: m[1] ?? m[2], port: Number(m[3]) }
}

function statusOf (err: unknown): number {
  if (err instanceof HttpError) return err.status
  if (err instanceof MalformedFrameError) return 400
  if (err instanceof ModelNotFoundError) return 404
  if (err instanceof InferenceError) return err.code === 'BAD_INPUT' ? 400 : 503
  return 500
}

export class Gateway {
  private readonly client: FleetClient
  private readonly init: GatewayInit
  private readonly repo: Repository
  private readonly dashboard: DashboardFeed
  private server?: Server
  private readonly tokens: TokenVerifier | undefined
  /** Requests in flight per token subject. */
  private readonly inFlight = new Map<string, number>()
  url = ''

  constructor (init: GatewayInit) {
    this.client = init.client
    this.init = init
    this.repo = new Repository(init.client)
    this.dashboard = new DashboardFeed(init.client, this.repo)
    const membership = init.client.node.membership
    this.tokens = init.tokens === false ? undefined : init.tokens ?? (membership !== undefined ? new TokenVerifier(membership.trust, (p, s) => membership.isRevoked(p, s)) : undefined)
    const c = this.client
    c.metrics.gauge('fleetmesh_connected_peers', 'Peers this node is connected to.', () => c.host.getPeers().length)
    c.metrics.gauge('fleetmesh_eligible_vehicles', 'Vehicles whose latest heartbeat is fresh and eligible.', () => c.directory.eligible().length)
  }

  async start (): Promise<string> {
    const { host, port } = parseListen(this.init.listen ?? '127.0.0.1:8080')
    const handler = (req: IncomingMessage, res: ServerResponse): void => { void this.handle(req, res) }
    const server = this.server = this.init.tls !== undefined ? createTlsServer({ cert: this.init.tls.cert, key: this.init.tls.key }, handler) : createServer(handler)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => { resolve() })
    })
    this.dashboard.start()
    const a = server.address() as AddressInfo
    this.url = `${this.init.tls !== undefined ? 'https' : 'http'}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
    return this.url
  }

  async stop (): Promise<void> {
    this.dashboard.stop()
    await new Promise<void>(resolve => { this.server?.close(() => { resolve() }) ?? resolve() })
    this.server?.closeAllConnections()
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown): void => {
      const bytes = Buffer.from(JSON.stringify(body))
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': bytes.byteLength })
      res.end(bytes)
    }
    // the HTTP client went away: stop its job
    const gone = new AbortController()
    res.once('close', () => { if (!res.writableFinished) gone.abort(new Error('HTTP client went away')) })
    let done: (() => void) | undefined
    try {
      const url = new URL(req.url ?? '/', 'http://gateway')
      const path = url.pathname.replace(/\/+$/, '')
      const method = req.method ?? 'GET'
      let limits: TokenLimits | undefined
      if (this.tokens !== undefined && !path.startsWith('/v2/health/')) {
        // a browser's EventSource sends no headers: the dashboard may carry its token in the query
        const queryToken = path.startsWith('/dashboard') ? url.searchParams.get('token') : null
        const grant = await this.tokens.check(req.headers.authorization ?? (queryToken !== null ? `Bearer ${queryToken}` : undefined))
        limits = grant.limits
        done = this.admit(grant.subject, grant.limits.maxConcurrency)
      }
      const bodyLimit = Math.min(this.init.maxBodyBytes ?? MAX_INFER_FRAME_BYTES, limits?.maxBodyBytes ?? Infinity)
      if (method === 'GET' && path === '/metrics') {
        const { contentType, text } = await this.client.metrics.render()
        res.writeHead(200, { 'content-type': contentType })
        res.end(text)
        return
      }
      if (method === 'GET' && path === '/dashboard') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'" })
        res.end(DASHBOARD_HTML)
        return
      }
      if (method === 'GET' && path === '/dashboard/events') { await this.dashboard.subscribe(res); return }
      if (method === 'GET' && path === '/v2/health/live') { send(200, { live: true }); return }
      if (method === 'GET' && path === '/v2/health/ready') {
        const repo = await this.repo.list()
        const ready = [...repo.values()].some(vs => [...vs.values()].some(m => this.repo.ready(m)))
        send(ready ? 200 : 503, { ready })
        return
      }
      if (method === 'GET' && path === '/v2') { send(200, { name: SERVER_NAME, version: this.init.version ?? '0.1.0', extensions: EXTENSIONS }); return }
      if (method === 'POST' && path === '/v2/repository/index') {
        const body = await this.readBody(req, bodyLimit)
        const onlyReady = body.byteLength > 0 && parseJson(body, 'repository index request')?.ready === true
        const index = []
        for (const [name, versions] of await this.repo.list()) {
          for (const [version, m] of versions) {
            const unloaded = this.repo.isUnloaded(name)
            const ok = !unloaded && this.repo.ready(m)
            if (onlyReady && !ok) continue
            index.push({ name, version, state: ok ? 'READY' : 'UNAVAILABLE', reason: ok ? '' : unloaded ? 'unloaded on this gateway' : 'a stage has no eligible vehicle' })
          }
        }
        send(200, index)
        return
      }
      const rm = /^\/v2\/repository\/models\/([^/]+)\/(load|unload)$/.exec(path)
      if (rm !== null) {
        if (method !== 'POST') throw new HttpError(405, `${method} not allowed on ${path}`)
        await this.readBody(req, bodyLimit)
        const name = decodeURIComponent(rm[1])
        if (rm[2] === 'load') await this.repo.load(name)
        else await this.repo.unload(name)
        send(200, {})
        return
      }
      const mm = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/ready|\/infer|\/config)?$/.exec(path)
      if (mm === null) throw new HttpError(404, `no route for ${method} ${path}`)
      const name = decodeURIComponent(mm[1])
      const version = mm[2] !== undefined ? decodeURIComponent(mm[2]) : undefined
      const action = mm[3]
      if (method === 'GET' && action === undefined) {
        const m = await this.repo.model(name, version)
        const versions = [...((await this.repo.list()).get(name)?.keys() ?? [])]
        send(200, { name, versions, platform: 'onnxruntime_onnx', inputs: m.manifest.inputs.map(specJson), outputs: m.manifest.outputs.map(specJson) })
        return
      }
      if (method === 'GET' && action === '/config') { send(200, modelConfig(await this.repo.model(name, version))); return }
      if (method === 'GET' && action === '/ready') {
        const ok = !this.repo.isUnloaded(name) && this.repo.ready(await this.repo.model(name, version))
        send(ok ? 200 : 400, { name, ready: ok })
        return
      }
      if (method === 'POST' && action === '/infer') {
        await this.infer(req, res, await this.repo.served(name, version), gone.signal, bodyLimit)
        return
      }
      throw new HttpError(405, `${method} not allowed on ${path}`)
    } catch (err) {
      if (err instanceof HttpError && err.status === 429) res.setHeader('retry-after', '1')
      // refused before the body was read: do not leave it unread on a kept-alive socket
      if (err instanceof HttpError && err.status < 500 && !req.complete) res.setHeader('connection', 'close')
      if (!res.headersSent && !gone.signal.aborted) send(statusOf(err), { error: (err as Error).message.replace(/^malformed frame: /, 'invalid request: ') })
      else res.destroy()
    } finally { done?.() }
  }

  /** Counts a request of `subject` in flight (released by the returned function); 429 when at its limit. */
  private admit (subject: string, max: number): () => void {
    const n = this.inFlight.get(subject) ?? 0
    if (n >= max) throw new HttpError(429, `this token already has ${n} requests in flight, its limit`)
    this.inFlight.set(subject, n + 1)
    return () => {
      const left = (this.inFlight.get(subject) ?? 1) - 1
      if (left <= 0) this.inFlight.delete(subject)
      else this.inFlight.set(subject, left)
    }
  }

  private async readBody (req: IncomingMessage, limit: number): Promise<Buffer> {
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
    this.client.metrics.bytes('http', 'in', size)
    return await decodeBody(Buffer.concat(chunks), req.headers, limit)
  }

  private async infer (req: IncomingMessage, res: ServerResponse, m: ResolvedModel, signal: AbortSignal, bodyLimit: number): Promise<void> {
    const body = parseInferBody(await this.readBody(req, bodyLimit), req.headers)
    checkStageInputs(m.manifest.inputs, body.inputs)
    // an HTTP caller wants a 503 soon rather than a long wait for capacity
    const r = await this.client.infer(m, body.inputs, { maxAttempts: 3, timeoutMs: 30_000, signal, ...(body.output !== undefined ? { output: body.output } : {}) })
    const { headers, payload } = inferResponse(m, body, r)
    this.client.metrics.bytes('http', 'out', payload.byteLength)
    res.writeHead(200, headers)
    res.end(payload)
  }
}
