#!/usr/bin/env node
'use strict';
// The CLI is bundled into dist/cli.js (npm run build); this file only starts it.
require('../dist/cli.js').runCli();
