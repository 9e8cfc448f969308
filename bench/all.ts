/**
 * `npm run bench`: runs every benchmark in bench/ (every bench/*.ts but this file, found at run time, so a bench
 * another change adds is included without editing this list), one after another, each in its own process, with
 * its output streamed. Ends with a summary: each bench's exit status, duration and its `RESULT` lines (or its
 * last lines when it prints none).
 *
 * `npm run bench -- load fuzz` runs only the named ones. When fuzz, large or load ran, a last block puts their
 * figures (peak memory, round latency) side by side.
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
// Issue 9's acceptance figures side by side, when those benches ran: fuzzing, the large-model round, the load test.
const field = (o: Outcome | undefined, key: string) => o?.results.map((l) => new RegExp(`\\b${key}=(\\S+)`).exec(l)?.[1]).find(Boolean) ?? 'n/a';
const by = (name: string) => outcomes.find((o) => o.name === name);
if (by('fuzz') || by('large') || by('load')) {
  console.log('\n======== reliability, security and scale ========');
  const fuzz = by('fuzz');
  if (fuzz) console.log(`fuzz    ${fuzz.code === 0 ? 'ok  ' : 'FAIL'} coordinator peak RSS ${field(fuzz, 'peak_rss_mb')} MB (before ${field(fuzz, 'rss_before_mb')}, after ${field(fuzz, 'rss_after_mb')}); ${field(fuzz, 'socket_per_s')} socket events/s, ${field(fuzz, 'rest_per_s')} REST requests/s; state unchanged: ${field(fuzz, 'unchanged')}`);
  const large = by('large');
  if (large) console.log(`large   ${large.code === 0 ? 'ok  ' : 'FAIL'} ${field(large, 'params')} parameters, ${field(large, 'sites')} sites: round ${field(large, 'round_s')} s; coordinator peak RSS ${field(large, 'coordinator_peak_rss_mb')} MB (grew ${field(large, 'coordinator_growth_model_sizes')} model sizes; the sites' updates alone would be ${field(large, 'vs_n_copies')}); site peak RSS ${field(large, 'site_peak_rss_mb')} MB; ${field(large, 'wire_mb')} MB on the wire`);
  const load = by('load');
  if (load) console.log(`load    ${load.code === 0 ? 'ok  ' : 'FAIL'} ${field(load, 'agents')} agents: round latency p50 ${field(load, 'p50_ms')} ms, p95 ${field(load, 'p95_ms')} ms; coordinator peak RSS ${field(load, 'peak_rss_mb')} MB, heap after GC ${field(load, 'heap_after_gc_mb')} MB`);
}

const failed = outcomes.filter((o) => o.code !== 0).length;
console.log(`\n${outcomes.length - failed} benches passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
