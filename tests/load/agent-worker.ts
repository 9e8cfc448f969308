/**
 * One worker process of the load test: runs many real SiteAgents (each its own socket.io connection, identity,
 * data and ledger) in one Node.js process, so that hundreds of agents fit on a small machine.
 *
 * Usage: node bin/run-ts.js tests/load/agent-worker.ts <file with a JSON array of site directories>
 * Prints `READY <n>` once every agent authenticated; exits on SIGTERM or when stdin closes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeLogger } from '../../protocol/logging.ts';
import { SiteAgent } from '../../site-agent/agent.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { loadIdentity } from '../../site-agent/keys.ts';

const dirs = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as string[];
const log = makeLogger('cohort-load-worker', 'warn');
const agents = dirs.map((dir) => {
  const config = loadSiteConfig(dir);
  config.reconnect = { initialDelayMs: 200, maxDelayMs: 2000 };
  return new SiteAgent({ dir, config, identity: loadIdentity(join(dir, config.keyFile)), log: log.child({ site: config.name }) });
});
// Connect in small waves: a hospital fleet does not dial in within the same millisecond either.
for (let i = 0; i < agents.length; i += 25) await Promise.all(agents.slice(i, i + 25).map((a) => a.start()));
process.stdout.write(`READY ${agents.length}\n`);

const stop = async () => {
  await Promise.all(agents.map((a) => a.stop()));
  process.exit(0);
};
process.once('SIGTERM', () => void stop());
process.stdin.on('end', () => void stop());
process.stdin.resume();
