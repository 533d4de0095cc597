// Validate Prometheus Operator objects (ServiceMonitor, PrometheusRule) against
// their CRD schemas, as compiled by the npm package
// @kubernetes-models/prometheus-operator: types, required fields, patterns
// (durations, for one). Unknown fields are not errors there, as the API server
// prunes them. Used by scripts/check_deploy.sh.
//
//   node scripts/validate_crs.mjs PACKAGE_DIR OBJECTS.json
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [packageDir, objectsFile] = process.argv.slice(2);
const models = await import(pathToFileURL(`${packageDir}/monitoring.coreos.com/v1/index.js`));
let failed = 0;
for (const object of JSON.parse(readFileSync(objectsFile, "utf8"))) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = object.apiVersion === "monitoring.coreos.com/v1" ? models[object.kind] : undefined;
  try {
    if (!Model) throw new Error(`no schema for ${object.apiVersion} ${object.kind}`);
    new Model(object).validate();
    console.log(`${objectsFile}: ${name} is valid`);
  } catch (error) {
    console.error(`${objectsFile}: ${name}: ${error.message}`);
    failed += 1;
  }
}
process.exit(failed ? 1 : 0);
