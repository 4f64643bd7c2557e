#!/usr/bin/env bash
# Set up (or bring up to date) the development environment of core3d in this checkout:
#   1. Debian packages the wheels need (only those missing);
#   2. .venv with the pinned Python dependencies (requirements.txt) and an editable install of
#      core3d_ros (the `core3d` command);
#   3. `colcon build` of the ROS 2 package (core3d.msg / core3d.srv) into install/;
#   4. when ../shared/ros2-src exists (CI, development machines): the ROS 2 tools PyPI does not
#      carry, built from a copy in build/ros2-src into .venv and install/ros2-tools: ros2 launch,
#      the ros2 CLI, rosidl_runtime_py, message_filters (Python), composition_interfaces, tf2,
#      tf2_msgs, tf2_py and tf2_ros_py. They are test tooling; a robot has them from apt.
# Each step is skipped when its inputs have not changed since it last succeeded, so a second run
# takes seconds and changes nothing. Use it through scripts/env.sh or scripts/in-env.
#
# Environment: CORE3D_PYTHON (interpreter for a new .venv; must be CPython 3.11, the ROS 2
# Kilted wheels are cp311), CORE3D_FORCE=1 (redo every step), CORE3D_ROS2_SRC (the ROS 2 tool
# sources; default ../shared/ros2-src; set it to an empty string to skip step 4).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
INSTALL="$ROOT/install"
PIP_STAMP="$VENV/.core3d-pip-stamp"
EDITABLE_STAMP="$VENV/.core3d-editable-stamp"
COLCON_STAMP="$INSTALL/.core3d-colcon-stamp"
FORCE="${CORE3D_FORCE:-0}"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
SECONDS=0

# A clean slate: nothing from a sourced scripts/env.sh or another ROS installation may leak into
# pip or the build (an install space on PYTHONPATH would look like an installed `core3d`).
unset PYTHONPATH PYTHONHOME AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH \
  _ROS_WHEELS_BOOTSTRAP_COMPLETE VIRTUAL_ENV || true
export PIP_DISABLE_PIP_VERSION_CHECK=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# ---------------------------------------------------------------- 1. Debian packages
missing=()
dpkg -s libusb-1.0-0 >/dev/null 2>&1 || missing+=(libusb-1.0-0)  # open3d needs it
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------- 2. virtual environment
# pip's configuration here names local index folders that do not all exist; drop those warnings.
quiet_pip() { grep -v 'is ignored: it is neither a file nor a directory' || true; }

