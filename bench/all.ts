/**
 * `npm run bench`: runs every benchmark in bench/ (every bench/*.ts but this file, found at run time, so a bench
 * another change adds is included without editing this list), one after another, each in its own process, with
 * its output streamed. Ends with a summary: each bench's exit status, duration and its `RESULT` lines (or its
 * last lines when it prints none).
 *
 * `npm run bench -- load fuzz` runs only the named ones.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';

const dir = import.meta.dirname;
const root = join(dir, '..');
const only = process.argv.slice(2);
const benches = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && f !== 'all.ts' && !f.endsWith('.d.ts'))
  .map((f) => basename(f, '.ts'))
  .filter((name) => only.length === 0 || only.includes(name))
  .sort();

if (benches.length === 0) {
  console.error(`no bench scripts found${only.length ? ` matching ${only.join(', ')}` : ''} in ${dir}`);
  process.exit(2);
}
console.log(`benches: ${benches.join(', ')}\n`);

interface Outcome { name: string; code: number | null; ms: number; results: string[]; tail: string[] }
const outcomes: Outcome[] = [];
for (const name of benches) {
  console.log(`\n======== bench/${name}.ts ========`);
  const started = Date.now();
  const lines: string[] = [];
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, ['--expose-gc', join(root, 'bin', 'run-ts.js'), join(dir, `${name}.ts`)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    const take = (d: Buffer, out: NodeJS.WriteStream) => {
      out.write(d);
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      lines.push(...parts);
    };
    child.stdout.on('data', (d: Buffer) => take(d, process.stdout));
    child.stderr.on('data', (d: Buffer) => take(d, process.stderr));
    child.on('exit', (c) => {
      if (buf) lines.push(buf);
      resolve(c);
    });
  });
  outcomes.push({ name, code, ms: Date.now() - started, results: lines.filter((l) => l.startsWith('RESULT ')), tail: lines.filter((l) => l.trim()).slice(-4) });
}

console.log('\n======== summary ========');
for (const o of outcomes) {
  console.log(`${o.code === 0 ? 'ok  ' : 'FAIL'} ${o.name.padEnd(12)} ${(o.ms / 1000).toFixed(1).padStart(7)} s`);
  for (const l of o.results.length ? o.results : o.tail) console.log(`       ${l}`);
}
const failed = outcomes.filter((o) => o.code !== 0).length;
console.log(`\n${outcomes.length - failed} benches passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
