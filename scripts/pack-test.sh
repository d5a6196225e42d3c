#!/usr/bin/env bash
# The package as a user gets it: `npm pack` (which builds JavaScript and type declarations into dist/),
# install the tarball into an empty directory, run `npx fleetmesh swarm` there and import the API.
# CI runs this after the tests (.ci/run). Needs the npm registry; takes about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" > "$work/name"
tarball="$work/$(tail -1 "$work/name")"
mkdir "$work/app" && cd "$work/app"
echo '{ "name": "fleetmesh-try", "version": "1.0.0", "private": true }' > package.json
# onnxruntime-node's install script would download CUDA binaries (and fail offline): skip it
ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund "$tarball" > install.log 2>&1 || { cat install.log; exit 1; }
npx fleetmesh swarm --jobs 3 > swarm.log 2>&1 || { cat swarm.log; exit 1; }
grep -q 'summary: 3/3 jobs completed, 3/3 texts correct' swarm.log || { cat swarm.log; echo 'pack test: the swarm did not complete every job'; exit 1; }
if head -1 swarm.log | grep -q '^npm warn'; then echo 'pack test: npx printed an npm warning first'; head -3 swarm.log; exit 1; fi
node_modules/.bin/node --input-type=module -e "import { createClient, FleetClient } from 'fleetmesh'; if (typeof createClient !== 'function' || typeof FleetClient !== 'function') process.exit(1)"
test -f node_modules/fleetmesh/dist/node/client/index.d.ts
echo "pack test: $(basename "$tarball") installs into an empty directory; npx fleetmesh swarm completed 3/3 jobs; the API imports"
