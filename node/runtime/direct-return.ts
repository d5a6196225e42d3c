/**
 * Direct return (both ends of `/fleetmesh/result/1.0.0`). The last hop of a
 * job sends the result frame straight to the client instead of back along
 * the chain, when the client asked for it (InferRequest.returnTo) and the
 * vehicle already holds a connection to that peer and it proved a client or
 * publisher certificate: a hop never dials an address a request names. The
 * client takes a result frame only for a job it is waiting on, only from
 * the peer that is that job's last hop, within a byte budget; it checks the
 * tensors against the last stage's receipt that comes back along the chain.
 */
import type { ComponentLogger, Libp2p, Logger, Startable, Stream } from '@libp2p/interface'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { frameStream, mainPart, nextWhileKept } from '../../protocols/framing.ts'
import type { Frame, FrameStream } from '../../protocols/framing.ts'
import { Uint8ArrayList } from 'uint8arraylist'
import { RESULT_PROTOCOL, RESULT_REUSE_PROTOCOL } from '../../protocols/ids.ts'
import type { InferResult } from '../../protocols/infer.ts'
import { INFER_HOP_TIMEOUT_MS, INFER_IDLE_MS, MAX_INFER_FRAME_BYTES } from '../../protocols/limits.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { PeerDialer } from '../dial.ts'
import type { Membership } from '../membership/membership.ts'
import { mark } from '../util/job-path.ts'
import { deadline } from '../util/abortable.ts'
import { ByteBudget } from '../peer-limits.ts'
import { IDLE_STREAM_MS } from './hop-call.ts'

/** How long the last hop tries to hand a result to the client before it sends it back along the chain. */
const DELIVER_TIMEOUT_MS = 5000

export interface ResultSenderComponents {
  dialer: PeerDialer
  connections: Pick<Libp2p, 'getConnections'>
  membership?: Pick<Membership, 'hasRole'>
  logger: ComponentLogger
}

/** A kept result stream to a client, and the frame being written on it (frames go one at a time). */
interface KeptResults { stream: Stream, frames: FrameStream, writing: Promise<void>, idle?: ReturnType<typeof setTimeout> }

/**
 * The last hop's side: `deliver` for InferHandlerInit. Results to a client
 * travel on one kept stream (RESULT_REUSE_PROTOCOL), closed after
 * IDLE_STREAM_MS without one; a client of an earlier version gets a stream a
 * result (RESULT_PROTOCOL).
 */
export function resultSender (c: ResultSenderComponents): (peer: string, result: InferResult, outputs: Tensor[]) => Promise<boolean> {
  const log = c.logger.forComponent('fleetmesh:direct-return')
  const kept = new Map<string, Promise<KeptResults>>()
  const forget = (peer: string, k: KeptResults): void => { clearTimeout(k.idle); void kept.get(peer)?.then(now => { if (now === k) kept.delete(peer) }) }
  const open = async (peer: string, signal: AbortSignal): Promise<KeptResults> => {
    const stream = await c.dialer.dialProtocol(peer, [RESULT_REUSE_PROTOCOL, RESULT_PROTOCOL], { signal })
    return { stream, frames: frameStream(stream), writing: Promise.resolve() }
  }
  return async (peer, result, outputs) => {
    let id
    try { id = c.dialer.idOf(peer) } catch { return false }
    if (c.connections.getConnections(id).length === 0) return false
    if (c.membership !== undefined && !c.membership.hasRole(peer, 'client') && !c.membership.hasRole(peer, 'publisher')) return false
    const { signal, clear } = deadline(DELIVER_TIMEOUT_MS)
    let k: KeptResults | undefined
    try {
      let taking = kept.get(peer)
      k = await taking?.catch(() => undefined)
      if (k === undefined || k.stream.status !== 'open' || k.stream.writeStatus !== 'writable') {
        taking = open(peer, signal)
        kept.set(peer, taking)
        k = await taking
      }
      const s = k
      clearTimeout(s.idle)
      const write = s.writing.then(async () => { await s.frames.write({ kind: 'result', result }, outputs, { signal }) })
      s.writing = write.catch(() => {})
      await write
      if (s.stream.protocol !== RESULT_REUSE_PROTOCOL) {
        forget(peer, s)
        await s.stream.close({ signal })
      } else {
        s.idle = setTimeout(() => { forget(peer, s); void s.stream.close().catch(() => {}) }, IDLE_STREAM_MS)
        s.idle.unref?.()
      }
      return true
    } catch (err) {
      log('job %s: no direct return to %s: %e', result.job, peer, err)
      if (k !== undefined) { forget(peer, k); k.stream.abort(err as Error) } else kept.delete(peer)
      return false
    } finally {
      clear()
    }
  }
}

