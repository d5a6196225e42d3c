/**
 * Result checks by redundant execution. A stage run chosen for checking
 * (every run with `strict`, a share that adapts to each vehicle's record with
 * `sample`, see scheduler/reputation.ts) is run again on another vehicle
 * that holds the stage, on the same input, and the outputs are compared
 * within a tolerance. If they disagree a third vehicle decides; the vehicle
 * in the minority is convicted (banned, its record reset) and the recent
 * jobs where its runs went unchecked are run again without it ('tainted'
 * names any delivered result that turns out different). Checks happen before the result is delivered: a run that
 * lost is replaced by the winner's and the pipeline continues from there.
 *
 * Every run is attested by a signed receipt (protocols/receipt.ts), so a
 * conviction names the peer that signed the wrong output.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import type { ComponentLogger, Logger } from '@libp2p/interface'
import type { OutputMode } from '../../protocols/infer.ts'
import { resultTolerance, roundsHandOff } from '../models/manifest.ts'
import type { SignedReceipt } from '../../protocols/receipt.ts'
import { asFloat32 } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { PeerDialer } from '../dial.ts'
import { answerProblem, digestOf, openReceipts } from '../runtime/attest.ts'
import { callHop, HopUnreachableError } from '../runtime/hop-call.ts'
import { frameTensors } from '../../protocols/framing.ts'
import { attemptBudget } from '../scheduler/budget.ts'
import { Reputation } from '../scheduler/reputation.ts'
import type { ReputationInit } from '../scheduler/reputation.ts'
import { routingLoad } from '../scheduler/router.ts'
import type { Candidate } from '../scheduler/router.ts'
import type { JobLedger } from './ledger.ts'
import type { StageLocator } from './locator.ts'
import type { ResolvedModel } from './resolver.ts'

export const VERIFY_MODES = ['off', 'sample', 'strict'] as const
export type VerifyMode = typeof VERIFY_MODES[number]
export function isVerifyMode (s: unknown): s is VerifyMode { return VERIFY_MODES.includes(s as VerifyMode) }

/** Outputs agree when every element is within `tol` x (1 + |b|) of the other's (other types: equal bytes). */
export function outputsAgree (a: Tensor[], b: Tensor[], tol: number): boolean {
  if (a.length !== b.length) return false
  return a.every((x, i) => {
    const y = b[i]
    if (x.name !== y.name || x.dtype !== y.dtype || x.dims.join() !== y.dims.join()) return false
    if (x.dtype !== 'float32') return Buffer.compare(x.data, y.data) === 0
    const p = asFloat32(x); const q = asFloat32(y)
    for (let k = 0; k < p.length; k++) {
      const d = Math.abs(p[k] - q[k])
      if (!(d <= tol * (1 + Math.abs(q[k]))) && !(Number.isNaN(p[k]) && Number.isNaN(q[k]))) return false
    }
    return true
  })
}

/** A check could not be made or settled. */
export class VerificationError extends Error {
  readonly name = 'VerificationError'
  readonly code: 'UNVERIFIABLE' | 'DISPUTED'
  readonly stage: number
  constructor (code: 'UNVERIFIABLE' | 'DISPUTED', stage: number, message: string) { super(message); this.code = code; this.stage = stage }
}

export interface VerifierComponents {
  logger: ComponentLogger
  dialer: PeerDialer
  locator: Pick<StageLocator, 'live' | 'bans'>
  /** Runs a whole job again through the mesh (banned peers left out), for re-checking delivered results. */
  rerun?: (m: ResolvedModel, inputs: Tensor[], output?: OutputMode) => Promise<Tensor[]>
}

export interface VerifierInit {
  /** @default 'sample' */
  mode?: VerifyMode
  /** @default 1e-4 */
  tolerance?: number
  reputation?: ReputationInit
  /** Delivered jobs remembered per vehicle, to check again if it is convicted. @default 8 */
  recentRuns?: number
  /** Bytes of remembered jobs (inputs and outputs) across vehicles. @default 32 MiB */
  recentBytes?: number
}

export interface VerifierEvents {
  /** A check proved `peer` wrong on `stage` of `job`. */
  convicted: CustomEvent<{ peer: string, stage: number, job: string }>
  /** A result already delivered was wrong: a convicted peer's earlier run did not hold up. */
  tainted: CustomEvent<{ peer: string, stage: number, job: string }>
}

export interface VerifierStats {
  /** Stage runs of jobs (pipelines). */
  plainRuns: number
  /** Extra stage runs made to check them. */
  checkRuns: number
  /** Stage runs checked. */
  checked: number
  /** Vehicles convicted (distinct). */
  caught: number
  /** Convictions (a vehicle may be convicted for several stages). */
  convictions: number
  /** Runs chosen for a check with no other vehicle to check on. */
  unverifiable: number
  /** Delivered results found wrong afterwards. */
  tainted: number
}

