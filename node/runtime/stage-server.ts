/**
 * The stage server: runs the shards this node holds for `/fleetmesh/infer/1.0.0`.
 *
 * For each request it validates the frame and its tensors against the stage's
 * specs, runs the stage (one run at a time per session, so threads never
 * exceed what was budgeted), forwards the hand-off tensors to the next hop of
 * the route and relays the answer back to its caller. A bad frame gets an
 * ERROR frame and closes that stream only.
 */
import type { Logger, Stream } from '@libp2p/interface'
import { callHop, HopUnreachableError } from './hop-call.ts'
import type { Host } from '../host.ts'
import { createSession, runSession } from '../models/ort.ts'
import type { ort } from '../models/ort.ts'
import type { Manifest, StageEntry } from '../models/manifest.ts'
import { sampleTensor } from '../models/partition.ts'
import type { TensorSpec } from '../models/partition.ts'
import { FrameTooLargeError, MalformedFrameError } from '../../protocols/errors.ts'
import { INFER_PROTOCOL } from '../../protocols/ids.ts'
import { FrameKind, InferErrorCode, errorFrame, parseErrorHeader, parseRequestHeader, parseResultHeader, requestFrame, resultFrame } from '../../protocols/infer.ts'
import type { HopTiming, InferErrorHeader, InferRequestHeader } from '../../protocols/infer.ts'
import { frameStream } from '../../protocols/framing.ts'
import { INFER_HOP_TIMEOUT_MS } from '../../protocols/limits.ts'
import { rawTensors } from '../../protocols/tensor-codec.ts'
import type { Tensor } from '../../protocols/tensor-codec.ts'
import { MICRO_BATCH } from '../../protocols/capacity.ts'
import type { ServedStage } from '../../protocols/capacity.ts'

export interface StageServerInit {
  /** Threads per session. @default 1 */
  intraOpThreads?: number
  /** Items queued per stage before answering BUSY. @default 32 */
  maxQueue?: number
  /** Concurrent inbound infer streams. @default 64 */
  maxInboundStreams?: number
}

interface Loaded {
  manifestCid: string
  manifest: Manifest
  entry: StageEntry
  session: ort.InferenceSession
  tail: Promise<unknown>
  queued: number
  msPerItem: number
  /** Per item when run MICRO_BATCH at a time (0 when the batch size is fixed). */
  batchMsPerItem: number
  runs: number
}

/** Checks that `tensors` hold every input the stage needs, with the right dtype and rank. */
export function checkStageInputs (specs: TensorSpec[], tensors: Tensor[]): Tensor[] {
  return specs.map(spec => {
    const t = tensors.find(x => x.name === spec.name)
    if (t === undefined) throw new MalformedFrameError(`tensors.${spec.name}`, `missing; the stage needs ${specs.map(s => s.name).join(', ')}`)
    if (t.dtype !== spec.dtype) throw new MalformedFrameError(`tensors.${spec.name}.dtype`, `is ${t.dtype}, the stage needs ${spec.dtype}`)
    if (t.dims.length !== spec.shape.length) throw new MalformedFrameError(`tensors.${spec.name}.dims`, `has rank ${t.dims.length}, the stage needs ${spec.shape.length}`)
    spec.shape.forEach((d, i) => {
      if (d !== null && t.dims[i] !== d) throw new MalformedFrameError(`tensors.${spec.name}.dims[${i}]`, `is ${t.dims[i]}, the stage needs ${d}`)
    })
    return t
  })
}

/** The vehicle is leaving; the request is handed back to its caller. */
export class DepartingError extends Error {
  readonly name = 'DepartingError'
  readonly code = 'ERR_DEPARTING'
  constructor () { super('this vehicle is leaving the mesh') }
}

export class StageServer {
  private readonly host: Host
  private readonly init: StageServerInit
  private readonly log: Logger
  private readonly stages = new Map<string, Loaded>()
  private started = false
  /** When false, new requests are refused with DEPARTING. */
  accepting = true
  /** Requests being handled (running, queued or waiting for the next hop). */
  private readonly inflight = new Set<AbortController>()
  /** Stage runs allowed at once across all stages (the power budget). */
  private maxSessions = Infinity
  private running = 0
  private readonly slotWaiters: Array<() => void> = []
  /** Admission check for a request: an error message refuses it with LEASE_EXPIRED. */
  admit?: (req: InferRequestHeader) => string | undefined
  /** Called after each completed run (for metrics and the heartbeat). */
  onRun?: (info: { manifest: string, stage: number, ms: number }) => void

