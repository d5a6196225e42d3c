/**
 * Receipts sent ahead of the answer (InferRequest.earlyReceipts, issue 13):
 * a hop sends the receipts of its runs, and relays those of later hops, as
 * soon as they are signed, so a client whose result comes straight from the
 * last hop holds the whole chain without waiting for the answer along it.
 * A caller takes such frames only when it asked, no more than the route has
 * hops, for its own job; the client ends a job early only when the whole
 * chain checks, else the chain's answer decides. (That real hops send and
 * relay them, and that jobs end on them, is in direct-return.spec.ts and
 * output-modes.spec.ts.)
 */
import assert from 'node:assert/strict'
import { PeerDialer } from '../../node/dial.ts'
import { createHost } from '../../node/host.ts'
import { callHop, HopUnreachableError } from '../../node/runtime/hop-call.ts'
import { firstAnswer } from '../../node/runtime/direct-return.ts'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { frameStream } from '../../protocols/framing.ts'
import type { Frame } from '../../protocols/framing.ts'
import { INFER_REUSE_PROTOCOL } from '../../protocols/ids.ts'
import { decodeInferHeader, encodeInferHeader } from '../../protocols/infer.ts'
import type { InferMessage, InferRequest } from '../../protocols/infer.ts'
import { float32Tensor, describeTensors } from '../../protocols/tensor.ts'
import { Uint8ArrayList } from 'uint8arraylist'

const receipt = (n: number): Uint8Array => new Uint8Array(40).fill(n)
const result = (job: string, receipts: Uint8Array[], tensors = 0): Frame => ({
  message: { kind: 'result', result: { job, receipts } },
  tensors: Array.from({ length: tensors }, (_, i) => ({ name: `t${i}`, dtype: 1, dims: [1], encoding: 0, encodedLength: 4 })),
  taps: [],
  payload: new Uint8ArrayList(new Uint8Array(4 * tensors))
})
const never = new Promise<Frame>(() => {})
const later = async <T>(ms: number, v: T): Promise<T> => await new Promise(resolve => setTimeout(() => { resolve(v) }, ms))

