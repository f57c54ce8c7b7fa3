#!/usr/bin/env bash
# Build a local stand-in for public.ecr.aws/lambda/python:3.11, which cannot be pulled here,
# and tag it with the public name so the functions' Dockerfiles build unchanged.
#
# Debian bookworm (Python 3.11) from debootstrap, a venv at /var/lang like the AWS image, and
# the Lambda runtime interface client. Builds cannot download inside a container, so the
# pinned heavy stack (layers/requirements-*.txt) is installed here from wheels downloaded on the
# host, and so are the functions' own pinned requirements (functions/*/requirements.txt): the
# Dockerfiles' pinned `pip install` then finds them satisfied and never needs an index.
# On AWS the real base image has none of it and the same Dockerfiles install it from PyPI.
set -euo pipefail
TAG=public.ecr.aws/lambda/python:3.11
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
FUNCTION_REQUIREMENTS=$(ls functions/*/requirements.txt)
RECIPE=$(cat devtools/docker/lambda-base.sh layers/requirements-ml.txt layers/requirements-aws.txt \
  layers/requirements-nodeps.txt layers/slim-site-packages.sh $FUNCTION_REQUIREMENTS | sha256sum | cut -c1-16)

if [ "$(docker image inspect "$TAG" --format '{{ index .Config.Labels "explain.recipe" }}' 2>/dev/null)" = "$RECIPE" ]; then
  echo "$TAG stand-in is up to date ($RECIPE)"
  exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

WORK=$(mktemp -d /var/tmp/lambda-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
echo "debootstrap bookworm into $ROOT"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" \
  http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log"; exit 1; }

echo "downloading wheels on the host"
mkdir -p "$ROOT/tmp/wheels"
python3 -m pip download --quiet --only-binary=:all: --dest "$ROOT/tmp/wheels" \
  -r layers/requirements-ml.txt -r layers/requirements-aws.txt awslambdaric==3.1.1 \
  $(printf -- '-r %s ' $FUNCTION_REQUIREMENTS)
python3 -m pip download --quiet --only-binary=:all: --no-deps --dest "$ROOT/tmp/wheels" \
  -r layers/requirements-nodeps.txt
cp layers/requirements-*.txt layers/slim-site-packages.sh "$ROOT/tmp/"
for requirements in $FUNCTION_REQUIREMENTS; do
  cp "$requirements" "$ROOT/tmp/function-$(basename "$(dirname "$requirements")")-requirements.txt"
done

echo "installing the runtime into /var/lang"
chroot "$ROOT" /usr/bin/python3 -m venv /var/lang
chroot "$ROOT" /var/lang/bin/pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheels \
  awslambdaric==3.1.1 -r /tmp/requirements-ml.txt -r /tmp/requirements-aws.txt
chroot "$ROOT" /var/lang/bin/pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheels --no-deps \
  -r /tmp/requirements-nodeps.txt
# Each function's own requirements, as its Dockerfile installs them after the shared layer.
for requirements in "$ROOT"/tmp/function-*-requirements.txt; do
  chroot "$ROOT" /var/lang/bin/pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheels \
    -r "/tmp/$(basename "$requirements")"
done
# The same clean-up the Dockerfiles run after their install, so sizes measure what AWS builds.
chroot "$ROOT" /bin/sh /tmp/slim-site-packages.sh /var/lang/bin/python
rm -rf "$ROOT"/tmp/* "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
mkdir -p "$ROOT/var/task" "$ROOT/var/runtime"

echo "importing $TAG"
tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin' \
  --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
  --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
  --change 'WORKDIR /var/task' \
  --change 'ENTRYPOINT ["/var/lang/bin/python", "-m", "awslambdaric"]' \
  --change "LABEL explain.recipe=$RECIPE" \
  - "$TAG" >/dev/null
docker image ls "$TAG"