/** A delivered job with an unchecked run on some vehicle. */
interface Delivered { job: string, manifest: ResolvedModel, stage: number, inputs: Tensor[], outputs: Tensor[], bytes: number, output?: OutputMode }
interface Other { peer: string, receipt: SignedReceipt, outputs: Tensor[] }
/** A check's outcome for the pipeline: the run stands, or it lost and `winner` replaces it. */
export type CheckOutcome = { stage: number, stood: true } | { stage: number, stood: false, winner: Other }

export class ResultVerifier extends TypedEventEmitter<VerifierEvents> {
  readonly mode: VerifyMode
  readonly reputation: Reputation
  readonly stats: VerifierStats = { plainRuns: 0, checkRuns: 0, checked: 0, caught: 0, convictions: 0, unverifiable: 0, tainted: 0 }
  private readonly c: VerifierComponents
  private readonly log: Logger
  private readonly tol: number
  private readonly recent = new Map<string, Delivered[]>()
  private readonly convicted = new Set<string>()
  private recentBytes = 0
  private readonly maxRecent: number
  private readonly maxRecentBytes: number

  constructor (components: VerifierComponents, init: VerifierInit = {}) {
    super()
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:verifier')
    this.mode = init.mode ?? 'sample'
    this.tol = init.tolerance ?? 1e-4
    this.reputation = new Reputation(init.reputation)
    this.maxRecent = init.recentRuns ?? 8
    this.maxRecentBytes = init.recentBytes ?? 32 * 1024 * 1024
  }

  /** Whether to check `peer`'s run of `stage` in `mode`. */
  wants (mode: VerifyMode, peer: string, stage: number): boolean {
    return mode === 'strict' || (mode === 'sample' && this.reputation.shouldCheck(peer, stage))
  }

  /**
   * Checks the planned stages of a finished pipeline run (in parallel) and
   * returns each outcome. Throws VerificationError when a check is needed
   * and cannot be made (strict) or cannot be settled.
   */
  async check (m: ResolvedModel, ledger: JobLedger, stages: number[], o: { mode: VerifyMode, exclude: Set<string>, signal?: AbortSignal }): Promise<CheckOutcome[]> {
    const outcomes = await Promise.all(stages.map(async s => await this.checkStage(m, ledger, s, o)))
    return outcomes.filter((x): x is CheckOutcome => x !== undefined)
  }

  /**
   * Remembers a delivered job for every vehicle whose run in it went
   * unchecked, so the job can be run again (without that vehicle) if it is
   * convicted later.
   */
  remember (m: ResolvedModel, ledger: JobLedger, checked: Set<number>, outputs: Tensor[] | undefined = ledger.outputOf(ledger.stages - 1), output?: OutputMode): void {
    if (outputs === undefined || this.c.rerun === undefined) return
    const bytes = [...ledger.inputs, ...outputs].reduce((n, t) => n + t.data.byteLength, 0)
    const peers = new Map<string, number>()
    for (let s = 0; s < ledger.stages; s++) {
      const r = ledger.receipt(s)
      if (r !== undefined && !checked.has(s) && !peers.has(r.signer)) peers.set(r.signer, s)
    }
    for (const [peer, stage] of peers) {
      const jobs = this.recent.get(peer) ?? []
      jobs.push({ job: ledger.job, manifest: m, stage, inputs: ledger.inputs, outputs, bytes, ...(output !== undefined ? { output } : {}) })
      this.recent.set(peer, jobs)
      this.recentBytes += bytes
      while (jobs.length > this.maxRecent) this.recentBytes -= jobs.shift()!.bytes
    }
    // over the byte budget: drop the oldest jobs of the vehicles with the most
    while (this.recentBytes > this.maxRecentBytes && this.recent.size > 0) {
      const [peer, jobs] = [...this.recent].sort((a, b) => b[1].length - a[1].length)[0]
      this.recentBytes -= jobs.shift()!.bytes
      if (jobs.length === 0) this.recent.delete(peer)
    }
  }

