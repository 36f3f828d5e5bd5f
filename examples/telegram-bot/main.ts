// Runs the bot with long polling: `npm start` here, with TELEGRAM_BOT_TOKEN set and a Cocoon client node running.
import { createBot, loadConfig } from './bot.ts'

const cfg = loadConfig()
const { bot } = createBot(cfg)
process.once('SIGINT', () => void bot.stop())
process.once('SIGTERM', () => void bot.stop())
await bot.start({ onStart: (me) => console.log(`@${me.username} is running on ${cfg.baseUrl} (model ${cfg.model}, speech ${cfg.speechModel})`) })
