/**
 * Control traffic of a local swarm, measured at the connection level: the
 * kernel's own byte counts of every TCP socket (`ss -tinp`: bytes_sent and
 * bytes_received of each socket, with the process that holds it), summed
 * per process over a window in which no jobs run. What libp2p, gossipsub,
 * the DHT, pings and fleetmesh's heartbeats cost an idle car, headers and
 * encryption included.
 */
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface Bytes { sent: number, received: number, sockets: number }

/** Parses `ss -tinpH` output: bytes per process id. */
export function parseSs (text: string): Map<number, Bytes> {
  const out = new Map<number, Bytes>()
  let pid: number | undefined
  for (const line of text.split('\n')) {
    const owner = /users:\(\("[^"]*",pid=(\d+)/.exec(line)
    if (owner !== null) { pid = Number(owner[1]); continue }
    if (pid === undefined || !line.includes('bytes_')) continue
    const sent = Number(/bytes_sent:(\d+)/.exec(line)?.[1] ?? 0)
    const received = Number(/bytes_received:(\d+)/.exec(line)?.[1] ?? 0)
    const b = out.get(pid) ?? { sent: 0, received: 0, sockets: 0 }
    b.sent += sent; b.received += received; b.sockets++
    out.set(pid, b)
    pid = undefined
  }
  return out
}

/** Bytes per process of every TCP socket now (an empty map where `ss` is missing). */
export async function socketBytes (): Promise<Map<number, Bytes>> {
  try {
    const { stdout } = await run('ss', ['-tinpH'], { maxBuffer: 64 * 1024 * 1024 })
    return parseSs(stdout)
  } catch {
    return new Map()
  }
}

/** CPU seconds a process (or one of its threads) has used, user and system, from /proc; undefined where that is missing. */
export async function cpuSeconds (pid: number, thread?: number): Promise<number | undefined> {
  try {
    // fields after the command's closing parenthesis: utime and stime are the 12th and 13th
    const fields = (await readFile(thread !== undefined ? `/proc/${pid}/task/${thread}/stat` : `/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch { return undefined }
}

/** Resident memory of a process, bytes (undefined where /proc is missing). */
export async function rssBytes (pid: number): Promise<number | undefined> {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kb !== undefined ? Number(kb) * 1024 : undefined
  } catch { return undefined }
}

/** Linux's USER_HZ: the unit of /proc/<pid>/stat's times (100 on every common build). */
const CLOCK_TICKS = 100

export interface ControlTraffic {
  /** Mean bytes per second one vehicle process received and sent. */
  perVehicle: { in: number, out: number }
  /** Mean share of one core an idle vehicle used (its process's CPU time over the window, shared by its vehicles), percent. */
  cpuPctPerVehicle?: number
  /** Mean resident memory of a vehicle process, MB, and vehicles per process. */
  rssMbPerProcess?: number
  vehiclesPerProcess: number
  /** Mean TCP connections a vehicle holds (its process's sockets, shared by its vehicles). */
  connectionsPerVehicle: number
  /** The most any vehicle process received and sent per second. */
  maxVehicle: { in: number, out: number }
  bootstrap: { in: number, out: number }
  windowS: number
}

/**
 * Measures over `windowS` seconds: bytes/s per vehicle (`vehicles`: each
 * process with the vehicles it holds; a process's bytes are shared equally
 * by its vehicles) and of the bootstrap process. Sockets opened in the
 * window count from zero; sockets closed in it are missed (idle links live
 * long). Between vehicles of one process, traffic still crosses loopback
 * sockets, so it counts as it would between cars.
 */
export async function measureControl (pids: { vehicles: Array<{ pid: number, vehicles: number }>, bootstrap?: number }, windowS: number, signal?: AbortSignal): Promise<ControlTraffic> {
  const before = await socketBytes()
  const cpu = async (): Promise<Array<number | undefined>> => await Promise.all(pids.vehicles.map(async p => await cpuSeconds(p.pid)))
  const cpuBefore = await cpu()
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, windowS * 1000)
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason) }, { once: true })
  })
  const after = await socketBytes()
  const cpuAfter = await cpu()
  const rss = (await Promise.all(pids.vehicles.map(async p => await rssBytes(p.pid)))).filter((r): r is number => r !== undefined)
  const cpuUsed = pids.vehicles.map((p, i) => cpuAfter[i] !== undefined && cpuBefore[i] !== undefined ? (cpuAfter[i] - cpuBefore[i]) : undefined)
  const rate = (pid: number): { in: number, out: number } => {
    const a = after.get(pid) ?? { sent: 0, received: 0 }
    const b = before.get(pid) ?? { sent: 0, received: 0 }
    return { in: Math.max(0, a.received - b.received) / windowS, out: Math.max(0, a.sent - b.sent) / windowS }
  }
  const v = pids.vehicles.map(p => { const r = rate(p.pid); return { in: r.in / p.vehicles, out: r.out / p.vehicles, n: p.vehicles } })
  const total = v.reduce((s, x) => s + x.n, 0)
  const mean = (k: 'in' | 'out'): number => Math.round(v.reduce((s, x) => s + x[k] * x.n, 0) / Math.max(1, total))
  const max = (k: 'in' | 'out'): number => Math.round(Math.max(0, ...v.map(x => x[k])))
  const boot = pids.bootstrap !== undefined ? rate(pids.bootstrap) : { in: 0, out: 0 }
  const counted = cpuUsed.filter((c): c is number => c !== undefined)
  const cpuPctPerVehicle = counted.length === pids.vehicles.length ? Math.round(1000 * counted.reduce((a, b) => a + b, 0) / windowS / Math.max(1, total)) / 10 : undefined
  const sockets = pids.vehicles.reduce((n, p) => n + (after.get(p.pid)?.sockets ?? 0), 0)
  return {
    perVehicle: { in: mean('in'), out: mean('out') },
    ...(cpuPctPerVehicle !== undefined ? { cpuPctPerVehicle } : {}),
    ...(rss.length > 0 ? { rssMbPerProcess: Math.round(rss.reduce((a, b) => a + b, 0) / rss.length / 1e6) } : {}),
    vehiclesPerProcess: Math.round(10 * total / Math.max(1, pids.vehicles.length)) / 10,
    connectionsPerVehicle: Math.round(10 * sockets / Math.max(1, total)) / 10,
    maxVehicle: { in: max('in'), out: max('out') },
    bootstrap: { in: Math.round(boot.in), out: Math.round(boot.out) },
    windowS
  }
}
