/**
 * The `/fleetmesh/infer/2.0.0` handler: reads one REQUEST frame, checks it,
 * runs this node's stage (and the following ones while the route stays
 * here) on the stage runtime, signs a receipt for each run, calls the next
 * hop with the hand-off tensors, checks its answer (attest.ts) and relays it
 * back to its caller with this hop's receipts and taps added. A bad frame
 * gets an ERROR frame and closes that stream only.
 *
 * A hop dials only peers it knows as fleet vehicles, at the addresses they
 * advertise themselves (never an address a request names for a peer it does
 * not know), and says no more about a hop it could not reach than that.
 */
import type { ComponentLogger, Libp2p, Logger, PeerId, PrivateKey, Startable, Stream } from '@libp2p/interface'
import { FrameTooLargeError, MalformedFrameError, OverBudgetError } from '../../protocols/errors.ts'
import { frameStream, frameTensors, nextWhileKept } from '../../protocols/framing.ts'
import type { Frame, FrameStream, WriteOptions } from '../../protocols/framing.ts'
import { INFER_COMPRESSED_PROTOCOL, INFER_PROTOCOL, INFER_REUSE_PROTOCOL } from '../../protocols/ids.ts'
import { InferErrorCode } from '../../protocols/infer.ts'
import type { Hop, InferError, InferRequest, InferResult } from '../../protocols/infer.ts'
import { INFER_HOP_TIMEOUT_MS, INFER_IDLE_MS, MAX_INFER_FRAME_BYTES } from '../../protocols/limits.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { PeerDialer } from '../dial.ts'
import type { FleetMetrics } from '../metrics.ts'
import { roundsHandOff } from '../models/manifest.ts'
import { applyOutputMode, outputModeProblem, OutputModeError } from '../models/output-modes.ts'
import { ByteBudget, TokenBuckets } from '../peer-limits.ts'
import { Attestor, answerProblem, digestOf, digestOfFrame } from './attest.ts'
import { giveBackInputs } from '../../protocols/shared-buffers.ts'
import { callHop, hopStreams, openHop } from './hop-call.ts'
import type { HopStream } from './hop-call.ts'
import { DepartingError } from './stage-runtime.ts'
import { mark } from '../util/job-path.ts'
import { deadline } from '../util/abortable.ts'
import type { Admission, StageRuntime } from './stage-runtime.ts'

export interface InferHandlerComponents {
  peerId: PeerId
  privateKey: PrivateKey
  logger: ComponentLogger
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
  dialer: PeerDialer
  runtime: StageRuntime
  metrics: FleetMetrics
}

/** Changes a stage's outputs before they are attested (a lying vehicle, for testing the checks). */
export type OutputFilter = (job: string, stage: number, outputs: Tensor[]) => Tensor[]

export interface InferHandlerInit {
  /** Concurrent inbound (and outbound) infer streams. @default 64 */
  maxStreams?: number
  /** A last admission check (e.g. the batch lease the request names): a message refuses it with LEASE_EXPIRED. */
  admit?: (req: InferRequest) => string | undefined
  /**
   * The addresses to dial a route's peer at when it is a fleet vehicle this
   * node knows, else undefined (the request is refused). Without it (an open
   * fleet) the route's own addresses are used, at most 4.
   */
  knownVehicle?: (peer: string) => string[] | undefined
  /**
   * Sends a job's result straight to the client `peer` (direct return,
   * node/runtime/direct-return.ts); false when it cannot, and the result goes
   * back along the chain.
   */
  deliver?: (peer: string, result: InferResult, outputs: Tensor[]) => Promise<boolean>
  /** Testing only: makes this vehicle lie (see OutputFilter). */
  lie?: OutputFilter
  /** Request payload bytes one peer may have on this node at once, and all peers together. @default 128 MiB, 512 MiB */
  memory?: { perPeer: number, overall: number }
  /** The share of its size a hand-off to `peer` must shrink to, to go compressed (protocols/compression.ts `compressionFor`); undefined: as it is. */
  compression?: (peer: string) => number | undefined
}

/** Route addresses used per hop when the route's own are used. */
const MAX_ROUTE_ADDRS = 4

/** Yields until the event loop's next turn (I/O and microtasks queued now go first). */
async function nextTurn (): Promise<void> { await new Promise(resolve => setImmediate(resolve)) }

