/**
 * Where a swarm's CPU goes per job (the `cpuMsPerJob` of its summary): the
 * vehicles' stage sessions (each runs on a worker thread of its own, so a
 * vehicle process's threads other than its main one are onnxruntime's,
 * plus Node's small helpers: compilers, garbage collection), the vehicles'
 * main threads (networking, receipts, output modes), the client (this
 * process) and the bootstrap peer. On a machine the mesh fills, the ratio
 * of mesh to whole model can be no better than its cores times the whole
 * model's CPU per job over the mesh's: the figure shows what the ratio is
 * made of without the noise of a shared machine's wall clock.
 */
import { cpuSeconds } from './traffic.ts'

export interface CpuPerJob {
  /** Everything below, summed. */
  total: number
  /** The vehicles' other threads: their stage sessions (onnxruntime) and Node's helper threads. */
  vehicleThreads: number
  /** The vehicles' main threads. */
  vehicleMain: number
  /** This process: the client and the swarm's own bookkeeping. */
  client: number
  bootstrap: number
}

/** The breakdown in words: "52.1 ms (stage threads 35.2, vehicles' main threads 12.1, client 4.5, bootstrap 0.3)". */
export function describeCpu (c: CpuPerJob): string {
  return `${c.total} ms (stage threads ${c.vehicleThreads}, vehicles' main threads ${c.vehicleMain}, client ${c.client}, bootstrap ${c.bootstrap})`
}

interface Snapshot { threads: number, main: number, client: number, bootstrap: number }

/** CPU ms per job between `start` and `perJob`; undefined where /proc is missing. */
export class CpuMeter {
  private readonly vehicles: number[]
  private readonly boot: number | undefined
  private readonly start: Snapshot

  private constructor (vehicles: number[], boot: number | undefined, start: Snapshot) {
    this.vehicles = vehicles
    this.boot = boot
    this.start = start
  }

  static async start (vehiclePids: number[], bootstrapPid: number | undefined): Promise<CpuMeter | undefined> {
    const pids = [...new Set(vehiclePids)]
    const s = await snapshot(pids, bootstrapPid)
    return s !== undefined ? new CpuMeter(pids, bootstrapPid, s) : undefined
  }

  async perJob (jobs: number): Promise<CpuPerJob | undefined> {
    const end = await snapshot(this.vehicles, this.boot)
    if (end === undefined || jobs <= 0) return undefined
    const per = (k: keyof Snapshot): number => Math.round((end[k] - this.start[k]) * 1000 / jobs * 10) / 10
    const f = { vehicleThreads: per('threads'), vehicleMain: per('main'), client: per('client'), bootstrap: per('bootstrap') }
    return { total: Math.round((f.vehicleThreads + f.vehicleMain + f.client + f.bootstrap) * 10) / 10, ...f }
  }
}

/** CPU seconds: the vehicles' main threads and their other threads, this process, the bootstrap; undefined if a vehicle's is unreadable. */
async function snapshot (vehicles: number[], boot: number | undefined): Promise<Snapshot | undefined> {
  const own = process.cpuUsage()
  let threads = 0
  let main = 0
  for (const pid of vehicles) {
    const [all, first] = await Promise.all([cpuSeconds(pid), cpuSeconds(pid, pid)])
    if (all === undefined || first === undefined) return undefined
    main += first
    threads += all - first
  }
  const bootstrap = boot !== undefined ? (await cpuSeconds(boot)) ?? 0 : 0
  return { threads, main, client: (own.user + own.system) / 1e6, bootstrap }
}
