/**
 * The fleet in the field, long run (issue 11): the net bed of test/netbed/
 * (bootstrap/relay and client public; two depots of two vehicles behind a
 * cone and a symmetric NAT) with WAN links of 25 ms each way (50 ms round
 * trip to the public segment, 100 ms depot to depot), 20 Mbit/s and 1% loss.
 * Prints one JSON line: jobs completed and wrong, p50/p95 latency, the share
 * of routes inside one depot, how the client reaches vehicles (relayed or
 * direct), how many vehicle pairs across the two NATs hold a direct (punched)
 * connection at the end, and the p50 of the same jobs
 * pinned to each depot (the best routes by the bed's true link figures) with
 * the ratio of the router's p50 to the best. Needs root and vde2.
 *
 *   node bench/field.ts [--jobs 50] [--delay 25] [--loss 1] [--nat2 symmetric|cone] [--output raw|text] [--hand-off lossless|fp16] [--compress auto|always|off]
 */
import { parseArgs } from 'node:util'
import { runField } from '../test/netbed/field.ts'

const { values: o } = parseArgs({ options: { jobs: { type: 'string', default: '50' }, delay: { type: 'string', default: '25' }, loss: { type: 'string', default: '1' }, nat2: { type: 'string', default: 'symmetric' }, output: { type: 'string', default: 'raw' }, 'hand-off': { type: 'string', default: 'lossless' }, compress: { type: 'string', default: 'auto' } } })
const wan = { delayMs: Number(o.delay), lossPct: Number(o.loss), bytesPerS: 2_500_000 }
const r = await runField({ jobs: Number(o.jobs), wan, nat2: o.nat2 === 'cone' ? 'cone' : 'symmetric', compareBest: true, output: o.output, handOff: o['hand-off'] === 'fp16' ? 'fp16' : 'lossless', compress: o.compress === 'off' ? 'off' : o.compress === 'always' ? 'always' : 'auto', log: (l) => { process.stderr.write(`${l}\n`) } })
const links = r.jobs.flatMap(j => j.links ?? [])
console.log(JSON.stringify({
  wan,
  nat2: o.nat2,
  output: o.output,
  handOff: o['hand-off'],
  compress: o.compress,
  ...r.summary,
  type: undefined,
  attemptsMean: Math.round(r.jobs.reduce((s, j) => s + ((j as { attempts?: number }).attempts ?? 0), 0) / Math.max(1, r.jobs.length) * 100) / 100,
  inDepotShare: Math.round(r.inDepotShare * 1000) / 1000,
  clientLinksRelayed: links.filter(l => l === 'relayed').length / Math.max(1, links.length),
  crossDepotLinks: r.crossDepotLinks,
  startupMs: Math.round(r.startupMs),
  errors: r.jobs.filter(j => j.error !== undefined).map(j => j.error).slice(0, 5)
}))
