import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { InputError, inputsFromFile } from '../../node/client/inputs.ts'
import type { Manifest } from '../../node/models/manifest.ts'
import { capHint, inputText } from '../../node/cli/format.ts'

const SAMPLE = fileURLToPath(new URL('../../samples/text-lines/05.png', import.meta.url))

// `submit --input` and `submit --batch`: a file that is not what it should be is named with what is wrong
describe('input files', () => {
  const rec = { name: 'pp-ocrv4-rec', inputs: [{ name: 'x' }] } as unknown as Manifest
  const other = { name: 'my-model', inputs: [{ name: 'x' }] } as unknown as Manifest
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'fm-inputs-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  const refused = async (manifest: Manifest, file: string, pattern: RegExp): Promise<void> => {
    await assert.rejects(inputsFromFile(manifest, file), (err: Error) => {
      assert.ok(err instanceof InputError, String(err))
      assert.ok(err.message.startsWith(`${file}: `) || /takes no images/.test(err.message), err.message)
      assert.match(err.message, pattern)
      return true
    })
  }

  it('reads a text line image for the built-in model, and tensors from Open Inference Protocol JSON', async () => {
    const [t] = await inputsFromFile(rec, SAMPLE)
    assert.equal(t.name, 'x')
    assert.deepEqual(t.dims.slice(0, 3), [1, 3, 48])
    const file = join(dir, 'ok.json')
    await writeFile(file, JSON.stringify({ inputs: [{ name: 'x', shape: [1, 2], datatype: 'FP32', data: [1, 2] }] }))
    assert.deepEqual((await inputsFromFile(other, file)).map(x => [x.name, x.dims]), [['x', [1, 2]]])
  })

  it('names a missing file, a directory, a file that is not a PNG or not JSON, and tensors that do not fit', async () => {
    await refused(rec, join(dir, 'missing.png'), /cannot read it \(ENOENT\)/)
    await refused(other, join(dir, 'missing.json'), /cannot read it \(ENOENT\)/)
    await mkdir(join(dir, 'folder.json'))
    await refused(other, join(dir, 'folder.json'), /is a directory/)
    await writeFile(join(dir, 'text.png'), 'hello')
    await refused(rec, join(dir, 'text.png'), /not a PNG image it can read/)
    await writeFile(join(dir, 'broken.json'), '{"inputs": [')
    await refused(other, join(dir, 'broken.json'), /not JSON/)
    await writeFile(join(dir, 'short.json'), JSON.stringify({ inputs: [{ name: 'x', shape: [1, 3], datatype: 'FP32', data: [1] }] }))
    await refused(other, join(dir, 'short.json'), /invalid tensor: inputs\[0\]\.data: has 1 elements?, shape \[1,3\] needs 3/)
    await refused(other, SAMPLE, /model my-model takes no images/)
  })

  it('shard and publish show the largest input a job may give, and where an open dimension\'s cap comes from', () => {
    const m = { inputs: [{ name: 'x', dtype: 'float32', shape: [null, 3, 48, null], max: [8, 3, 48, 256] }, { name: 'k', dtype: 'int64', shape: [2] }], probeShapes: { x: [1, 3, 48, 64], k: [2] } } as unknown as Manifest
    assert.equal(inputText(m.inputs[0]), 'x float32[?,3,48,?], jobs up to [8,3,48,256]')
    assert.equal(inputText(m.inputs[1]), 'k int64[2]')
    assert.equal(capHint(m), '(an open dimension is capped at 4x its probe size, here x=1,3,48,64: --probe-shape sets another)')
    assert.equal(capHint({ inputs: [m.inputs[1]], probeShapes: {} }), '')
    // a cap set when sharding (maxShapes), not the probe's default, is not explained as one
    assert.equal(capHint({ inputs: [{ ...m.inputs[0], max: [8, 3, 48, 1280] }], probeShapes: m.probeShapes }), '')
  })
})
