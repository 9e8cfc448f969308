/**
 * A folder of DICOM files with a labels CSV (`file,label`; the file path relative to the folder). The labels CSV is
 * the list of examples: each listed file is decoded (any transfer syntax `dicom-decode.ts` reads), each frame
 * (or the first or middle one) windowed, converted and resized to the declared shape. A listed file that is
 * missing, damaged or in an unsupported encoding is skipped and counted by error code; it never stops the site.
 */
import { readFile } from 'node:fs/promises';
import { join, normalize, isAbsolute } from 'node:path';
import { CohortError, type ErrorCode } from '../../protocol/errors.ts';
import type { DicomDatasetConfig } from '../config.ts';
import { parseCsvText } from './csv-source.ts';
import { sortClasses, type DataSource, type DatasetSchema, type LoadedSplit, type SourceOptions, type Split } from './data-source.ts';
import { decodeDicom } from './dicom-decode.ts';
import { framePixels } from './dicom-pixels.ts';
import { describeExamples, loadExamples, yieldToLoop, type Example, type ExampleSet } from './example-set.ts';

export class DicomFolderSource implements DataSource {
  private set: Promise<ExampleSet> | undefined;

  constructor(private readonly dir: string, private readonly labelsFile: string, private readonly cfg: DicomDatasetConfig, private readonly opts: SourceOptions) {}

  private read(): Promise<ExampleSet> {
    this.set ??= (async () => {
      let text: string;
      try {
        text = await readFile(this.labelsFile, 'utf8');
      } catch (err) {
        throw new CohortError('COHORT_ERR_DATA_PARSE', `cannot read ${this.labelsFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
      const { header, rows } = parseCsvText(text);
      const fi = header.indexOf(this.cfg.fileColumn);
      const li = header.indexOf(this.cfg.label);
      if (fi < 0 || li < 0) throw new CohortError('COHORT_ERR_DATA_SCHEMA', `${this.labelsFile} needs columns ${this.cfg.fileColumn} and ${this.cfg.label}`);
      const listed = rows.filter((r) => r[li] !== '' && r[fi] !== '');
      const classes = this.opts.classes ? [...this.opts.classes] : this.cfg.classes ?? sortClasses(listed.map((r) => r[li]!));
      const [h, w, c] = this.cfg.shape;
      const examples: Example[] = [];
      const fileClasses: number[] = [];
      const skipped = new Map<string, number>();
      const skip = (code: ErrorCode) => skipped.set(code, (skipped.get(code) ?? 0) + 1);
      for (const r of listed) {
        const k = classes.indexOf(r[li]!);
        if (k < 0) {
          skip('COHORT_ERR_DATA_SCHEMA');
          continue;
        }
        const file = fileClasses.length;
        fileClasses.push(k);
        const rel = normalize(r[fi]!);
        try {
          // The labels file may only point inside the dataset folder.
          if (isAbsolute(rel) || rel.startsWith('..')) throw new CohortError('COHORT_ERR_DATA_SCHEMA', `${rel} is outside the dataset folder`);
          let bytes: Uint8Array;
          try {
            bytes = new Uint8Array(await readFile(join(this.dir, rel)));
          } catch {
            throw new CohortError('COHORT_ERR_SITE_DATASET_PATH', `${rel} is listed but cannot be read`);
          }
          const img = await decodeDicom(bytes);
          const frames = this.cfg.frames === 'all' ? [...Array(img.frames).keys()] : [this.cfg.frames === 'first' ? 0 : Math.floor(img.frames / 2)];
          for (const f of frames) examples.push({ file, y: k, x: framePixels(img, f, { shape: [h, w, c], window: this.cfg.window }) });
        } catch (err) {
          skip(err instanceof CohortError ? err.code : 'COHORT_ERR_DATA_CORRUPT');
        }
        await yieldToLoop();
      }
      return { kind: 'dicom', label: this.cfg.label, classes, shape: [h, w, c], fileClasses: Int32Array.from(fileClasses), examples, skipped };
    })();
    return this.set;
  }

  async describe(): Promise<DatasetSchema> {
    return describeExamples(await this.read());
  }

  async load(split: Split): Promise<LoadedSplit> {
    return loadExamples(await this.read(), split, this.opts.holdoutFraction, this.opts.seed);
  }
}
