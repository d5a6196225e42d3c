/**
 * A network test bed made of Linux network namespaces (run as root):
 *
 *   public segment 45.0.0.0/24 (vde_switch): bootstrap/relay, client, each depot router's WAN side
 *   depot d LAN 10.<d>.0.0/24 (a bridge in the router's namespace): its vehicles
 *   router d: NAT for its LAN (iptables MASQUERADE; `--random-fully` for a symmetric NAT)
 *
 * Each router's WAN link to the public segment goes through a vde2 wirefilter (delay each way, loss,
 * bandwidth): this kernel has no netem. The public segment needs addresses libp2p counts as public
 * (it ignores private and documentation ranges for observed addresses, AutoNAT and hole punching), so
 * it uses 45.0.0.0/24; those addresses exist only inside the namespaces the bed makes, which have no
 * interface or route to the host's own network, so nothing reaches anything outside the bed.
 * `destroy` ends every process the bed started (by pid) and deletes its namespaces; an exit hook and
 * SIGINT/SIGTERM/SIGHUP handlers do the same if the process ends first.
 */
import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess, SpawnOptions } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface LinkShape {
  /** One-way delay, ms (the round trip across one WAN link is twice this). */
  delayMs: number
  /** Loss, percent. */
  lossPct: number
  /** Bandwidth, bytes per second. */
  bytesPerS: number
}

export interface DepotInit {
  vehicles: number
  /** `cone`: MASQUERADE (keeps ports where it can); `symmetric`: MASQUERADE --random-fully. */
  nat: 'cone' | 'symmetric'
}

export interface BedInit {
  /** Public hosts besides the routers (e.g. boot, client). */
  public: string[]
  depots: DepotInit[]
  wan: LinkShape
}

export interface Host {
  name: string
  ns: string
  ip: string
  /** The depot it sits in, or undefined on the public segment. */
  depot?: number
}

/** The public segment's /24 (see the module comment). */
export const PUBLIC = '45.0.0'

const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
const inNs = (ns: string, cmd: string, args: string[]): string => run('ip', ['netns', 'exec', ns, cmd, ...args])

/** Beds alive in this process, destroyed by the exit hook if a test dies before it can. */
const alive = new Set<NetBed>()
process.once('exit', () => { for (const b of alive) b.destroySync() })
/** Killed (Ctrl-C, SIGTERM) while a bed is alive: remove it, then die of the signal as usual. */
function onSignal (signal: NodeJS.Signals): void {
  for (const b of alive) b.destroySync()
  process.kill(process.pid, signal)
}
function watchSignals (on: boolean): void {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    if (on) process.once(sig, onSignal)
    else process.removeListener(sig, onSignal)
  }
}

export class NetBed {
  readonly hosts = new Map<string, Host>()
  readonly dir: string
  private readonly prefix: string
  private readonly namespaces: string[] = []
  private readonly pidfiles: string[] = []
  private readonly children = new Set<ChildProcess>()

  private constructor (prefix: string) {
    this.prefix = prefix
    this.dir = mkdtempSync(join(tmpdir(), 'fm-netbed-'))
  }

  /** Builds the bed; on failure it is torn down before the error propagates. */
  static create (init: BedInit): NetBed {
    const bed = new NetBed(`fm${process.pid.toString(36)}${Math.random().toString(36).slice(2, 5)}`)
    if (alive.size === 0) watchSignals(true)
    alive.add(bed)
    try { bed.build(init) } catch (err) { bed.destroySync(); throw err }
    return bed
  }

  host (name: string): Host {
    const h = this.hosts.get(name)
    if (h === undefined) throw new Error(`no host ${name} in the bed`)
    return h
  }

  /** Vehicles of depot `d`, by name. */
  depot (d: number): Host[] { return [...this.hosts.values()].filter(h => h.depot === d) }

  private ns (name: string): string {
    const ns = `${this.prefix}-${name}`
    run('ip', ['netns', 'add', ns])
    this.namespaces.push(ns)
    inNs(ns, 'ip', ['link', 'set', 'lo', 'up'])
    return ns
  }

  /** A vde daemon (switch, tap plug, wirefilter) with a pidfile, so it can be ended by its pid. */
  private daemon (ns: string | undefined, cmd: string, args: string[]): void {
    const pidfile = join(this.dir, `${this.pidfiles.length}.pid`)
    const full = [cmd, ...args, '--daemon', '--pidfile', pidfile]
    if (ns === undefined) run(full[0], full.slice(1))
    else inNs(ns, full[0], full.slice(1))
    this.pidfiles.push(pidfile)
  }