# A usable .venv runs Python 3.11 and has pip (ensurepip is the last step of `python -m venv`, so
# an interrupted creation is caught here too).
venv_ok() {
  [ -x "$VENV/bin/python" ] \
    && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
    && "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}
if ! venv_ok; then
  py="${CORE3D_PYTHON:-}"
  if [ -z "$py" ]; then
    if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
  fi
  "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$py is not Python 3.11 (the ROS 2 Kilted wheels are cp311); set CORE3D_PYTHON"
  if [ -e "$VENV" ]; then
    log "removing the unusable $VENV"
    rm -rf "$VENV"
  fi
  log "creating $VENV with $("$py" -c 'import sys; print(sys.executable)')"
  "$py" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

req_hash="$(cat requirements.txt <("$PY" -VV) | sha256sum | cut -d' ' -f1)"
if [ "$FORCE" != 1 ] && [ -f "$PIP_STAMP" ] && [ "$(cat "$PIP_STAMP")" = "$req_hash" ]; then
  log "python packages up to date"
else
  rm -f "$PIP_STAMP" "$EDITABLE_STAMP"
  log "pip install -r requirements.txt"
  "$PY" -m pip install --progress-bar off -q -r requirements.txt 2>&1 | quiet_pip
  echo "$req_hash" >"$PIP_STAMP"
fi

editable_hash="$(cat pyproject.toml <(echo "$req_hash") | sha256sum | cut -d' ' -f1)"
if [ "$FORCE" != 1 ] && [ -f "$EDITABLE_STAMP" ] && [ "$(cat "$EDITABLE_STAMP")" = "$editable_hash" ] \
  && [ -x "$VENV/bin/core3d" ]; then
  log "editable install of core3d_ros up to date"
else
  rm -f "$EDITABLE_STAMP"
  log "pip install -e . (core3d_ros from this source tree, the core3d command)"
  PYTHONWARNINGS="ignore:Editable installation" \
    "$PY" -m pip install --progress-bar off -q --no-deps --no-build-isolation -e . 2>&1 | quiet_pip
  echo "$editable_hash" >"$EDITABLE_STAMP"
fi

# ---------------------------------------------------------------- 3. include paths of the wheels
# The ROS wheels' exported CMake targets name include folders of the machine they were built on.
# Point those paths at this interpreter's and numpy's include folders.
py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$PY" -c 'import numpy; print(numpy.get_include())')"
WHEEL_PY_INC=/opt/python/cp311-cp311/include/python3.11
WHEEL_NP_INC=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
link_dir() {  # link_dir LINK TARGET
  local link="$1" target="$2"
  if [ -d "$link" ] && [ ! -L "$link" ]; then return 0; fi  # a real folder: leave it alone
  if [ -L "$link" ] && [ "$(readlink -f "$link")" = "$(readlink -f "$target")" ]; then return 0; fi
  log "symlink $link -> $target"
  $SUDO mkdir -p "$(dirname "$link")"
  $SUDO ln -sfn "$target" "$link"
}
link_dir "$WHEEL_PY_INC" "$py_inc"
link_dir "$WHEEL_NP_INC" "$np_inc"

# ---------------------------------------------------------------- 4. colcon build
# Only the interfaces and the install rules are built; the Python code is imported from the
# source tree through the editable install, so editing it needs no rebuild.
colcon_hash="$(
  {
    find msg srv -type f | LC_ALL=C sort | xargs sha256sum
    sha256sum CMakeLists.txt package.xml
    find launch config -type f | LC_ALL=C sort   # installed as symlinks: names only
    echo "$req_hash"
  } | sha256sum | cut -d' ' -f1
)"
gen_py="$INSTALL/core3d/lib/python$PYVER/site-packages/core3d"
if [ "$FORCE" != 1 ] && [ -f "$COLCON_STAMP" ] && [ "$(cat "$COLCON_STAMP")" = "$colcon_hash" ] \
  && [ -e "$gen_py/msg/__init__.py" ] && [ -e "$gen_py/srv/__init__.py" ]; then
  log "colcon build up to date"
else
  rm -f "$COLCON_STAMP"
  log "colcon build"
  # --symlink-install: launch/ and config/ in share/core3d are links to the source files.
  # Python3_NumPy_INCLUDE_DIR: the link outside the source tree, since CMake refuses exported
  # include folders inside it (.venv lives in the source tree).
  if ! AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" \
    "$VENV/bin/colcon" build \
    --base-paths "$ROOT" --build-base "$ROOT/build" --install-base "$INSTALL" \
    --symlink-install \
    --event-handlers console_cohesion- status- summary+ \
    --cmake-args \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_NumPy_INCLUDE_DIR="$WHEEL_NP_INC" \
    -DCORE3D_INSTALL_PYTHON=OFF \
    -DBUILD_TESTING=OFF \
    2>&1 | { grep -v "doesn't contain any 'local_setup.\*' files" || true; }; then
    die "colcon build failed (see log/latest_build)"
  fi
  # Smoke test: the generated modules import in the environment that scripts/env.sh sets up.
  bash -c 'source scripts/env.sh && python -c "from core3d.msg import ObjectArray; from core3d.srv import Query"' \
    || die "core3d.msg / core3d.srv do not import after the build"
  echo "$colcon_hash" >"$COLCON_STAMP"
fi

# ---------------------------------------------------------------- 5. ROS 2 tools (test tooling)
# ros2 launch, the ros2 CLI, message_filters and tf2_ros are not on PyPI. Where their sources are
# beside this checkout (../shared/ros2-src, unmodified upstream snapshots), build them from a copy
# (never inside the shared folder, which may be read-only) so that the tests exercise the real
# tools. Pure-Python packages go into .venv (`ros2` lands in .venv/bin; their ament index entries
# in .venv/share); the CMake packages and message_filters go into install/ros2-tools, which
# scripts/env.sh adds to the environment.
ROS2_SRC="${CORE3D_ROS2_SRC-$ROOT/../shared/ros2-src}"
TOOLS_COPY="$ROOT/build/ros2-src"
TOOLS_PREFIX="$INSTALL/ros2-tools"
TOOLS_STAMP="$TOOLS_PREFIX/.core3d-tools-stamp"
TOOLS_PIP=(launch/launch launch/launch_xml launch/launch_yaml launch_ros/launch_ros
  launch_ros/ros2launch ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2run ros2cli/ros2topic
  ros2cli/ros2service ros2cli/ros2param ros2cli/ros2node ros2cli/ros2interface rosidl_runtime_py)
