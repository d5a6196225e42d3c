import { createWriteStream } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { FleetClient } from '../../client/client.ts'
import type { ResolvedModel } from '../../client/resolver.ts'
import type { BatchProgress } from '../../client/batch.ts'
import { inputsFromFile, textOf } from '../../client/inputs.ts'
import { tensorToOip } from '../../../protocols/oip.ts'
import { BOOTSTRAP_OPTION, ACCESS_OPTIONS, CLIENT_CHECK_OPTIONS, UsageError, intOption, requireOption, shortPeer, withFleetClient } from '../command.ts'
import type { Command } from '../command.ts'
import { tensorSummary } from '../format.ts'

export const submitCommand: Command = {
  name: 'submit',
  summary: 'Run one job on the mesh from this peer and print the result.',
  usage: '--model <name|manifest-cid|manifest.json> (--input <file> | --batch <dir|glob> [--out results.jsonl]) --bootstrap <multiaddr> [--json]',
  options: {
    model: { type: 'string', arg: '<model>', description: 'model name (as vehicles announce it), manifest CID or manifest.json' },
    input: { type: 'string', arg: '<file>', description: 'a .png for built-in image models, or Open Inference Protocol JSON tensors ({"inputs":[{"name","shape","datatype","data"}]})' },
    batch: { type: 'string', arg: '<dir|glob>', description: 'run every .png/.json in a directory (or matching a glob like imgs/*.png) as one batch job' },
    out: { type: 'string', arg: '<file>', description: 'with --batch: write one JSON line per item as it completes (default: stdout)' },
    bootstrap: BOOTSTRAP_OPTION,
    ...ACCESS_OPTIONS,
    ...CLIENT_CHECK_OPTIONS,
    timeout: { type: 'string', arg: '<ms>', description: 'give up after this long', default: '60000' },
    json: { type: 'boolean', description: 'print the result as one JSON object' }
  },
  async run (o) {
    const model = requireOption(o.model, 'model')
    if ((o.input === undefined) === (o.batch === undefined)) throw new UsageError('give --input <file> for one job or --batch <dir|glob> for many')
    const timeoutMs = intOption(o.timeout, 'timeout', 100, 3_600_000)
    const files = typeof o.batch === 'string' ? await batchFiles(o.batch) : []
    return await withFleetClient(o, async client => {
      const resolved = await client.resolve(model, { signal: AbortSignal.timeout(Math.min(timeoutMs, 15_000)) })
      if (typeof o.batch === 'string') return await runBatch(client, resolved, files, typeof o.out === 'string' ? o.out : undefined, timeoutMs)
      const input = requireOption(o.input, 'input')
      const inputs = await inputsFromFile(resolved.manifest, input)
      const r = await client.infer(resolved, inputs, { timeoutMs })
      const text = textOf(resolved.manifest, r.outputs)
      if (o.json === true) {
        console.log(JSON.stringify({
          model: resolved.manifest.name,
          manifest: resolved.cid,
          ...(text !== undefined ? { text: text.text, confidence: text.confidence } : { outputs: r.outputs.map(tensorToOip) }),
          route: r.route,
          hops: r.hops,
          ms: Math.round(r.ms * 10) / 10,
          attempts: r.attempts
        }))
      } else {
        if (text !== undefined) console.log(`text: ${JSON.stringify(text.text)} (confidence ${text.confidence.toFixed(3)})`)
        else for (const t of r.outputs) console.log(tensorSummary(t))
        console.log(`route: ${r.route.map(shortPeer).join(' -> ')}  ${r.ms.toFixed(1)} ms  (stage ms: ${r.hops.map(h => h.ms.toFixed(1)).join(' / ')})${r.attempts > 1 ? `  after ${r.attempts} attempts` : ''}`)
      }
      return 0
    })
  }
}

/**
 * Files of a batch: a directory's .png files (its .json tensor files when it
 * has no images), or the .png/.json files matching a `*` / `?` glob.
 */
export async function batchFiles (spec: string): Promise<string[]> {
  const isGlob = /[*?]/.test(basename(spec))
  const dir = isGlob ? dirname(spec) : spec
  const re = isGlob ? new RegExp('^' + basename(spec).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$') : /\.(png|json)$/i
  let names: string[]
  try { names = await readdir(dir) } catch (err) {
    throw new UsageError(`--batch ${spec}: ${(err as Error).message}`)
  }
  let matched = names.filter(n => re.test(n) && /\.(png|json)$/i.test(n)).sort()
  // a directory of images may hold other JSON (labels): its images are the batch
  if (!isGlob && matched.some(n => /\.png$/i.test(n))) matched = matched.filter(n => /\.png$/i.test(n))
  const files = matched.map(n => join(dir, n))
  if (files.length === 0) throw new UsageError(`--batch ${spec}: no .png or .json files`)
  return files
}

function bar (p: BatchProgress, width = 30): string {
  const filled = Math.round(width * (p.done + p.failed) / p.total)
  const eta = Number.isFinite(p.etaS) ? `${Math.ceil(p.etaS)} s` : '?'
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${p.done}/${p.total} done, ${p.failed} failed, ${p.itemsPerS.toFixed(1)} items/s, ETA ${eta}`
}

async function runBatch (client: FleetClient, model: ResolvedModel, files: string[], out: string | undefined, timeoutMs: number): Promise<number> {
  const items = []
  for (const f of files) items.push(await inputsFromFile(model.manifest, f))
  const ac = new AbortController()
  const onSignal = (): void => { ac.abort(new Error('interrupted')) }
  process.once('SIGINT', onSignal)
  const sink = out !== undefined ? createWriteStream(out) : process.stdout
  const tty = process.stderr.isTTY
  let lastLine = 0
  const runner = client.batchRunner(model, { signal: ac.signal, itemTimeoutMs: timeoutMs })
  runner.addEventListener('progress', (e) => {
    const p: BatchProgress = e.detail
    if (tty) process.stderr.write(`\r${bar(p)}`)
    else if (p.done + p.failed === p.total || Date.now() - lastLine > 2000) { lastLine = Date.now(); process.stderr.write(bar(p) + '\n') }
  })
  try {
    const r = await runner.run(items, (e) => {
      const base = { index: e.index, file: files[e.index] }
      const line = e.result !== undefined
        ? { ...base, ...(textOf(model.manifest, e.result.outputs) ?? { outputs: e.result.outputs.map(tensorToOip) }), route: e.result.route, ms: Math.round(e.result.ms * 10) / 10, attempts: e.result.attempts }
        : { ...base, error: e.error?.message }
      sink.write(JSON.stringify(line) + '\n')
    })
    if (tty) process.stderr.write('\n')
    process.stderr.write(`batch ${r.job}: ${r.done} done, ${r.failed} failed in ${(r.ms / 1000).toFixed(1)} s (${r.itemsPerS.toFixed(1)} items/s), ${r.leases} leases${out !== undefined ? `; results in ${out}` : ''}\n`)
    return r.failed > 0 ? 1 : 0
  } catch (err) {
    if (tty) process.stderr.write('\n')
    if (ac.signal.aborted) { process.stderr.write(`interrupted; finished items are in ${out ?? 'the output above'}\n`); return 130 }
    throw err
  } finally {
    process.removeListener('SIGINT', onSignal)
    if (sink !== process.stdout) await new Promise(resolve => { (sink as ReturnType<typeof createWriteStream>).end(resolve) })
  }
}
