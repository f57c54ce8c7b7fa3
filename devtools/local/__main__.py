"""``python -m devtools.local [--port 5055]``: the emulator in the foreground, wired from template.yaml."""

from devtools.local.aws import main

if __name__ == "__main__":
    main()
