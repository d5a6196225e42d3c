import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFile, readdir } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const SOURCES = ['node', 'protocols', 'bootstrap']
/** Largest source file, in lines. */
const MAX_LINES = 400

async function sourceFiles (): Promise<string[]> {
  const out: string[] = []
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name)
      if (e.isDirectory() && e.name !== 'gen') await walk(p)
      else if (e.isFile() && e.name.endsWith('.ts')) out.push(p)
    }
  }
  for (const d of SOURCES) await walk(join(ROOT, d))
  return out
}

/** Relative files a module imports at run time (`import type` and `export type` are erased). */
function valueImports (file: string, text: string): string[] {
  const out: string[] = []
  for (const m of text.matchAll(/^(?:import|export)\s+(?!type\b)[^'"]*?from\s+'(\.{1,2}\/[^']+)'/gm)) out.push(resolve(dirname(file), m[1]))
  return out
}

describe('code structure', () => {
  it(`no source file is over ${MAX_LINES} lines`, async () => {
    const long: string[] = []
    for (const f of await sourceFiles()) {
      const lines = (await readFile(f, 'utf8')).split('\n').length
      if (lines > MAX_LINES) long.push(`${relative(ROOT, f)}: ${lines}`)
    }
    assert.deepEqual(long, [])
  })

  it('protocols/ imports nothing of node/ or bootstrap/', async () => {
    const bad: string[] = []
    for (const f of (await sourceFiles()).filter(f => relative(ROOT, f).startsWith('protocols'))) {
      for (const m of (await readFile(f, 'utf8')).matchAll(/from\s+'(\.{1,2}\/[^']+)'/g)) {
        const target = relative(ROOT, resolve(dirname(f), m[1]))
        if (!target.startsWith('protocols')) bad.push(`${relative(ROOT, f)} -> ${target}`)
      }
    }
    assert.deepEqual(bad, [])
  })

  it('no import cycle among the modules', async () => {
    const graph = new Map<string, string[]>()
    for (const f of await sourceFiles()) graph.set(f, valueImports(f, await readFile(f, 'utf8')))
    const cycles: string[] = []
    const state = new Map<string, 'open' | 'done'>()
    const stack: string[] = []
    const visit = (f: string): void => {
      state.set(f, 'open'); stack.push(f)
      for (const g of graph.get(f) ?? []) {
        if (state.get(g) === 'open') cycles.push([...stack.slice(stack.indexOf(g)), g].map(x => relative(ROOT, x)).join(' -> '))
        else if (state.get(g) === undefined && graph.has(g)) visit(g)
      }
      stack.pop(); state.set(f, 'done')
    }
    for (const f of graph.keys()) if (state.get(f) === undefined) visit(f)
    assert.deepEqual(cycles, [])
  })

  it('a client that never runs a model loads no native addon', async function () {
    this.timeout(30_000)
    // a client joins (no bootstrap peers), lists models and leaves; then the process reports what it mapped
    const script = `
      const { createClient } = await import('fleetmesh')
      const fleet = await createClient({ bootstrap: [], fleet: 'structure-test' })
      await fleet.models({ signal: AbortSignal.timeout(100) })
      await fleet.close()
      const maps = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8')
      console.log(JSON.stringify({ onnxruntime: /onnxruntime/i.test(maps) }))`
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--conditions=fleetmesh:source', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
      let text = ''
      child.stdout.on('data', (d: Buffer) => { text += d.toString() })
      child.on('exit', code => { code === 0 ? resolve(text) : reject(new Error(`exited ${code}`)) })
    })
    assert.deepEqual(JSON.parse(out.trim().split('\n').at(-1)!), { onnxruntime: false })
  })
})
