// Components are written with htm's tagged templates over Preact: no build step, the
// browser loads these modules as they are.
import htm from "./vendor/htm/index.js";
import { h } from "./vendor/preact/index.js";

/** `html\`<p class=${c}>${text}</p>\``: Preact elements; text in `${}` is never parsed as markup. */
export const html = htm.bind(h);
