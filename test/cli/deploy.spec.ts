/**
 * Running a vehicle for real: the systemd unit and the config example in deploy/ stay valid (every
 * setting is an option of `fleetmesh node` with a value it accepts; systemd-analyze accepts the
 * unit), and the node's log lines have levels and a JSON form.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { resolveOption } from '../../node/cli/command.ts'
import { nodeCommand, parsePolicy } from '../../node/cli/commands/node.ts'
import { eventLogger, parseLogOptions } from '../../node/cli/log.ts'
import { sourceFromSpec } from '../../node/vehicle/sources.ts'

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url))

describe('deployment: systemd unit, config example, log levels', () => {
  it('the config example sets only options of `fleetmesh node`, each to a value it accepts', async () => {
    const doc = JSON.parse(await readFile(join(DEPLOY, 'vehicle.json'), 'utf8')) as { node: Record<string, unknown> }
    for (const key of Object.keys(doc.node)) assert.ok(key in nodeCommand.options, `"${key}" is not an option of fleetmesh node`)
    const o = Object.fromEntries(Object.entries(nodeCommand.options).map(([name, spec]) => [name, resolveOption('node', name, spec, undefined, { file: doc })]))
    assert.deepEqual(parsePolicy(o.policy as string[]), { resumeSocPct: 60, stopSocPct: 45, allowedNetworks: ['wifi'] })
    assert.deepEqual(parseLogOptions(o), { level: 'info', format: 'json' })
    assert.equal((await sourceFromSpec(String(o.vehicle))).description, 'teslamate:mqtt://127.0.0.1:1883/1')
    assert.deepEqual(o.bootstrap, doc.node.bootstrap)
  })

  it('systemd accepts the unit', async function () {
    if (!existsSync('/usr/bin/systemd-analyze')) { console.log('      (skipped: no systemd-analyze here)'); this.skip() }
    const dir = await mkdtemp(join(tmpdir(), 'fm-unit-'))
    try {
      const unit = await readFile(join(DEPLOY, 'fleetmesh-vehicle.service'), 'utf8')
      assert.match(unit, /^ExecStart=\/opt\/fleetmesh\/node_modules\/\.bin\/fleetmesh node$/m)
      assert.match(unit, /^Environment=FLEETMESH_CONFIG=\/etc\/fleetmesh\/vehicle\.json$/m)
      // the installed binary does not exist here: point the copy at one that does
      const file = join(dir, 'fleetmesh-vehicle.service')
      await writeFile(file, unit.replace('/opt/fleetmesh/node_modules/.bin/fleetmesh', process.execPath))
      const out = execFileSync('systemd-analyze', ['verify', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      assert.equal(out.trim(), '')
    } finally { await rm(dir, { recursive: true, force: true }) }
  })

  it('log lines have levels, filtered by --log-level, and a JSON form with time and level', () => {
    const lines: string[] = []
    const describe = (e: any): string => e.type === 'error' ? `error: ${e.message}` : e.type
    const events = [{ type: 'serving', manifest: 'm', name: 'x', stage: 0 }, { type: 'error', message: 'boom' }, { type: 'chose', manifest: 'm', stage: 1, providers: 0 }, { type: 'ineligible', at: 1, reasons: ['not plugged in'] }] as any[]
    const warn = eventLogger('warn', 'text', describe, l => lines.push(l))
    for (const e of events) warn(e)
    assert.deepEqual(lines, ['error: boom', 'warn: ineligible'])
    lines.length = 0
    const json = eventLogger('info', 'json', describe, l => lines.push(l))
    for (const e of events) json(e)
    const parsed = lines.map(l => JSON.parse(l))
    assert.deepEqual(parsed.map(p => [p.level, p.type]), [['info', 'serving'], ['error', 'error'], ['warn', 'ineligible']])
    assert.ok(parsed.every(p => !Number.isNaN(Date.parse(p.time))))
    assert.throws(() => parseLogOptions({ 'log-level': 'loud' }), /--log-level must be one of error, warn, info, debug/)
    assert.throws(() => parseLogOptions({ 'log-format': 'xml' }), /--log-format/)
  })
})
