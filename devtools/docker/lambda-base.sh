#!/usr/bin/env bash
# Build a local stand-in for public.ecr.aws/lambda/python:3.11, which cannot be pulled here,
# and tag it with the public name so the functions' Dockerfiles build unchanged.
#
# Like AWS's image it holds Python and the Lambda runtime interface client only: Debian bookworm
# (Python 3.11) from debootstrap, a venv at /var/lang, awslambdaric. Nothing of the project's stack.
#
# Builds cannot download inside a container, so the Dockerfiles' own pinned `pip install` is fed
# from a wheelhouse: `pip download` of every pinned requirement on the host, into
# .cache/wheelhouse (ignored by git). The stand-in carries one pip setting, /etc/pip.conf, that
# sends pip to that wheelhouse over HTTP at the docker bridge's gateway address, where
# devtools/containers.py serves it while `sam build` runs (docker's classic builder runs RUN steps
# on the default bridge). On AWS the real base image has no such file and the same Dockerfiles
# install from PyPI.
set -euo pipefail
TAG=public.ecr.aws/lambda/python:3.11
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
WHEELHOUSE=$REPO/.cache/wheelhouse
PORT=${EXPLAIN_WHEELHOUSE_PORT:-47591}
# The default bridge's gateway. Some engines (Debian's docker.io 26+ on a fresh start) report only
# the subnet; the gateway is then the subnet's first address, which docker0 carries.
GATEWAY=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}')
if [ -z "$GATEWAY" ]; then
  SUBNET=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Subnet}}')
  GATEWAY=$(python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$SUBNET")
fi
if [ -z "$GATEWAY" ]; then
  echo "ERROR: no gateway address for docker's default bridge (docker network inspect bridge)" >&2
  exit 1
fi
INDEX=http://$GATEWAY:$PORT/
FUNCTION_REQUIREMENTS=$(ls functions/*/requirements.txt)
REQUIREMENTS="layers/requirements-ml.txt layers/requirements-aws.txt layers/requirements-nodeps.txt $FUNCTION_REQUIREMENTS"
AWSLAMBDARIC=awslambdaric==3.1.1

# The wheelhouse: every pinned requirement with its dependencies, as binary wheels for CPython
# 3.11 on glibc 2.36 (bookworm). Downloaded again only when a requirements file changes.
WHEELS_RECIPE=$(cat $REQUIREMENTS | sha256sum | cut -c1-16)-$AWSLAMBDARIC
if [ "$(cat "$WHEELHOUSE/.recipe" 2>/dev/null)" != "$WHEELS_RECIPE" ]; then
  echo "downloading the wheelhouse into $WHEELHOUSE"
  rm -rf "$WHEELHOUSE.partial"
  mkdir -p "$WHEELHOUSE.partial"
  PLATFORMS=$(for minor in $(seq 17 36); do printf -- '--platform manylinux_2_%s_x86_64 ' "$minor"; done)
  TARGET="--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 $PLATFORMS --platform manylinux2014_x86_64"
  python3 -m pip download --quiet $TARGET --dest "$WHEELHOUSE.partial" $AWSLAMBDARIC \
    -r layers/requirements-ml.txt -r layers/requirements-aws.txt $(printf -- '-r %s ' $FUNCTION_REQUIREMENTS)
  python3 -m pip download --quiet $TARGET --no-deps --dest "$WHEELHOUSE.partial" -r layers/requirements-nodeps.txt
  echo "$WHEELS_RECIPE" >"$WHEELHOUSE.partial/.recipe"
  rm -rf "$WHEELHOUSE"
  mv "$WHEELHOUSE.partial" "$WHEELHOUSE"
fi

RECIPE=$(cat devtools/docker/lambda-base.sh | sha256sum | cut -c1-16)-$INDEX
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

echo "installing the runtime into /var/lang"
cp -al "$WHEELHOUSE" "$ROOT/tmp/wheels" 2>/dev/null || cp -a "$WHEELHOUSE" "$ROOT/tmp/wheels"
chroot "$ROOT" /usr/bin/python3 -m venv /var/lang
chroot "$ROOT" /usr/bin/env -u PIP_FIND_LINKS /var/lang/bin/pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheels $AWSLAMBDARIC
# pip's global configuration: the wheelhouse served by devtools/containers.py during builds.
cat >"$ROOT/etc/pip.conf" <<CONF
# Local stand-in only (devtools/docker/lambda-base.sh): builds install from the project's
# wheelhouse, served while \`sam build\` runs. AWS's image has no such file.
[global]
no-index = true
find-links = $INDEX
trusted-host = $GATEWAY:$PORT
CONF
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
  --change "LABEL explain.wheelhouse=$INDEX" \
  - "$TAG" >/dev/null
docker image ls "$TAG"
