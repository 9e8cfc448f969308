import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../protocol/errors.ts';

const root = join(import.meta.dirname, '..', '..');
const doc = readFileSync(join(root, 'docs', 'errors.md'), 'utf8');
const documented = [...doc.matchAll(/^## (COHORT_ERR_[A-Z0-9_]+)\s*$/gm)].map((m) => m[1]!);
const codes = Object.keys(ERRORS);

describe('error code registry', () => {
  it('should name every code COHORT_ERR_<AREA>_<WHAT> with an HTTP status and a message', () => {
    for (const [code, e] of Object.entries(ERRORS)) {
      expect(code).toMatch(/^COHORT_ERR_[A-Z0-9]+_[A-Z0-9_]+$/);
      expect(e.http).toBeGreaterThanOrEqual(400);
      expect(e.http).toBeLessThan(600);
      expect(e.message.length).toBeGreaterThan(5);
    }
  });

  it('should document every code in docs/errors.md', () => {
    expect(codes.filter((c) => !documented.includes(c))).toEqual([]);
  });

  it('should document no code that does not exist, and none twice', () => {
    expect(documented.filter((c) => !codes.includes(c))).toEqual([]);
    expect(new Set(documented).size).toBe(documented.length);
  });

  it('should use only registered codes in the sources', () => {
    const used = execSync(`grep -rhoE "COHORT_ERR_[A-Z0-9_]+" protocol coordinator site-agent cli simulations 2>/dev/null || true`, { cwd: root }).toString().split('\n').filter(Boolean);
    const unknown = [...new Set(used)].filter((c) => !codes.includes(c) && !c.endsWith('_'));
    expect(unknown).toEqual([]);
  });
});
