# shellcheck shell=bash
# Source this file (bash) to use core3d from this checkout:
#   source scripts/env.sh
# It puts the virtual environment (.venv, made by scripts/setup.sh) and the colcon install space
# (install/core3d: the generated core3d.msg / core3d.srv modules and their typesupport libraries)
# on PATH, PYTHONPATH, LD_LIBRARY_PATH and AMENT_PREFIX_PATH. Sourcing it twice is harmless.
# The Python package core3d_ros itself comes from the source tree (editable install in .venv).

_core3d_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_core3d_venv="$_core3d_root/.venv"
_core3d_prefix="$_core3d_root/install/core3d"
_core3d_tools="$_core3d_root/install/ros2-tools"  # ROS 2 test tooling (setup.sh, step 5), if built

# _core3d_prepend VAR DIR: put DIR in front of the colon list VAR unless it is already there.
_core3d_prepend() {
  local _cur
  eval "_cur=\${$1:-}"
  case ":$_cur:" in
    *":$2:"*) ;;
    *) if [ -n "$_cur" ]; then export "$1=$2:$_cur"; else export "$1=$2"; fi ;;
  esac
}

export VIRTUAL_ENV="$_core3d_venv"
unset PYTHONHOME
_core3d_prepend PATH "$_core3d_venv/bin"

# Shared libraries of the ROS wheels: the same set the wheels' own bootstrap module would add
# (it re-executes the interpreter with them); setting them here, in a fixed order, spares that.
for _core3d_d in "$_core3d_venv"/lib/python3*/site-packages/ros_*.libs; do
  [ -d "$_core3d_d" ] && _core3d_prepend LD_LIBRARY_PATH "$_core3d_d"
done
_core3d_prepend LD_LIBRARY_PATH "$_core3d_venv/lib"
if [ -d "$_core3d_tools/lib" ]; then _core3d_prepend LD_LIBRARY_PATH "$_core3d_tools/lib"; fi
_core3d_prepend LD_LIBRARY_PATH "$_core3d_prefix/lib"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1

# Generated interface modules (core3d.msg, core3d.srv; tf2_msgs, tf2_ros, message_filters, ...).
for _core3d_d in "$_core3d_tools"/lib/python3*/site-packages "$_core3d_prefix"/lib/python3*/site-packages; do
  [ -d "$_core3d_d" ] && _core3d_prepend PYTHONPATH "$_core3d_d"
done

# The ament index: message packages in the venv, core3d in the install space (typesupport lookup).
# The ros2 CLI finds its verbs and `ros2 launch` finds packages through this index too; the
# pip-installed tools registered themselves in .venv/share.
_core3d_prepend AMENT_PREFIX_PATH "$_core3d_venv"
if [ -d "$_core3d_tools/share" ]; then _core3d_prepend AMENT_PREFIX_PATH "$_core3d_tools"; fi
_core3d_prepend AMENT_PREFIX_PATH "$_core3d_prefix"

# ROS 2 defaults for a development machine: the one RMW that is installed, and discovery kept on
# this host. The domain id is left to the caller (tests pick their own).
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export CORE3D_ROOT="$_core3d_root"

unset _core3d_root _core3d_venv _core3d_prefix _core3d_tools _core3d_d
unset -f _core3d_prepend
