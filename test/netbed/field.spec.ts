/**
 * The fleet in the field (issue 11), short run: the bootstrap peer (also the relay) and a client on a
 * public segment, two vehicles in each of two depots behind NAT routers (one cone, one symmetric),
 * WAN links with 20 ms each way and 20 Mbit/s. The long run with loss is bench/field.ts.
 * Needs root and Debian's vde2 and iptables (.ci/run installs them).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { runField } from './field.ts'

function missing (): string | undefined {
  if (process.getuid?.() !== 0) return 'not root (network namespaces need it)'
  for (const tool of ['vde_switch', 'wirefilter', 'vde_plug2tap', 'iptables']) {
    try { execFileSync('which', [tool], { stdio: 'ignore' }) } catch { return `${tool} is not installed (apt-get install vde2 iptables)` }
  }
  return undefined
}

const prefix = `fm${process.pid.toString(36)}`
const ours = (): string[] => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter(l => l.startsWith(prefix))

describe('field: vehicles behind NAT, across shaped links', function () {
  this.timeout(600_000)

  it('jobs from a public client complete on vehicles behind NAT, none wrong, routes stay inside a depot', async function () {
    const why = missing()
    // skipped only on a machine without root or vde2; CI has both (.ci/run)
    if (why !== undefined) { this.skip() }
    const r = await runField({ jobs: 10, wan: { delayMs: 20, lossPct: 0, bytesPerS: 2_500_000 } })
    const s = JSON.stringify({ summary: r.summary, inDepot: r.inDepotShare, cross: r.crossDepotLinks, errors: r.jobs.filter(j => j.error !== undefined).map(j => j.error) })
    assert.equal(r.summary.completed, 10, s)
    assert.equal(r.summary.wrong, 0, s)
    // each depot serves every stage, and the router prices links by what vehicles measured: routes stay in a depot
    assert.ok(r.inDepotShare >= 0.9, `in-depot share ${r.inDepotShare}; ${s}`)
    // a symmetric NAT cannot be punched through: its vehicles reach the other depot only through the relay
    assert.equal(r.crossDepotLinks.direct, 0, s)
    assert.deepEqual(ours(), [], 'every namespace the bed made is gone')
  })
})
