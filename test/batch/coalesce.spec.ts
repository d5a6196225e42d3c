/**
 * Coalescing (node/client/coalesce.ts): jobs that wait for room in the mesh
 * go together along the batch dimension. The runner here stands in for the
 * pipeline (a mesh job), so each test sees exactly which groups were sent;
 * test/trust/output-modes.spec.ts runs coalesced jobs on a real mesh.
 */
import assert from 'node:assert/strict'
import { Coalescer } from '../../node/client/coalesce.ts'
import type { ResolvedModel } from '../../node/client/resolver.ts'
import type { Manifest } from '../../node/models/manifest.ts'
import { asFloat32, float32Tensor } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'

interface Result { outputs: Tensor[], ms: number, sent: number }

const model = (stages: number, batch: number | null = null, maxBatch?: number): ResolvedModel => ({
  cid: `model-${stages}-${batch}-${maxBatch}`,
  manifest: { inputs: [{ name: 'x', dtype: 'float32', shape: [batch, 2], ...(maxBatch !== undefined ? { max: [maxBatch, 2] } : {}) }], stages: Array.from({ length: stages }, () => ({})) } as unknown as Manifest
})
const item = (v: number, rows = 1): Tensor[] => [float32Tensor('x', [rows, 2], new Float32Array(rows * 2).fill(v))]
const valueOf = (r: { outputs: Tensor[] }): number[] => [...asFloat32(r.outputs[0])]

/** A stand-in mesh: each job answers every row times two when `finish` lets it. */
function mesh (fail?: (rows: number[]) => Error | undefined, shape?: (out: Tensor[], rows: number[]) => Tensor[]): { run: ConstructorParameters<typeof Coalescer<Result>>[0], groups: number[][], options: object[], finish: (n?: number) => Promise<void> } {
  const groups: number[][] = []
  const options: object[] = []
  const pending: Array<() => void> = []
  const run = async (_m: ResolvedModel, inputs: Tensor[], opts: object): Promise<Result> => {
    const x = asFloat32(inputs[0])
    const rows = Array.from({ length: inputs[0].dims[0] }, (_, i) => x[i * 2])
    groups.push(rows)
    options.push(opts)
    await new Promise<void>(resolve => { pending.push(resolve) })
    const err = fail?.(rows)
    if (err !== undefined) throw err
    const out = [float32Tensor('y', [...inputs[0].dims], x.map(v => v * 2))]
    return { outputs: shape?.(out, rows) ?? out, ms: 1, sent: groups.length }
  }
  // lets the oldest `n` jobs answer, then the coalescer's turn after them
  const finish = async (n = 1): Promise<void> => {
    for (let i = 0; i < n; i++) pending.shift()?.()
    await new Promise(resolve => setImmediate(resolve))
    await new Promise(resolve => setImmediate(resolve))
  }
  return { run, groups, options, finish }
}
const turn = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