  constructor (host: Host, init: StageServerInit = {}) {
    this.host = host
    this.init = init
    this.log = host.logger.forComponent('fleetmesh:stage')
  }

  private key (manifestCid: string, stage: number): string { return `${manifestCid}/${stage}` }

  async start (): Promise<void> {
    if (this.started) return
    await this.host.handle(INFER_PROTOCOL, (stream) => { void this.handle(stream) }, {
      maxInboundStreams: this.init.maxInboundStreams ?? 64,
      maxOutboundStreams: this.init.maxInboundStreams ?? 64
    })
    this.started = true
  }

  async stop (): Promise<void> {
    if (this.started) await this.host.unhandle(INFER_PROTOCOL)
    this.started = false
    for (const s of this.stages.values()) await s.tail.catch(() => {})
    for (const s of this.stages.values()) await s.session.release().catch(() => {})
    this.stages.clear()
  }

  /** Loads a stage's shard into an onnxruntime session and starts serving it. */
  async serve (manifestCid: string, manifest: Manifest, stage: number, shard: Uint8Array): Promise<void> {
    const entry = manifest.stages[stage]
    if (entry === undefined) throw new RangeError(`manifest ${manifestCid} has no stage ${stage}`)
    const session = await createSession(shard, { intraOpThreads: this.init.intraOpThreads ?? 1 })
    // warm up at the planning shape: the first run is slow, and routing wants a measured speed
    let msPerItem = 0
    let batchMsPerItem = 0
    if (entry.inputs.every(i => i.probe !== undefined)) {
      const feeds = entry.inputs.map((spec, i) => sampleTensor(spec, spec.probe!, i + 1))
      try {
        await runSession(session, feeds)
        msPerItem = Infinity
        for (let i = 0; i < 3; i++) {
          const t0 = performance.now()
          await runSession(session, feeds)
          msPerItem = Math.min(msPerItem, performance.now() - t0)
        }
        // when the batch dimension is free, measure MICRO_BATCH items at once too
        if (entry.inputs.every(i => i.shape[0] === null && i.probe![0] === 1)) {
          const batched = entry.inputs.map((spec, i) => sampleTensor(spec, [MICRO_BATCH, ...spec.probe!.slice(1)], i + 1))
          await runSession(session, batched)
          batchMsPerItem = Infinity
          for (let i = 0; i < 2; i++) {
            const t0 = performance.now()
            await runSession(session, batched)
            batchMsPerItem = Math.min(batchMsPerItem, (performance.now() - t0) / MICRO_BATCH)
          }
        }
      } catch (err) {
        await session.release()
        throw new Error(`stage ${stage} of ${manifest.name} does not run here: ${(err as Error).message}`)
      }
    }
    this.stages.set(this.key(manifestCid, stage), { manifestCid, manifest, entry, session, tail: Promise.resolve(), queued: 0, msPerItem, batchMsPerItem, runs: 0 })
    this.log('serving %s stage %d', manifest.name, stage)
  }

  /** What this node serves, for heartbeats. */
  served (): ServedStage[] {
    return [...this.stages.values()].map(s => ({
      manifest: s.manifestCid,
      stage: s.entry.index,
      cid: s.entry.cid,
      msPerItem: Math.round(s.msPerItem * 100) / 100,
      ...(s.batchMsPerItem > 0 ? { batchMsPerItem: Math.round(s.batchMsPerItem * 100) / 100 } : {})
    }))
  }

  /** Model names served, name -> manifest CID. */
  models (): Record<string, string> {
    const out: Record<string, string> = {}
    for (const s of this.stages.values()) {
      out[s.manifest.name] = s.manifestCid
      out[`${s.manifest.name}@${s.manifest.version}`] = s.manifestCid
    }
    return out
  }

  /** Caps concurrent stage runs (from the vehicle's power budget); 0 runs nothing new. */
  setMaxSessions (n: number): void {
    this.maxSessions = n
    this.wakeSlots()
  }

  private wakeSlots (): void {
    while (this.running < this.maxSessions && this.slotWaiters.length > 0) this.slotWaiters.shift()!()
  }

  private async acquireSlot (signal: AbortSignal): Promise<void> {
    while (this.running >= this.maxSessions) {
      signal.throwIfAborted()
      await new Promise<void>(resolve => {
        this.slotWaiters.push(resolve)
        signal.addEventListener('abort', () => { resolve() }, { once: true })
      })
    }
    signal.throwIfAborted()
    this.running++
  }

