// `npm run build:contracts`: compiles the Tolk sources and writes contracts/compiled.json, which nodes load instead of compiling.
import { writeCompiledFile, COMPILED_FILE } from './compile.ts'

const out = await writeCompiledFile()
process.stdout.write(`wrote ${COMPILED_FILE} (tolk ${out.tolkVersion}, sources ${out.sourcesHash.slice(0, 16)}…)\n`)
