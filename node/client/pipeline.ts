/**
 * The pipeline runner: one job through the mesh with failover. It picks a route (one peer per stage) from
 * the stage locator, sends the input to the first hop within a budget its route's timings promise, and
 * checks the answer's receipts (ledger.ts). If a hop fails it replays only the failed stage's input on
 * another, keeping the stages that already ran; runs chosen for checking are run again elsewhere before
 * the result is delivered (verifier.ts). Results come straight from the last hop, the receipts sent ahead
 * of the chain's answer (direct-return.ts). Blame: the first hop answers for everything it sends back, an
 * error naming another peer only keeps this job away from it and counts as an accusation
 * (scheduler/bans.ts).
 */
import { randomUUID } from 'node:crypto'
import { TypedEventEmitter } from '@libp2p/interface'
import type { ComponentLogger, Logger, PeerId } from '@libp2p/interface'
import { RemoteError } from '../../protocols/errors.ts'
import { InferErrorCode } from '../../protocols/infer.ts'
import type { HopTiming, OutputMode } from '../../protocols/infer.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { PeerDialer } from '../dial.ts'
import type { FleetMetrics } from '../metrics.ts'
import { applyOutputMode, isRaw, outputModeProblem } from '../models/output-modes.ts'
import { roundsHandOff } from '../models/manifest.ts'
import { checkStageInputs } from '../models/specs.ts'
import { callHop, HopUnreachableError } from '../runtime/hop-call.ts'
import { openReceipts } from '../runtime/attest.ts'
import { attemptBudget } from '../scheduler/budget.ts'
import { NoRouteError, chooseRoute, inNearestCell, networkMs } from '../scheduler/router.ts'
import { within } from '../util/abortable.ts'
import { mark } from '../util/job-path.ts'
import type { Candidate, RouteCosts } from '../scheduler/router.ts'
import type { LinkMeter } from '../link-meter.ts'
import { firstAnswer, raceDirect, withDirectResult } from '../runtime/direct-return.ts'
import type { ResultInbox } from '../runtime/direct-return.ts'
import { ACCUSED_EXCLUSION_MS, Exclusions } from './exclusions.ts'
import { JobLedger } from './ledger.ts'
import { Coalescer } from './coalesce.ts'
import { returnsDirect } from './return-path.ts'
import type { LocalStages } from './local-stages.ts'
import type { StageLocator } from './locator.ts'
import type { ResolvedModel } from './resolver.ts'
import { VerificationError } from './verifier.ts'
import type { ResultVerifier, VerifyMode } from './verifier.ts'

export interface InferOptions {
  signal?: AbortSignal
  /** Attempts (first try plus re-routes). @default 6 */
  maxAttempts?: number
  /** Whole-job deadline. @default 60000 */
  timeoutMs?: number
  /** Peers to prefer per stage (e.g. those holding a lease); others are used when none of them can serve. */
  prefer?: Set<string>
  /** Leases to name in the request (peer id -> lease id). */
  leases?: () => Record<string, string>
  /** Called with each route chosen for this job (peers from stage `first`). */
  onRoute?: (peers: string[], first: number) => void
  /** Result checks for this job. @default the client's (sample) */
  verify?: VerifyMode
  /** Count this job's stage runs as checks of another job (a re-check), not as plain runs. */
  recheck?: boolean
  /** Run this many first stages in this process, so vehicles see only activations, never the inputs. @default the client's (0) */
  localStages?: number
  /** Reduce the result at the last hop (node/models/output-modes.ts): text for a CTC text model, the top k of a classifier. @default raw */
  output?: OutputMode
  /** Whether this job may wait for room in the mesh and go with others (coalesce.ts). @default true, when the client coalesces */
  coalesce?: boolean
}

export interface InferResult {
  manifest: string
  outputs: Tensor[]
  /** Peer ids, one per stage, in order. */
  route: string[]
  hops: HopTiming[]
  ms: number
  attempts: number
}

/** The job failed for good; `code` is the last error's code. */
export class InferenceError extends Error {
  readonly name = 'InferenceError'
  readonly code: string
  readonly stage: number | undefined
  constructor (code: string, message: string, stage?: number, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.stage = stage
  }
}

export interface PipelineEvents {
  /** A route was chosen (peers per stage from `first`). */
  route: CustomEvent<{ peers: string[], first: number, at: number }>
  /** A job ended. */
  job: CustomEvent<{ outcome: 'ok' | 'failed', result?: InferResult, error?: Error }>
}

