// Worker threads start here: register tsx's loader (workers do not inherit the parent's), then run the TypeScript.
import { register } from 'tsx/esm/api';

register();
await import('./site-worker.ts');
