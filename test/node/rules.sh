#!/usr/bin/env bash
# promtool test rules for deploy/prometheusrule.yaml: every alert fires on the
# condition it names and stays quiet otherwise (test/node/prometheusrule_test.yaml).
# The PrometheusRule's spec (its last key) is the rule file Prometheus would load.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../stack/lib.sh
source "$REPO/test/stack/lib.sh"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

[[ -x $LB_PROMTOOL_BIN ]] || "$HERE/install.sh" prometheus
tmp=$(mktemp -d /tmp/lifeboat-rules.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
awk 'f { sub(/^  /, ""); print } /^spec:/ { f = 1 }' "$REPO/deploy/prometheusrule.yaml" >"$tmp/prometheusrule.rules.yaml"
head -n1 "$tmp/prometheusrule.rules.yaml" | grep -qx 'groups:' ||
  die "deploy/prometheusrule.yaml: spec (with groups) must be its last key"
cp "$HERE/prometheusrule_test.yaml" "$tmp/"
"$LB_PROMTOOL_BIN" check rules "$tmp/prometheusrule.rules.yaml"
# Every alert of the file has a test.
# shellcheck disable=SC2013 # alert names are single words
for a in $(sed -n 's/^ *- alert: //p' "$tmp/prometheusrule.rules.yaml"); do
  grep -q "alertname: $a\$" "$HERE/prometheusrule_test.yaml" || die "alert $a has no test in test/node/prometheusrule_test.yaml"
done
"$LB_PROMTOOL_BIN" test rules "$tmp/prometheusrule_test.yaml"
