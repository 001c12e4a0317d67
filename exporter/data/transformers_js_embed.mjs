// Embeds texts with transformers.js's feature-extraction pipeline, as a user's Node program does.
// Usage: node transformers_js_embed.mjs REQUEST.json  (written by exporter.quality.consumers)
// REQUEST: {modules, local_model_path, name, model_file_name, pooling, normalize, batch, texts}
// Prints one JSON line: the embeddings, [n][dim]. Library chatter goes to stderr.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
// Resolve the package from the folder it was installed in (an ESM import ignores NODE_PATH).
const require = createRequire(join(request.modules, "package.json"));
const entry = require.resolve("@huggingface/transformers");
const { env, pipeline } = await import(pathToFileURL(entry.replace(/\.cjs$/, ".mjs")).href);

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = request.local_model_path;
const log = console.log;
console.log = (...args) => console.error(...args);

const extractor = await pipeline("feature-extraction", request.name, {
  dtype: "fp32",
  model_file_name: request.model_file_name,
  device: "cpu",
});
const rows = [];
for (let i = 0; i < request.texts.length; i += request.batch) {
  const out = await extractor(request.texts.slice(i, i + request.batch), {
    pooling: request.pooling,
    normalize: request.normalize,
  });
  rows.push(...out.tolist());
}
log(JSON.stringify(rows));
