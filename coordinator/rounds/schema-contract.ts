/**
 * The schema contract: before round 1 every site's reported schema is compared with the study manifest's task
 * (and, for what the manifest leaves open, with the sites already accepted), field by field. The result is a list
 * of mismatches the researcher can act on ("features.sex.type: expected category, found number"), not a yes/no.
 */
import type { SchemaReport, StudyManifest } from '../../protocol/messages.ts';

export interface SchemaMismatch {
  /** Dotted path: `label`, `kind`, `classes`, `inputShape`, `examples`, `features`, `features.<name>.type`, ... */
  field: string;
  expected: unknown;
  found: unknown;
  /** `manifest`: the study declares it; `sites`: it differs from the sites already accepted. */
  against: 'manifest' | 'sites';
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Every way `schema` breaks the manifest's task, or differs from `reference` (a site already accepted). */
export function checkSchema(task: StudyManifest['task'], schema: SchemaReport, reference?: SchemaReport): SchemaMismatch[] {
  const out: SchemaMismatch[] = [];
  const m = (field: string, expected: unknown, found: unknown, against: SchemaMismatch['against'] = 'manifest') => out.push({ field, expected, found, against });
  if (schema.label !== task.label) m('label', task.label, schema.label);
  if (task.kind && schema.kind !== task.kind) m('kind', task.kind, schema.kind);
  const names = schema.features?.map((f) => f.name) ?? [];
  if (task.features) {
    const missing = task.features.filter((f) => !names.includes(f));
    const extra = names.filter((f) => !task.features!.includes(f));
    for (const f of missing) m(`features.${f}`, 'present', 'absent');
    for (const f of extra) m(`features.${f}`, 'absent', 'present');
    if (!missing.length && !extra.length && !same(names, task.features)) m('features', task.features, names);
  }
  for (const [name, type] of Object.entries(task.featureTypes ?? {})) {
    const f = schema.features?.find((x) => x.name === name);
    if (f && f.type !== type) m(`features.${name}.type`, type, f.type);
    if (!f && !task.features) m(`features.${name}`, 'present', 'absent');
  }
  for (const [name, levels] of Object.entries(task.levels ?? {})) {
    const f = schema.features?.find((x) => x.name === name);
    if (f && !same(f.levels, levels)) m(`features.${name}.levels`, levels, f.levels ?? null);
  }
  if (task.classes && !same(schema.classes, task.classes)) m('classes', task.classes, schema.classes);
  if (task.inputShape && !same(schema.inputShape, task.inputShape)) m('inputShape', task.inputShape, schema.inputShape);
  if (task.minExamples !== undefined && schema.examplesRounded < task.minExamples) m('examples', `>= ${task.minExamples}`, schema.examplesRounded);
  if (reference) {
    if (!task.classes && !same(schema.classes, reference.classes)) m('classes', reference.classes, schema.classes, 'sites');
    if (!task.inputShape && !same(schema.inputShape, reference.inputShape)) m('inputShape', reference.inputShape, schema.inputShape, 'sites');
    if (!task.kind && schema.kind !== reference.kind) m('kind', reference.kind, schema.kind, 'sites');
    for (const f of schema.features ?? []) {
      const r = reference.features?.find((x) => x.name === f.name);
      if (!r) continue;
      if (!task.featureTypes?.[f.name] && r.type !== f.type) m(`features.${f.name}.type`, r.type, f.type, 'sites');
      if (!task.levels?.[f.name] && r.type === f.type && !same(r.levels, f.levels)) m(`features.${f.name}.levels`, r.levels ?? null, f.levels ?? null, 'sites');
    }
    // Feature lists are compared when both sites report one (image and DICOM schemas have none).
    const refNames = reference.features?.map((f) => f.name);
    if (!task.features && refNames && schema.features && !same(names, refNames)) m('features', refNames, names, 'sites');
  }
  return out;
}

/** One line for logs and the refusal message; the structured list goes in the refusal's details. */
export function describeMismatches(list: readonly SchemaMismatch[]): string {
  const show = (v: unknown) => {
    const s = typeof v === 'string' ? v : JSON.stringify(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  };
  return list.map((x) => `${x.field}: expected ${show(x.expected)}${x.against === 'sites' ? ' (as the other sites)' : ''}, found ${show(x.found)}`).join('; ');
}
