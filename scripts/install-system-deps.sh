#!/usr/bin/env bash
# Debian programs the integration tests and benchmarks start: dcmtk (storescu, dcmdump ...),
# dicom3tools (dciodvfy, the independent DICOM validator) and dcm2niix (benchmark baseline).
# Installs only what is missing; needs root (CI and our machines run as root).
set -euo pipefail
needed=()
command -v dcmdump  >/dev/null 2>&1 || needed+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || needed+=(dicom3tools)
command -v dcm2niix >/dev/null 2>&1 || needed+=(dcm2niix)
if [ ${#needed[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing Debian packages ${needed[*]}; install them as root: apt-get install ${needed[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${needed[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