describe('receipts sent ahead of the answer', function () {
  this.timeout(30_000)

  describe('callHop, against a hop built here', () => {
    let hop: Awaited<ReturnType<typeof createHost>>
    let caller: Awaited<ReturnType<typeof createHost>>
    /** What the hop sends after reading the request: these frames, in order. */
    let script: InferMessage[] = []

    before(async () => {
      // two plain hosts: the fleet's own nodes dial members only
      [hop, caller] = [await createHost({ fleet: 'ahead-test' }), await createHost({ fleet: 'ahead-test' })]
      await hop.handle(INFER_REUSE_PROTOCOL, (stream) => {
        void (async () => {
          const fs = frameStream(stream)
          await fs.read()
          for (const m of script) await fs.write(m, [])
        })().catch(() => {})
      })
    })
    after(async () => { await Promise.all([hop?.stop(), caller?.stop()]) })

    const call = async (request: Partial<InferRequest>, onReceipts?: (r: Uint8Array[]) => void): Promise<Frame> =>
      await callHop(new PeerDialer(caller), { peer: hop.peerId.toString(), addrs: hop.getMultiaddrs().map(String) },
        { job: 'j', manifest: 'm', stage: 0, route: [{ peer: 'next', addrs: [] }], deadline: Date.now() + 10_000, ...request },
        [float32Tensor('x', [1, 2], new Float32Array([1, 2]))], { signal: AbortSignal.timeout(5000), ...(onReceipts !== undefined ? { onReceipts } : {}) })

    it('hands receipts frames on in order, then returns the answer', async () => {
      script = [
        { kind: 'receipts', receipts: { job: 'j', receipts: [receipt(1)] } },
        { kind: 'receipts', receipts: { job: 'j', receipts: [receipt(2), receipt(3)] } },
        { kind: 'result', result: { job: 'j', receipts: [receipt(1), receipt(2), receipt(3)], delivered: true } }
      ]
      const got: number[] = []
      const answer = await call({ earlyReceipts: true }, r => { got.push(...r.map(b => b[0])) })
      assert.deepEqual(got, [1, 2, 3])
      assert.equal(answer.message.kind, 'result')
    })

    it('fails the call on receipts nobody asked for, more frames than the route has hops, or another job\'s', async () => {
      const fails = async (what: string, request: Partial<InferRequest>, pattern: RegExp, withHandler = true): Promise<void> => {
        await assert.rejects(call(request, withHandler ? () => {} : undefined), (e: Error) => {
          assert.ok(e instanceof HopUnreachableError, `${what}: ${e.message}`)
          assert.ok(e.cause instanceof MalformedFrameError && pattern.test(e.cause.message), `${what}: ${(e.cause as Error)?.message}`)
          return true
        })
      }
      const ahead = (job = 'j'): InferMessage => ({ kind: 'receipts', receipts: { job, receipts: [receipt(1)] } })
      const answer: InferMessage = { kind: 'result', result: { job: 'j', receipts: [] } }
      script = [ahead(), answer]
      await fails('not asked for', {}, /did not ask for/)
      await fails('asked, but no handler', { earlyReceipts: true }, /did not ask for/, false)
      // a route of two hops (this one and `next`) sends at most two
      script = [ahead(), ahead(), ahead(), answer]
      await fails('three frames for two hops', { earlyReceipts: true }, /more receipts frames than the 2 hops/)
      script = [ahead('other'), answer]
      await fails('another job', { earlyReceipts: true }, /receipts for job other/)
    })
  })

  it('a receipts frame carries receipts and no tensors', () => {
    const { descriptors } = describeTensors([float32Tensor('x', [1], new Float32Array([1]))])
    assert.throws(() => decodeInferHeader(encodeInferHeader({ kind: 'receipts', receipts: { job: 'j', receipts: [receipt(1)] } }, descriptors)), (e: Error) => e instanceof MalformedFrameError && /header\.tensors/.test(e.message))
    assert.throws(() => decodeInferHeader(encodeInferHeader({ kind: 'receipts', receipts: { job: 'j', receipts: [] } }, [])), (e: Error) => e instanceof MalformedFrameError && /header\.receipts/.test(e.message))
  })

  describe('firstAnswer: the client ends a job on the direct result only when the whole chain checks', () => {
    it('the result and the receipts ahead make the chain, and the check takes it: ended before the chain\'s answer', async () => {
      const checked: Frame[] = []
      const r = await firstAnswer(never, { frame: later(10, result('j', [receipt(3)], 1)) }, [receipt(1), receipt(2)], 3, async f => { checked.push(f); return undefined })
      assert.equal(r.taken, true)
      assert.equal(checked.length, 1)
      const m = r.frame.message
      assert.ok(m.kind === 'result')
      assert.deepEqual(m.result.receipts.map(b => b[0]), [1, 2, 3], 'the receipts ahead, then the last hop\'s')
      assert.equal(r.frame.tensors.length, 1, 'the last hop\'s result tensors')
    })

    it('a whole the check refuses, or too few receipts, leaves it to the chain\'s answer', async () => {
      const chain = result('j', [receipt(9)])
      const refused = await firstAnswer(later(30, chain), { frame: Promise.resolve(result('j', [receipt(2)], 1)) }, [receipt(1)], 2, async () => 'a receipt is invalid')
      assert.equal(refused.taken, false)
      assert.equal(refused.frame, chain)
      let asked = false
      const short = await firstAnswer(later(30, chain), { frame: Promise.resolve(result('j', [receipt(2)], 1)) }, [], 2, async () => { asked = true; return undefined })
      assert.deepEqual([short.taken, short.frame, asked], [false, chain, false], 'one receipt of two: not even checked')
    })

    it('the chain\'s answer first is the answer; its failure during a check that then passes is moot, during one that fails is the outcome', async () => {
      const chain = result('j', [receipt(9)])
      const first = await firstAnswer(Promise.resolve(chain), { frame: later(30, result('j', [receipt(1)], 1)) }, [], 1, async () => undefined)
      assert.deepEqual([first.taken, first.frame], [false, chain])
      const breaks = async (): Promise<Frame> => { await later(5, 0); throw new Error('the stream broke') }
      const failing = breaks()
      failing.catch(() => {})
      const passed = await firstAnswer(failing, { frame: Promise.resolve(result('j', [receipt(1)], 1)) }, [], 1, async () => await later(20, undefined))
      assert.equal(passed.taken, true)
      const failing2 = breaks()
      failing2.catch(() => {})
      await assert.rejects(firstAnswer(failing2, { frame: Promise.resolve(result('j', [receipt(1)], 1)) }, [], 1, async () => await later(20, 'wrong')), /the stream broke/)
    })
  })
})