  private async checkStage (m: ResolvedModel, ledger: JobLedger, stage: number, o: { mode: VerifyMode, exclude: Set<string>, signal?: AbortSignal }): Promise<CheckOutcome | undefined> {
    const receipt = ledger.receipt(stage); const input = ledger.inputOf(stage); const output = ledger.outputOf(stage)
    if (receipt === undefined || input === undefined || output === undefined) throw new VerificationError('UNVERIFIABLE', stage, `stage ${stage}'s input or output was not kept`)
    const peer = receipt.signer
    const tried = new Set([peer, ...o.exclude])
    const second = await this.runElsewhere(m, ledger.job, stage, input, tried, o.signal)
    if (second === undefined) {
      this.stats.unverifiable++
      if (o.mode === 'strict') throw new VerificationError('UNVERIFIABLE', stage, `no other vehicle could run stage ${stage} to check it`)
      return undefined
    }
    this.stats.checked++
    // outputs rounded to float16 (fp16 hand-offs) may differ by a float16 step between machines
    const tol = roundsHandOff(m.manifest, stage) ? Math.max(this.tol, 2 ** -10) : this.tol
    if (outputsAgree(output, second.outputs, tol)) {
      this.reputation.agree(peer, stage)
      this.reputation.agree(second.peer, stage)
      return { stage, stood: true }
    }
    this.log('job %s stage %d: %s and %s disagree; asking a third vehicle', ledger.job, stage, peer, second.peer)
    const third = await this.runElsewhere(m, ledger.job, stage, input, tried, o.signal)
    if (third === undefined) throw new VerificationError('DISPUTED', stage, `stage ${stage}: two vehicles disagree and no third could settle it`)
    const withRun = outputsAgree(output, third.outputs, tol)
    const withSecond = outputsAgree(second.outputs, third.outputs, tol)
    if (withRun === withSecond) throw new VerificationError('DISPUTED', stage, `stage ${stage}: three vehicles disagree`)
    const loser = withRun ? second.peer : peer
    this.reputation.agree(third.peer, stage)
    this.reputation.agree(withRun ? peer : second.peer, stage)
    this.convict(loser, stage, ledger.job)
    return withRun ? { stage, stood: true } : { stage, stood: false, winner: second }
  }

  private convict (peer: string, stage: number, job: string): void {
    this.stats.convictions++
    if (!this.convicted.has(peer)) { this.convicted.add(peer); this.stats.caught++ }
    this.c.locator.bans.convict(peer)
    this.reputation.reset(peer)
    this.log('convicted %s: wrong output for stage %d of job %s', peer, stage, job)
    this.safeDispatchEvent('convicted', { detail: { peer, stage, job } })
    void this.recheck(peer)
  }

  /** Runs a convicted vehicle's remembered jobs again without it; a different result taints the one delivered. */
  private async recheck (peer: string): Promise<void> {
    const jobs = this.recent.get(peer) ?? []
    this.recent.delete(peer)
    for (const d of jobs) {
      this.recentBytes -= d.bytes
      const again = await this.c.rerun?.(d.manifest, d.inputs, d.output).catch((err: Error) => { this.log('re-check of job %s failed: %e', d.job, err) })
      if (again === undefined) continue
      this.stats.checkRuns += d.manifest.manifest.stages.length
      if (outputsAgree(again, d.outputs, Math.max(this.tol, resultTolerance(d.manifest.manifest)))) continue
      this.stats.tainted++
      this.log('job %s, delivered earlier, was wrong: %s ran its stage %d', d.job, peer, d.stage)
      this.safeDispatchEvent('tainted', { detail: { peer, stage: d.stage, job: d.job } })
    }
  }

  /** Runs `stage` alone on a holder not in `tried` (adding it), trying up to 2; undefined when none answered soundly. */
  private async runElsewhere (m: ResolvedModel, job: string, stage: number, input: Tensor[], tried: Set<string>, signal?: AbortSignal): Promise<Other | undefined> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const cand: Candidate | undefined = this.c.locator.live(m, stage).filter(c => !tried.has(c.peer)).sort((a, b) => routingLoad(a) - routingLoad(b))[0]
      if (cand === undefined) return undefined
      tried.add(cand.peer)
      const deadline = Date.now() + attemptBudget([cand], input)
      const sigs = [AbortSignal.timeout(deadline - Date.now() + 750), ...(signal !== undefined ? [signal] : [])]
      this.stats.checkRuns++
      try {
        const answer = await callHop(this.c.dialer, cand, { job, manifest: m.cid, stage, route: [], deadline }, input, { signal: AbortSignal.any(sigs) })
        if (answer.message.kind !== 'result') { this.c.locator.bans.ban(cand.peer); continue }
        const problem = await answerProblem(answer, { job, manifest: m.cid, stage, stages: m.manifest.stages.length, last: stage, sent: digestOf(input), peers: [cand.peer] })
        if (problem !== undefined) { this.c.locator.bans.ban(cand.peer); continue }
        const [receipt] = await openReceipts(answer.message.result.receipts)
        return { peer: cand.peer, receipt, outputs: frameTensors(answer) }
      } catch (err) {
        signal?.throwIfAborted()
        this.log('check of stage %d on %s failed: %e', stage, cand.peer, err)
        this.c.locator.bans.ban(cand.peer, err instanceof HopUnreachableError ? 'absent' : 'fault')
      }
    }
    return undefined
  }
}
