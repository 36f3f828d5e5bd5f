// Loaded before every test file (see `npm test`): points COCOON_MODELS at ../shared/models when it is not set.
import path from 'node:path'
import { fileURLToPath } from 'node:url'

process.env.COCOON_MODELS ??= path.resolve(fileURLToPath(new URL('../..', import.meta.url)), 'shared', 'models')
