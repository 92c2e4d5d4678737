#!/usr/bin/env bash
# image.sh prints the PostgreSQL image that compose and the tests should use:
#   1. $GATEHOUSE_POSTGRES_IMAGE, if set;
#   2. else postgres:16, if that (official) image is present locally;
#   3. else gatehouse/postgres:local, built by build-image.sh if missing
#      (its progress goes to stderr).
# So this always works:  GATEHOUSE_POSTGRES_IMAGE=$(deploy/postgres/image.sh)
set -euo pipefail

if [[ -n ${GATEHOUSE_POSTGRES_IMAGE:-} ]]; then
	echo "$GATEHOUSE_POSTGRES_IMAGE"
	exit 0
fi
if docker image inspect postgres:16 >/dev/null 2>&1; then
	echo postgres:16
	exit 0
fi
local_image=gatehouse/postgres:local
"$(dirname "${BASH_SOURCE[0]}")/build-image.sh" "$local_image" >&2
echo "$local_image"