  private releaseSlot (): void {
    this.running--
    this.wakeSlots()
  }

  /** Requests in flight (running, queued, or waiting on a later hop). */
  inFlight (): number { return this.inflight.size }

  /**
   * Stops taking work and lets in-flight requests finish for up to `boundMs`;
   * whatever is left is answered with DEPARTING so callers re-route at once.
   */
  async drain (boundMs: number): Promise<{ inflight: number, finished: number, handedOff: number, stuck: number, ms: number }> {
    this.accepting = false
    const t0 = performance.now()
    const start = this.inflight.size
    while (this.inflight.size > 0 && performance.now() - t0 < boundMs) {
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    const left = this.inflight.size
    for (const ac of this.inflight) ac.abort(new DepartingError())
    // the handed-back requests answer DEPARTING and close; give them a moment
    const t1 = performance.now()
    while (this.inflight.size > 0 && performance.now() - t1 < 1000) {
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    return { inflight: start, finished: start - left, handedOff: left - this.inflight.size, stuck: this.inflight.size, ms: performance.now() - t0 }
  }

  /** Items running or queued. */
  load (): number {
    let n = 0
    for (const s of this.stages.values()) n += s.queued
    return n
  }

  /** Runs one stage locally (queued behind the session's other runs). */
  async run (manifestCid: string, stage: number, inputs: Tensor[], signal: AbortSignal = new AbortController().signal): Promise<{ outputs: Tensor[], ms: number }> {
    const s = this.stages.get(this.key(manifestCid, stage))
    if (s === undefined) throw new Error(`not serving ${manifestCid} stage ${stage}`)
    const feeds = checkStageInputs(s.entry.inputs, inputs)
    s.queued++
    const job = s.tail.then(async () => {
      await this.acquireSlot(signal)
      try {
        const t0 = performance.now()
        const out = await runSession(s.session, feeds)
        return { out, ms: performance.now() - t0 }
      } finally { this.releaseSlot() }
    })
    s.tail = job.catch(() => {})
    const aborted = new Promise<never>((_resolve, reject) => {
      if (signal.aborted) reject(signal.reason)
      signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
    })
    aborted.catch(() => {})
    try {
      const { out, ms } = await Promise.race([job, aborted])
      s.msPerItem = s.msPerItem === 0 ? ms : s.msPerItem * 0.8 + ms * 0.2
      s.runs++
      this.onRun?.({ manifest: manifestCid, stage, ms })
      // hand on what the next stage needs: produced here or passed through
      const pool = new Map<string, Tensor>()
      for (const t of inputs) pool.set(t.name, t)
      for (const t of out) pool.set(t.name, t)
      const outputs = s.entry.outputs.map(o => {
        const t = pool.get(o.name)
        if (t === undefined) throw new Error(`stage ${stage} did not produce ${o.name}`)
        return t
      })
      return { outputs, ms }
    } finally {
      s.queued--
    }
  }

  /** The protocol handler (public so unit tests can call it on a stream). */
  async handle (stream: Stream): Promise<void> {
    const ac = new AbortController()
    this.inflight.add(ac)
    try { await this.handleRequest(stream, ac.signal) } finally { this.inflight.delete(ac) }
  }

  private async handleRequest (stream: Stream, departing: AbortSignal): Promise<void> {
    const fs = frameStream(stream)
    const me = this.host.peerId.toString()
    let req: InferRequestHeader | undefined
    const fail = async (code: InferErrorHeader['code'], message: string, stage: number, peer: string, hops: HopTiming[] = [], tensors: Tensor[] = []): Promise<void> => {
      await fs.write(errorFrame({ job: req?.job ?? '', code, message, stage, peer, hops }, tensors), { signal: AbortSignal.timeout(INFER_HOP_TIMEOUT_MS) })
      await stream.close()
    }
    try {
      let frame
      try {
        frame = await fs.read({ signal: AbortSignal.timeout(INFER_HOP_TIMEOUT_MS) })
        if (frame.kind !== FrameKind.REQUEST) throw new MalformedFrameError('kind', `expected REQUEST (${FrameKind.REQUEST}), got ${frame.kind}`)
        req = parseRequestHeader(frame.header)
      } catch (err) {
        if (err instanceof MalformedFrameError || err instanceof FrameTooLargeError) {
          this.log('bad frame: %e', err)
          await fail(InferErrorCode.BAD_INPUT, err.message, 0, me).catch(() => {})
          stream.abort(err)
          return
        }
        throw err
      }
      const s = this.stages.get(this.key(req.manifest, req.stage))
      if (!this.accepting) { await fail(InferErrorCode.DEPARTING, 'this vehicle is leaving the mesh', req.stage, me); return }
      if (s === undefined) { await fail(InferErrorCode.NOT_SERVING, `not serving ${req.manifest} stage ${req.stage}`, req.stage, me); return }
      const refusal = this.admit?.(req)
      if (refusal !== undefined) { await fail(InferErrorCode.LEASE_EXPIRED, refusal, req.stage, me); return }
      if (s.queued >= (this.init.maxQueue ?? 32)) { await fail(InferErrorCode.BUSY, `stage ${req.stage} queue is full`, req.stage, me); return }
      if (req.stage + req.route.length >= s.manifest.stages.length) {
        await fail(InferErrorCode.BAD_INPUT, `route runs past the last stage (${s.manifest.stages.length - 1})`, req.stage, me); return
      }
      // run our stage, and the following ones too while the route stays on this node
      let stage = req.stage
      let tensors = frame.tensors
      let route = req.route
      const mine: HopTiming[] = []
      let result
      for (;;) {
        try {
          result = await this.run(req.manifest, stage, tensors, departing)
        } catch (err) {
          if (err instanceof DepartingError) {
            await fail(InferErrorCode.DEPARTING, err.message, stage, me, mine, stage > req.stage ? tensors : [])
            return
          }
          const bad = err instanceof MalformedFrameError
          // for a later stage run here, hand back its input so the caller can replay it elsewhere
          await fail(bad ? InferErrorCode.BAD_INPUT : InferErrorCode.RUN_FAILED, (err as Error).message, stage, me, mine, stage > req.stage ? tensors : [])
          return
        }
        mine.push({ peer: me, stage, ms: Math.round(result.ms * 100) / 100 })
        if (route[0]?.peer !== me || !this.stages.has(this.key(req.manifest, stage + 1))) break
        stage++
        tensors = result.outputs
        route = route.slice(1)
      }
      const next = route[0]
      if (next === undefined) {
        await fs.write(resultFrame({ job: req.job, hops: mine }, result.outputs))
        await stream.close()
        return
      }
      const nextStage = stage + 1
      let answer
      try {
        const remaining = Math.max(1, req.deadline - Date.now())
        answer = await callHop(this.host, next, requestFrame({ ...req, stage: nextStage, route: route.slice(1) }, result.outputs), { signal: AbortSignal.any([departing, AbortSignal.timeout(Math.min(remaining, INFER_HOP_TIMEOUT_MS))]) })
      } catch (err) {
        if (departing.aborted) {
          // we are leaving: hand our output back so the caller continues from the next stage elsewhere
          await fail(InferErrorCode.DEPARTING, 'this vehicle is leaving the mesh', nextStage, me, mine, result.outputs)
          return
        }
        const code = err instanceof HopUnreachableError ? InferErrorCode.HOP_UNREACHABLE : InferErrorCode.TIMEOUT
        // hand back what we tried to forward so the caller can replay that stage elsewhere
        await fail(code, (err as Error).message, nextStage, next.peer, mine, result.outputs)
        return
      }
      if (answer.kind === FrameKind.RESULT) {
        // relay the result's tensors as they are; only the header changes
        const h = parseResultHeader(answer.header)
        await fs.writeRaw({ kind: FrameKind.RESULT, header: { job: req.job, hops: [...mine, ...h.hops] }, tensorBytes: answer.tensorBytes })
      } else if (answer.kind === FrameKind.ERROR) {
        const h = parseErrorHeader(answer.header)
        const carried = rawTensors(answer)
        const replay = carried.length > 0 ? carried : (h.stage === nextStage ? result.outputs : [])
        await fs.write(errorFrame({ ...h, hops: [...mine, ...h.hops] }, replay))
      } else {
        await fail(InferErrorCode.HOP_UNREACHABLE, `next hop answered frame kind ${answer.kind}`, nextStage, next.peer, mine, result.outputs)
        return
      }
      await stream.close()
    } catch (err) {
      this.log.error('infer stream failed: %e', err)
      stream.abort(err as Error)
    }
  }
}

