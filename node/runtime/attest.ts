/**
 * Receipts on a hop: signing what this hop ran, and checking what the next
 * hop answered before relaying it (protocols/receipt.ts). A hop that relays
 * an answer vouches for it: it checks that the next hop's receipts start from
 * the tensors it sent, are signed by the peers of the route it was given and
 * end at the tensors that came back. So the caller can hold its first hop
 * responsible for any inconsistency it receives.
 */
import type { PrivateKey } from '@libp2p/interface'
import { frameTaps, mainPart } from '../../protocols/framing.ts'
import type { Frame } from '../../protocols/framing.ts'
import { chainProblem, digestTensors, openReceipt, sameDigest, sealReceipt } from '../../protocols/receipt.ts'
import type { HopReceipt, SignedReceipt } from '../../protocols/receipt.ts'
import { allRaw, describeTensors, tensorsFromPayload } from '../../protocols/tensor.ts'
import type { OutputMode } from '../../protocols/infer.ts'
import { outputFormProblem } from '../models/output-modes.ts'
import type { Manifest } from '../models/manifest.ts'
import type { Tensor } from '../../protocols/tensor.ts'

/** The digest receipts use for decoded tensors. */
export function digestOf (tensors: Tensor[]): Uint8Array {
  const d = describeTensors(tensors)
  return digestTensors(d.descriptors, d.parts)
}

/**
 * The digest of a frame's own tensors (its taps left out): of the bytes as
 * received when they travel raw, else (float16 hand-offs) of the tensors as
 * decoded, `decoded` when the caller has them. Receipts always attest float32
 * values, whatever carried them.
 */
export function digestOfFrame (f: Frame, decoded?: Tensor[]): Uint8Array {
  const m = mainPart(f)
  if (allRaw(m.tensors)) return digestTensors(m.tensors, m.payload)
  return digestOf(decoded ?? tensorsFromPayload(m.tensors, m.payload))
}

/** Signs receipts for this hop's stage runs. */
export class Attestor {
  private readonly key: PrivateKey
  constructor (key: PrivateKey) { this.key = key }
  async sign (r: HopReceipt): Promise<Uint8Array> { return await sealReceipt(r, this.key) }
}

/**
 * Receipts opened before, by the very bytes they came in: a client checks an
 * answer (answerProblem) and then keeps its receipts (the ledger), and each
 * signature is verified once, not twice. Bytes decoded from a frame are never
 * written to, so the same object holds the same receipt.
 */
const opened = new WeakMap<Uint8Array, Promise<SignedReceipt>>()

/** Opens every receipt of a list (signatures verified); errors name the receipt. */
export async function openReceipts (receipts: Uint8Array[]): Promise<SignedReceipt[]> {
  return await Promise.all(receipts.map(async (r, i) => {
    let p = opened.get(r)
    if (p === undefined) { p = openReceipt(r, `receipts[${i}]`); opened.set(r, p) }
    return await p
  }))
}

export interface AnswerExpectation {
  job: string
  manifest: string
  /** The stage the next hop was asked to run. */
  stage: number
  /** Stages in the model. */
  stages: number
  /** The last stage the request runs (a check runs one stage). @default stages - 1 */
  last?: number
  /** Digest of the tensors sent to it. */
  sent: Uint8Array
  /** Peers of the route from `stage` on (the next hop first). */
  peers: string[]
  /** Stages whose outputs were asked for as taps. */
  taps?: number[]
  /** The output mode asked of the last hop: a result must have its form (or be the model's raw outputs). */
  output?: { mode: OutputMode, manifest: Pick<Manifest, 'outputs'> }
}

/**
 * Why an answer from the next hop does not hold together, or undefined when
 * it does. A result must carry receipts of every stage from `stage` to the
 * last, chained from `sent`, signed by the route's peers, the last one ending
 * at the result's tensors. An error's receipts must chain the same way, and
 * tensors it hands back must be the last receipt's outputs. Every tap asked
 * for, of a stage that ran, must be there and be what that stage attested.
 */
export async function answerProblem (answer: Frame, x: AnswerExpectation): Promise<string | undefined> {
  const m = answer.message
  if (m.kind === 'request') return 'it answered with a request frame'
  if (m.kind === 'receipts') return 'it answered with a receipts frame'
  const raw = m.kind === 'result' ? m.result.receipts : m.error.receipts
  let receipts: SignedReceipt[]
  try { receipts = await openReceipts(raw) } catch (err) { return `a receipt is invalid (${(err as Error).message})` }
  const chain = chainProblem(receipts, { job: x.job, manifest: x.manifest, first: x.stage, input: x.sent, peers: x.peers })
  if (chain !== undefined) return chain
  const main = mainPart(answer)
  if (m.kind === 'result') {
    const want = (x.last ?? x.stages - 1) - x.stage + 1
    if (receipts.length !== want) return `the result carries ${receipts.length} receipts for ${want} stages`
    if (m.result.delivered === true) {
      // the tensors went straight to the client, which checks them against the last receipt
      if (main.tensors.length > 0) return 'a result delivered to the client carries tensors too'
    } else if (!sameDigest(receipts[receipts.length - 1].output, digestTensors(main.tensors, main.payload))) return 'the result\'s tensors are not what the last stage attested'
    else if (x.output !== undefined) {
      // an attested answer to another question (raw probabilities when text was asked) is no answer
      const form = outputFormProblem(x.output.mode, tensorsFromPayload(main.tensors, main.payload), x.output.manifest)
      if (form !== undefined) return `${form}, which was asked for`
    }
  } else {
    // (an error from a hop that refused the request outright may not know the stage it was for)
    if (receipts.length > 0 && m.error.stage !== x.stage + receipts.length) return `the error is for stage ${m.error.stage} but carries receipts up to stage ${x.stage + receipts.length - 1}`
    if (main.tensors.length > 0) {
      if (receipts.length === 0) return 'the error hands back tensors that no stage attested'
      if (!sameDigest(receipts[receipts.length - 1].output, digestTensors(main.tensors, main.payload))) return 'the tensors handed back are not what the last stage attested'
    }
  }
  return tapProblem(answer, receipts, x)
}

function tapProblem (answer: Frame, receipts: SignedReceipt[], x: AnswerExpectation): string | undefined {
  const taps = frameTaps(answer)
  for (const [stage, tensors] of taps) {
    const r = receipts[stage - x.stage]
    if (r === undefined) return `a tap is for stage ${stage}, which did not run`
    if (!sameDigest(r.output, digestOf(tensors))) return `the tap of stage ${stage} is not what that stage attested`
  }
  const ran = x.stage + receipts.length
  const missing = (x.taps ?? []).find(s => s >= x.stage && s < ran && s < x.stages - 1 && !taps.has(s))
  return missing !== undefined ? `the tap of stage ${missing} that was asked for is missing` : undefined
}
