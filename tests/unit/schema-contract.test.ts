import { describe, expect, it } from 'vitest';
import { checkSchema, describeMismatches } from '../../coordinator/rounds/schema-contract.ts';
import { StudyManifestSchema, type SchemaReport } from '../../protocol/messages.ts';

const task = (over: object = {}) => StudyManifestSchema.parse({
  name: 't', task: { dataset: 'd', label: 'status', ...over }, model: { template: 'logreg' }, training: { rounds: 1 },
}).task;
const site = (over: Partial<SchemaReport> = {}): SchemaReport => ({
  kind: 'csv', label: 'status', classes: ['0', '1', '2'], inputShape: [4], examplesRounded: 200,
  features: [{ name: 'age', type: 'number' }, { name: 'sex', type: 'category', levels: ['f', 'm'] }, { name: 'bili', type: 'number' }],
  ...over,
});

describe('schema contract', () => {
  it('should find nothing when a site matches the manifest', () => {
    expect(checkSchema(task({ features: ['age', 'sex', 'bili'], featureTypes: { sex: 'category' }, levels: { sex: ['f', 'm'] }, classes: ['0', '1', '2'], kind: 'csv', minExamples: 100 }), site())).toEqual([]);
  });

  it('should list each field that differs, with what was expected and found, when a site does not match', () => {
    const list = checkSchema(task({
      features: ['age', 'sex', 'albumin'], featureTypes: { sex: 'category', age: 'category' }, levels: { sex: ['f', 'm', 'x'] },
      classes: ['0', '1'], kind: 'images', inputShape: [5], minExamples: 500,
    }), site({ label: 'outcome' }));
    expect(list).toEqual(expect.arrayContaining([
      { field: 'label', expected: 'status', found: 'outcome', against: 'manifest' },
      { field: 'kind', expected: 'images', found: 'csv', against: 'manifest' },
      { field: 'features.albumin', expected: 'present', found: 'absent', against: 'manifest' },
      { field: 'features.bili', expected: 'absent', found: 'present', against: 'manifest' },
      { field: 'features.age.type', expected: 'category', found: 'number', against: 'manifest' },
      { field: 'features.sex.levels', expected: ['f', 'm', 'x'], found: ['f', 'm'], against: 'manifest' },
      { field: 'classes', expected: ['0', '1'], found: ['0', '1', '2'], against: 'manifest' },
      { field: 'inputShape', expected: [5], found: [4], against: 'manifest' },
      { field: 'examples', expected: '>= 500', found: 200, against: 'manifest' },
    ]));
    expect(list).toHaveLength(9);
    expect(describeMismatches(list)).toContain('features.age.type: expected category, found number');
  });

  it('should compare with the sites already accepted what the manifest leaves open', () => {
    const other = site({ features: [{ name: 'age', type: 'number' }, { name: 'sex', type: 'category', levels: ['F', 'M'] }, { name: 'bili', type: 'number' }], inputShape: [4] });
    const list = checkSchema(task(), site({ inputShape: [5] }), other);
    expect(list).toEqual([
      { field: 'inputShape', expected: [4], found: [5], against: 'sites' },
      { field: 'features.sex.levels', expected: ['F', 'M'], found: ['f', 'm'], against: 'sites' },
    ]);
    expect(describeMismatches(list)).toContain('(as the other sites)');
    const fewer = site({ features: [{ name: 'age', type: 'number' }, { name: 'sex', type: 'category', levels: ['f', 'm'] }] });
    expect(checkSchema(task(), fewer, site())).toEqual([{ field: 'features', expected: ['age', 'sex', 'bili'], found: ['age', 'sex'], against: 'sites' }]);
  });
});
