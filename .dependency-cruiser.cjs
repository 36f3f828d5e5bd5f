// The layer rules of src/, checked by `npm test` (test/layers/layers.test.ts). Bottom to top:
//   1. core      log, time, errors, small HTTP helpers: imports nothing of ours
//   2. seams     tee, inference, ton (contracts, chain-client, chain); payments (on ton and tee); net (on tee and inference)
//   3. roles     client, proxy, worker: seams only, never each other
//   4. entries   node (role start-up), cli, bench (bench never imports cli or worker)
// A folder with an index.ts is reached from outside its seam only through that index.ts.

const SEAMS = 'tee|inference|ton|payments|net'
const ROLES = 'client|proxy|worker'

/** `from` folder may import only core, itself and the folders in `allowed` (a regex alternation, or ''). */
const only = (name, from, allowed) => ({
  name,
  severity: 'error',
  comment: `${from} may import only core${allowed ? `, ${allowed.replace(/\|/g, ', ')}` : ''} and itself`,
  from: { path: `^src/(${from})/` },
  to: { path: `^src/`, pathNot: [`^src/(core|$1${allowed ? `|${allowed}` : ''})/`] },
})

/** Outside `seam`, files of `folder` are reached only through `folder`/index.ts. */
const surface = (name, seam, folder) => ({
  name,
  severity: 'error',
  comment: `import ${folder}/index.ts, not its files (index.ts is the folder's surface)`,
  from: { path: '^src/', pathNot: `^src/${seam}/` },
  to: { path: `^src/${folder}/[^/]+$`, pathNot: `^src/${folder}/index\\.ts$` },
})

module.exports = {
  forbidden: [
    only('core-imports-nothing', 'core', ''),
    only('tee-is-a-seam', 'tee', ''),
    only('inference-is-a-seam', 'inference', ''),
    only('ton-is-a-seam', 'ton', ''),
    only('payments-is-a-seam', 'payments', 'ton|tee'),
    only('net-is-a-seam', 'net', 'tee|inference'),
    only('roles-use-seams', ROLES, SEAMS),
    only('node-starts-roles', 'node', `${SEAMS}|${ROLES}`),
    only('bench-measures', 'bench', `${SEAMS}|node`),
    {
      name: 'tee-does-not-load-tdx',
      severity: 'error',
      comment: 'the generic attestation code never pulls in DCAP; TDX is loaded on demand by whoever needs it',
      from: { path: '^src/tee/[^/]+$' },
      to: { path: '^src/tee/tdx/' },
    },
    {
      name: 'ton-parts-in-order',
      severity: 'error',
      comment: 'contracts <- chain-client <- chain: the wrappers know no chain, nodes never reach the embedded devnet',
      from: { path: '^src/ton/(contracts|chain-client)/' },
      to: { path: '^src/ton/chain/' },
    },
    {
      name: 'contracts-know-no-chain',
      severity: 'error',
      from: { path: '^src/ton/contracts/' },
      to: { path: '^src/ton/(chain|chain-client)/' },
    },
    surface('tee-surface', 'tee', 'tee'),
    surface('tdx-surface', 'tee', 'tee/tdx'),
    surface('contracts-surface', 'ton', 'ton/contracts'),
    surface('chain-client-surface', 'ton', 'ton/chain-client'),
    surface('chain-surface', 'ton', 'ton/chain'),
    surface('inference-surface', 'inference', 'inference'),
    surface('bench-surface', 'bench', 'bench'),
    {
      name: 'each-role-starts-alone',
      severity: 'error',
      comment: "a role's start-up (node/run-<role>.ts) loads no other role's code: a node loads only what its role uses",
      from: { path: '^src/node/run-(client|proxy|worker)\\.ts$' },
      to: { path: '^src/(client|proxy|worker)/', pathNot: '^src/$1/' },
    },
    {
      name: 'start-up-loads-roles-on-demand',
      severity: 'error',
      comment: "startNode (node/run.ts) and what every role shares load no role's code, and run.ts reaches a role's start-up only by import() for that role",
      from: { path: '^src/node/(run|run-support)\\.ts$' },
      to: { path: ['^src/(client|proxy|worker)/', '^src/node/run-(client|proxy|worker)\\.ts$'], dependencyTypesNot: ['dynamic-import', 'type-only'] },
    },
    {
      name: 'devnet-supervisor-stays-small',
      severity: 'error',
      comment: 'the devnet supervisor (and the cocoon entry it runs in) lives as long as the devnet: it never loads TON, attestation, payments or a node; its setup child (cli/devnet-setup.ts) does that work',
      from: { path: '^src/cli/(devnet|main)\\.ts$' },
      to: { path: '^src/(ton/(contracts|chain-client|chain)|tee|payments|net|client|proxy|worker|node/(config|run[^/]*|trust|client-console))/?', dependencyTypesNot: ['dynamic-import', 'type-only'] },
    },
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'no import cycle (type-only imports included)',
      from: { path: '^src/' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^(node_modules|test|dist)/' },
  },
}
