/**
 * Hole punching through real NATs (issue 11), on the net bed: a bootstrap peer (the relay) on the public
 * segment and one car in each of three depots, two behind cone NATs (MASQUERADE keeps source ports) and
 * one behind a symmetric NAT (`--random-fully`). Two cars behind cone NATs that reach each other through
 * the relay end up on one direct TCP connection; a car behind the symmetric NAT stays on the relay, and
 * the attempt is counted as failed. Needs root and Debian's vde2 and iptables (.ci/run installs them).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NetBed } from './bed.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CLI = join(ROOT, 'node/cli/main.ts')
const PEER = join(ROOT, 'test/netbed/punch-peer.ts')

function missing (): string | undefined {
  if (process.getuid?.() !== 0) return 'not root (network namespaces need it)'
  for (const tool of ['vde_switch', 'wirefilter', 'vde_plug2tap', 'iptables']) {
    try { execFileSync('which', [tool], { stdio: 'ignore' }) } catch { return `${tool} is not installed (apt-get install vde2 iptables)` }
  }
  return undefined
}

type Line = Record<string, any>

describe('hole punching through NAT routers', function () {
  this.timeout(180_000)
  let bed: NetBed | undefined
  let dir: string
  const lines = new Map<string, Line[]>()
  const stdin = new Map<string, NodeJS.WritableStream>()

  const start = (host: string, args: string[]): void => {
    const child = bed!.spawn(host, process.execPath, args, { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] })
    const got: Line[] = []
    lines.set(host, got)
    stdin.set(host, child.stdin!)
    let buf = ''
    if (process.env.DEBUG !== undefined) child.stderr?.on('data', (d: Buffer) => { process.stderr.write(`${host}! ${d.toString()}`) })
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString()
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        try { got.push(JSON.parse(buf.slice(0, i))) } catch { /* not ours */ }
        buf = buf.slice(i + 1)
      }
    })
  }
  const waitFor = async (host: string, what: (l: Line) => boolean, ms: number, label: string, from = 0): Promise<Line> => {
    const until = Date.now() + ms
    for (;;) {
      const hit = lines.get(host)?.slice(from).find(what)
      if (hit !== undefined) return hit
      if (Date.now() > until) throw new Error(`${host}: no ${label} within ${ms} ms`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
  const ask = async (host: string, cmd: string, type: string): Promise<Line> => {
    const from = lines.get(host)!.length
    stdin.get(host)!.write(cmd + '\n')
    return await waitFor(host, l => l.type === type || l.type === 'error', 30_000, type, from)
  }
  const circuit = async (host: string): Promise<string> => {
    const l = await waitFor(host, l => l.type === 'listening' && (l.addrs as string[]).some(a => a.includes('/p2p-circuit/')), 60_000, 'relayed address')
    return (l.addrs as string[]).find(a => a.includes('/p2p-circuit/'))!
  }
  /** Dials `to` through the relay from `from`, then watches until a direct connection opens or `ms` pass. */
  const throughRelay = async (from: string, to: string, ms: number): Promise<Line> => {
    const peer = (await waitFor(to, l => l.type === 'listening', 60_000, 'peer id')).peer as string
    const dialed = await ask(from, `dial ${await circuit(to)}`, 'dialed')
    assert.equal(dialed.limited, true, `the first connection goes through the relay: ${JSON.stringify(dialed)}`)
    const until = Date.now() + ms
    for (;;) {
      const c = await ask(from, `conns ${peer}`, 'conns')
      if ((c.conns as Line[]).some(x => !x.limited && x.status === 'open') || Date.now() > until) return c
      await new Promise(resolve => setTimeout(resolve, 500))
    }
  }

  before(async function () {
    const why = missing()
    // skipped only on a machine without root or vde2; CI has both (.ci/run)
    if (why !== undefined) { this.skip() }
    dir = mkdtempSync(join(tmpdir(), 'fm-punch-'))
    const cli = (args: string[]): string => execFileSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir })
    cli(['fleet', 'init', '--fleet', 'punch', '--dir', 'authority'])
    cli(['fleet', 'issue', '--authority', 'authority', '--role', 'bootstrap', '--key', 'boot.key', '--out', 'boot.json'])
    for (const car of ['car1', 'car2', 'car3']) cli(['fleet', 'issue', '--authority', 'authority', '--role', 'vehicle', '--new-key', '--out', `${car}.json`])
    bed = NetBed.create({ public: ['boot'], depots: [{ vehicles: 1, nat: 'cone' }, { vehicles: 1, nat: 'cone' }, { vehicles: 1, nat: 'symmetric' }], wan: { delayMs: 20, lossPct: 0, bytesPerS: 2_500_000 } })
    start('boot', [CLI, 'bootstrap', '--key', 'boot.key', '--credentials', 'boot.json', '--json'])
    const boot = await waitFor('boot', l => l.type === 'listening', 30_000, 'bootstrap addresses')
    const BOOT = (boot.addrs as string[]).find(a => a.includes(`/ip4/${bed!.host('boot').ip}/`))!
    start('d1v1', [PEER, 'car1.json', BOOT])
    start('d2v1', [PEER, 'car2.json', BOOT])
    start('d3v1', [PEER, 'car3.json', BOOT])
  })

  after(async () => {
    await bed?.destroy()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  it('two cars behind cone NATs move from the relay to one direct connection', async () => {
    const c = await throughRelay('d1v1', 'd2v1', 30_000)
    const direct = (c.conns as Line[]).find(x => !x.limited && x.status === 'open')
    assert.ok(direct !== undefined, `no direct connection: ${JSON.stringify(c)}`)
    // it goes to the other depot's NAT router, at a port that car predicted
    assert.match(direct.remote as string, new RegExp(`^/ip4/${bed!.host('r2').ip}/tcp/\\d+/p2p/`))
    assert.match(c.punches as string, /outcome="direct"} 1/)
    // and it stays: the relayed connection closes, the direct one carries on
    await new Promise(resolve => setTimeout(resolve, 15_000))
    const later = await ask('d1v1', `conns ${(await waitFor('d2v1', l => l.type === 'listening', 60_000, 'peer id')).peer as string}`, 'conns')
    assert.deepEqual((later.conns as Line[]).map(x => [x.remote, x.limited, x.status]), [[direct.remote, false, 'open']], JSON.stringify(later))
  })

  it('a car behind a symmetric NAT stays on the relay, and the failed punch is counted', async () => {
    const c = await throughRelay('d1v1', 'd3v1', 15_000)
    assert.equal((c.conns as Line[]).filter(x => !x.limited).length, 0, JSON.stringify(c))
    assert.ok((c.conns as Line[]).some(x => x.limited && x.status === 'open'), 'the relayed connection stays')
    await new Promise(resolve => setTimeout(resolve, 3000))
    const after = await ask('d1v1', `conns ${(await waitFor('d3v1', l => l.type === 'listening', 60_000, 'peer id')).peer as string}`, 'conns')
    assert.match(after.punches as string, /outcome="failed"} 1/, JSON.stringify(after))
  })
})