interface Reply { receipts: Uint8Array[], taps: NonNullable<WriteOptions['taps']> }
type Fail = (code: InferError['code'], message: string, stage: number, peer: string, reply?: Reply, tensors?: Tensor[]) => Promise<void>

export class InferHandler implements Startable {
  private readonly c: InferHandlerComponents
  private readonly init: InferHandlerInit
  private readonly log: Logger
  private readonly me: string
  private readonly attestor: Attestor
  /** Request payloads held here, per peer: reserved when the header says how big, released when the job leaves. */
  readonly memory: ByteBudget
  /** Later requests on kept streams, per peer: the stream rate of INFER_PROTOCOL (node/node.ts), 100 a second, bursts of 200. */
  private readonly requests = new TokenBuckets(100, 200)
  /** How long a kept stream waits for its next request before it closes. */
  idleMs = INFER_IDLE_MS

  constructor (components: InferHandlerComponents, init: InferHandlerInit = {}) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:infer')
    this.me = components.peerId.toString()
    this.attestor = new Attestor(components.privateKey)
    this.memory = new ByteBudget(init.memory?.perPeer ?? 2 * MAX_INFER_FRAME_BYTES, init.memory?.overall ?? 8 * MAX_INFER_FRAME_BYTES)
  }

  async start (): Promise<void> {
    const max = this.init.maxStreams ?? 64
    const opts = { maxInboundStreams: max, maxOutboundStreams: max, runOnLimitedConnection: true }
    await this.c.registrar.handle(INFER_PROTOCOL, (stream, connection) => { void this.handle(stream, connection.remotePeer.toString(), false) }, opts)
    await this.c.registrar.handle(INFER_REUSE_PROTOCOL, (stream, connection) => { void this.handle(stream, connection.remotePeer.toString(), true) }, opts)
    await this.c.registrar.handle(INFER_COMPRESSED_PROTOCOL, (stream, connection) => { void this.handle(stream, connection.remotePeer.toString(), true) }, opts)
  }

  async stop (): Promise<void> {
    await this.c.registrar.unhandle(INFER_PROTOCOL)
    await this.c.registrar.unhandle(INFER_REUSE_PROTOCOL)
    await this.c.registrar.unhandle(INFER_COMPRESSED_PROTOCOL)
  }

  /**
   * Serves an infer stream: one request, or (INFER_REUSE_PROTOCOL) one after
   * another, each answered before the next is read, until the caller closes
   * its side or leaves the stream idle for INFER_IDLE_MS.
   */
  private async handle (stream: Stream, peer: string, reusable: boolean): Promise<void> {
    const fs = frameStream(stream)
    try {
      for (let n = 0; ; n++) if (!await this.request(stream, fs, peer, n) || !reusable) break
      if (stream.status === 'open') await stream.close()
    } catch (err) {
      this.log.error('infer stream failed: %e', err)
      stream.abort(err as Error)
    }
  }

  /** Reads and serves a stream's `n`th request; false when no other will follow (none came, or a bad frame). */
  private async request (stream: Stream, fs: FrameStream, peer: string, n: number): Promise<boolean> {
    // the first request is admitted as its stream opens; a later one once it arrives (an idle stream holds nothing)
    let admission = n === 0 ? this.c.runtime.admit() : undefined
    let job = ''
    let release: (() => void) | undefined
    const reserve = (bytes: number): boolean => { release = this.memory.reserve(peer, bytes); return release !== undefined }
    const fail: Fail = async (code, message, stage, peer, reply = { receipts: [], taps: [] }, tensors = []) => {
      this.c.metrics.refused(code)
      await fs.write({ kind: 'error', error: { job, code, message, stage, peer, receipts: reply.receipts } }, tensors, { taps: reply.taps, signal: AbortSignal.timeout(INFER_HOP_TIMEOUT_MS) })
    }
    try {
      let frame: Frame | undefined
      const reading = deadline(n === 0 ? INFER_HOP_TIMEOUT_MS : this.idleMs)
      try {
        // a later request may be long in coming: an idle kept stream closes, quietly
        frame = n === 0 ? await fs.next({ signal: reading.signal, reserve }) : await nextWhileKept(fs, { signal: reading.signal, reserve })
        if (frame === undefined) return false
        if (frame.message.kind !== 'request') throw new MalformedFrameError('kind', `expected a request, got a ${frame.message.kind}`)
        if (frame.taps.length > 0) throw new MalformedFrameError('header.taps', 'a request carries no taps')
      } catch (err) {
        if (!(err instanceof MalformedFrameError || err instanceof FrameTooLargeError || err instanceof OverBudgetError)) throw err
        this.log('refused a frame from %s: %e', peer, err)
        await fail(err instanceof OverBudgetError ? InferErrorCode.BUSY : InferErrorCode.BAD_INPUT, err.message, 0, this.me).catch(() => {})
        stream.abort(err)
        return false
      } finally {
        reading.clear()
      }
      const req = frame.message.request
      job = req.job
      mark(job, `stage${req.stage}.received`)
      this.c.metrics.bytes('infer', 'in', frame.payload.byteLength)
      if (n > 0) {
        admission = this.c.runtime.admit()
        // requests on a kept stream count as its opening would (node/node.ts's stream rates)
        if (!this.requests.take(peer)) {
          await fail(InferErrorCode.BUSY, 'too many requests from this peer; open a new stream later', req.stage, this.me)
          return false
        }
      }
      const refusal = this.refusal(req, admission)
      const stranger = refusal === undefined ? this.stranger(req) : undefined
      if (refusal !== undefined) await fail(refusal[0], refusal[1], req.stage, this.me)
      else if (stranger !== undefined) await fail(InferErrorCode.HOP_UNREACHABLE, `route names ${stranger.peer.slice(-8)}, not a fleet vehicle this node knows; not dialled`, req.stage, stranger.peer)
      else await this.serve(fs, req, frame, admission!, fail)
      return true
    } finally {
      admission?.release()
      release?.()
    }
  }

  /** Why a request is refused (code and message), or undefined to take it. */
  private refusal (req: InferRequest, admission: Admission | undefined): [InferError['code'], string] | undefined {
    const rt = this.c.runtime
    if (admission === undefined) return [InferErrorCode.DEPARTING, 'this vehicle is leaving the mesh']
    if (!rt.has(req.manifest, req.stage)) return [InferErrorCode.NOT_SERVING, `not serving ${req.manifest} stage ${req.stage}`]
    if (req.deadline <= Date.now()) return [InferErrorCode.TIMEOUT, 'the request\'s deadline has passed']
    const lease = this.init.admit?.(req)
    if (lease !== undefined) return [InferErrorCode.LEASE_EXPIRED, lease]
    if (rt.isFull(req.manifest, req.stage)) return [InferErrorCode.BUSY, `stage ${req.stage} queue is full`]
    const stages = rt.manifestOf(req.manifest)!.stages.length
    if (req.stage + req.route.length >= stages) return [InferErrorCode.BAD_INPUT, `route runs past the last stage (${stages - 1})`]
    const output = req.output !== undefined ? outputModeProblem(rt.manifestOf(req.manifest)!, req.output) : undefined
    if (output !== undefined) return [InferErrorCode.BAD_INPUT, output]
    return undefined
  }

  /** A peer of the route this node does not know as a fleet vehicle (it will not dial it). */
  private stranger (req: InferRequest): Hop | undefined {
    return req.route.find(h => h.peer !== this.me && this.init.knownVehicle !== undefined && this.init.knownVehicle(h.peer) === undefined)
  }

  /** Where to dial a route's hop: its own advertised addresses when known, else (open fleet) a few of the route's. */
  private hopFor (h: Hop): Hop {
    const known = this.init.knownVehicle?.(h.peer)
    return { peer: h.peer, addrs: known ?? h.addrs.slice(0, MAX_ROUTE_ADDRS) }
  }

  /**
   * Opens the stream to the next vehicle of the route while this node runs
   * its stages: setting up a stream costs about 2 ms of both ends' time, which
   * then overlaps the compute instead of following it. `take` hands it over
   * when the hand-off goes to that peer; otherwise (or on failure) it is dropped.
   */
  private openEarly (req: InferRequest, departing: AbortSignal): { take: (peer: string) => Promise<HopStream | undefined>, drop: () => void } {
    const ahead = req.route.find(h => h.peer !== this.me)
    if (ahead === undefined) return { take: async () => undefined, drop: () => {} }
    const remaining = Math.max(1, req.deadline - Date.now())
    const bound = deadline(Math.min(remaining, INFER_HOP_TIMEOUT_MS), departing)
    const opening = openHop(this.c.dialer, this.hopFor(ahead), { signal: bound.signal }).catch(() => undefined).finally(bound.clear)
    // unused, it is as good as idle
    const drop = (): void => { void opening.then(s => { if (s !== undefined) hopStreams(this.c.dialer).release(s) }) }
    return {
      take: async (peer) => { if (peer === ahead.peer) return await opening; drop(); return undefined },
      drop
    }
  }

  /** Runs our stages, then forwards to the next hop and relays its answer. */
  private async serve (fs: FrameStream, req: InferRequest, frame: Frame, admission: Admission, fail: Fail): Promise<void> {
    const departing = admission.signal
    const manifest = this.c.runtime.manifestOf(req.manifest)!
    const last = manifest.stages.length - 1
    let stage = req.stage
    let tensors: Tensor[]
    try {
      // in memory the stage's worker thread shares: handed to it without another copy
      tensors = frameTensors(frame, { shared: true })
    } catch (err) {
      // a compressed tensor that does not decompress to its dims (protocols/compression.ts)
      if (!(err instanceof MalformedFrameError)) throw err
      await fail(InferErrorCode.BAD_INPUT, err.message, req.stage, this.me)
      return
    }
    let inDigest: Uint8Array | undefined
    let route = req.route
    const mine: Reply = { receipts: [], taps: [] }
    let outputs: Tensor[]
    let outDigest: Uint8Array | undefined
    // the receipt of a run whose outputs go on to another vehicle: signed while they travel (below)
    let handOffRun: { input: Uint8Array, ms: number } | undefined
    let staysHere = false
    const early = this.openEarly(req, departing)
    for (;;) {
      try {
        mark(req.job, `stage${stage}.run`)
        const running = this.c.runtime.run(req.manifest, stage, tensors, departing)
        running.catch(() => {})
        // the request's digest while the stage runs on its worker thread (a turn later: the run is handed to it first)
        if (inDigest === undefined) { await nextTurn(); inDigest = digestOfFrame(frame, tensors) }
        const r = await running
        mark(req.job, `stage${stage}.ran`)
        // the request's shared copies are done with (the worker ran, the digest above is taken): reused by later requests
        if (stage === req.stage) giveBackInputs(tensors, r.outputs)
        // the last hop reduces the result when asked (output modes): its receipt attests what it returns
        const produced = stage === last && req.output !== undefined ? applyOutputMode(manifest, req.output, r.outputs) : r.outputs
        outputs = this.init.lie?.(req.job, stage, produced) ?? produced
        if (stage < last && req.taps?.includes(stage) === true) mine.taps.push({ stage, tensors: outputs })
        staysHere = route[0]?.peer === this.me && this.c.runtime.has(req.manifest, stage + 1)
        if (!staysHere && route[0] !== undefined) { handOffRun = { input: inDigest, ms: r.ms }; break }
        outDigest = digestOf(outputs)
        mine.receipts.push(await this.attestor.sign({ job: req.job, manifest: req.manifest, stage, input: inDigest, output: outDigest, ms: Math.round(r.ms * 100) / 100 }))
      } catch (err) {
        // for a later stage run here, hand back its input so the caller can replay it elsewhere
        const handBack = stage > req.stage ? tensors : []
        const code = err instanceof DepartingError ? InferErrorCode.DEPARTING : err instanceof MalformedFrameError || err instanceof OutputModeError ? InferErrorCode.BAD_INPUT : InferErrorCode.RUN_FAILED
        early.drop()
        await fail(code, (err as Error).message, stage, this.me, mine, handBack)
        return
      }
      if (!staysHere) break
      stage++
      tensors = outputs
      inDigest = outDigest
      route = route.slice(1)
    }
    const next = route[0]
    if (next === undefined) {
      early.drop()
      const result = { job: req.job, receipts: mine.receipts }
      mark(req.job, `stage${stage}.deliver`)
      // straight to the client when it asked and this node holds a connection to it; else back along the chain
      if (req.returnTo !== undefined && mine.taps.length === 0 && await this.init.deliver?.(req.returnTo, result, outputs) === true) {
        await fs.write({ kind: 'result', result: { ...result, delivered: true } }, [])
      } else {
        await fs.write({ kind: 'result', result }, outputs, { taps: mine.taps })
      }
      this.c.metrics.bytes('infer', 'out', outputs.reduce((s, t) => s + t.data.byteLength, 0))
      return
    }
    const nextStage = stage + 1
    let answer: Frame
    let signing: Promise<void> | undefined
    // receipts sent ahead of the answer when the request asked (ours once signed, then later hops' as they come), in order
    let ahead: Promise<void> = Promise.resolve()
    const sendAhead = (receipts: Uint8Array[]): void => {
      const after = signing
      ahead = ahead.then(async () => { await after; await fs.write({ kind: 'receipts', receipts: { job: req.job, receipts } }, []) }).catch(err => { this.log('job %s: receipts ahead: %e', req.job, err) })
    }
    const bound = deadline(Math.min(Math.max(1, req.deadline - Date.now()), INFER_HOP_TIMEOUT_MS), departing)
    try {
      const signal = bound.signal
      const stream = await early.take(next.peer)
      mark(req.job, `stage${stage}.forward`)
      // this run's receipt is digested and signed once the hand-off is written, while the next hop computes:
      // before, it would hold up the write (and the next hop, woken on this core, would wait for it)
      const sign = async (): Promise<void> => {
        await nextTurn()
        outDigest = digestOf(outputs)
        mine.receipts.push(await this.attestor.sign({ job: req.job, manifest: req.manifest, stage, input: handOffRun!.input, output: outDigest, ms: Math.round(handOffRun!.ms * 100) / 100 }))
      }
      const onSent = (): void => {
        mark(req.job, `stage${stage}.forwarded`)
        signing = sign()
        signing.catch(() => {})
        if (req.earlyReceipts === true) sendAhead(mine.receipts)
      }
      try {
        answer = await callHop(this.c.dialer, this.hopFor(next), { ...req, stage: nextStage, route: route.slice(1) }, outputs, { signal, float16: roundsHandOff(manifest, stage), compress: () => this.init.compression?.(next.peer), ...(stream !== undefined ? { stream } : {}), onSent, ...(req.earlyReceipts === true ? { onReceipts: sendAhead } : {}) })
      } finally {
        // the receipt goes back with an answer and with a hand-back alike
        await (signing ?? sign())
        await ahead
      }
    } catch (err) {
      // hand back what we tried to forward so the caller continues from the next stage elsewhere
      if (departing.aborted) { await fail(InferErrorCode.DEPARTING, 'this vehicle is leaving the mesh', nextStage, this.me, mine, outputs); return }
      this.log('next hop %s: %e', next.peer, err)
      const timedOut = Date.now() >= req.deadline
      await fail(timedOut ? InferErrorCode.TIMEOUT : InferErrorCode.HOP_UNREACHABLE, timedOut ? 'the next hop did not answer before the deadline' : 'the next hop is unreachable', nextStage, next.peer, mine, outputs)
      return
    } finally {
      bound.clear()
    }
    this.c.metrics.bytes('infer', 'out', outputs.reduce((s, t) => s + t.data.byteLength, 0))
    const problem = await answerProblem(answer, { job: req.job, manifest: req.manifest, stage: nextStage, stages: last + 1, sent: outDigest!, peers: route.map(h => h.peer), ...(req.taps !== undefined ? { taps: req.taps } : {}), ...(req.output !== undefined ? { output: { mode: req.output, manifest } } : {}) })
    if (problem !== undefined) {
      this.log('next hop %s answered job %s inconsistently: %s', next.peer, req.job, problem)
      await fail(InferErrorCode.INVALID_RESULT, `the next hop's answer failed its check: ${problem}`, nextStage, next.peer, mine, outputs)
      return
    }
    const m = answer.message
    if (m.kind === 'result') {
      // relay the result's tensors as they are; the header gains our receipts and taps
      await fs.relay({ kind: 'result', result: { job: req.job, receipts: [...mine.receipts, ...m.result.receipts], ...(m.result.delivered === true ? { delivered: true } : {}) } }, answer, { taps: mine.taps })
    } else if (m.kind === 'error') {
      const error = { ...m.error, job: req.job, receipts: [...mine.receipts, ...m.error.receipts] }
      // nothing handed back and the next hop's own stage failed: hand back what we sent it
      if (answer.tensors.length === 0 && m.error.stage === nextStage) await fs.write({ kind: 'error', error }, outputs, { taps: mine.taps })
      else await fs.relay({ kind: 'error', error }, answer, { taps: mine.taps })
    }
  }
}
