/**
 * The `/fleetmesh/infer/2.0.0` handler: reads one REQUEST frame, checks it,
 * runs this node's stage (and the following ones while the route stays
 * here) on the stage runtime, calls the next hop with the hand-off tensors
 * and relays the answer back to its caller. A bad frame gets an ERROR frame
 * and closes that stream only.
 */
import type { ComponentLogger, Libp2p, Logger, PeerId, Startable, Stream } from '@libp2p/interface'
import { FrameTooLargeError, MalformedFrameError } from '../../protocols/errors.ts'
import { frameStream, frameTensors } from '../../protocols/framing.ts'
import type { Frame, FrameStream } from '../../protocols/framing.ts'
import { INFER_PROTOCOL } from '../../protocols/ids.ts'
import { InferErrorCode } from '../../protocols/infer.ts'
import type { HopTiming, InferError, InferRequest } from '../../protocols/infer.ts'
import { INFER_HOP_TIMEOUT_MS } from '../../protocols/limits.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { PeerDialer } from '../dial.ts'
import type { FleetMetrics } from '../metrics.ts'
import { callHop, HopUnreachableError } from './hop-call.ts'
import { DepartingError } from './stage-runtime.ts'
import type { Admission, StageRuntime } from './stage-runtime.ts'

export interface InferHandlerComponents {
  peerId: PeerId
  logger: ComponentLogger
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
  dialer: PeerDialer
  runtime: StageRuntime
  metrics: FleetMetrics
}

export interface InferHandlerInit {
  /** Concurrent inbound (and outbound) infer streams. @default 64 */
  maxStreams?: number
  /** A last admission check (e.g. the batch lease the request names): a message refuses it with LEASE_EXPIRED. */
  admit?: (req: InferRequest) => string | undefined
}

type Fail = (code: InferError['code'], message: string, stage: number, peer: string, hops?: HopTiming[], tensors?: Tensor[]) => Promise<void>

export class InferHandler implements Startable {
  private readonly c: InferHandlerComponents
  private readonly init: InferHandlerInit
  private readonly log: Logger
  private readonly me: string

