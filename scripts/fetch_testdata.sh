#!/usr/bin/env bash
# Real reference files that tests compare against, taken from Debian packages (never from the
# network at run time). Unpacked without installing (metview's real install pulls Qt):
#   .testdata/metview/usr/share/mir/masks/lsm.O320.grib   IFS O320 land-sea mask (grid check)
#   .testdata/ncarg/usr/share/ncarg/data/nug/*.nc          EURO-CORDEX EUR-11 rotated grid
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/.testdata}"
mkdir -p "$dest"
fetch() {  # fetch PACKAGE DIR FILE-THAT-PROVES-IT
  local pkg="$1" dir="$dest/$2" probe="$3"
  [ -e "$dir/$probe" ] && return 0
  local tmp; tmp="$(mktemp -d)"; chmod 777 "$tmp"
  (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) || {
    apt-get update -qq >/dev/null && (cd "$tmp" && apt-get download "$pkg" >/dev/null); }
  rm -rf "$dir.partial"; dpkg -x "$tmp"/"$pkg"_*.deb "$dir.partial"
  rm -rf "$dir"; mv "$dir.partial" "$dir"; rm -rf "$tmp"
}
fetch metview metview usr/share/mir/masks/lsm.O320.grib
fetch libncarg-data ncarg usr/share/ncarg/data/nug/HSURF_regional_model_0.11deg.nc
echo "test data in $dest"
