#!/usr/bin/env bash
# Debian programs the integration tests and benchmarks start: dcmtk (storescu, dcmdump ...),
# dicom3tools (dciodvfy, the independent DICOM validator), dcm2niix (benchmark baseline) and Orthanc (the
# PACS the DICOM node tests talk to; its packaged service is stopped and disabled, the tests start their own)
# and Chromium (the web page is tested in it, headless, driven by Playwright with this executable).
# Installs only what is missing; needs root (CI and our machines run as root).
set -euo pipefail
needed=()
command -v dcmdump  >/dev/null 2>&1 || needed+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || needed+=(dicom3tools)
command -v dcm2niix >/dev/null 2>&1 || needed+=(dcm2niix)
command -v Orthanc  >/dev/null 2>&1 || needed+=(orthanc)
command -v chromium >/dev/null 2>&1 || needed+=(chromium)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || needed+=(orthanc-dicomweb)
if [ ${#needed[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing Debian packages ${needed[*]}; install them as root: apt-get install ${needed[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${needed[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
