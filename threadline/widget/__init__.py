"""The embeddable chat widget: `/widget.js`, the visitor API under `/widget/api/`, a demo page."""