export interface ResultInboxComponents {
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
  logger: ComponentLogger
}

interface Waiter { peer: string, resolve: (f: Frame) => void, reject: (e: Error) => void }

/** The client's side: waits for result frames of its own jobs. */
export class ResultInbox implements Startable {
  private readonly c: ResultInboxComponents
  private readonly log: Logger
  private readonly waiting = new Map<string, Waiter>()
  private readonly memory = new ByteBudget(2 * MAX_INFER_FRAME_BYTES, 4 * MAX_INFER_FRAME_BYTES)
  /**
   * Result frames taken, and refused (unasked, from the wrong peer,
   * malformed); jobs that ended on a result taken here and the receipts the
   * hops sent ahead, before the chain's answer came (`ahead`).
   */
  readonly stats = { taken: 0, refused: 0, ahead: 0 }

  constructor (components: ResultInboxComponents) {
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:direct-return')
  }

  async start (): Promise<void> {
    const opts = { maxInboundStreams: 64, runOnLimitedConnection: true }
    await this.c.registrar.handle(RESULT_PROTOCOL, (stream, connection) => { void this.accept(stream, connection.remotePeer.toString(), false) }, opts)
    await this.c.registrar.handle(RESULT_REUSE_PROTOCOL, (stream, connection) => { void this.accept(stream, connection.remotePeer.toString(), true) }, opts)
  }

  async stop (): Promise<void> {
    await this.c.registrar.unhandle(RESULT_PROTOCOL)
    await this.c.registrar.unhandle(RESULT_REUSE_PROTOCOL)
    for (const [job, w] of this.waiting) { w.reject(new Error('the client stopped')); this.waiting.delete(job) }
  }

  /**
   * Waits for the result frame of `job` from `peer` (its last hop). Call it
   * before sending the request: the result may arrive before the chain's answer.
   */
  expect (job: string, peer: string): { frame: Promise<Frame>, cancel: () => void } {
    let w!: Waiter
    const frame = new Promise<Frame>((resolve, reject) => { w = { peer, resolve, reject } })
    frame.catch(() => {})
    this.waiting.set(job, w)
    return { frame, cancel: () => { if (this.waiting.get(job) === w) this.waiting.delete(job) } }
  }

  /** Takes a stream's result frames: one, or (RESULT_REUSE_PROTOCOL) one after another until the sender closes it or it idles. */
  private async accept (stream: Stream, peer: string, reusable: boolean): Promise<void> {
    const fs = frameStream(stream)
    try {
      for (let n = 0; ; n++) {
        let release: (() => void) | undefined
        const reserve = (bytes: number): boolean => { release = this.memory.reserve(peer, bytes); return release !== undefined }
        let frame: Frame | undefined
        const reading = deadline(n === 0 ? INFER_HOP_TIMEOUT_MS : INFER_IDLE_MS)
        try {
          // an idle kept stream closes, quietly
          frame = n === 0 ? await fs.next({ signal: reading.signal, reserve }) : await nextWhileKept(fs, { signal: reading.signal, reserve })
        } finally {
          reading.clear()
          release?.()
        }
        if (frame === undefined) break
        const m = frame.message
        if (m.kind !== 'result') throw new MalformedFrameError('kind', `expected a result, got a ${m.kind}`)
        mark(m.result.job, 'client.result')
        const w = this.waiting.get(m.result.job)
        if (w === undefined || w.peer !== peer) throw new MalformedFrameError('header.job', `no job ${m.result.job.slice(0, 8)} waits for a result from ${peer.slice(-8)}`)
        this.waiting.delete(m.result.job)
        this.stats.taken++
        w.resolve(frame)
        if (!reusable) break
      }
      await stream.close()
    } catch (err) {
      this.stats.refused++
      this.log('refused a result from %s: %e', peer, err)
      stream.abort(err as Error)
    }
  }
}