export interface PipelineComponents {
  peerId: PeerId
  logger: ComponentLogger
  dialer: PeerDialer
  locator: StageLocator
  metrics: FleetMetrics
  verifier: ResultVerifier
  /** Runs first stages in this process (for `localStages`). */
  local?: Pick<LocalStages, 'run'>
  /** This client's own check that a peer is reachable (a ping). */
  reachable?: (peer: string, signal: AbortSignal) => Promise<boolean>
  /** This client's measured links to vehicles (node/link-meter.ts). */
  links?: Pick<LinkMeter, 'get'>
  /** The share of its size a tensor sent to `peer` must shrink to, to go compressed (protocols/compression.ts `compressionFor`); undefined: as it is. */
  compression?: (peer: string) => number | undefined
  /** Takes results straight from a job's last hop (direct return); without it they come back along the chain. */
  inbox?: Pick<ResultInbox, 'expect' | 'stats'>
}

export class PipelineRunner extends TypedEventEmitter<PipelineEvents> {
  private readonly c: PipelineComponents
  private readonly log: Logger
  private readonly localStages: number
  private readonly output: OutputMode | undefined
  readonly coalescer: Coalescer<InferResult>
  /** Mesh jobs of this client in flight now (a coalesced group counts once). */
  private running = 0

  constructor (components: PipelineComponents, init: { localStages?: number, output?: OutputMode, coalesce?: number } = {}) {
    super()
    this.c = components
    this.localStages = init.localStages ?? 0
    this.output = init.output
    this.log = components.logger.forComponent('fleetmesh:pipeline')
    this.coalescer = new Coalescer(async (m, i, o) => {
      this.running++
      try { return await this.run(m, i, o) } finally { this.running-- }
    }, init.coalesce)
  }

  /** Runs one job through the mesh. */
  async infer (m: ResolvedModel, inputs: Tensor[], opts: InferOptions = {}): Promise<InferResult> {
    // a re-check is part of an earlier job, not a job of its own
    if (opts.recheck === true) return await this.run(m, inputs, opts)
    try {
      const r = await this.coalescer.infer(m, inputs, opts)
      this.c.metrics.job('ok', r)
      this.safeDispatchEvent('job', { detail: { outcome: 'ok', result: r } })
      return r
    } catch (err) {
      this.c.metrics.job('failed')
      this.safeDispatchEvent('job', { detail: { outcome: 'failed', error: err as Error } })
      throw err
    }
  }

  private async route (m: ResolvedModel, first: number, tensors: Tensor[], opts: InferOptions, exclude: Exclusions): Promise<Candidate[]> {
    const cands: Candidate[][] = []
    for (let s = first; s < m.manifest.stages.length; s++) {
      const all = (await this.c.locator.candidates(m, s)).filter(c => !exclude.has(c.peer))
      const preferred = opts.prefer !== undefined ? all.filter(c => opts.prefer!.has(c.peer)) : []
      cands.push(preferred.length > 0 ? preferred : all)
    }
    // inside the nearest cell that holds every stage (README, "A million cars")
    return chooseRoute(inNearestCell(cands, this.c.locator.cells), this.costs(m, tensors), first)
  }

  /** What a route costs: compute at each hop and, from measured link figures, moving the tensors (scheduler/router.ts). */
  private costs (m: ResolvedModel, tensors: Tensor[]): RouteCosts {
    const items = Math.max(1, tensors[0]?.dims[0] ?? 1)
    const links = this.c.links
    return {
      stageMs: m.manifest.stages.map(s => Math.max(1, s.share * 30)),
      handOffBytes: m.manifest.stages.map(s => s.handOffBytes * items),
      inputBytes: tensors.reduce((sum, t) => sum + t.data.byteLength, 0),
      outputBytes: (m.manifest.stages.at(-1)?.handOffBytes ?? 0) * items,
      // links nobody measured yet: a fast LAN without latency, as before link figures existed
      ...(links !== undefined ? { clientLink: (peer: string) => links.get(peer) } : {})
    }
  }

