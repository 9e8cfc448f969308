import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function importsOf(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  return [...src.matchAll(/(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => (m[1] ?? m[2])!);
}

describe('architecture boundaries', () => {
  const rules: [string, string[]][] = [
    ['coordinator', ['site-agent', 'cli', 'simulations']],
    ['site-agent', ['coordinator', 'cli', 'simulations']],
    ['protocol', ['coordinator', 'site-agent', 'cli', 'simulations']],
  ];
  for (const [area, forbidden] of rules) {
    it(`should keep ${area}/ free of imports from ${forbidden.join(', ')}`, () => {
      const offenders: string[] = [];
      for (const f of tsFiles(join(root, area))) {
        for (const spec of importsOf(f)) {
          if (!spec.startsWith('.')) continue;
          const target = relative(root, join(f, '..', spec)).split(/[\\/]/)[0]!;
          if (forbidden.includes(target)) offenders.push(`${relative(root, f)} -> ${spec}`);
        }
      }
      expect(offenders).toEqual([]);
    });
  }
});