  private build (init: BedInit): void {
    const pub = join(this.dir, 'pub.sw')
    this.daemon(undefined, 'vde_switch', ['-s', pub])
    let n = 1
    const onPublic = (name: string, sw: string, ip: string): string => {
      const ns = this.ns(name)
      inNs(ns, 'ip', ['tuntap', 'add', 'dev', 'wan0', 'mode', 'tap'])
      this.daemon(ns, 'vde_plug2tap', ['-s', sw, 'wan0'])
      inNs(ns, 'ip', ['addr', 'add', `${ip}/24`, 'dev', 'wan0'])
      inNs(ns, 'ip', ['link', 'set', 'wan0', 'up'])
      return ns
    }
    for (const name of init.public) {
      const ip = `${PUBLIC}.${n++}`
      this.hosts.set(name, { name, ns: onPublic(name, pub, ip), ip })
    }
    init.depots.forEach((d, i) => {
      const depot = i + 1
      // the router's WAN side is on a switch of its own, joined to the public one through a wirefilter
      const wanSw = join(this.dir, `wan${depot}.sw`)
      this.daemon(undefined, 'vde_switch', ['-s', wanSw])
      this.daemon(undefined, 'wirefilter', ['-v', `${pub}:${wanSw}`, '-d', String(init.wan.delayMs), '-l', String(init.wan.lossPct), '-b', String(init.wan.bytesPerS)])
      const wanIp = `${PUBLIC}.${100 + depot}`
      const router = onPublic(`r${depot}`, wanSw, wanIp)
      this.hosts.set(`r${depot}`, { name: `r${depot}`, ns: router, ip: wanIp })
      inNs(router, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'])
      inNs(router, 'ip', ['link', 'add', 'lan0', 'type', 'bridge'])
      inNs(router, 'ip', ['addr', 'add', `10.${depot}.0.1/24`, 'dev', 'lan0'])
      inNs(router, 'ip', ['link', 'set', 'lan0', 'up'])
      inNs(router, 'iptables', ['-t', 'nat', '-A', 'POSTROUTING', '-s', `10.${depot}.0.0/24`, '-o', 'wan0', '-j', 'MASQUERADE', ...(d.nat === 'symmetric' ? ['--random-fully'] : [])])
      for (let v = 0; v < d.vehicles; v++) {
        const name = `d${depot}v${v + 1}`
        const ns = this.ns(name)
        const a = `${this.prefix.slice(-5)}${depot}${v}a`; const b = `${this.prefix.slice(-5)}${depot}${v}b`
        run('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b])
        run('ip', ['link', 'set', a, 'netns', router])
        run('ip', ['link', 'set', b, 'netns', ns])
        inNs(router, 'ip', ['link', 'set', a, 'master', 'lan0'])
        inNs(router, 'ip', ['link', 'set', a, 'up'])
        inNs(ns, 'ip', ['link', 'set', b, 'name', 'eth0'])
        const ip = `10.${depot}.0.${10 + v}`
        inNs(ns, 'ip', ['addr', 'add', `${ip}/24`, 'dev', 'eth0'])
        inNs(ns, 'ip', ['link', 'set', 'eth0', 'up'])
        inNs(ns, 'ip', ['route', 'add', 'default', 'via', `10.${depot}.0.1`])
        this.hosts.set(name, { name, ns, ip, depot })
      }
    })
  }

  /** Runs a command in a host's namespace and returns its output. */
  exec (host: string, cmd: string, args: string[]): string { return inNs(this.host(host).ns, cmd, args) }

  /** Starts a long-running process in a host's namespace; `destroy` ends it if it is still running. */
  spawn (host: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.host(host).ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    this.children.add(child)
    child.once('exit', () => { this.children.delete(child) })
    return child
  }

  /** Ends every process the bed started and deletes its namespaces. */
  async destroy (): Promise<void> {
    const exits = [...this.children].map(async c => await new Promise<void>(resolve => { if (c.exitCode !== null || c.signalCode !== null) resolve(); else c.once('exit', () => { resolve() }) }))
    for (const c of this.children) c.kill('SIGTERM')
    await Promise.race([Promise.all(exits), new Promise(resolve => setTimeout(resolve, 5000))])
    this.destroySync()
  }

  /** The synchronous part of `destroy` (also the exit hook's). */
  destroySync (): void {
    for (const c of this.children) c.kill('SIGKILL')
    for (const f of this.pidfiles) {
      try {
        const pid = Number(readFileSync(f, 'utf8').trim())
        if (pid > 0) process.kill(pid, 'SIGTERM')
      } catch { /* already gone */ }
    }
    for (const ns of this.namespaces.reverse()) {
      try { run('ip', ['netns', 'del', ns]) } catch { /* already gone */ }
    }
    this.namespaces.length = 0
    this.pidfiles.length = 0
    rmSync(this.dir, { recursive: true, force: true })
    alive.delete(this)
    if (alive.size === 0) watchSignals(false)
  }
}
