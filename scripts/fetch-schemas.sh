#!/usr/bin/env bash
# Fetch the pinned upstream schemas the tests validate manifests against (tests/schemas.py).
#
#   scripts/fetch-schemas.sh [DIR]      DIR: $VCUBE_SCHEMAS, else ../shared/schemas (from the repo root)
#
# Each file is the upstream repository's file at a release tag, as `git show TAG:PATH` prints it
# in a clone; here it comes from raw.githubusercontent.com/REPO/TAG/PATH and must match the first
# 16 hex digits of its sha256. Needs internet access to GitHub. CI runs this before `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-${VCUBE_SCHEMAS:-../shared/schemas}}

fetch() {  # REPO TAG PATH LOCAL SHA256-PREFIX
  mkdir -p "$(dirname "$dest/$4")"
  curl -fsSL --retry 3 "https://raw.githubusercontent.com/$1/$2/$3" -o "$dest/$4"
  got=$(sha256sum "$dest/$4" | cut -c1-16)
  [ "$got" = "$5" ] || { echo "error: $4: sha256 $got, expected $5 ($1 $2:$3)" >&2; exit 1; }
}

fetch argoproj/argo-workflows v4.1.2 api/jsonschema/schema.json argo-workflows/schema.json 3f84c5722c48a5aa
fetch argoproj/argo-workflows v4.1.2 manifests/base/crds/full/argoproj.io_workflows.yaml argo-workflows/argoproj.io_workflows.yaml 35ffc0d16c9c71db
fetch argoproj/argo-workflows v4.1.2 manifests/base/crds/full/argoproj.io_workflowtemplates.yaml argo-workflows/argoproj.io_workflowtemplates.yaml e932631a04a0f3a2
fetch argoproj/argo-workflows v4.1.2 manifests/base/crds/full/argoproj.io_clusterworkflowtemplates.yaml argo-workflows/argoproj.io_clusterworkflowtemplates.yaml 1a1e40dca1a544c4
fetch argoproj/argo-workflows v4.1.2 manifests/base/crds/full/argoproj.io_cronworkflows.yaml argo-workflows/argoproj.io_cronworkflows.yaml 31abde1c89c6c11c
fetch argoproj/argo-workflows v4.1.2 manifests/base/crds/full/argoproj.io_workfloweventbindings.yaml argo-workflows/argoproj.io_workfloweventbindings.yaml 533f6cf376c8b2b3
fetch argoproj/argo-events v1.9.11 api/jsonschema/schema.json argo-events/schema.json 0eb4360bf0c41ab6
fetch argoproj/argo-events v1.9.11 manifests/base/crds/argoproj.io_eventsources.yaml argo-events/argoproj.io_eventsources.yaml c90508bd9c1fceb5
fetch argoproj/argo-events v1.9.11 manifests/base/crds/argoproj.io_sensors.yaml argo-events/argoproj.io_sensors.yaml ef42b0baa06d95a8
fetch argoproj/argo-events v1.9.11 manifests/base/crds/argoproj.io_eventbus.yaml argo-events/argoproj.io_eventbus.yaml 1c0ac46b9485245f
fetch argoproj/argo-cd v3.5.1 manifests/crds/application-crd.yaml argo-cd/application-crd.yaml 5dde0e229249b6b7
fetch argoproj/argo-cd v3.5.1 manifests/crds/applicationset-crd.yaml argo-cd/applicationset-crd.yaml 7d282054f41ca2b7
fetch argoproj/argo-cd v3.5.1 manifests/crds/appproject-crd.yaml argo-cd/appproject-crd.yaml ab22526694432275
fetch aws/karpenter-provider-aws v1.14.1 pkg/apis/crds/karpenter.sh_nodepools.yaml karpenter/karpenter.sh_nodepools.yaml 3bb64a20c80776b7
fetch aws/karpenter-provider-aws v1.14.1 pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml karpenter/karpenter.k8s.aws_ec2nodeclasses.yaml 62dec59f01c0972d
fetch eksctl-io/eksctl v0.230.0 pkg/apis/eksctl.io/v1alpha5/assets/schema.json eksctl/schema.json e6357c8f6ed98a86
echo "schemas in $dest"
