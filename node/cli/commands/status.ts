import { BOOTSTRAP_OPTION, ACCESS_OPTIONS, intOption, shortPeer, withFleetClient } from '../command.ts'
import type { Command } from '../command.ts'
import { table } from '../format.ts'

export const statusCommand: Command = {
  name: 'status',
  summary: 'Show every vehicle heard on the fleet: its state, eligibility, stages and capacity record.',
  usage: '--bootstrap <multiaddr> [--wait <ms>] [--json]',
  options: {
    bootstrap: BOOTSTRAP_OPTION,
    ...ACCESS_OPTIONS,
    wait: { type: 'string', arg: '<ms>', description: 'how long to listen for heartbeats', default: '3000' },
    json: { type: 'boolean', description: 'print one JSON object' }
  },
  async run (o) {
    const waitMs = intOption(o.wait, 'wait', 100, 120_000)
    return await withFleetClient(o, async client => {
      await new Promise(resolve => setTimeout(resolve, waitMs))
      const now = Date.now()
      const peers = client.directory.all().filter(p => p.heartbeat.vehicle !== undefined || p.heartbeat.stages.length > 0)
      const records = await Promise.all(peers.map(async p => await client.capacityRecord(p.peer)))
      const rows = peers.map((p, i) => {
        const v = p.heartbeat.vehicle
        const r = records[i]
        return {
          peer: p.peer,
          eligible: p.heartbeat.eligible && client.directory.isFresh(p, now),
          reasons: v?.reasons ?? [],
          state: v,
          stages: p.heartbeat.stages.map(s => ({ manifest: s.manifest, stage: s.stage, msPerItem: s.msPerItem })),
          load: p.heartbeat.load,
          heardMsAgo: now - p.receivedAt,
          leaving: p.heartbeat.leaving === true,
          record: r !== undefined ? { eligible: r.eligible, seq: r.seq, expiresInMs: r.expiresAt - now } : null
        }
      })
      if (o.json === true) {
        console.log(JSON.stringify({ at: now, vehicles: rows }))
        return 0
      }
      if (rows.length === 0) {
        console.log(`no vehicles heard in ${waitMs} ms`)
        return 0
      }
      const head = ['vehicle', 'eligible', 'parked', 'plugged', 'SoC', 'temp', 'net', 'departs', 'stages', 'load', 'record', 'why not']
      const body = rows.map(r => {
        const v = r.state
        const departs = v?.nextDepartureAt != null ? `${Math.max(0, Math.round((v.nextDepartureAt - v.clock) / 60_000))} min` : '-'
        return [shortPeer(r.peer), r.eligible ? 'yes' : 'no', v !== undefined ? (v.parked ? 'yes' : 'no') : '?', v !== undefined ? (v.pluggedIn ? `${v.chargerKw} kW` : 'no') : '?',
          v !== undefined ? `${v.socPct}%` : '?', v !== undefined ? `${v.computeTempC} °C` : '?', v?.network ?? '?', departs,
          r.stages.map(s => s.stage).join(',') || '-', String(r.load), r.record !== null ? `expires in ${Math.round(r.record.expiresInMs / 1000)} s` : 'none',
          r.leaving ? 'left the mesh' : r.reasons.join('; ')]
      })
      console.log(table([head, ...body]))
      return 0
    })
  }
}
