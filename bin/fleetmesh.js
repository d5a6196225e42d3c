#!/usr/bin/env node
// The `fleetmesh` command: the JavaScript build when the package was built (an installed package),
// else the TypeScript sources (a clone, on Node 22's type stripping).
import { existsSync } from 'node:fs'

const built = new URL('../dist/node/cli/main.js', import.meta.url)
await import(existsSync(built) ? built.href : new URL('../node/cli/main.ts', import.meta.url).href)
