/**
 * Splits on-CPU samples of some threads by what they were doing: how
 * docs/performance.md's table of where the mesh's own CPU a job goes was made.
 * Unlike `node --cpu-prof` (wall time: a thread preempted inside a write is
 * charged for the wait), `perf` samples only what runs. Each sample counts at
 * its leaf for SHA-256, AES-GCM, Ed25519 and the kernel, and otherwise at the
 * nearest JavaScript frame on its stack (a builtin or a library's native code
 * counts for the JavaScript that called it).
 *
 *   NODE_OPTIONS=--perf-basic-prof fleetmesh swarm --nodes 2 --stages 2 --jobs 2000 --output text &
 *   perf record -a -g -F 1999 -e cpu-clock -o perf.data -- sleep 8     # once the jobs run
 *   perf script -i perf.data -F tid,ip,sym,dso > perf.txt
 *   node scripts/perf-split.ts perf.txt --tids <main thread ids> --jobs <jobs done in those 8 s> [--hz 1999]
 *
 * A process's main thread id is its pid; V8 writes /tmp/perf-<pid>.map for the
 * JavaScript names (remove them, and any isolate-*-v8.log, after).
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

interface Frame { sym: string, dso: string }

const { values, positionals } = parseArgs({ allowPositionals: true, options: { tids: { type: 'string' }, jobs: { type: 'string' }, hz: { type: 'string', default: '1999' } } })
if (positionals.length !== 1 || values.tids === undefined || values.jobs === undefined) {
  console.error('usage: node scripts/perf-split.ts <perf script output> --tids 123,456 --jobs <jobs> [--hz 1999]')
  process.exit(2)
}
const tids = new Set(values.tids.split(','))

/** Each sample of the wanted threads: its frames, leaf first. */
const samples: Frame[][] = []
let current: Frame[] | undefined
for (const line of readFileSync(positionals[0], 'utf8').split('\n')) {
  const head = line.match(/^\s*(\d+)\s*$/)
  if (head !== null) { current = tids.has(head[1]) ? [] : undefined; if (current !== undefined) samples.push(current); continue }
  const f = line.match(/^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/)
  if (f !== null && current !== undefined) current.push({ sym: f[1], dso: f[2].replace(/.*\//, '').replace(/^perf-.*/, 'JIT') })
}

const GROUPS: Array<[string, RegExp]> = [
  ["Node's crypto (hash, sign, verify) JavaScript", /node:internal\/crypto/],
  ["Node's net streams", /stream_base_commons|node:net|internal\/streams\//],
  ["Node's events, abort signals, timers, workers", /event_target|abort_controller|timers|task_queues|domexception|webidl|worker|node:events/],
  ['yamux', /yamux/],
  ["libp2p's streams and it-*", /@libp2p|libp2p\/|\/it-|uint8arraylist|p-queue|main-event|race-signal|p-event/],
  ['protobuf', /bufbuild|protons/],
  ['multiformats', /multiformats|uint8arrays/]
]

function category (frames: Frame[]): string {
  const leaf = frames[0] ?? { sym: '?', dso: '?' }
  if (/sha256/.test(leaf.sym)) return 'SHA-256'
  if (/aes_gcm|gcm_|ghash/i.test(leaf.sym)) return 'AES-GCM'
  if (/^(fe_|ge_|x25519|ed25519|sc_)/.test(leaf.sym)) return 'Ed25519'
  if (leaf.dso.includes('kernel')) return 'the kernel'
  const js = frames.find(f => f.sym.startsWith('JS:'))
  if (js === undefined) return /GC|Scaveng|Mark|Sweep|Heap|Collector/.test(frames.map(f => f.sym).join(' ')) ? 'garbage collection' : 'native, no JavaScript on the stack'
  const named = GROUPS.find(([, re]) => re.test(js.sym))
  if (named !== undefined) return named[0]
  const own = js.sym.match(/\/(node|protocols)\/[^:]+\.ts/)
  return own !== null ? `fleetmesh: ${own[0].slice(1)}` : 'other JavaScript'
}

const counts = new Map<string, number>()
for (const s of samples) { const k = category(s); counts.set(k, (counts.get(k) ?? 0) + 1) }
const msPerJob = (n: number): string => (n / Number(values.hz) * 1000 / Number(values.jobs)).toFixed(3)
console.log(`${samples.length} samples of threads ${values.tids}: ${msPerJob(samples.length)} ms of CPU a job`)
for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`${msPerJob(n).padStart(8)} ms  ${(100 * n / samples.length).toFixed(1).padStart(5)}%  ${k}`)