TOOLS_COLCON=(composition_interfaces tf2 tf2_msgs tf2_py tf2_ros_py)
if [ -z "$ROS2_SRC" ] || [ ! -d "$ROS2_SRC" ]; then
  log "no ROS 2 tool sources (${ROS2_SRC:-CORE3D_ROS2_SRC is empty}): ros2 launch, the ros2 CLI," \
    "message_filters and tf2_ros are not set up here (a robot has them from its ROS 2" \
    "installation, see README); the tests that need them skip"
else
  ROS2_SRC="$(cd "$ROS2_SRC" && pwd)"
  tools_hash="$(
    {
      (cd "$ROS2_SRC" && find . -type f -printf '%P %s\n' | LC_ALL=C sort)
      echo "${TOOLS_PIP[*]} ${TOOLS_COLCON[*]}"
      echo "$req_hash"
    } | sha256sum | cut -d' ' -f1
  )"
  if [ "$FORCE" != 1 ] && [ -f "$TOOLS_STAMP" ] && [ "$(cat "$TOOLS_STAMP")" = "$tools_hash" ] \
    && [ -x "$VENV/bin/ros2" ] && [ -e "$TOOLS_PREFIX/share/tf2_ros_py/package.xml" ]; then
    log "ROS 2 tools up to date"
  else
    t0=$SECONDS
    rm -f "$TOOLS_STAMP"
    log "copying $ROS2_SRC to build/ros2-src"
    rm -rf "$TOOLS_COPY" "$TOOLS_PREFIX" "$ROOT/build/ros2-tools"
    mkdir -p "$TOOLS_COPY"
    cp -r "$ROS2_SRC"/. "$TOOLS_COPY"/
    chmod -R u+w "$TOOLS_COPY"
    log "pip install launch, launch_ros, ros2cli (+ verbs), rosidl_runtime_py"
    (cd "$TOOLS_COPY" && "$PY" -m pip install --progress-bar off -q --no-deps --no-build-isolation \
      "${TOOLS_PIP[@]/#/./}" 2>&1 | quiet_pip)
    # message_filters' setup.py is catkin-era (distutils + catkin_pkg); its Python part is one
    # pure-Python package over rclpy, so it is copied as is.
    site="$TOOLS_PREFIX/lib/python$PYVER/site-packages"
    mkdir -p "$site"
    cp -r "$TOOLS_COPY/message_filters/src/message_filters" "$site/"
    log "colcon build ${TOOLS_COLCON[*]}"
    if ! AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" \
      "$VENV/bin/colcon" --log-base "$ROOT/log/ros2-tools" build \
      --base-paths "$TOOLS_COPY" --build-base "$ROOT/build/ros2-tools" --install-base "$TOOLS_PREFIX" \
      --merge-install --packages-select "${TOOLS_COLCON[@]}" \
      --event-handlers console_cohesion- status- summary+ \
      --cmake-args \
      -DPython3_EXECUTABLE="$PY" \
      -DPython3_NumPy_INCLUDE_DIR="$WHEEL_NP_INC" \
      -DBUILD_TESTING=OFF \
      2>&1 | { grep -v "doesn't contain any 'local_setup.\*' files" || true; }; then
      die "colcon build of the ROS 2 tools failed (see log/ros2-tools/latest_build)"
    fi
    # Smoke test: every tool imports and `ros2` finds its verbs through the ament index.
    bash -c 'source scripts/env.sh && python -c "
import launch, launch_ros, ros2launch, ros2cli, rosidl_runtime_py, message_filters
import composition_interfaces.srv, tf2_msgs.msg, tf2_py, tf2_ros
" && ros2 launch --help >/dev/null && ros2 param --help >/dev/null' \
      || die "the ROS 2 tools do not work after the build"
    echo "$tools_hash" >"$TOOLS_STAMP"
    log "ROS 2 tools built in $((SECONDS - t0))s"
  fi
fi

log "ready in ${SECONDS}s: source scripts/env.sh, or prefix commands with scripts/in-env"
