# Shared setup for scripts/: installs missing Debian packages and builds the project.
# Sourced, not run. Works on a fresh Debian 12 machine as root (or with sudo).

MOE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MOE_BUILD="${MOE_BUILD:-$MOE_ROOT/build}"

MOE_PACKAGES=(build-essential cmake ninja-build pkg-config libabsl-dev nlohmann-json3-dev
              libgtest-dev libgmock-dev libpcre2-dev libicu-dev
              # moe-server: gRPC + protobuf, the metrics port's HTTP library, and what the
              # server tests' Python client needs (stubs are made with protoc's gRPC plugin).
              libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
              libcpp-httplib-dev python3 python3-grpcio python3-protobuf
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