/** Waits for the directly returned frame until the attempt's signal ends. */
export async function raceDirect (direct: { frame: Promise<Frame> } | undefined, signal: AbortSignal): Promise<Frame> {
  if (direct === undefined) throw new Error('a result said to be delivered, but none was asked for')
  return await new Promise<Frame>((resolve, reject) => {
    const onAbort = (): void => { reject(new Error('the result said to be delivered directly did not arrive')) }
    if (signal.aborted) { onAbort(); return }
    signal.addEventListener('abort', onAbort, { once: true })
    direct.frame.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
  })
}

/**
 * The chain's answer (all receipts, the taps of the hops before the last)
 * with the last hop's result tensors put in front: one frame, checked as a whole by the ledger.
 */
export function withDirectResult (chain: Frame, direct: Frame): Frame {
  if (chain.message.kind !== 'result') return chain
  const main = mainPart(direct)
  return {
    message: { kind: 'result', result: { job: chain.message.result.job, receipts: chain.message.result.receipts } },
    tensors: [...main.tensors, ...chain.tensors],
    taps: chain.taps,
    payload: new Uint8ArrayList(main.payload, chain.payload)
  }
}

/**
 * The last hop's result with the receipts sent ahead of the chain's answer
 * (InferRequest.earlyReceipts) in front of its own: the whole chain's
 * receipts and the result, one frame to check like an answer.
 */
export function withReceiptsAhead (direct: Frame, ahead: Uint8Array[]): Frame {
  const main = mainPart(direct)
  const own = direct.message.kind === 'result' ? direct.message.result.receipts : []
  return { message: { kind: 'result', result: { job: direct.message.kind === 'result' ? direct.message.result.job : '', receipts: [...ahead, ...own] } }, tensors: main.tensors, taps: [], payload: main.payload }
}

/**
 * Whichever comes first: the chain's answer (`calling`), or the last hop's
 * result (`direct`) once the receipts sent ahead (`ahead`, filled as they
 * come) and its own make `stages` receipts and `take` accepts them as a
 * whole (the ledger's check, which keeps what it accepts). `taken` says the
 * latter: the chain's answer then still arrives, in the background. A result
 * `take` refuses leaves the chain's answer to decide, as without receipts
 * ahead.
 */
export async function firstAnswer (calling: Promise<Frame>, direct: { frame: Promise<Frame> } | undefined, ahead: Uint8Array[], stages: number, take: (whole: Frame) => Promise<string | undefined>): Promise<{ frame: Frame, taken: boolean }> {
  if (direct === undefined) return { frame: await calling, taken: false }
  return await new Promise((resolve, reject) => {
    let done = false
    let checking = false
    let chain: { frame: Frame } | { err: unknown } | undefined
    const settleChain = (): void => {
      if (done || checking || chain === undefined) return
      done = true
      if ('frame' in chain) resolve({ frame: chain.frame, taken: false })
      else reject(chain.err)
    }
    calling.then(frame => { chain = { frame }; settleChain() }, err => { chain = { err }; settleChain() })
    direct.frame.then(async f => {
      if (done || f.message.kind !== 'result' || ahead.length + f.message.result.receipts.length !== stages) return
      checking = true
      const whole = withReceiptsAhead(f, ahead)
      const problem = await take(whole).catch((err: Error) => err.message)
      checking = false
      if (problem === undefined) { done = true; resolve({ frame: whole, taken: true }) } else settleChain()
    }, () => {})
  })
}