describe('coalescing: jobs waiting for room in the mesh go together', () => {
  it('a job with room goes at once, alone: one job at a time runs as without coalescing', async () => {
    const t = mesh()
    const c = new Coalescer(t.run)
    const p = c.infer(model(2), item(3), {})
    await turn()
    assert.deepEqual(t.groups, [[3]], 'sent before anything else happened')
    await t.finish()
    assert.deepEqual(valueOf(await p), [6, 6])
    const q = c.infer(model(2), item(4), {})
    await turn()
    assert.deepEqual(t.groups, [[3], [4]])
    await t.finish()
    await q
  })

  it('jobs waiting while every stage has a job go together, up to the limit, and each gets its own rows back', async () => {
    const t = mesh()
    const c = new Coalescer(t.run, 4)
    const m = model(2)
    const ps = Array.from({ length: 10 }, async (_, i) => await c.infer(m, item(i + 1), {}))
    await turn()
    // one job per stage goes at once; the rest wait for room
    assert.deepEqual(t.groups, [[1], [2]])
    await t.finish()
    // 8 waiting and 1 in the mesh, shared over 2 groups: at most 4 together
    assert.deepEqual(t.groups.slice(2), [[3, 4, 5, 6]])
    for (let i = 0; i < 10; i++) await t.finish()
    const results = await Promise.all(ps)
    results.forEach((r, i) => { assert.deepEqual(valueOf(r), [2 * (i + 1), 2 * (i + 1)], `job ${i + 1} got its own row`) })
    assert.ok(t.groups.every(g => g.length <= 4))
    assert.deepEqual(t.groups.flat().sort((a, b) => a - b), Array.from({ length: 10 }, (_, i) => i + 1), 'every job ran exactly once')
    assert.deepEqual(c.stats, { groups: t.groups.length, items: 10, split: 0 })
  })

  it('a group never carries more items than the model\'s manifest allows in one job', async () => {
    const t = mesh()
    const c = new Coalescer(t.run, 8)
    const m = model(1, null, 3)
    const ps = Array.from({ length: 8 }, async (_, i) => await c.infer(m, item(i + 1), {}))
    for (let i = 0; i < 10; i++) await t.finish()
    await Promise.all(ps)
    assert.deepEqual(t.groups.map(g => g.length), [1, 3, 3, 1])
  })

  it('keeps groups alike: the jobs outstanding are shared evenly over the stages', async () => {
    const t = mesh()
    const c = new Coalescer(t.run, 4)
    const m = model(2)
    // a caller that keeps 4 jobs outstanding, submitting the next as soon as one is answered
    let next = 0
    const caller = async (): Promise<void> => { while (next < 24) await c.infer(m, item(++next), {}) }
    const callers = Array.from({ length: 4 }, caller)
    for (let i = 0; i < 40 && t.groups.flat().length < 24; i++) await t.finish()
    await t.finish(10)
    await Promise.all(callers)
    // after the first two, groups of two: two groups of two in the mesh, not one of three and one alone
    assert.ok(t.groups.slice(2).every(g => g.length === 2), `groups ${JSON.stringify(t.groups.map(g => g.length))}`)
  })

  it('jobs go together only with the same output mode, attempts and timeout, which their group then has', async () => {
    const t = mesh()
    const c = new Coalescer(t.run, 4)
    const m = model(1)
    const first = c.infer(m, item(1), {})
    const text = { kind: 'ctc-text' } as const
    const ps = [
      c.infer(m, item(2), { timeoutMs: 5000, maxAttempts: 2, output: text }),
      c.infer(m, item(3), { timeoutMs: 5000, maxAttempts: 2, output: text, signal: new AbortController().signal }),
      c.infer(m, item(4), { timeoutMs: 9000, maxAttempts: 2, output: text }),
      c.infer(m, item(5), { timeoutMs: 5000, maxAttempts: 2 }),
      c.infer(m, item(6), { timeoutMs: 5000, maxAttempts: 2, output: text })
    ]
    await turn()
    // each lane has room for one job in the mesh: the first of each goes at once
    assert.deepEqual(t.groups, [[1], [2], [4], [5]])
    await t.finish(4)
    await first
    assert.deepEqual(t.groups.slice(4), [[3, 6]])
    const o = t.options[4] as { timeoutMs: number, maxAttempts: number, output: unknown, signal?: AbortSignal }
    assert.deepEqual([o.timeoutMs, o.maxAttempts, o.output], [5000, 2, text])
    assert.ok(o.signal instanceof AbortSignal)
    await t.finish()
    await Promise.all(ps)
  })

  it('a group that fails runs its jobs one by one: a job never fails for another\'s input', async () => {
    const t = mesh(rows => rows.length > 1 && rows.includes(-1) ? new Error('BAD_INPUT: a row is negative') : rows.includes(-1) ? new Error('BAD_INPUT: this row is negative') : undefined)
    const c = new Coalescer(t.run, 4)
    const m = model(1)
    const first = c.infer(m, item(9), {})
    const ps = [1, -1, 2].map(async v => await c.infer(m, item(v), {}).then(valueOf, (err: Error) => err.message))
    await t.finish()
    await first
    assert.deepEqual(t.groups.slice(1), [[1, -1, 2]])
    await t.finish()
    // the group failed: each of its jobs alone
    await t.finish(3)
    assert.deepEqual(await Promise.all(ps), [[2, 2], 'BAD_INPUT: this row is negative', [4, 4]])
    assert.equal(c.stats.split, 1)
  })

  it('a group the mesh fails (nothing serving, timeouts) fails every job of it at once, not again one by one', async () => {
    const notServing = Object.assign(new Error('no vehicle serves stage 1'), { code: 'NOT_SERVING' })
    const t = mesh(rows => rows.length > 1 ? notServing : undefined)
    const c = new Coalescer(t.run, 4)
    const m = model(1)
    const first = c.infer(m, item(1), {})
    const ps = [2, 3].map(async v => await c.infer(m, item(v), {}).then(() => 'ok', (err: Error) => err.message))
    await t.finish()
    await first
    await t.finish()
    assert.deepEqual(await Promise.all(ps), ['no vehicle serves stage 1', 'no vehicle serves stage 1'])
    assert.deepEqual(t.groups.slice(1), [[2, 3]], 'not run again alone')
  })

  it('a result whose rows are not the group\'s is not split: its jobs run alone', async () => {
    // a last hop that answers a group with one row
    const t = mesh(undefined, (out, rows) => rows.length > 1 ? [float32Tensor('y', [1, 2], asFloat32(out[0]).slice(0, 2))] : out)
    const c = new Coalescer(t.run, 4)
    const m = model(1)
    const first = c.infer(m, item(1), {})
    const ps = [5, 6].map(async v => await c.infer(m, item(v), {}))
    await t.finish()
    await first
    await t.finish()
    await t.finish(2)
    assert.deepEqual((await Promise.all(ps)).map(valueOf), [[10, 10], [12, 12]])
    assert.deepEqual(t.groups.slice(1), [[5, 6], [5], [6]])
  })

  it('a job whose signal aborts leaves: waiting, it is never sent; in the mesh, the others still get theirs', async () => {
    const t = mesh()
    const c = new Coalescer(t.run, 4)
    const m = model(1)
    const first = c.infer(m, item(1), {})
    const waiting = new AbortController()
    const flying = new AbortController()
    const gone = c.infer(m, item(2), { signal: waiting.signal })
    const a = c.infer(m, item(3), { signal: flying.signal })
    const b = c.infer(m, item(4), {})
    waiting.abort(new Error('no longer wanted'))
    await assert.rejects(gone, /no longer wanted/)
    await t.finish()
    await first
    assert.deepEqual(t.groups.slice(1), [[3, 4]], 'the aborted job was not sent')
    flying.abort(new Error('caller gave up'))
    await assert.rejects(a, /caller gave up/)
    await t.finish()
    assert.deepEqual(valueOf(await b), [8, 8])
    await assert.rejects(c.infer(m, item(5), { signal: AbortSignal.abort(new Error('already')) }), /already/)
  })

  it('jobs that cannot go together run on their own', async () => {
    const t = mesh()
    const off = new Coalescer(t.run, 1)
    const c = new Coalescer(t.run, 4)
    const alone = [
      off.infer(model(1), item(1), {}),
      c.infer(model(1, 1), item(2), {}), // the model's batch dimension is fixed
      c.infer(model(1), item(3, 2), {}), // two items in one job
      c.infer(model(1), item(4), { coalesce: false } as object), // the job says so
      c.infer(model(1), item(5), { prefer: new Set(['a-peer']) } as object) // options of its own
    ]
    await turn()
    assert.deepEqual(t.groups, [[1], [2], [3, 3], [4], [5]], 'each sent at once, alone')
    await t.finish(5)
    await Promise.all(alone)
    assert.throws(() => new Coalescer(t.run, 0), /at least 1/)
  })

  it('a text row comes back as a job alone would have it, without the group\'s padding', async () => {
    const texts = ['ab', 'abcd']
    const t = mesh(undefined, (_out, rows) => {
      const L = Math.max(...rows.map(r => texts[r].length))
      const data = new Uint8Array(rows.length * L)
      rows.forEach((r, i) => { data.set(Buffer.from(texts[r]), i * L) })
      return [{ name: 'text', dtype: 'uint8', dims: [rows.length, L], data }]
    })
    const c = new Coalescer(t.run, 4)
    const m = model(1)
    const first = c.infer(m, item(1), {})
    const ps = [0, 1].map(async v => await c.infer(m, item(v), {}))
    await t.finish()
    await first
    await t.finish()
    const [a, b] = await Promise.all(ps)
    assert.deepEqual(a.outputs[0].dims, [1, 2])
    assert.equal(Buffer.from(a.outputs[0].data).toString(), 'ab')
    assert.deepEqual(b.outputs[0].dims, [1, 4])
  })
})
