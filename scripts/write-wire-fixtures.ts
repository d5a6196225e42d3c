/**
 * Writes the golden wire fixtures of this version (test/fixtures/wire/):
 * `<name>.bin` as this version encodes it and `<name>.json` as it decodes.
 * Existing fixtures are never overwritten: they are what earlier versions
 * sent, and every later version must still decode them.
 *
 *   node scripts/write-wire-fixtures.ts
 */
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { WIRE_CASES } from '../test/fixtures/wire-cases.ts'

const dir = fileURLToPath(new URL('../test/fixtures/wire/', import.meta.url))
await mkdir(dir, { recursive: true })
for (const c of WIRE_CASES) {
  const bin = `${dir}${c.name}.bin`
  if (existsSync(bin)) { console.log(`kept    ${c.name}`); continue }
  const bytes = await c.encode()
  await writeFile(bin, bytes)
  await writeFile(`${dir}${c.name}.json`, JSON.stringify(await c.decode(bytes), null, 2) + '\n')
  console.log(`written ${c.name} (${bytes.byteLength} bytes)`)
}
