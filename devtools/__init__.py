"""Local tooling: the AWS emulator wiring, the demo model, the main job and the benchmark."""
