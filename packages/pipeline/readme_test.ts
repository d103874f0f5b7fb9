import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { configSchema } from "./config.ts";
import { builtinSteps } from "./builtins.ts";
import type { JsonSchema } from "./spec.ts";

/** Every property name anywhere in a JSON Schema (map keys excluded: they are free-form). */
function keys(schema: JsonSchema, out = new Set<string>()): Set<string> {
  const s = schema as Record<string, unknown>;
  for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, JsonSchema>)) {
    out.add(k);
    keys(v, out);
  }
  for (const sub of [s.items, s.additionalProperties, ...((s.anyOf ?? []) as unknown[])]) {
    if (sub && typeof sub === "object") keys(sub as JsonSchema, out);
  }
  return out;
}

Deno.test("README.md documents every config key and every step option", () => {
  const readme = Deno.readTextFileSync(fileURLToPath(new URL("../../README.md", import.meta.url)));
  const registry = builtinSteps();
  const missing = [...keys(configSchema(registry))].filter((k) => !readme.includes(`\`${k}\``));
  assert.deepEqual(missing, [], "add these keys to the README's config reference");
  for (const step of registry.list()) assert.ok(readme.includes(`**\`${step.name}\`**`), step.name);
});
