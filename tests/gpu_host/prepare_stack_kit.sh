#!/bin/bash
# Run HERE (a machine with pip, npm and apt), in the root of the checkout, before the whole-stack
# run on the GPU machine (tests/gpu_host/stack.py says how to run it). Fills, all git-ignored:
#   .gpukit/                      ../shared/gpu-kit/prepare.sh: Docker Engine 26 for that machine
#   .gpukit/gpuhost-site.tar.xz   JupyterHub, DockerSpawner, Jupyter Server, ipykernel and their
#                                 needs, for its Python 3.12 (the host's own PyTorch is used)
#   .gpunode/node-chp.tar.xz      Debian bookworm's Node.js 18 (as the proxy image has) with its
#                                 libraries, and configurable-http-proxy 4.6.3's node_modules
# The two parts travel in two calls (together they are over the 64 MiB a call may send).
#
#   bash tests/gpu_host/prepare_stack_kit.sh            the kit for the GPU machine
#   bash tests/gpu_host/prepare_stack_kit.sh --local    /tmp/gpuhost-local/site for a dry run
#                                                        here (this machine's Python, fake GPUs)
set -euo pipefail
[ -d .git ] && [ -f tests/gpu_host/stack.py ] || { echo "run this in the root of the checkout"; exit 1; }

shared="${GPUHOST_SHARED:-$(cd .. && pwd)/shared}"

# The versions the images install (images/hub/requirements.txt, images/singleuser/requirements.txt;
# the rest as pip resolves them today), less what the test machine's Python already has
# (requests, jinja2, pyyaml, packaging, prometheus-client, python-dateutil, anyio, attrs, pygments,
# nvidia-ml-py, ...; the image the test machine runs lists them) and less what nothing here imports:
# JupyterLab and nbconvert (the REST API and kernels need neither), debugpy and jedi (optional to
# ipykernel and IPython), cryptography/certipy (internal SSL only), argon2 (password login only),
# terminado (terminals).
SITE_PACKAGES="jupyterhub==6.1.1 dockerspawner==14.0.0 docker==7.2.0 escapism==1.1.0
 aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aiosignal==1.4.0 frozenlist==1.8.0 multidict==7.2.1
 yarl==1.25.1 propcache==0.5.4 aiodns==4.0.4 pycares==5.2.1 cffi==2.1.1 pycparser==3.12
 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 oauthlib==4.0.1 pamela==1.2.0
 pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5
 typing_extensions==4.16.0 traitlets==5.16.1 tornado==6.6.1 jupyter_events==0.12.1
 jsonschema==4.26.0 jsonschema_specifications==2025.9.1 referencing==0.37.0 rpds_py==2026.9.1
 python_json_logger==4.2.0 rfc3339_validator==0.1.4 rfc3986_validator==0.1.1
 jupyter_server==2.21.1 jupyter_client==8.10.0 jupyter_core==5.9.1 platformdirs==4.14.8
 pyzmq==27.3.0 ipykernel==7.4.0 comm==0.2.3 ipython==9.18.1 ipython_pygments_lexers==1.1.1
 matplotlib_inline==0.2.2 nest_asyncio2==1.7.4 pexpect==4.9.0 ptyprocess==0.7.0
 prompt_toolkit==3.0.53 wcwidth==0.9.4 stack_data==0.6.3 asttokens==3.0.2 executing==2.3.0
 pure_eval==0.2.4 nbformat==5.11.1 fastjsonschema==2.22.3 send2trash==2.2.0
 websocket_client==1.9.2 psutil==7.2.2 overrides==7.7.0"
# What the GPU machine's Python has and this one's may not: only for the dry run here.
HOST_HAS="requests urllib3 idna certifi charset_normalizer jinja2 markupsafe packaging
 prometheus_client python_dateutil six pyyaml attrs pygments anyio nvidia-ml-py==13.615.71"

site_for() {  # site_for PYTHON_VERSION DIR PACKAGES...
  local py="$1" dir="$2"; shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  python3 -m pip install -q --root-user-action=ignore --no-deps --no-compile --only-binary=:all: --python-version "$py" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
    --platform manylinux1_x86_64 --target "$dir" "$@" 2>&1 | grep -v "is ignored: it is neither" || true
  # Only the hub's pages use its static files; keep the two folders it looks for (jupyterhub/_data.py).
  local static="$dir/share/jupyterhub/static/components"
  find "$static" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  find "$dir" -depth \( -name tests -o -name __pycache__ \) -type d -exec rm -rf {} +
  rm -rf "$dir/bin"
}

if [ "${1:-}" = "--local" ]; then
  # shellcheck disable=SC2086
  site_for "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" /tmp/gpuhost-local/site $SITE_PACKAGES $HOST_HAS
  du -sh /tmp/gpuhost-local/site
  exit 0
fi

bash "$shared/gpu-kit/prepare.sh"
grep -qx '/.gpunode/' .git/info/exclude || echo '/.gpunode/' >> .git/info/exclude
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

# shellcheck disable=SC2086
site_for 3.12 "$tmp/site" $SITE_PACKAGES
tar -C "$tmp" -cf - site | xz -T0 -9 > .gpukit/gpuhost-site.tar.xz

mkdir -p .gpunode "$tmp/debs" "$tmp/root" "$tmp/pack/node/bin" "$tmp/pack/node/lib" "$tmp/pack/node/share"
(cd "$tmp/debs" && apt-get download -qq nodejs=18.20.4+dfsg-1~deb12u3 libnode108=18.20.4+dfsg-1~deb12u3 \
  libicu72 libuv1 libc-ares2 libnghttp2-14 libbrotli1 node-acorn node-cjs-module-lexer node-undici 2>&1 \
  | grep -v unsandboxed || true)
for f in "$tmp"/debs/*.deb; do dpkg -x "$f" "$tmp/root"; done
cp "$tmp/root/usr/bin/node" "$tmp/pack/node/bin/"
lib="$tmp/root/usr/lib/x86_64-linux-gnu"
cp -a "$lib"/libnode.so.108 "$lib"/libicu{uc,i18n,data}.so.72* "$lib"/libuv.so.1* "$lib"/libcares.so.2* \
  "$lib"/libnghttp2.so.14* "$lib"/libbrotli*.so.1* "$tmp/pack/node/lib/"
# Debian's Node.js loads some of its built-in modules from /usr/share/nodejs (stack.py links it)
cp -a "$tmp/root/usr/share/nodejs" "$tmp/pack/node/share/" && rm -rf "$tmp/pack/node/share/nodejs/@types"
npm install --prefix "$tmp/chp" --no-fund --no-audit --omit=dev configurable-http-proxy@4.6.3 >/dev/null
mv "$tmp/chp/node_modules" "$tmp/pack/node_modules" && rm -rf "$tmp/pack/node_modules/@types"
tar -C "$tmp/pack" -cf - . | xz -T0 -9 > .gpunode/node-chp.tar.xz
du -sh .gpukit .gpunode .gpukit/gpuhost-site.tar.xz .gpunode/node-chp.tar.xz
