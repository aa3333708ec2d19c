// Vendors the inbox's front-end libraries from npm into threadline/ui/static/vendor/, as
// plain ES modules the browser loads without a build step, with their licences and types.
//
//   node frontend/vendor.mjs              fetch the pinned versions below and rewrite vendor/
//   node frontend/vendor.mjs --check      fail when vendor/ differs from what they give
//
// To update: change a version in PACKAGES, run the script, run the browser tests, commit.
// Bare imports ("preact", "preact/hooks", "@preact/signals-core") are rewritten to relative
// paths: the page's Content-Security-Policy allows no inline script, so no import map.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGES = {
  preact: "11.2.0",
  htm: "3.1.1",
  "@preact/signals-core": "1.14.5",
  "@preact/signals": "2.11.4",
};

// [package, file in the package, file under vendor/]
const FILES = [
  ["preact", "LICENSE", "preact/LICENSE"],
  ["preact", "dist/preact.mjs", "preact/index.js"],
  ["preact", "hooks/dist/hooks.mjs", "preact/hooks.js"],
  ["preact", "src/index.d.ts", "preact/index.d.ts"],
  ["preact", "src/jsx.d.ts", "preact/jsx.d.ts"],
  ["preact", "src/dom.d.ts", "preact/dom.d.ts"],
  ["preact", "hooks/src/index.d.ts", "preact/hooks.d.ts"],
  ["htm", "LICENSE", "htm/LICENSE"],
  ["htm", "dist/htm.module.js", "htm/index.js"],
  ["htm", "dist/htm.d.ts", "htm/index.d.ts"],
  ["@preact/signals-core", "LICENSE", "signals-core/LICENSE"],
  ["@preact/signals-core", "dist/signals-core.module.js", "signals-core/index.js"],
  ["@preact/signals-core", "dist/signals-core.d.ts", "signals-core/index.d.ts"],
  ["@preact/signals", "LICENSE", "signals/LICENSE"],
  ["@preact/signals", "dist/signals.module.js", "signals/index.js"],
  ["@preact/signals", "dist/signals.d.ts", "signals/index.d.ts"],
];

// Import specifiers as each vendored file sees its neighbours.
const REWRITES = {
  "preact/index.js": {},
  "preact/hooks.js": { preact: "./index.js" },
  "preact/hooks.d.ts": { "../../src/index": "./index.js" },
  "signals/index.js": {
    preact: "../preact/index.js",
    "preact/hooks": "../preact/hooks.js",
    "@preact/signals-core": "../signals-core/index.js",
  },
  "signals/index.d.ts": {
    preact: "../preact/index.js",
    "preact/hooks": "../preact/hooks.js",
    "@preact/signals-core": "../signals-core/index.js",
  },
};

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "threadline", "ui", "static", "vendor");
const check = process.argv.includes("--check");

function rewrite(target, text) {
  let out = text.replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n");
  for (const [from, to] of Object.entries(REWRITES[target] || {})) {
    const quoted = from.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    out = out.replace(new RegExp(`(from\\s*|import\\s*\\(\\s*)(["'])${quoted}\\2`, "g"), `$1$2${to}$2`);
  }
  return out;
}

function readme() {
  const lines = Object.entries(PACKAGES).map(([name, version]) => `- \`${name}\` ${version}`);
  return `# Vendored front-end libraries

Written by \`node frontend/vendor.mjs\` from the npm registry; do not edit by hand. The inbox
loads them as ES modules (no build step, nothing from another host). Each folder keeps its
package's LICENSE, and the package's type declarations for \`tsc --checkJs\`.

${lines.join("\n")}

To update, change the versions at the top of \`frontend/vendor.mjs\`, run it, run the
browser tests (\`tests/browser/\`) and commit this folder. \`node frontend/vendor.mjs --check\`
fails when this folder differs from what the pinned versions give.
`;
}

const work = mkdtempSync(join(tmpdir(), "threadline-vendor-"));
try {
  const unpacked = {};
  for (const [name, version] of Object.entries(PACKAGES)) {
    const out = execFileSync("npm", ["pack", `${name}@${version}`, "--silent", "--pack-destination", work], {
      encoding: "utf8",
    }).trim();
    const dir = join(work, name.replace("/", "__"));
    mkdirSync(dir);
    execFileSync("tar", ["xzf", join(work, out.split("\n").pop()), "-C", dir]);
    unpacked[name] = join(dir, "package");
  }
  const wanted = new Map(
    FILES.map(([name, from, to]) => [to, rewrite(to, readFileSync(join(unpacked[name], from), "utf8"))]),
  );
  wanted.set("README.md", readme());
  if (check) {
    const stale = [...wanted].filter(([to, text]) => {
      try {
        return readFileSync(join(vendor, to), "utf8") !== text;
      } catch {
        return true;
      }
    });
    if (stale.length) {
      console.error(`vendor/ differs from the pinned packages: ${stale.map(([to]) => to).join(", ")}`);
      process.exit(1);
    }
  } else {
    rmSync(vendor, { recursive: true, force: true });
    for (const [to, text] of wanted) {
      mkdirSync(dirname(join(vendor, to)), { recursive: true });
      writeFileSync(join(vendor, to), text);
    }
    console.log(`vendored ${Object.keys(PACKAGES).length} packages into ${vendor}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