  private async run (m: ResolvedModel, inputs: Tensor[], opts: InferOptions): Promise<InferResult> {
    checkStageInputs(m.manifest.inputs, inputs)
    const mode = opts.output ?? this.output
    const modeProblem = mode !== undefined ? outputModeProblem(m.manifest, mode) : undefined
    if (modeProblem !== undefined) throw new InferenceError(InferErrorCode.BAD_INPUT, modeProblem)
    const K = m.manifest.stages.length
    const job = randomUUID()
    const t0 = performance.now()
    mark(job, 'client.job')
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000)
    const maxAttempts = opts.maxAttempts ?? 6
    const checks = opts.verify ?? this.c.verifier.mode
    // whether the last stage's outputs kept in the ledger were reduced by the last hop
    let reduced = false
    const bans = this.c.locator.bans
    const ledger = new JobLedger(job, m.cid, K, inputs)
    // peers this job keeps away from (accused by a hop: for a while; refused the input: for good)
    const exclude = new Exclusions()
    const refusedInput = new Set<string>()
    const [planned, checked] = [new Set<number>(), new Set<number>()]
    let [stage, tensors] = [0, inputs]
    const local = opts.localStages ?? this.localStages
    if (local > 0) {
      if (this.c.local === undefined) throw new InferenceError('BAD_INPUT', 'this client cannot run stages itself')
      const r = await this.c.local.run(m, local, inputs)
      ledger.local(r.outputs, r.stageMs, this.c.peerId.toString())
      stage = local
      tensors = r.outputs
    }
    let lastError: Error | undefined
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      opts.signal?.throwIfAborted()
      if (Date.now() > deadline) break
      let route: Candidate[]
      try {
        route = await this.route(m, stage, tensors, opts, exclude)
      } catch (err) {
        if (!(err instanceof NoRouteError) || attempt === maxAttempts) throw new InferenceError(InferErrorCode.NOT_SERVING, (err as Error).message, (err as NoRouteError).stage, { cause: err })
        // capacity may be on its way (a first heartbeat, a replacement): wait for a heartbeat that offers it
        lastError = err
        this.log('job %s attempt %d: %s; waiting for capacity', job, attempt, err.message)
        const wait = within(Math.min(1000 * attempt, Math.max(1, deadline - Date.now())), opts.signal)
        await this.c.locator.waitForHolder(m, err.stage, { signal: wait, usable: p => !exclude.has(p) }).catch(() => {})
        continue
      }
      const [peers, first] = [route.map(c => c.peer), route[0].peer]
      this.safeDispatchEvent('route', { detail: { peers, first: stage, at: Date.now() } })
      opts.onRoute?.(peers, stage)
      // which runs of this attempt get checked, and so which stage outputs must come back as taps
      for (let s = stage; s < K; s++) { planned.delete(s); if (this.c.verifier.wants(checks, peers[s - stage], s) && this.checkable(m, s, peers[s - stage], checks, exclude)) planned.add(s) }
      // a last stage run that will be checked comes back raw (the check compares raw outputs); reduced here after
      const reduceThere = mode !== undefined && !planned.has(K - 1)
      const taps = [...new Set([...planned].flatMap(s => [s - 1, s]))].filter(s => s >= stage && s < K - 1).sort((a, b) => a - b)
      const leases = opts.leases?.()
      const done = this.c.locator.track(peers)
      // the attempt must finish in what the route's own timings promise; the hops' errors get a grace to arrive first
      const attemptDeadline = Math.min(deadline, Date.now() + attemptBudget(route, tensors, networkMs(route, this.costs(m, tensors), stage)))
      const signal = within(Math.max(1, attemptDeadline - Date.now()) + ANSWER_GRACE_MS, opts.signal)
      let answer
      // the result comes straight from the last hop (return-path.ts): with the receipts the hops send
      // ahead as they sign them, the whole chain is here then, before the chain's answer
      const output = reduceThere ? { mode: mode!, manifest: m.manifest } : undefined
      const direct = returnsDirect({ resultBytes: this.costs(m, tensors).outputBytes ?? 0, reduced: reduceThere, taps: taps.length > 0, others: this.running - 1, allOnThisMachine: () => peers.every(p => this.c.dialer.sameHost(p)) }) ? this.c.inbox?.expect(job, peers[peers.length - 1]) : undefined
      const ahead: Uint8Array[] = []
      // receipts sent ahead are verified as they come (openReceipts keeps the outcome for the check below)
      const onReceipts = (r: Uint8Array[]): void => { ahead.push(...r); void openReceipts(r).catch(() => {}) }
      let taken = false
      try {
        mark(job, 'client.send')
        const calling = callHop(this.c.dialer, route[0], {
          job,
          manifest: m.cid,
          stage,
          deadline: attemptDeadline,
          route: route.slice(1).map(c => ({ peer: c.peer, addrs: c.addrs })),
          ...(leases !== undefined && Object.keys(leases).length > 0 ? { leases } : {}),
          ...(taps.length > 0 ? { taps } : {}),
          ...(direct !== undefined ? { returnTo: this.c.peerId.toString(), earlyReceipts: true } : {}),
          ...(reduceThere ? { output: mode } : {})
        }, tensors, { signal, float16: stage > 0 && roundsHandOff(m.manifest, stage - 1), compress: () => this.c.compression?.(first), onSent: () => { mark(job, 'client.sent'); ledger.sentDigest(tensors) }, ...(direct !== undefined ? { onReceipts } : {}) })
        ;({ frame: answer, taken } = await firstAnswer(calling, direct, ahead, K - stage, async whole => { mark(job, 'client.answer'); try { return await ledger.accept(whole, stage, tensors, peers, taps, output) } finally { mark(job, 'client.checked') } }))
      } catch (err) {
        direct?.cancel()
        opts.signal?.throwIfAborted()
        lastError = err as Error
        // unreachable, dropped the stream, or silent past its deadline: the first hop's own failure
        bans.ban(first, err instanceof HopUnreachableError && !signal.aborted ? 'absent' : 'slow')
        this.log('job %s attempt %d: first hop %s: %e', job, attempt, first, err)
        continue
      } finally { done() }
      if (taken) this.c.inbox!.stats.ahead++
      else {
        // delivered straight to us: the last hop's tensors join the chain's receipts; missing or wrong, they are its fault
        const last = peers[peers.length - 1]
        const delivered = answer.message.kind === 'result' && answer.message.result.delivered === true
        if (delivered) {
          try {
            answer = withDirectResult(answer, await raceDirect(direct, signal))
          } catch (err) {
            lastError = err as Error
            bans.ban(last, 'slow')
            this.log('job %s attempt %d: last hop %s: %e', job, attempt, last, err)
            continue
          } finally { direct?.cancel() }
        }
        direct?.cancel()
        const problem = await ledger.accept(answer, stage, tensors, peers, taps, output)
        if (problem !== undefined) {
          lastError = new InferenceError(InferErrorCode.INVALID_RESULT, `the answer from ${(delivered ? last : first).slice(-8)} failed its check: ${problem}`, stage)
          bans.ban(delivered ? last : first)
          this.log('job %s attempt %d: %s', job, attempt, lastError.message)
          continue
        }
      }
      direct?.cancel()
      const msg = answer.message
      if (msg.kind === 'result') {
        // a vehicle of an earlier version ignores the output mode and answers raw
        reduced = reduceThere && !isRaw(m.manifest, ledger.outputOf(K - 1) ?? [])
        if (opts.recheck !== true) this.c.verifier.stats.plainRuns += K - stage
        const corrected = await this.checkRuns(m, ledger, planned, checked, { mode: checks, exclude: exclude.current(), ...(opts.signal !== undefined ? { signal: opts.signal } : {}) })
        if (corrected === undefined || corrected === K - 1) {
          const last = ledger.outputOf(K - 1)!
          const outputs = mode !== undefined && !reduced ? applyOutputMode(m.manifest, mode, last) : last
          if (opts.recheck !== true) this.c.verifier.remember(m, ledger, checked, outputs, mode)
          mark(job, 'client.done')
          return { manifest: m.cid, outputs, route: ledger.route(), hops: ledger.hops(), ms: performance.now() - t0, attempts: attempt }
        }
        // a run lost its check: continue from the winner's outputs
        stage = corrected + 1
        tensors = ledger.outputOf(corrected)!
        continue
      }
      if (msg.kind !== 'error') continue
      const e = msg.error
      if (opts.recheck !== true) this.c.verifier.stats.plainRuns += e.stage - stage
      lastError = new RemoteError(e.code, `stage ${e.stage} on ${e.peer.slice(-8)}: ${e.message}`, e.peer)
      if (e.peer === first || e.peer === '') {
        // the first hop's own failure (BUSY and refusals included)
        bans.ban(first, ABSENT_CODES.has(e.code) ? 'absent' : 'fault')
        if (e.code === InferErrorCode.BAD_INPUT) {
          refusedInput.add(first)
          exclude.add(first, Infinity)
          if (refusedInput.size >= 2) throw new InferenceError(e.code, `${refusedInput.size} vehicles refused the input: ${lastError.message}`, e.stage)
        }
      } else {
        // another peer, as the first hop tells it: not evidence on its own
        exclude.add(e.peer, ACCUSED_EXCLUSION_MS)
        bans.accuse(e.peer, first)
        // said to be unreachable: if this client cannot reach it either, that is its own failure
        if (e.code === InferErrorCode.HOP_UNREACHABLE && this.c.reachable !== undefined && !await this.c.reachable(e.peer, AbortSignal.timeout(PROBE_TIMEOUT_MS)).catch(() => false)) bans.ban(e.peer, 'absent')
      }
      // keep the stages that ran (their receipts checked); replay the failed stage's input, if it fits that stage
      const replay = ledger.outputOf(e.stage - 1)
      if (e.stage > stage && e.receipts.length === e.stage - stage && replay !== undefined && !this.fits(m, e.stage, replay, first)) {
        ledger.truncate(stage)
      } else if (e.stage > stage && e.receipts.length === e.stage - stage && replay !== undefined) {
        stage = e.stage
        tensors = replay
      }
      this.log('job %s attempt %d failed at stage %d on %s (%s: %s), re-routing', job, attempt, e.stage, e.peer, e.code, e.message)
    }
    throw new InferenceError((lastError as RemoteError | undefined)?.code ?? 'ERR_FAILED', `job failed after ${maxAttempts} attempts: ${lastError?.message ?? 'deadline passed'}`, stage, { cause: lastError })
  }

  /**
   * Whether a run of `stage` by `peer` can be checked: another vehicle holds
   * the stage. In sample mode a run nobody could check is not planned (its
   * taps would travel for nothing) and counts as unverifiable; strict mode
   * plans it, and the check fails the job.
   */
  private checkable (m: ResolvedModel, stage: number, peer: string, checks: VerifyMode, exclude: Exclusions): boolean {
    if (checks === 'strict' || this.c.locator.live(m, stage).some(c => c.peer !== peer && !exclude.has(c.peer))) return true
    this.c.verifier.stats.unverifiable++
    return false
  }

  /** Whether tensors handed back fit stage `stage`'s inputs; if not, the first hop that passed them on is at fault. */
  private fits (m: ResolvedModel, stage: number, tensors: Tensor[], first: string): boolean {
    try {
      checkStageInputs(m.manifest.stages[stage].inputs, tensors, m.manifest.stages[stage].maxInputBytes)
      return true
    } catch (err) {
      this.log('hand-back from %s does not fit stage %d: %e', first, stage, err)
      this.c.locator.bans.ban(first)
      return false
    }
  }

  /**
   * Checks the planned runs that are done; a run that lost is replaced by the
   * winner's in the ledger. Returns the earliest stage replaced, if any.
   */
  private async checkRuns (m: ResolvedModel, ledger: JobLedger, planned: Set<number>, checked: Set<number>, o: { mode: VerifyMode, exclude: Set<string>, signal?: AbortSignal }): Promise<number | undefined> {
    const due = [...planned].filter(s => ledger.receipt(s) !== undefined).sort((a, b) => a - b)
    if (due.length === 0) return undefined
    let outcomes
    try {
      outcomes = await this.c.verifier.check(m, ledger, due, o)
    } catch (err) {
      if (err instanceof VerificationError) throw new InferenceError(err.code, err.message, err.stage, { cause: err })
      throw err
    }
    for (const s of due) { planned.delete(s); checked.add(s) }
    const lost = outcomes.filter(x => !x.stood).sort((a, b) => a.stage - b.stage)[0]
    if (lost === undefined || lost.stood) return undefined
    ledger.replace(lost.stage, lost.winner.receipt, lost.winner.outputs)
    for (let s = lost.stage + 1; s < ledger.stages; s++) checked.delete(s)
    return lost.stage
  }
}

/** Errors that say a vehicle is going or gone rather than misbehaving. */
const ABSENT_CODES = new Set<string>([InferErrorCode.DEPARTING, InferErrorCode.NOT_SERVING, InferErrorCode.LEASE_EXPIRED])

/** How long this client tries to reach a peer a hop said was unreachable. */
const PROBE_TIMEOUT_MS = 1500

/** Caller's grace after a request's deadline, so a hop's TIMEOUT error (naming the late peer) arrives first. */
const ANSWER_GRACE_MS = 750
