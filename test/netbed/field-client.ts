/**
 * The public client of a field run (started by field.ts inside the client's
 * namespace): joins the fleet through the bootstrap peer, runs `--jobs` OCR
 * jobs one after another, checks each against the whole model run here
 * (1e-4) and the expected text, and prints one JSON line per job and a
 * summary. What kind of link it holds to each vehicle (direct or relayed)
 * is read from its own connections.
 *
 * With `--groups '{"d1":[peer,...],"d2":[...]}'` it then runs the same jobs
 * once more pinned to each group (a depot: the best routes by the bed's true
 * link figures) and reports the best group's p50, so the router's choice can
 * be compared with the best route in the same run.
 *
 *   node test/netbed/field-client.ts --bootstrap <ma> --credentials me.json --model <cid> --jobs 10 [--groups json] [--output text]
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { FleetClient } from '../../node/client/client.ts'
import { loadCredentials } from '../../node/membership/credentials.ts'
import { BUILTIN_MODELS } from '../../node/models/catalog.ts'
import { parseOutputMode } from '../../node/models/output-modes.ts'
import { Tally, addReferences } from '../../node/swarm/jobs.ts'
import type { Job } from '../../node/swarm/jobs.ts'

const { values: o } = parseArgs({ options: { bootstrap: { type: 'string' }, credentials: { type: 'string' }, model: { type: 'string' }, jobs: { type: 'string', default: '10' }, groups: { type: 'string' }, output: { type: 'string', default: 'raw' }, compress: { type: 'string', default: 'auto' } } })
const output = parseOutputMode(String(o.output))
const src = BUILTIN_MODELS['pp-ocrv4-rec']
const samples = new URL('../../samples/text-lines/', import.meta.url)
const labels = JSON.parse(await readFile(new URL('labels.json', samples), 'utf8')) as { items: Array<{ image: string, text: string }> }
const jobs: Job[] = Array.from({ length: Number(o.jobs) }, (_, i) => {
  const item = labels.items[i % labels.items.length]
  return { label: item.image, input: src.fromImage!(new URL(item.image, samples).pathname), expected: item.text }
})
await addReferences(await readFile(src.path), jobs)

const client = await FleetClient.connect({ bootstrap: [String(o.bootstrap)], credentials: await loadCredentials(String(o.credentials)), ...(output !== undefined ? { output } : {}), compress: o.compress as 'auto' | 'always' | 'off' })
const say = (x: object): void => { console.log(JSON.stringify(x)) }
try {
  const model = await client.resolve(String(o.model), { signal: AbortSignal.timeout(60_000) })
  const tally = new Tally(model.manifest, output)
  let failed = 0
  for (const [i, job] of jobs.entries()) {
    try {
      const r = await client.infer(model, [job.input], { signal: AbortSignal.timeout(60_000) })
      const check = tally.add(job, r)
      // how this client reaches each hop: a direct connection, or only through a relay
      const links = r.route.map(peer => {
        const conns = client.node.host.getConnections().filter(c => c.remotePeer.toString() === peer)
        return conns.length === 0 ? 'none' : conns.some(c => !c.remoteAddr.toString().includes('/p2p-circuit')) ? 'direct' : 'relayed'
      })
      say({ type: 'job', i, ms: r.ms, attempts: r.attempts, route: r.route, links, ...check })
    } catch (err) {
      failed++
      say({ type: 'job', i, error: (err as Error).message })
    }
  }
  // the same jobs pinned to each group: the best route the true link figures allow
  const pinned: Record<string, number> = {}
  for (const [group, peers] of Object.entries(JSON.parse(o.groups ?? '{}') as Record<string, string[]>)) {
    const t = new Tally(model.manifest, output)
    for (const job of jobs) {
      try { t.add(job, await client.infer(model, [job.input], { signal: AbortSignal.timeout(60_000), prefer: new Set(peers) })) } catch { failed++ }
    }
    pinned[group] = t.p(50)
    if (t.wrong > 0) tally.wrong += t.wrong
  }
  const best = Math.min(...Object.values(pinned))
  say({ type: 'summary', jobs: jobs.length, completed: tally.completed, failed, wrong: tally.wrong, correct: tally.correct, p50Ms: tally.p(50), p95Ms: tally.p(95), ...(Number.isFinite(best) ? { pinnedP50Ms: pinned, bestP50Ms: best, p50VsBest: Math.round(tally.p(50) / best * 100) / 100 } : {}) })
} finally {
  await client.close()
}
