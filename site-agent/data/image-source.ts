/**
 * A folder of images, one sub-folder per class (`<path>/<class>/<file>.png|.jpg`), decoded, converted to grey or
 * RGB, resized (bilinear) to the declared shape and normalized (scaled to [0, 1], or per-channel mean/std). A file
 * that cannot be decoded is skipped and counted with its reason; it never stops the site.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { CohortError, type ErrorCode } from '../../protocol/errors.ts';
import type { ImagesDatasetConfig } from '../config.ts';
import { sortClasses, type DataSource, type DatasetSchema, type LoadedSplit, type SourceOptions, type Split } from './data-source.ts';
import { describeExamples, loadExamples, yieldToLoop, type Example, type ExampleSet } from './example-set.ts';
import { decodeImage } from './image-decode.ts';
import { convertChannels, resizeBilinear } from './resize.ts';

/** Every file under `dir` (depth-first, sorted, hidden files left out), as paths relative to `dir`. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = (await readdir(d, { withFileTypes: true })).filter((e) => !e.name.startsWith('.')).sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (e.isFile()) out.push(relative(dir, join(d, e.name)));
    }
  };
  await walk(dir);
  return out;
}

export async function classFolders(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
  } catch (err) {
    throw new CohortError('COHORT_ERR_DATA_PARSE', `cannot read ${dir}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** Applies the dataset's normalization to pixels already in [0, 1]. */
export function normalizePixels(x: Float32Array, channels: number, normalize: ImagesDatasetConfig['normalize']): Float32Array {
  if (normalize === 'scale') return x;
  for (let i = 0; i < x.length; i++) {
    const c = i % channels;
    x[i] = (x[i]! - (normalize.mean[c] ?? normalize.mean[0]!)) / (normalize.std[c] ?? normalize.std[0]!);
  }
  return x;
}

export class ImageFolderSource implements DataSource {
  private set: Promise<ExampleSet> | undefined;

  constructor(private readonly dir: string, private readonly cfg: ImagesDatasetConfig, private readonly opts: SourceOptions) {}

  private read(): Promise<ExampleSet> {
    this.set ??= (async () => {
      const folders = await classFolders(this.dir);
      const classes = this.opts.classes ? [...this.opts.classes] : this.cfg.classes ?? sortClasses(folders);
      if (classes.length < 2) throw new CohortError('COHORT_ERR_DATA_SCHEMA', `${this.dir} needs one sub-folder per class (at least two); found ${folders.length}`);
      const [h, w, c] = this.cfg.shape;
      const examples: Example[] = [];
      const fileClasses: number[] = [];
      const skipped = new Map<string, number>();
      // Images in a folder that is not one of the classes are not examples; say how many were left out.
      for (const f of folders.filter((x) => !classes.includes(x))) {
        const n = (await listFiles(join(this.dir, f))).length;
        if (n) skipped.set('COHORT_ERR_DATA_SCHEMA', (skipped.get('COHORT_ERR_DATA_SCHEMA') ?? 0) + n);
      }
      for (const [k, cls] of classes.entries()) {
        if (!folders.includes(cls)) continue; // a declared class this site has no images of
        const files = await listFiles(join(this.dir, cls));
        for (const f of files) {
          const file = fileClasses.length;
          fileClasses.push(k);
          try {
            const img = decodeImage(new Uint8Array(await readFile(join(this.dir, cls, f))), f);
            const pixels = convertChannels(img.rgb, img.width * img.height, 3, c);
            examples.push({ file, y: k, x: normalizePixels(resizeBilinear(pixels, img.height, img.width, c, h, w), c, this.cfg.normalize) });
          } catch (err) {
            const code: ErrorCode = err instanceof CohortError ? err.code : 'COHORT_ERR_DATA_CORRUPT';
            skipped.set(code, (skipped.get(code) ?? 0) + 1);
          }
          if (file % 64 === 63) await yieldToLoop();
        }
      }
      return { kind: 'images', label: this.cfg.label, classes, shape: [h, w, c], fileClasses: Int32Array.from(fileClasses), examples, skipped };
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
