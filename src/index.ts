// Entry point of the action (bundled into dist/index.js, which action.yml runs).
import { run } from './main';

void run();
