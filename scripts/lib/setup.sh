# Shared setup for scripts/: installs missing Debian packages and builds the project.
# Sourced, not run. Works on a fresh Debian 12 machine as root (or with sudo).

MOE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MOE_BUILD="${MOE_BUILD:-$MOE_ROOT/build}"

MOE_PACKAGES=(build-essential cmake ninja-build pkg-config libabsl-dev nlohmann-json3-dev
              libgtest-dev libgmock-dev libpcre2-dev libicu-dev
              # moe-server: gRPC + protobuf, the server tests' HTTP client library, and what
              # the server tests' Python client needs (stubs are made with protoc's gRPC plugin).
              libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
              libcpp-httplib-dev python3 python3-grpcio python3-protobuf
              # The HTTP server (Boost.Beast, OpenSSL for HTTPS), the OpenAI API tests' venv
              # and curl, and openssl to make the TLS tests' throwaway CA.
              libboost-dev libssl-dev openssl python3-venv curl
              # Expert parallelism across processes: mpirun and the MPI communicator.
              libopenmpi-dev openmpi-bin python3-yaml)

moe_install_packages() {
  local missing=()
  for pkg in "${MOE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

moe_build() {
  if [ ! -f "$MOE_BUILD/build.ninja" ]; then
    cmake -S "$MOE_ROOT" -B "$MOE_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >&2
  fi
  cmake --build "$MOE_BUILD" -j "$(nproc)" >&2
}

# The venv of the OpenAI API tests (tests/openai/requirements.txt from PyPI), over Debian's
# grpcio and protobuf; remade when the requirements change.
moe_make_venv() {
  local venv="$MOE_BUILD/venv" requirements="$MOE_ROOT/tests/openai/requirements.txt"
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/requirements.txt"; then
    return 0
  fi
  echo "setup: making the test venv in $venv (pip install -r tests/openai/requirements.txt)" >&2
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$venv/requirements.txt"
}
