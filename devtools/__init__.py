"""Local tooling: the local stand-in for AWS (``devtools.local``), the demo models, the main job and the benchmark."""
