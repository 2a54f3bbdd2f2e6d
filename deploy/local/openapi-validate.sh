#!/usr/bin/env bash
# openapi-validate.sh FILE — validates an OpenAPI document with openapi-spec-validator (PyPI),
# installed once into a venv in the local cache. Exit 0 when valid; the validator's message otherwise.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(realpath -m "${OUTFLOW_LOCAL_CACHE:-$HERE/.cache}")/tools-venv"
if ! "$VENV/bin/python" -c 'import openapi_spec_validator' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check 'openapi-spec-validator==0.9.0' >&2
fi
exec "$VENV/bin/openapi-spec-validator" "$@"
