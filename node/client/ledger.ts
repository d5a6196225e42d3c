/**
 * What a client knows about one job while it runs: the receipt of every
 * stage that ran (who ran it, on what, producing what) and the stage
 * outputs it holds (taps, hand-backs, the result). Each answer is checked
 * against what was sent before anything from it is kept (node/runtime/attest.ts):
 * an answer that does not hold together is the first hop's fault, because
 * an honest first hop checks what it relays.
 */
import { MalformedFrameError } from '../../protocols/errors.ts'
import { frameTaps, frameTensors } from '../../protocols/framing.ts'
import type { Frame } from '../../protocols/framing.ts'
import type { HopTiming, OutputMode } from '../../protocols/infer.ts'
import type { Manifest } from '../models/manifest.ts'
import type { SignedReceipt } from '../../protocols/receipt.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { answerProblem, digestOf, openReceipts } from '../runtime/attest.ts'

export class JobLedger {
  readonly job: string
  readonly manifest: string
  readonly stages: number
  readonly inputs: Tensor[]
  private readonly receipts: Array<SignedReceipt | undefined>
  private readonly outputs = new Map<number, Tensor[]>()
  /** Stages this client ran itself, with their times. */
  private readonly ranHere: HopTiming[] = []
  /** The digest of tensors sent, made while their answer is awaited (sentDigest). */
  private sent?: { tensors: Tensor[], digest: Uint8Array }

  constructor (job: string, manifest: string, stages: number, inputs: Tensor[]) {
    this.job = job
    this.manifest = manifest
    this.stages = stages
    this.inputs = inputs
    this.receipts = Array.from({ length: stages }, () => undefined)
  }

  /**
   * Checks an answer to a request for stage `first` with `sent` on the route
   * `peers`; keeps its receipts, taps and hand-back or result tensors.
   * Returns why it does not hold together, or undefined.
   */
  async accept (answer: Frame, first: number, sent: Tensor[], peers: string[], taps: number[], output?: { mode: OutputMode, manifest: Pick<Manifest, 'outputs'> }): Promise<string | undefined> {
    try {
      const problem = await answerProblem(answer, { job: this.job, manifest: this.manifest, stage: first, stages: this.stages, sent: this.sentDigest(sent), peers, taps, ...(output !== undefined ? { output } : {}) })
      if (problem !== undefined) return problem
      const m = answer.message
      const receipts = await openReceipts(m.kind === 'result' ? m.result.receipts : m.kind === 'error' ? m.error.receipts : [])
      const tapped = frameTaps(answer)
      const main = frameTensors(answer)
      receipts.forEach((r, i) => { this.receipts[first + i] = r })
      for (const [stage, tensors] of tapped) this.outputs.set(stage, tensors)
      if (receipts.length > 0 && main.length > 0) this.outputs.set(first + receipts.length - 1, main)
      return undefined
    } catch (err) {
      // tensors that do not decode (a compressed one that is not what its dims say) are the answer's problem
      if (err instanceof MalformedFrameError) return err.message
      throw err
    }
  }

  /** The digest receipts give `tensors` (the request's), made once per request: call it while the answer is awaited. */
  sentDigest (tensors: Tensor[]): Uint8Array {
    if (this.sent?.tensors !== tensors) this.sent = { tensors, digest: digestOf(tensors) }
    return this.sent.digest
  }

  /** The first stages ran in this process (`me`), handing on `outputs`: no receipts, nothing to check. */
  local (outputs: Tensor[], stageMs: number[], me: string): void {
    stageMs.forEach((ms, stage) => { this.ranHere.push({ peer: me, stage, ms }) })
    this.outputs.set(stageMs.length - 1, outputs)
  }

  /** Replaces stage `stage`'s run by another peer's (a check it won), forgetting every later stage. */
  replace (stage: number, receipt: SignedReceipt, outputs: Tensor[]): void {
    this.truncate(stage + 1)
    this.receipts[stage] = receipt
    this.outputs.set(stage, outputs)
  }

  /** Forgets what stages `from` and later did (they will run again). */
  truncate (from: number): void {
    for (let s = from; s < this.stages; s++) { this.receipts[s] = undefined; this.outputs.delete(s) }
  }

  receipt (stage: number): SignedReceipt | undefined { return this.receipts[stage] }

  /** The input stage `stage` ran on, when known. */
  inputOf (stage: number): Tensor[] | undefined { return stage === 0 ? this.inputs : this.outputs.get(stage - 1) }

  outputOf (stage: number): Tensor[] | undefined { return this.outputs.get(stage) }

  /** Who ran each stage (from the receipts), '' where none is kept. */
  route (): string[] { return this.receipts.map((r, s) => r?.signer ?? this.ranHere.find(h => h.stage === s)?.peer ?? '') }

  hops (): HopTiming[] {
    return [...this.ranHere, ...this.receipts.flatMap(r => r === undefined ? [] : [{ peer: r.signer, stage: r.stage, ms: r.ms }])]
  }
}