  constructor (components: InferHandlerComponents, init: InferHandlerInit = {}) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:infer')
    this.me = components.peerId.toString()
  }

  async start (): Promise<void> {
    const max = this.init.maxStreams ?? 64
    await this.c.registrar.handle(INFER_PROTOCOL, (stream) => { void this.handle(stream) }, { maxInboundStreams: max, maxOutboundStreams: max })
  }

  async stop (): Promise<void> {
    await this.c.registrar.unhandle(INFER_PROTOCOL)
  }

  private async handle (stream: Stream): Promise<void> {
    const admission = this.c.runtime.admit()
    const fs = frameStream(stream)
    let job = ''
    const fail: Fail = async (code, message, stage, peer, hops = [], tensors = []) => {
      this.c.metrics.refused(code)
      await fs.write({ kind: 'error', error: { job, code, message, stage, peer, hops } }, tensors, { signal: AbortSignal.timeout(INFER_HOP_TIMEOUT_MS) })
    }
    try {
      let frame: Frame
      try {
        frame = await fs.read({ signal: AbortSignal.timeout(INFER_HOP_TIMEOUT_MS) })
        if (frame.message.kind !== 'request') throw new MalformedFrameError('kind', `expected a request, got a ${frame.message.kind}`)
      } catch (err) {
        if (!(err instanceof MalformedFrameError || err instanceof FrameTooLargeError)) throw err
        this.log('bad frame: %e', err)
        await fail(InferErrorCode.BAD_INPUT, err.message, 0, this.me).catch(() => {})
        stream.abort(err)
        return
      }
      const req = frame.message.request
      job = req.job
      this.c.metrics.bytes('infer', 'in', frame.payload.byteLength)
      const refusal = this.refusal(req, admission)
      if (refusal !== undefined) await fail(refusal[0], refusal[1], req.stage, this.me)
      else await this.serve(fs, req, frameTensors(frame), admission!, fail)
      await stream.close()
    } catch (err) {
      this.log.error('infer stream failed: %e', err)
      stream.abort(err as Error)
    } finally {
      admission?.release()
    }
  }

  /** Why a request is refused (code and message), or undefined to take it. */
  private refusal (req: InferRequest, admission: Admission | undefined): [InferError['code'], string] | undefined {
    const rt = this.c.runtime
    if (admission === undefined) return [InferErrorCode.DEPARTING, 'this vehicle is leaving the mesh']
    if (!rt.has(req.manifest, req.stage)) return [InferErrorCode.NOT_SERVING, `not serving ${req.manifest} stage ${req.stage}`]
    const lease = this.init.admit?.(req)
    if (lease !== undefined) return [InferErrorCode.LEASE_EXPIRED, lease]
    if (rt.isFull(req.manifest, req.stage)) return [InferErrorCode.BUSY, `stage ${req.stage} queue is full`]
    const stages = rt.manifestOf(req.manifest)!.stages.length
    if (req.stage + req.route.length >= stages) return [InferErrorCode.BAD_INPUT, `route runs past the last stage (${stages - 1})`]
    return undefined
  }

  /** Runs our stages, then forwards to the next hop and relays its answer. */
  private async serve (fs: FrameStream, req: InferRequest, input: Tensor[], admission: Admission, fail: Fail): Promise<void> {
    const departing = admission.signal
    let stage = req.stage
    let tensors = input
    let route = req.route
    const mine: HopTiming[] = []
    let outputs: Tensor[]
    for (;;) {
      try {
        const r = await this.c.runtime.run(req.manifest, stage, tensors, departing)
        outputs = r.outputs
        mine.push({ peer: this.me, stage, ms: Math.round(r.ms * 100) / 100 })
      } catch (err) {
        // for a later stage run here, hand back its input so the caller can replay it elsewhere
        const handBack = stage > req.stage ? tensors : []
        const code = err instanceof DepartingError ? InferErrorCode.DEPARTING : err instanceof MalformedFrameError ? InferErrorCode.BAD_INPUT : InferErrorCode.RUN_FAILED
        await fail(code, (err as Error).message, stage, this.me, mine, handBack)
        return
      }
      if (route[0]?.peer !== this.me || !this.c.runtime.has(req.manifest, stage + 1)) break
      stage++
      tensors = outputs
      route = route.slice(1)
    }
    const next = route[0]
    if (next === undefined) {
      await fs.write({ kind: 'result', result: { job: req.job, hops: mine } }, outputs)
      this.c.metrics.bytes('infer', 'out', outputs.reduce((s, t) => s + t.data.byteLength, 0))
      return
    }
    const nextStage = stage + 1
    let answer: Frame
    try {
      const remaining = Math.max(1, req.deadline - Date.now())
      const signal = AbortSignal.any([departing, AbortSignal.timeout(Math.min(remaining, INFER_HOP_TIMEOUT_MS))])
      answer = await callHop(this.c.dialer, next, { ...req, stage: nextStage, route: route.slice(1) }, outputs, { signal })
    } catch (err) {
      // hand back what we tried to forward so the caller continues from the next stage elsewhere
      if (departing.aborted) { await fail(InferErrorCode.DEPARTING, 'this vehicle is leaving the mesh', nextStage, this.me, mine, outputs); return }
      const code = err instanceof HopUnreachableError ? InferErrorCode.HOP_UNREACHABLE : InferErrorCode.TIMEOUT
      await fail(code, (err as Error).message, nextStage, next.peer, mine, outputs)
      return
    }
    this.c.metrics.bytes('infer', 'out', outputs.reduce((s, t) => s + t.data.byteLength, 0))
    const m = answer.message
    if (m.kind === 'result') {
      // relay the result's tensors as they are; only the header changes
      await fs.relay({ kind: 'result', result: { job: req.job, hops: [...mine, ...m.result.hops] } }, answer)
    } else if (m.kind === 'error') {
      const carried = frameTensors(answer)
      const replay = carried.length > 0 ? carried : (m.error.stage === nextStage ? outputs : [])
      await fs.write({ kind: 'error', error: { ...m.error, job: req.job, hops: [...mine, ...m.error.hops] } }, replay)
    } else {
      await fail(InferErrorCode.HOP_UNREACHABLE, 'next hop answered with a request frame', nextStage, next.peer, mine, outputs)
    }
  }
}
