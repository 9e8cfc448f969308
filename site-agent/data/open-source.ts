/** The data source for a dataset registered in site.json. */
import { resolveIn, type DatasetConfig } from '../config.ts';
import { CsvSource } from './csv-source.ts';
import type { DataSource, SourceOptions } from './data-source.ts';
import { DicomFolderSource } from './dicom-source.ts';
import { ImageFolderSource } from './image-source.ts';

/** Paths in `cfg` are relative to the site directory `dir`; the DICOM labels file is relative to `dir` too. */
export function openDataSource(dir: string, cfg: DatasetConfig, opts: SourceOptions): DataSource {
  switch (cfg.kind) {
    case 'csv':
      return new CsvSource(resolveIn(dir, cfg.path), cfg, opts);
    case 'images':
      return new ImageFolderSource(resolveIn(dir, cfg.path), cfg, opts);
    case 'dicom':
      return new DicomFolderSource(resolveIn(dir, cfg.path), resolveIn(dir, cfg.labels), cfg, opts);
  }
}
